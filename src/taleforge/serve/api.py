"""The HTTP API: taleforge's own ``/api``, and (from :mod:`taleforge.serve.openai_api`) the
OpenAI-compatible ``/v1``.

Errors are JSON in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``
(:mod:`taleforge.serve.api_errors`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Literal, Protocol

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from taleforge.config import MODES, SamplingParams, optional_fields
from taleforge.errors import ConfigError
from taleforge.generate.lore import Lorebook
from taleforge.generate.result import GenerationResult, Story, StreamChunk
from taleforge.serve.api_errors import APIError, as_api_error
from taleforge.serve.limits import limit_generation
from taleforge.serve.registry import BusyError, ModelRegistry, UnknownModelError
from taleforge.serve.sanitize import CleanText, TextTooLong, check_request_length, clean_json
from taleforge.serve.streaming import chunk_batches, collect, generation

__all__ = ["SAMPLING_NAMES", "APIError", "GenerateRequest", "build_router"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

#: OpenAI's (and vLLM's) names for taleforge's sampling parameters: the one mapping. The
#: first name of a parameter is the one the OpenAI bodies declare.
SAMPLING_NAMES = {
    "max_tokens": "max_new_tokens",
    "max_completion_tokens": "max_new_tokens",
    "min_tokens": "min_new_tokens",
    "n": "num_stories",
}


# -- request bodies --------------------------------------------------------------------------


class StrictBody(BaseModel):
    """A request object whose every field is honoured: one the server does not know, or
    knows but does not honour (``unsupported_fields``), is refused with a 400 that names it,
    never silently dropped. A null counts as left out."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    #: Fields other APIs define that this route knows but does not honour: name → why.
    unsupported_fields: ClassVar[dict[str, str]] = {}
    #: Names this route knows by another name: name → the route's name for it.
    renamed_fields: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_given(cls, data: Any) -> Any:
        # Clients send null for what they leave out ("logprobs": null), and false for a
        # feature they do not ask for ("logprobs": false): nothing to refuse.
        if isinstance(data, dict):
            return {
                key: value
                for key, value in data.items()
                if key in cls.model_fields
                or not (value is None or (value is False and key in cls.unsupported_fields))
            }
        return data


class _Body(StrictBody):
    """What every generation request has besides its sampling parameters."""

    model: CleanText | None = Field(None, description="Model id from /api/models; empty = default.")
    stream: bool = Field(False, description="Answer as server-sent events.")

    @field_validator("stop", mode="before", check_fields=False)
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if value is not None and not isinstance(value, list):
            raise ValueError("must be a string or a list of strings")
        return value

    def sampling(self, limit: int) -> dict[str, Any]:
        """The sampling parameters given, by :class:`SamplingParams` name (those left out are
        the server's ``[sampling]``); the length checked against the server's ``limit``."""
        options = {
            SAMPLING_NAMES.get(key, key): value
            for key, value in self.model_dump(exclude={"model", "stream"}).items()
            if value is not None and SAMPLING_NAMES.get(key, key) in SamplingParams.model_fields
        }
        wanted = options.get("max_new_tokens")
        if wanted is not None and wanted > limit:
            raise APIError(
                422,
                f"max tokens {wanted} is over this server's limit of {limit}",
                "invalid_request_error",
                "max_tokens",
                "invalid_value",
            )
        return options


#: Not settable on /api/generate: how many stories (its stream has no story index).
_FIXED = ("num_stories",)
#: Text fields are cleaned at the edge (:func:`taleforge.serve.sanitize.clean_text`).
CLEAN = {"stop": list[CleanText]}


