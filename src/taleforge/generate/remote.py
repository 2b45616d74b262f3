"""The ``remote`` backend: stories written by an OpenAI-compatible server (vLLM,
text-generation-inference, another taleforge server).

A server answers with text, not logits, so this backend cannot sit under the generator's
token loop as transformers and llama.cpp do. :class:`RemoteStoryGenerator` is a
:class:`~taleforge.generate.StoryGenerator` whose decoding loop is one streamed HTTP request
per story; everything before and after it is the same code as on the other backends: the
request is validated and the prompt planned here (modes, genres, memory, author's note, the
model's template and chat template when the model's tokenizer is available locally), stop
sequences and sentence trimming are applied here, each story records its seed and
parameters, and :meth:`StoryStream.cancel` closes the HTTP stream, which frees the server's
slot.

Why the official ``openai`` client rather than hand-written ``httpx`` calls: it is kept in
step with the servers this talks to (vLLM and TGI test against it), and brings the
server-sent-event parsing (including errors sent mid-stream), timeouts, retries with backoff
on connection errors, 429 and 5xx, and typed errors for 401 and 404 that would otherwise be
hand-written here.

What a server cannot do: there are no logits, so perplexity and evaluation need a local
backend; stories longer than the server's window are not slid here (a taleforge server
slides its own window; vLLM and TGI answer with an error, shown as is).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from taleforge.config import ModelConfig, SamplingParams
from taleforge.errors import ConfigError, ModelLoadError, TaleforgeError
from taleforge.generate import decoding
from taleforge.generate.generator import StoryGenerator, StoryRequest, story_texts
from taleforge.generate.lore import LoreSelection
from taleforge.generate.postprocess import find_stop, stream_safe_length, stream_tail
from taleforge.generate.prompts import ChatMessage, PromptPlan, authors_note_text, system_prompt
from taleforge.generate.result import FinishReason, Story, StreamChunk
from taleforge.generate.vocabulary import SamplerTokens
from taleforge.genres import GenreChoice
from taleforge.models import LoadedModel

if TYPE_CHECKING:
    from openai import OpenAI

    from taleforge.generate.context import ContextPreview

log = logging.getLogger(__name__)

#: The environment variable that holds the server's API key (never a config file or a log).
API_KEY_ENV = "TALEFORGE_REMOTE_API_KEY"
#: Seconds to open a connection; retried (with backoff) ``RETRIES`` times.
CONNECT_TIMEOUT = 5.0
#: Seconds to wait for the next piece of a stream (a busy server may queue a request).
READ_TIMEOUT = 120.0
RETRIES = 2


def open_client(url: str, *, retries: int = RETRIES) -> OpenAI:
    """An OpenAI client for the API at ``url`` with the key from ``$TALEFORGE_REMOTE_API_KEY``."""
    from openai import OpenAI, Timeout

    # Servers started without a key (vLLM's default) accept any; the client insists on one.
    api_key = os.environ.get(API_KEY_ENV) or "no-key"
    timeout = Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    return OpenAI(base_url=url, api_key=api_key, timeout=timeout, max_retries=retries)


def remote_error(exc: Exception, url: str, model: str | None = None) -> TaleforgeError:
    """Our error, saying what to change, for an error of the OpenAI client."""
    import openai

    if isinstance(exc, openai.APIConnectionError):  # also APITimeoutError
        reason = str(exc.__cause__ or exc).splitlines()[0][:200]
        return ModelLoadError(
            f"cannot reach the remote server at {url} ({reason}): check that it is running and "
            "that model.remote_url (--model.remote-url) is its API's base URL, e.g. "
            "http://gpu-box:8000/v1"
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ConfigError(
            f"the remote server at {url} refused the request ({exc.status_code}): set "
            f"${API_KEY_ENV} to an API key it accepts"
        )
    if isinstance(exc, openai.APIStatusError):
        message = server_message(exc)
        if exc.status_code == 404 and model is not None:
            return ConfigError(
                f"the remote server at {url} does not serve '{model}' ({message}): set "
                "model.remote_model (--model.remote-model) to one it lists at /v1/models"
            )
        if 400 <= exc.status_code < 500 and exc.status_code != 429:
            return ConfigError(f"the remote server at {url} refused the request: {message}")
        return ModelLoadError(
            f"the remote server at {url} answered {exc.status_code}: {message}; try again later"
        )
    if isinstance(exc, openai.APIError):  # an error event in the middle of a stream
        return ModelLoadError(f"the remote server at {url} failed: {exc.message}")
    raise exc


def server_message(exc: Any) -> str:
    """The error message an OpenAI-compatible server put in its answer, at most 500 characters."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if body.get("message"):
            return str(body["message"])[:500]
    return str(getattr(exc, "message", exc))[:500]


