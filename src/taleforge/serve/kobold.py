"""The KoboldAI API in KoboldCpp's dialect, which SillyTavern and KoboldAI Lite speak.

The prompt is raw text to continue (mode ``continue``, no genre), as KoboldCpp treats it,
and the answer is the new text exactly as the model wrote it: the concatenated stream.
Request fields are translated by :mod:`taleforge.serve.kobold_request`; those taleforge
cannot follow are named in the answer's ``warnings`` (in the last event of a stream).
Errors are KoboldCpp's ``{"detail": {"msg": ..., "type": ...}}`` with a 4xx status (the
server's own guards, log-in and body size, answer in taleforge's error shape).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from taleforge import __version__
from taleforge.errors import ConfigError
from taleforge.generate.result import Story, StreamChunk
from taleforge.serve.kobold_request import (
    KoboldRequest,
    KoboldRequestError,
    fit_prompt,
    translate_request,
)
from taleforge.serve.limits import RateLimited, limit_generation, request_identity
from taleforge.serve.registry import BusyError, ModelRegistry, UnknownModelError
from taleforge.serve.sanitize import clean_text
from taleforge.serve.streaming import GenerationStream, chunks, generation

if TYPE_CHECKING:
    from taleforge.generate import StoryGenerator

#: The KoboldCpp release whose API this answers like: new enough that the front-ends turn
#: on streaming, token counts and min-p (SillyTavern's kai-settings.js checks >= 1.30, 1.41
#: and 1.48) and send DRY, XTC and phrase bans.
KOBOLDCPP_VERSION = "1.80"
#: The KoboldAI United API level KoboldCpp reports (stop sequences >= 1.2.2, ban EOS >= 1.2.4).
KOBOLDAI_VERSION = "1.2.5"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _json_body(properties: dict[str, str], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body the handler reads itself (so that every
    error, a malformed body's too, comes in KoboldCpp's shape)."""
    schema = {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in properties.items()},
        "required": ["prompt"] if "prompt" in properties else [],
        "additionalProperties": True,
    }
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": required, "content": content}}


_GENERATE_BODY = _json_body(
    {"prompt": "string", "max_length": "integer", "temperature": "number", "genkey": "string"}
)
_PROMPT_BODY = _json_body({"prompt": "string"})
_GENKEY_BODY = _json_body({"genkey": "string"}, required=False)