class GenerateRequest(
    create_model(  # type: ignore[misc]
        "_GenerateSampling",
        __base__=_Body,
        **optional_fields(SamplingParams, exclude=_FIXED, annotation=CLEAN),
    )
):
    """``POST /api/generate``: write a story (or continue one, or a poem, ...). Every
    sampling parameter of :class:`SamplingParams` may be given; those left out are the
    server's ``[sampling]``."""

    prompt: CleanText = Field(..., description="Idea, writing prompt, or the text to continue.")
    mode: Literal["story", "writing-prompt", "continue", "poem", "dialogue", "chat"] = "story"
    genre: CleanText | None = Field(
        "auto", description="A genre, 'auto' (from the prompt) or 'none'."
    )
    memory: CleanText = Field("", description="Kept in context however long the story grows.")
    authors_note: CleanText = Field("", description="Steering text placed near the end of context.")
    lorebook: Lorebook | None = Field(
        None,
        description="World info: entries whose keys appear in the prompt's end are read "
        "after the memory, within the lorebook's token budget.",
    )

    @field_validator("lorebook", mode="before")
    @classmethod
    def _clean_lorebook(cls, value: Any) -> Any:
        return clean_json(value) if isinstance(value, dict) else value

    def options(self, max_new_tokens: int) -> dict[str, Any]:
        """The generator's options: the sampling parameters given (their length within the
        server's ``max_new_tokens``) and the request's mode, genre, memory, note, lorebook."""
        options = self.sampling(max_new_tokens)
        options.update(
            mode=self.mode, genre=self.genre, memory=self.memory, authors_note=self.authors_note
        )
        if self.lorebook is not None:
            options["lorebook"] = self.lorebook
        return options


# -- generating for HTTP ---------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One generation of a request (an OpenAI request with a list of prompts has several)."""

    prompt: str
    options: dict[str, Any] = field(default_factory=dict)


class EventWriter(Protocol):
    """What a streaming route sends around the chunks of its generations."""

    def start(self, job: int, spec: str) -> Sequence[Any]:
        """Events before generation ``job`` streams (an echoed prompt, the chat role)."""
        ...

    def chunk(self, job: int, spec: str, chunk: StreamChunk) -> Any:
        """The event of one chunk of text (None: nothing to send)."""
        ...

    def done(self, job: int, spec: str, stories: tuple[Story, ...]) -> Sequence[Any]:
        """Events once generation ``job`` has finished (its stories' finish reasons)."""
        ...

    def end(self, spec: str) -> Sequence[Any]:
        """The last events (usage, ``[DONE]``)."""
        ...


def sse(data: Any) -> str:
    """One server-sent event of ``data`` (JSON, or a string as is)."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def check_length(limit: int, job: Job, field: str = "prompt") -> None:
    """Every route's length rule (:func:`check_request_length`) for one generation: 413."""
    try:
        check_request_length(
            limit,
            job.prompt,
            memory=job.options.get("memory", ""),
            authors_note=job.options.get("authors_note", ""),
            history=job.options.get("history", ()),
            field=field,
        )
    except TextTooLong as exc:
        raise as_api_error(exc) from None


async def complete(
    registry: ModelRegistry, model: str | None, job: Job, request: Request | None = None
) -> Any:
    """Generate to the end (or until ``request``'s client leaves): a ``Collected``."""
    left = request.is_disconnected if request is not None else None
    try:
        done = await collect(registry, model, job.prompt, job.options, left)
    except (UnknownModelError, BusyError, ConfigError) as exc:
        raise as_api_error(exc) from None
    if not done.stories:
        raise APIError(400, "the generation was cancelled before it finished", "cancelled")
    return done


async def stream_response(
    registry: ModelRegistry, model: str | None, jobs: Sequence[Job], writer: EventWriter
) -> Any:
    """Server-sent events of ``jobs``' generations, one after the other.

    An error found before the first byte (unknown model, busy, invalid) is answered with its
    status; one found later (the next prompt's generation is busy) as an error event.
    """
    context = generation(registry, model, jobs[0].prompt, **jobs[0].options)
    try:
        spec, stream = await context.__aenter__()
    except (UnknownModelError, BusyError, ConfigError) as exc:
        return as_api_error(exc).response()

    async def events() -> AsyncIterator[str]:
        nonlocal context, spec, stream
        try:
            for number, job in enumerate(jobs):
                if number:
                    context = generation(registry, model, job.prompt, **job.options)
                    spec, stream = await context.__aenter__()
                try:
                    for event in writer.start(number, spec):
                        yield sse(event)
                    async for batch in chunk_batches(stream):  # one write per wake-up
                        events = (writer.chunk(number, spec, chunk) for chunk in batch)
                        text = "".join(sse(event) for event in events if event is not None)
                        if text:
                            yield text
                    for event in writer.done(number, spec, stream.stories):
                        yield sse(event)
                finally:
                    await context.__aexit__(None, None, None)
            for event in writer.end(spec):
                yield sse(event)
        except (UnknownModelError, BusyError, ConfigError) as exc:
            yield sse(as_api_error(exc).body())

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def _story_json(story: Story) -> dict[str, Any]:
    data = story.to_dict()
    for key in ("token_ids", "formatted_prompt"):
        data.pop(key, None)
    return data


