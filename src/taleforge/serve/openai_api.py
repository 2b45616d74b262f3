"""The OpenAI-compatible API: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``.

What a client is answered, streamed or not, is the same: the non-streaming answer is the
concatenated stream (text, finish reason and usage), the text as the model wrote it (no
sentence trimming, no whitespace clean-up). Every field of OpenAI's requests is either
honoured (the sampling parameters, derived from :class:`SamplingParams`, OpenAI's penalties
and ``logit_bias`` among them; ``n``, ``echo``, ``stop``, a list of prompts, text content
parts, ``stream_options``), accepted because it changes nothing about what is written
(:data:`UNCHANGED`), or refused with a 400 that names it and says why
(:data:`COMPLETION_UNSUPPORTED`, :data:`CHAT_UNSUPPORTED`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BeforeValidator, Field, WithJsonSchema, create_model
from pydantic_core import PydanticCustomError

from taleforge.config import SamplingParams, field_bounds, optional_fields
from taleforge.generate.result import Story, StreamChunk
from taleforge.serve.api import (
    CLEAN,
    SAMPLING_NAMES,
    Job,
    StrictBody,
    _Body,
    check_length,
    complete,
    stream_response,
)
from taleforge.serve.api_errors import UNSUPPORTED, APIError
from taleforge.serve.registry import ModelRegistry
from taleforge.serve.sanitize import CleanText

#: OpenAI fields that change nothing about what is written, accepted because clients send
#: them: name → why nothing changes. (Honoured fields are declared; all others get a 400.)
UNCHANGED = {
    "user": "an end-user id for the provider's abuse monitoring",
    "safety_identifier": "an end-user id for the provider's abuse monitoring (user's successor)",
    "prompt_cache_key": "a hint for the provider's prompt cache",
    "metadata": "tags for completions the provider stores",
}
_LOGPROBS = "token log-probabilities are not returned yet"
#: OpenAI fields of both routes taleforge knows and does not honour: name → why. One that
#: becomes a :class:`SamplingParams` field is honoured from then on (a body field, never
#: refused), as presence_penalty, frequency_penalty and logit_bias were.
_UNSUPPORTED = {"logprobs": _LOGPROBS, "top_logprobs": _LOGPROBS}
COMPLETION_UNSUPPORTED = {
    **_UNSUPPORTED,
    "best_of": "choosing the likeliest of several completions needs log-probabilities",
    "suffix": "taleforge continues text, it does not insert text before a suffix",
}
_TOOLS = "taleforge's models do not call tools"
CHAT_UNSUPPORTED = {
    **_UNSUPPORTED,
    **dict.fromkeys(
        ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call"), _TOOLS
    ),
    **dict.fromkeys(("tool_calls", "tool_call_id"), _TOOLS),
    "name": "the chat template has no speaker names",
    "modalities": "taleforge writes text only",
    "audio": "taleforge writes text only",
    "prediction": "predicted outputs are not used",
    "reasoning_effort": "taleforge's models do not reason before they answer",
    "web_search_options": "taleforge does not search the web",
    "store": "completions are not stored for later retrieval",
}

#: OpenAI's names declared in the bodies: the first name of each parameter in SAMPLING_NAMES.
_RENAME: dict[str, str] = {}
for _openai, _taleforge in SAMPLING_NAMES.items():
    _RENAME.setdefault(_taleforge, _openai)


def _unchanged_fields() -> dict[str, Any]:
    return {
        name: (Any, Field(None, description=f"Accepted and ignored: {why}."))
        for name, why in UNCHANGED.items()
    }


class StreamOptions(StrictBody):
    include_usage: bool = Field(
        False, description="End the stream with a chunk of no choices that holds the usage."
    )


class _OpenAIRequest(
    create_model(  # type: ignore[misc]
        "_OpenAISampling",
        __base__=_Body,
        **optional_fields(
            SamplingParams, exclude=("trim_to_sentence",), annotation=CLEAN, rename=_RENAME
        ),
        **_unchanged_fields(),
    )
):
    """What the OpenAI completion and chat requests share: OpenAI's fields, and (as vLLM
    reads them from the body) the rest of taleforge's sampling parameters, so one taleforge
    server can write for another. ``n`` is taleforge's ``num_stories``."""

    renamed_fields = _RENAME

    stream_options: StreamOptions | None = Field(None, description="With stream: usage.")


