"""The HTTP API: taleforge's own ``/api`` and the OpenAI-compatible ``/v1``.

Errors are JSON in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``
(:mod:`taleforge.serve.api_errors`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from taleforge.config import MODES, SamplingParams, optional_fields
from taleforge.errors import ConfigError
from taleforge.generate.result import GenerationResult, Story
from taleforge.serve.api_errors import APIError, as_api_error
from taleforge.serve.limits import limit_generation
from taleforge.serve.registry import BusyError, ModelRegistry, UnknownModelError
from taleforge.serve.sanitize import CleanText
from taleforge.serve.streaming import chunks, generation

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# -- request bodies --------------------------------------------------------------------------


class _Body(BaseModel):
    """What every generation request has besides its sampling parameters."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: CleanText | None = Field(None, description="Model id from /api/models; empty = default.")
    stream: bool = Field(False, description="Answer as server-sent events.")

    @field_validator("stop", mode="before", check_fields=False)
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

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
            )
        return options


#: OpenAI's (and vLLM's) names for taleforge's sampling parameters: the one mapping.
SAMPLING_NAMES = {
    "max_tokens": "max_new_tokens",
    "max_completion_tokens": "max_new_tokens",
    "min_tokens": "min_new_tokens",
}
#: Not settable per request: how many stories (one per request for now).
_FIXED = ("num_stories",)
_CLEAN = {"stop": list[CleanText]}