class _StoryEvents:
    """``/api/generate``'s events: ``{"text"}`` per chunk, ``{"done", "story"}`` per story."""

    def start(self, job: int, spec: str) -> Sequence[Any]:
        return ()

    def chunk(self, job: int, spec: str, chunk: StreamChunk) -> Any:
        return {"text": chunk.text}

    def done(self, job: int, spec: str, stories: tuple[Story, ...]) -> Sequence[Any]:
        return [{"done": True, "model": spec, "story": _story_json(s)} for s in stories]

    def end(self, spec: str) -> Sequence[Any]:
        return ()


def build_router(registry: ModelRegistry) -> APIRouter:
    """All API routes, bound to ``registry``: ``/api`` and the OpenAI-compatible ``/v1``."""
    from taleforge.serve.openai_api import build_openai_router

    router = APIRouter()
    limits = registry.config.serve

    @router.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness, the models in memory and the requests in flight."""
        return {
            "status": "ok",
            "default_model": registry.default,
            "loaded_models": registry.loaded,
            "active_requests": registry.active_requests,
        }

    @router.get("/api/models", tags=["taleforge"])
    def models() -> dict[str, Any]:
        """The models this server offers; the first is the default."""
        return {"default": registry.default, "models": [m.__dict__ for m in registry.offered()]}

    limited = [Depends(limit_generation)]  # per account and IP: 429 past serve.rate_limit_generate

    @router.post("/api/generate", tags=["taleforge"], response_model=None, dependencies=limited)
    async def generate(body: GenerateRequest, request: Request) -> Any:
        """Write a story. With ``"stream": true`` the answer is server-sent events: one
        ``{"text": ...}`` per chunk, then ``{"done": true, "story": {...}}``."""
        if body.mode not in MODES:  # pragma: no cover - the Literal already guards it
            raise APIError(422, f"unknown mode {body.mode}", "invalid_request_error", "mode")
        job = Job(body.prompt, body.options(limits.max_new_tokens))
        check_length(limits.max_prompt_chars, job)
        if body.stream:
            return await stream_response(registry, body.model, [job], _StoryEvents())
        done = await complete(registry, body.model, job, request)
        return {
            "model": done.spec,
            "text": GenerationResult(done.stories).text,
            "stories": [_story_json(s) for s in done.stories],
        }

    @router.post("/api/context", tags=["taleforge"])
    async def context(body: GenerateRequest) -> dict[str, Any]:
        """What the model reads for this request (the body of ``/api/generate``) at its first
        step, part by part: ``parts`` (``kind``: instructions, memory, lore, story or note;
        ``name``, ``text``, ``tokens``), the model's ``window``, the ``total`` tokens, those
        ``reserved`` for new text, the ``dropped_chars`` of the story's beginning outside
        the window, and the triggered lorebook entries over its budget (``skipped_lore``)."""
        job = Job(body.prompt, body.options(limits.max_new_tokens))
        check_length(limits.max_prompt_chars, job)
        try:
            spec = registry.resolve(body.model)
            # Off the event loop: loading a model and tokenizing a manuscript are CPU work.
            generator = await anyio.to_thread.run_sync(registry.get, spec)
            preview = await anyio.to_thread.run_sync(
                partial(generator.context_preview, job.prompt, **job.options)
            )
        except (UnknownModelError, ConfigError) as exc:
            raise as_api_error(exc) from None
        return {"model": spec, **preview.to_dict()}

    router.include_router(build_openai_router(registry, limited))
    return router