def _as_prompts(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError("must be a string or a list of strings")
    if any(isinstance(item, int | list) and not isinstance(item, bool) for item in value):
        raise PydanticCustomError(
            UNSUPPORTED,
            "holds token ids: this server takes prompts as text; send a string or a list of "
            "strings",
        )
    return value


Prompts = Annotated[
    list[CleanText],
    BeforeValidator(_as_prompts),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ]
        }
    ),
]


class CompletionRequest(_OpenAIRequest):
    """OpenAI ``POST /v1/completions``: each prompt is text to continue (mode ``continue``)."""

    unsupported_fields = COMPLETION_UNSUPPORTED

    prompt: Prompts = Field(..., description="Text to continue, or a list: one choice each.")
    echo: bool | None = Field(
        None, description="Answer with the prompt followed by the completion."
    )


def _text_of_parts(value: Any) -> Any:
    """A message's content: a string, or OpenAI's list of content parts (text only)."""
    if isinstance(value, str) or not isinstance(value, list):
        return value
    texts = []
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind is not None and kind != "text":
            raise PydanticCustomError(
                UNSUPPORTED,
                "has a part of type '{kind}': this server reads text only; send text parts",
                {"kind": str(kind)[:40]},
            )
        else:
            raise ValueError('must be a string or a list of {"type": "text", "text": ...} parts')
    return "\n".join(texts)  # as vLLM joins them


Content = Annotated[
    CleanText,
    BeforeValidator(_text_of_parts),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": {"const": "text"},
                            "text": {"type": "string"},
                        },
                        "required": ["type", "text"],
                    },
                },
            ]
        }
    ),
]


class ChatTurn(StrictBody):
    role: Literal["system", "developer", "user", "assistant"] = Field(
        ..., description="'developer' is OpenAI's newer name for 'system'."
    )
    content: Content


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
    """OpenAI ``POST /v1/chat/completions`` (mode ``chat``, the model's chat template)."""

    unsupported_fields = CHAT_UNSUPPORTED

    messages: Annotated[list[ChatTurn], Field(min_length=1)]
    response_format: dict[str, Any] | None = Field(
        None, description="{'type': 'text'} only: taleforge writes free text."
    )


# -- answers ---------------------------------------------------------------------------------


def _finish(story: Story) -> str:
    return "length" if story.finish_reason == "length" else "stop"