class KoboldError(Exception):
    """An error answered in KoboldCpp's shape with ``status``."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request", retry_after: int = 0
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.retry_after = status, message, kind, retry_after

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after else None
        body = {"detail": {"msg": self.message, "type": self.kind}}
        return JSONResponse(body, status_code=self.status, headers=headers)


@dataclass(eq=False)
class Generation:
    """A generation in flight, found by its owner (account or address) and genkey."""

    owner: str
    genkey: str
    stream: GenerationStream
    parts: dict[int, list[str]] = field(default_factory=dict)

    def add(self, chunk: StreamChunk) -> None:
        self.parts.setdefault(chunk.index, []).append(chunk.text)

    def text(self, index: int = 0) -> str:
        return "".join(self.parts.get(index, ()))


class KoboldAPI:
    """The handlers, over one registry; remembers the generations in flight for abort and
    the check poll (per server process)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.serve = registry.config.serve
        self.running: list[Generation] = []

    async def generator(self) -> StoryGenerator:
        """The default model's generator, loaded off the event loop if it is not yet."""
        spec = self.registry.resolve(None)
        return await anyio.to_thread.run_sync(self.registry.get, spec)

    # -- what the front-ends ask when they connect -------------------------------------------

    def model(self) -> dict[str, str]:
        """The model, named as KoboldCpp names it (``koboldcpp/<model>``)."""
        return {"result": f"koboldcpp/{self.registry.default}"}

    def united_version(self) -> dict[str, str]:
        """The KoboldAI United API level (what SillyTavern gates stop sequences on)."""
        return {"result": KOBOLDAI_VERSION}

    def koboldcpp_version(self) -> dict[str, Any]:
        """KoboldCpp's version answer; what is not offered here is false."""
        absent = ("protected", "txt2img", "vision", "transcribe", "multiplayer", "websearch")
        return {
            "result": "KoboldCpp",
            "version": KOBOLDCPP_VERSION,
            **dict.fromkeys((*absent, "tts", "embeddings"), False),
            "taleforge": __version__,
        }

    async def max_context_length(self) -> dict[str, int]:
        """The model's context window in tokens (loads the model)."""
        return {"value": (await self.generator()).context_length}

    async def max_length(self) -> dict[str, int]:
        """How many tokens a request writes when it does not say (loads the model)."""
        default = (await self.generator()).sampling.max_new_tokens
        return {"value": min(default, self.serve.max_new_tokens)}

    async def tokencount(self, request: Request) -> dict[str, Any]:
        """``{"prompt": text}`` → its token count and ids, with the model's tokenizer."""
        text = (await _body(request)).get("prompt")
        if not isinstance(text, str):
            raise KoboldError(422, "invalid request: 'prompt' must be a string")
        self._check_length(text, "prompt")
        tokenizer = (await self.generator()).model.tokenizer
        encoded = await anyio.to_thread.run_sync(lambda: tokenizer(text, add_special_tokens=True))
        ids = [int(i) for i in encoded["input_ids"]]
        return {"value": len(ids), "ids": ids}

    # -- generation ------------------------------------------------------------------------

    async def generate(self, request: Request) -> dict[str, Any]:
        """Continue the prompt; ``{"results": [{"text": ...}], "warnings": [...]}``."""
        kobold, prompt, options = await self._prepare(request, stream=False)
        try:
            async with generation(self.registry, None, prompt, **options) as (_, stream):
                run = self._track(request, kobold.genkey, stream)
                try:
                    async for chunk in chunks(stream):
                        run.add(chunk)
                        if await request.is_disconnected():
                            break
                finally:
                    self.running.remove(run)
                stories = stream.stories
        except (UnknownModelError, BusyError, ConfigError) as exc:
            raise _generation_error(exc) from None
        results = [
            {
                "text": run.text(i),
                "finish_reason": _finish(stories[i] if i < len(stories) else None),
            }
            for i in range(max(len(stories), 1))
        ]
        return {"results": results, "warnings": list(kobold.warnings)}

    async def stream(self, request: Request) -> StreamingResponse:
        """Continue the prompt as server-sent events: ``event: message`` with
        ``{"token": ...}``, then ``{"token": "", "finish_reason", "warnings"}``."""
        kobold, prompt, options = await self._prepare(request, stream=True)
        # Errors found before the first byte are answered with a status, not an event.
        context = generation(self.registry, None, prompt, **options)
        try:
            _, stream = await context.__aenter__()
        except (UnknownModelError, BusyError, ConfigError) as exc:
            raise _generation_error(exc) from None

        async def events() -> AsyncIterator[str]:
            run = self._track(request, kobold.genkey, stream)
            try:
                async for chunk in chunks(stream):
                    run.add(chunk)
                    yield _event({"token": chunk.text, "finish_reason": None})
                story = stream.stories[0] if stream.stories else None
                end = {"finish_reason": _finish(story), "warnings": list(kobold.warnings)}
                yield _event({"token": "", **end})
            except ConfigError as exc:
                error = {"msg": str(exc), "type": "invalid_request"}
                yield _event({"token": "", "finish_reason": "error", "error": error})
            finally:
                self.running.remove(run)
                await context.__aexit__(None, None, None)

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    async def abort(self, request: Request) -> dict[str, bool]:
        """Stop the caller's generation with ``{"genkey": ...}``, or all of the caller's
        generations without one; ``success`` says whether one was running."""
        found = self._find(request, await _body(request, optional=True))
        for run in found:
            run.stream.cancel()
        return {"success": bool(found)}

    async def check(self, request: Request) -> dict[str, Any]:
        """The text written so far by the caller's generation (``{"genkey": ...}``)."""
        found = self._find(request, await _body(request, optional=True))
        return {"results": [{"text": found[-1].text() if found else ""}]}

    # -- helpers ---------------------------------------------------------------------------

    async def _prepare(
        self, request: Request, *, stream: bool
    ) -> tuple[KoboldRequest, str, dict[str, Any]]:
        """Count the request against the rate limit, translate it, fit the prompt: (request,
        prompt, options for :func:`generation`)."""
        try:
            limit_generation(request)  # per account and IP: serve.rate_limit_generate
        except RateLimited as exc:
            raise KoboldError(429, str(exc), "rate_limited", exc.retry_after) from None
        body = await _body(request)
        for name in ("prompt", "memory"):
            if isinstance(body.get(name), str):
                self._check_length(body[name], name)
        generator = await self.generator()  # its window and tokenizer shape the request
        try:
            kobold = translate_request(
                body,
                base=generator.sampling,
                window=generator.context_length,
                limit=self.serve.max_new_tokens,
                stream=stream,
            )
        except KoboldRequestError as exc:
            raise KoboldError(exc.status, str(exc)) from None
        prompt = kobold.prompt
        if kobold.max_context_length is not None:
            tokenizer = generator.model.tokenizer
            memory = len(tokenizer(kobold.memory)["input_ids"]) if kobold.memory else 0
            budget = max(kobold.max_context_length - kobold.params.max_new_tokens - memory, 1)
            prompt = await anyio.to_thread.run_sync(fit_prompt, prompt, tokenizer, budget)
        options = {**kobold.sampling, "mode": "continue", "genre": "none", "memory": kobold.memory}
        return kobold, prompt, options

    def _check_length(self, text: str, name: str) -> None:
        limit = self.serve.max_prompt_chars
        if len(text) > limit:
            raise KoboldError(
                413,
                f"the {name} is {len(text):,} characters; this server accepts at most {limit:,} "
                "(shorten it, or start the server with a larger --serve.max-prompt-chars)",
                "request_too_large",
            )

    def _track(self, request: Request, genkey: str, stream: GenerationStream) -> Generation:
        run = Generation(_owner(request), genkey, stream)
        self.running.append(run)
        return run

    def _find(self, request: Request, body: dict[str, Any]) -> list[Generation]:
        genkey = body.get("genkey") or ""
        owner = _owner(request)
        return [r for r in self.running if r.owner == owner and genkey in ("", r.genkey)]