class GenerateRequest(
    create_model(  # type: ignore[misc]
        "_GenerateSampling",
        __base__=_Body,
        **optional_fields(SamplingParams, exclude=_FIXED, annotation=_CLEAN),
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


class _OpenAIRequest(
    create_model(  # type: ignore[misc]
        "_OpenAISampling",
        __base__=_Body,
        **optional_fields(
            SamplingParams,
            exclude=(*_FIXED, "trim_to_sentence"),
            annotation=_CLEAN,
            rename={"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens"},
        ),
    )
):
    """What the OpenAI completion and chat requests share: OpenAI's fields, and (as vLLM
    reads them from the body) the rest of taleforge's sampling parameters, so one taleforge
    server can write for another."""

    n: int = Field(1, ge=1, le=1, description="One completion per request.")


class CompletionRequest(_OpenAIRequest):
    """OpenAI ``POST /v1/completions``: the prompt is text to continue."""

    prompt: CleanText | list[CleanText]


class ChatTurn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: CleanText


class ChatRequest(
    create_model(  # type: ignore[misc]
        "_ChatSampling",
        __base__=_OpenAIRequest,
        # the newer name of max_tokens; declared after it, so it wins when both are given
        **optional_fields(
            SamplingParams,
            exclude=set(SamplingParams.model_fields) - {"max_new_tokens"},
            rename={"max_new_tokens": "max_completion_tokens"},
        ),
    )
):
    """OpenAI ``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatTurn], Field(min_length=1)]


# -- helpers ---------------------------------------------------------------------------------


def _check_length(text: str | int, limit: int, param: str) -> None:
    size = text if isinstance(text, int) else len(text)
    if size > limit:
        raise APIError(
            413,
            f"the {param} is {size:,} characters; this server accepts at most {limit:,} "
            "(shorten it, or start the server with a larger --serve.max-prompt-chars)",
            "invalid_request_error",
            param,
        )


def _story_json(story: Story) -> dict[str, Any]:
    data = story.to_dict()
    for key in ("token_ids", "formatted_prompt"):
        data.pop(key, None)
    return data


def _sse(data: Any) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def _finish(reason: str) -> str:
    return "stop" if reason in ("eos", "stop", "cancelled") else "length"


def _usage(story: Story) -> dict[str, int]:
    return {
        "prompt_tokens": story.prompt_tokens,
        "completion_tokens": story.generated_tokens,
        "total_tokens": story.prompt_tokens + story.generated_tokens,
    }


def build_router(registry: ModelRegistry) -> APIRouter:
    """All API routes, bound to ``registry``."""
    router = APIRouter()
    limits = registry.config.serve

    async def complete(
        model: str | None, prompt: str, options: dict[str, Any], request: Request | None = None
    ) -> tuple[str, tuple[Story, ...]]:
        """Generate to the end (or until ``request``'s client leaves): (model id, stories)."""
        try:
            async with generation(registry, model, prompt, **options) as (spec, stream):
                async for _ in chunks(stream):
                    if request is not None and await request.is_disconnected():
                        break
                stories = stream.stories
        except (UnknownModelError, BusyError, ConfigError) as exc:
            raise as_api_error(exc) from None
        if not stories:
            raise APIError(400, "the generation was cancelled before it finished", "cancelled")
        return spec, stories

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
        _check_length(body.prompt, limits.max_prompt_chars, "prompt")
        _check_length(body.memory + body.authors_note, limits.max_prompt_chars, "memory")
        options = body.sampling(limits.max_new_tokens)
        if body.mode not in MODES:  # pragma: no cover - the Literal already guards it
            raise APIError(422, f"unknown mode {body.mode}", "invalid_request_error", "mode")
        options.update(
            mode=body.mode, genre=body.genre, memory=body.memory, authors_note=body.authors_note
        )
        if not body.stream:
            spec, stories = await complete(body.model, body.prompt, options, request)
            return {
                "model": spec,
                "text": GenerationResult(stories).text,
                "stories": [_story_json(s) for s in stories],
            }
        return await _stream_response(
            body.model,
            body.prompt,
            options,
            lambda spec, chunk: {"text": chunk.text},
            lambda spec, story: {"done": True, "model": spec, "story": _story_json(story)},
        )

    async def _stream_response(
        model: str | None,
        prompt: str,
        options: dict[str, Any],
        on_chunk: Any,
        on_done: Any,
        done_marker: str | None = None,
    ) -> Any:
        # Errors found before the first byte are answered with a status, not an event.
        context = generation(registry, model, prompt, **options)
        try:
            spec, stream = await context.__aenter__()
        except (UnknownModelError, BusyError, ConfigError) as exc:
            return as_api_error(exc).response()

        async def events() -> AsyncIterator[str]:
            try:
                async for chunk in chunks(stream):
                    event = on_chunk(spec, chunk)
                    if event is not None:
                        yield _sse(event)
                for story in stream.stories:
                    yield _sse(on_done(spec, story))
                if done_marker:
                    yield _sse(done_marker)
            except ConfigError as exc:
                yield _sse(as_api_error(exc).body())
            finally:
                await context.__aexit__(None, None, None)

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    # -- OpenAI-compatible -------------------------------------------------------------------

    @router.get("/v1/models", tags=["openai"])
    def openai_models() -> dict[str, Any]:
        """The offered models, in the OpenAI list format."""
        return {
            "object": "list",
            "data": [
                {"id": m.id, "object": "model", "created": 0, "owned_by": "taleforge"}
                for m in registry.offered()
            ],
        }

    @router.post("/v1/completions", tags=["openai"], response_model=None, dependencies=limited)
    async def completions(body: CompletionRequest) -> Any:
        """Continue the prompt text (mode ``continue``)."""
        prompt = body.prompt if isinstance(body.prompt, str) else "".join(body.prompt[:1])
        _check_length(prompt, limits.max_prompt_chars, "prompt")
        options = body.sampling(limits.max_new_tokens)
        options.update(mode="continue", genre="none")
        created, rid = int(time.time()), f"cmpl-{uuid.uuid4().hex[:24]}"

        def choice(text: str, reason: str | None) -> dict[str, Any]:
            return {"text": text, "index": 0, "logprobs": None, "finish_reason": reason}

        if body.stream:
            return await _stream_response(
                body.model,
                prompt,
                options,
                lambda spec, chunk: {
                    "id": rid,
                    "object": "text_completion",
                    "created": created,
                    "model": spec,
                    "choices": [choice(chunk.text, None)],
                },
                lambda spec, story: {
                    "id": rid,
                    "object": "text_completion",
                    "created": created,
                    "model": spec,
                    "choices": [choice("", _finish(story.finish_reason))],
                    "usage": _usage(story),
                },
                done_marker="[DONE]",
            )
        spec, (story, *_) = await complete(body.model, prompt, options)
        return {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": spec,
            "choices": [choice(story.generated_text, _finish(story.finish_reason))],
            "usage": _usage(story),
        }

    @router.post("/v1/chat/completions", tags=["openai"], response_model=None, dependencies=limited)
    async def chat_completions(body: ChatRequest) -> Any:
        """Chat with the model's chat template (mode ``chat``); the last message is the user's."""
        turns = [t for t in body.messages if t.role != "system"]
        if not turns or turns[-1].role != "user":
            raise APIError(
                400,
                "the last message must be the user's (role 'user')",
                "invalid_request_error",
                "messages",
            )
        system = "\n".join(t.content for t in body.messages if t.role == "system")
        total = sum(len(t.content) for t in body.messages)
        _check_length(total, limits.max_prompt_chars, "messages")
        options = body.sampling(limits.max_new_tokens)
        options.update(
            mode="chat",
            genre="none",
            memory=system,
            history=[{"role": t.role, "content": t.content} for t in turns[:-1]],
        )
        created, rid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:24]}"

        def chunk_event(spec: str, delta: dict[str, str], reason: str | None) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": spec,
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
            }

        if body.stream:
            first = {"sent": False}

            def on_chunk(spec: str, chunk: Any) -> dict[str, Any]:
                delta = {"content": chunk.text}
                if not first["sent"]:
                    first["sent"] = True
                    delta = {"role": "assistant", **delta}
                return chunk_event(spec, delta, None)

            return await _stream_response(
                body.model,
                turns[-1].content,
                options,
                on_chunk,
                lambda spec, story: {
                    **chunk_event(spec, {}, _finish(story.finish_reason)),
                    "usage": _usage(story),
                },
                done_marker="[DONE]",
            )
        spec, (story, *_) = await complete(body.model, turns[-1].content, options)
        return {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": spec,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": story.generated_text},
                    "finish_reason": _finish(story.finish_reason),
                }
            ],
            "usage": _usage(story),
        }

    return router