@dataclass
class _Usage:
    """Tokens read once per prompt, and written by every choice."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, stories: Sequence[Story]) -> None:
        if stories:
            self.prompt_tokens += stories[0].prompt_tokens
            self.completion_tokens += sum(story.generated_tokens for story in stories)

    def json(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass
class _Answer:
    """The parts every answer of one request shares; choice ``job * n + story`` of each."""

    kind: str
    n: int
    include_usage: bool
    created: int
    id: str
    usage: _Usage = field(default_factory=_Usage)

    def event(self, spec: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        head = {"id": self.id, "object": self.kind, "created": self.created, "model": spec}
        return {**head, "choices": choices, **extra}

    def end(self, spec: str) -> Sequence[Any]:
        last = [self.event(spec, [], usage=self.usage.json())] if self.include_usage else []
        return [*last, "[DONE]"]


@dataclass
class _CompletionEvents(_Answer):
    prompts: Sequence[str] = ()
    echo: bool = False

    @staticmethod
    def choice(index: int, text: str, reason: str | None) -> dict[str, Any]:
        return {"text": text, "index": index, "logprobs": None, "finish_reason": reason}

    def start(self, job: int, spec: str) -> Sequence[Any]:
        if not self.echo:
            return ()
        echoed = [self.choice(job * self.n + i, self.prompts[job], None) for i in range(self.n)]
        return [self.event(spec, echoed)]

    def chunk(self, job: int, spec: str, chunk: StreamChunk) -> Any:
        return self.event(spec, [self.choice(job * self.n + chunk.index, chunk.text, None)])

    def done(self, job: int, spec: str, stories: tuple[Story, ...]) -> Sequence[Any]:
        self.usage.add(stories)
        return [
            self.event(spec, [self.choice(job * self.n + i, "", _finish(story))])
            for i, story in enumerate(stories)
        ]


@dataclass
class _ChatEvents(_Answer):
    @staticmethod
    def choice(index: int, delta: dict[str, str], reason: str | None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}

    def start(self, job: int, spec: str) -> Sequence[Any]:
        role = {"role": "assistant", "content": ""}
        return [self.event(spec, [self.choice(i, role, None) for i in range(self.n)])]

    def chunk(self, job: int, spec: str, chunk: StreamChunk) -> Any:
        return self.event(spec, [self.choice(chunk.index, {"content": chunk.text}, None)])

    def done(self, job: int, spec: str, stories: tuple[Story, ...]) -> Sequence[Any]:
        self.usage.add(stories)
        return [
            self.event(spec, [self.choice(i, {}, _finish(story))])
            for i, story in enumerate(stories)
        ]


def build_openai_router(registry: ModelRegistry, limited: list[Any]) -> APIRouter:
    """The ``/v1`` routes, bound to ``registry``; ``limited``: the generation rate limit."""
    router = APIRouter(tags=["openai"])
    limits = registry.config.serve
    _, most_stories = field_bounds(SamplingParams, "num_stories")

    def choices_wanted(options: dict[str, Any], prompts: int) -> int:
        """How many choices each prompt gets (``n``, else the server's ``[sampling]``);
        all of them together within what one request may ask for."""
        n = int(options.get("num_stories", registry.sampling.num_stories))
        if most_stories is not None and prompts * n > most_stories:
            raise APIError(
                400,
                f"{prompts} prompt(s) x n={n} is {prompts * n} completions; one request may "
                f"ask for at most {most_stories:g} (send fewer prompts, or several requests)",
                "invalid_request_error",
                "n" if prompts == 1 else "prompt",
                "invalid_value",
            )
        return n

    @router.get("/v1/models")
    def openai_models() -> dict[str, Any]:
        """The offered models, in the OpenAI list format."""
        return {
            "object": "list",
            "data": [
                {"id": m.id, "object": "model", "created": 0, "owned_by": "taleforge"}
                for m in registry.offered()
            ],
        }

    @router.post("/v1/completions", response_model=None, dependencies=limited)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        """Continue each prompt (mode ``continue``): ``n`` choices per prompt, in order."""
        options = body.sampling(limits.max_new_tokens)
        options.update(mode="continue", genre="none")
        jobs = [Job(prompt, options) for prompt in body.prompt]
        for job in jobs:
            check_length(limits.max_prompt_chars, job)
        answer = _CompletionEvents(
            kind="text_completion",
            n=choices_wanted(options, len(jobs)),
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            created=int(time.time()),
            id=f"cmpl-{uuid.uuid4().hex[:24]}",
            prompts=body.prompt,
            echo=bool(body.echo),
        )
        if body.stream:
            return await stream_response(registry, body.model, jobs, answer)
        choices, spec = [], ""
        for number, job in enumerate(jobs):
            done = await complete(registry, body.model, job, request)
            spec = done.spec
            answer.usage.add(done.stories)
            for i, story in enumerate(done.stories):
                text = (job.prompt if body.echo else "") + done.text(i)
                choices.append(answer.choice(number * answer.n + i, text, _finish(story)))
        return answer.event(spec, choices, usage=answer.usage.json())

    @router.post("/v1/chat/completions", response_model=None, dependencies=limited)
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        """Chat with the model's chat template (mode ``chat``); the last message is the user's."""
        if body.response_format and body.response_format.get("type") != "text":
            raise APIError(
                400,
                f"response_format {body.response_format.get('type')!r} is not supported by "
                "this server: it writes free text; send {'type': 'text'} or leave it out",
                "invalid_request_error",
                "response_format",
                "unsupported_parameter",
            )
        system = [t.content for t in body.messages if t.role in ("system", "developer")]
        turns = [t for t in body.messages if t.role not in ("system", "developer")]
        if not turns or turns[-1].role != "user":
            raise APIError(
                400,
                "the last message must be the user's (role 'user')",
                "invalid_request_error",
                "messages",
            )
        options = body.sampling(limits.max_new_tokens)
        options.update(
            mode="chat",
            genre="none",
            memory="\n".join(system),
            history=[{"role": t.role, "content": t.content} for t in turns[:-1]],
        )
        job = Job(turns[-1].content, options)
        check_length(limits.max_prompt_chars, job, "messages")
        answer = _ChatEvents(
            kind="chat.completion.chunk",
            n=choices_wanted(options, 1),
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            created=int(time.time()),
            id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
        )
        if body.stream:
            return await stream_response(registry, body.model, [job], answer)
        done = await complete(registry, body.model, job, request)
        answer.usage.add(done.stories)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": done.text(i)},
                "logprobs": None,
                "finish_reason": _finish(story),
            }
            for i, story in enumerate(done.stories)
        ]
        answer.kind = "chat.completion"
        return answer.event(done.spec, choices, usage=answer.usage.json())

    return router