def _owner(request: Request) -> str:
    """Whose generation this is: the account, else the address (one writer's abort never
    stops another's generation)."""
    address, account = request_identity(request)
    return account or address or ""


async def _body(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The JSON object sent, every string in it (keys too) through ``clean_text``: no lone
    surrogate reaches a tokenizer or comes back, unencodable, in a warning."""
    raw = await request.body()
    if not raw.strip() and optional:
        return {}
    try:
        data = _clean(json.loads(raw)) if raw.strip() else None
    except (ValueError, RecursionError):
        raise KoboldError(400, "the request body is not valid JSON: send a JSON object") from None
    if not isinstance(data, dict):
        raise KoboldError(400, 'send a JSON object, e.g. {"prompt": "Once upon a time"}')
    return data


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(key): _clean(item) for key, item in value.items()}
    return value


def _generation_error(exc: Exception) -> KoboldError:
    if isinstance(exc, BusyError):
        return KoboldError(503, str(exc), "service_unavailable")
    return KoboldError(404 if isinstance(exc, UnknownModelError) else 400, str(exc))


def _finish(story: Story | None) -> str:
    return "length" if story is not None and story.finish_reason == "length" else "stop"


def _event(data: dict[str, Any]) -> str:
    return f"event: message\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def build_kobold_router(registry: ModelRegistry) -> APIRouter:
    """The KoboldAI API routes, bound to ``registry``."""
    api = KoboldAPI(registry)
    router = APIRouter(tags=["koboldai"])
    get, post = ["GET"], ["POST"]
    router.add_api_route("/api/v1/model", api.model, methods=get)
    router.add_api_route("/api/v1/info/version", api.united_version, methods=get)
    router.add_api_route("/api/extra/version", api.koboldcpp_version, methods=get)
    router.add_api_route("/api/v1/config/max_context_length", api.max_context_length, methods=get)
    router.add_api_route("/api/extra/true_max_context_length", api.max_context_length, methods=get)
    router.add_api_route("/api/v1/config/max_length", api.max_length, methods=get)
    for path in ("/api/extra/tokencount", "/api/extra/tokenize"):
        router.add_api_route(path, api.tokencount, methods=post, openapi_extra=_PROMPT_BODY)
    for path, handler in (
        ("/api/v1/generate", api.generate),
        ("/api/extra/generate/stream", api.stream),
    ):
        router.add_api_route(
            path, handler, methods=post, response_model=None, openapi_extra=_GENERATE_BODY
        )
    router.add_api_route("/api/extra/abort", api.abort, methods=post, openapi_extra=_GENKEY_BODY)
    check = "/api/extra/generate/check"
    router.add_api_route(check, api.check, methods=["GET"])
    router.add_api_route(check, api.check, methods=post, openapi_extra=_GENKEY_BODY)
    return router