def check_server(url: str, model: str, client: OpenAI | None = None) -> list[str]:
    """The model names the server at ``url`` offers; raises unless ``model`` is one of them.

    Raises:
        ModelLoadError: The server cannot be reached.
        ConfigError: It refuses the API key, has no ``/models`` (not an API base URL), or
            does not serve ``model`` (the message lists what it serves).
    """
    import openai

    client = client or open_client(url)
    try:
        names = [entry.id for entry in client.models.list()]
    except openai.NotFoundError:
        raise ConfigError(
            f"{url}/models is not found: model.remote_url must be the base URL of an "
            "OpenAI-compatible API, usually ending in /v1 (http://gpu-box:8000/v1)"
        ) from None
    except openai.APIError as exc:
        raise remote_error(exc, url) from None
    if model not in names:
        raise ConfigError(
            f"the remote server at {url} does not serve '{model}': set model.remote_model "
            f"(--model.remote-model) to one of: {', '.join(names) or '(none listed)'}"
        )
    return names


def _local_model(spec: str, name: str) -> LoadedModel:
    """The tokenizer and metadata of ``spec`` to plan prompts with (no weights); a plain
    text model of that name when they are not available here."""
    from taleforge.models.loading import SourceKind, load_without_weights
    from taleforge.models.metadata import ModelMetadata

    try:
        return load_without_weights(spec, 2048)
    except TaleforgeError as exc:
        log.warning("remote %s: prompts formatted as for a plain model (%s)", name, exc)
    return LoadedModel(name, SourceKind.HUB, None, None, ModelMetadata(name=name))


class RemoteStoryGenerator(StoryGenerator):
    """Writes stories with a model an OpenAI-compatible server runs.

    Example:
        >>> generator = RemoteStoryGenerator("http://gpu-box:8000/v1", model="taleforge-stories")
        >>> for chunk in generator.stream("a robot learns to paint", seed=7):
        ...     print(chunk.text, end="")
    """

    def __init__(
        self,
        url: str,
        *,
        model: str,
        spec: str | None = None,
        sampling: SamplingParams | None = None,
        retries: int = RETRIES,
    ) -> None:
        """Args:
        url: Base URL of the API (``http://host:8000/v1``).
        model: The model name the server knows (one of its ``/v1/models``).
        spec: The same model as taleforge loads it here (a directory, hub id, ...), whose
            tokenizer and metadata format prompts; default ``model``. Without them prompts
            are formatted as for a plain model, and chat mode uses the server's chat API.
        sampling: Default sampling parameters; each call may override any of them.
        retries: Retries of a request that could not connect (or got 429/5xx).

        Raises:
            ModelLoadError, ConfigError: As :func:`check_server`.
        """
        # No StoryGenerator.__init__: it opens a local backend, and the server is the backend.
        self.url = url.rstrip("/")
        self.remote_model = model
        self.client = open_client(self.url, retries=retries)
        check_server(self.url, model, self.client)
        self.model = _local_model(spec or model, model)
        self.sampling = sampling or SamplingParams()
        self.context_length = self.model.context_length

    @classmethod
    def from_config(
        cls,
        model: ModelConfig,
        *,
        sampling: SamplingParams | None = None,
        context_length: int | None = None,
        parallel: int | None = None,
    ) -> StoryGenerator:
        """A generator for ``[model]`` with ``backend = "remote"``: ``remote_url``,
        ``remote_model`` (default ``spec``) and ``spec`` (formats prompts)."""
        if not model.remote_url:
            raise ConfigError("backend 'remote' needs model.remote_url (--model.remote-url)")
        return cls(
            model.remote_url,
            model=model.remote_model or model.spec,
            spec=model.spec,
            sampling=sampling,
        )

    @property
    def backend_name(self) -> str:
        return "remote"

    @property
    def _local_chat(self) -> bool:
        """Whether chat prompts are rendered here (the model's chat template is available)."""
        return self.model.has_chat_template

    def close(self) -> None:
        self.client.close()

    def sampler_tokens(self, params: SamplingParams) -> SamplerTokens:
        """The biases in token ids (word bias needs the model's tokenizer here); the server
        finds DRY's sequence breakers in its own vocabulary."""
        return SamplerTokens(bias=self.vocabulary.bias(params))

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes: by the model's tokenizer when it is here, else estimated
        (about four characters a token, as in English BPE vocabularies)."""
        if self.model.tokenizer is None:
            return -(-len(text) // 4)
        return super().count_tokens(text)

    def plan(self, request: StoryRequest, lore: LoreSelection | None = None) -> PromptPlan:
        if request.mode == "chat" and not self._local_chat:
            # No chat template here: the server's chat API applies its own.
            return PromptPlan(header="", opening="", chat=True, genre=GenreChoice(None, "none"))
        return super().plan(request, lore)

    def context_preview(self, prompt: str, **options: Any) -> ContextPreview:
        """As :meth:`StoryGenerator.context_preview`, for the window of a server that slides
        it as taleforge does (another taleforge server), with the model's tokenizer here.

        Raises:
            ConfigError: The model's tokenizer is not available here, or chat is formatted
                by the server (its context is not known here).
        """
        if self.model.tokenizer is None:
            raise ConfigError(
                f"the context preview needs the model's tokenizer here: set model.spec to "
                f"a local copy or hub id of '{self.remote_model}' (the server builds its own "
                "context)"
            )
        if options.get("mode") == "chat" and not self._local_chat:
            raise ConfigError(
                "the context preview of chat needs the model's chat template here: the "
                "server formats chat itself"
            )
        return super().context_preview(prompt, **options)

    # -- writing -------------------------------------------------------------------------

    def _write_stories(
        self, request: StoryRequest, plan: PromptPlan, cancel: threading.Event, emit: Any
    ) -> Iterator[Story]:
        base_seed = request.params.seed
        if base_seed is None:
            base_seed = secrets.randbelow(2**31)
        for index in range(request.params.num_stories):
            if cancel.is_set():
                return
            seed = (base_seed + index) % 2**32
            yield self._write_remote(request, plan, seed, index, cancel, emit)

    def _prompt_text(self, request: StoryRequest, plan: PromptPlan) -> str:
        """The text the server continues: header, opening and (text models) author's note."""
        note_text = authors_note_text(request.authors_note)
        if not note_text or plan.chat:
            return plan.header + plan.opening
        tokenizer = self.model.tokenizer
        if tokenizer is None:
            return plan.header + plan.opening + note_text
        # Where the local backends put it: a few tokens before the end of the story.
        opening_ids = self._encode(plan.opening, special=False)
        note_ids = self._encode(note_text, special=False)
        story = decoding.build_context([], opening_ids, len(opening_ids), note_ids)
        return plan.header + str(tokenizer.decode(story))

    def _messages(self, request: StoryRequest) -> list[ChatMessage]:
        note = request.authors_note.strip()
        system, _ = system_prompt(request.memory.strip(), self.select_lore(request).texts)
        user = request.prompt + (f"\n\nAuthor's note: {note}" if note else "")
        return [
            {"role": "system", "content": system},
            *request.history,
            {"role": "user", "content": user},
        ]

    def _body(self, params: SamplingParams, seed: int) -> dict[str, Any]:
        """The request's sampling fields: OpenAI's own, then the extras vLLM (and taleforge)
        read from the body; a server ignores those it does not know. Stop sequences are
        not sent: they are found here, as on the other backends, and the stream closed
        (a server that stops by itself says "stop" for both a stop sequence and the end of
        the story)."""
        body: dict[str, Any] = {
            "model": self.remote_model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": seed,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        extra: dict[str, Any] = {}
        if params.top_k:
            extra["top_k"] = params.top_k
        if params.min_p:
            extra["min_p"] = params.min_p
        if params.typical_p < 1.0:
            extra["typical_p"] = params.typical_p
        if params.repetition_penalty != 1.0:
            extra["repetition_penalty"] = params.repetition_penalty
        if params.no_repeat_ngram_size:
            extra["no_repeat_ngram_size"] = params.no_repeat_ngram_size
        if params.min_new_tokens:
            extra["min_tokens"] = params.min_new_tokens
        if params.presence_penalty:
            body["presence_penalty"] = params.presence_penalty
        if params.frequency_penalty:
            body["frequency_penalty"] = params.frequency_penalty
        bias = self.vocabulary.bias(params)
        if bias:  # OpenAI's keys are token ids as strings
            body["logit_bias"] = {str(token): value for token, value in sorted(bias.items())}
        if params.dry_multiplier and params.dry_penalty_last_n:
            # llama.cpp's server and KoboldCpp read DRY and XTC under these names
            for name in ("multiplier", "base", "allowed_length", "penalty_last_n"):
                extra[f"dry_{name}"] = getattr(params, f"dry_{name}")
            extra["dry_sequence_breakers"] = list(params.dry_sequence_breakers)
        if params.xtc_probability:
            extra["xtc_probability"] = params.xtc_probability
            extra["xtc_threshold"] = params.xtc_threshold
        if extra:
            body["extra_body"] = extra
        return body

    def _open_stream(self, request: StoryRequest, plan: PromptPlan, seed: int) -> Any:
        import openai

        body = self._body(request.params, seed)
        try:
            if plan.chat and not self._local_chat:
                return self.client.chat.completions.create(
                    messages=self._messages(request),  # type: ignore[arg-type]
                    **body,
                )
            return self.client.completions.create(prompt=self._prompt_text(request, plan), **body)
        except openai.APIError as exc:
            raise remote_error(exc, self.url, self.remote_model) from None

    def _write_remote(
        self,
        request: StoryRequest,
        plan: PromptPlan,
        seed: int,
        index: int,
        cancel: threading.Event,
        emit: Any,
    ) -> Story:
        import openai

        params, started = request.params, time.perf_counter()
        first_piece_at: float | None = None
        text, shown, pieces = "", 0, 0
        server_finish: str | None = None
        usage: Any = None
        finish: FinishReason = "length"
        stream = self._open_stream(request, plan, seed)
        try:
            with stream:  # leaving it closes the HTTP stream: the server frees the slot
                for event in stream:
                    if cancel.is_set():
                        break
                    usage = getattr(event, "usage", None) or usage
                    if not event.choices:
                        continue
                    choice = event.choices[0]
                    if getattr(choice, "delta", None) is not None:
                        piece = choice.delta.content or ""
                    else:
                        piece = choice.text or ""
                    server_finish = choice.finish_reason or server_finish
                    if not piece:
                        continue
                    if first_piece_at is None:
                        first_piece_at = time.perf_counter()
                    pieces += 1
                    text += piece
                    at = find_stop(text, params.stop) if params.stop else None
                    if at is not None:
                        text, finish = text[:at], "stop"
                    limit = len(text) if at is not None else stream_safe_length(text, params.stop)
                    if limit > shown:
                        emit(StreamChunk(index, text[shown:limit]))
                        shown = limit
                    if at is not None:
                        break
        except openai.APIError as exc:
            raise remote_error(exc, self.url, self.remote_model) from None
        if cancel.is_set():
            finish = "cancelled"
        elif finish != "stop":
            finish = "length" if server_finish == "length" else "eos"
            if tail := stream_tail(text, shown):  # the stream ends with the whole text
                emit(StreamChunk(index, tail))
        ttft = None if first_piece_at is None else round(first_piece_at - started, 4)
        timing = (round(time.perf_counter() - started, 4), ttft)
        return self._story(request, plan, seed, text, finish, usage, pieces, timing)

    def _story(
        self,
        request: StoryRequest,
        plan: PromptPlan,
        seed: int,
        raw: str,
        finish: FinishReason,
        usage: Any,
        pieces: int,
        timing: tuple[float, float | None],
    ) -> Story:
        full_text, new_text, finish = story_texts(raw, request, plan, finish)
        prompt_text = plan.header + plan.opening
        if usage is not None:
            prompt_tokens, generated = usage.prompt_tokens, usage.completion_tokens
        elif self.model.tokenizer is not None:
            prompt_tokens = len(self._encode(prompt_text, special=False))
            generated = len(self._encode(raw, special=False))
        else:
            prompt_tokens, generated = 0, pieces
        return Story(
            text=full_text,
            generated_text=new_text,
            prompt=request.prompt,
            mode=request.mode,
            genre=plan.genre.genre,
            genre_source=plan.genre.source,
            model=self.model.spec,
            backend="remote",
            seed=seed,
            params=request.params.model_copy(update={"seed": seed}),
            prompt_tokens=prompt_tokens,
            generated_tokens=generated,
            finish_reason=finish,
            seconds=timing[0],
            time_to_first_token=timing[1],
            formatted_prompt=prompt_text,
        )
