"""StoryGenerator: the one API that writes stories, used by the CLI, the app and the tests."""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from taleforge.config import MODES, ModelConfig, SamplingParams, make_sampling
from taleforge.errors import ConfigError
from taleforge.generate.backends import Backend, DecodeStep, open_backend, open_model
from taleforge.generate.bans import Backtracker, phrase_bans
from taleforge.generate.decoding import EncodedRequest
from taleforge.generate.lore import Lorebook, LoreSelection, as_lorebook
from taleforge.generate.postprocess import (
    CONTROL_RE,
    find_stop,
    finish_text,
    stream_safe_length,
    stream_tail,
)
from taleforge.generate.prompts import ChatMessage, PromptPlan, authors_note_text, plan_prompt
from taleforge.generate.result import (
    FinishReason,
    GenerationResult,
    Story,
    StreamChunk,
    TokenChoice,
)
from taleforge.generate.vocabulary import SamplerTokens, SamplerVocabulary
from taleforge.genres import GenreChoice, choose_genre, normalize_genre, split_leading_tag
from taleforge.models import LoadedModel

if TYPE_CHECKING:
    from taleforge.generate.context import ContextPreview

log = logging.getLogger(__name__)

_DONE = object()


#: ``--genre auto`` applies the classifier's genre only from this probability on: a guess
#: (a prompt about a missed train called romance) is worse than no genre.
AUTO_GENRE_MIN_PROBABILITY = 0.5


def _classify_genre(prompt: str, tags: Sequence[str]) -> GenreChoice | None:
    from taleforge.data.genres import default_classifier
    from taleforge.errors import TaleforgeError

    try:
        classifier = default_classifier()
    except TaleforgeError as exc:  # the sample dataset it trains on is not installed
        log.debug("no genre classifier: %s", exc)
        return None
    scores = classifier.predict_proba([prompt])[0]
    known = [g for g in scores if g in tags]
    if not known:
        return None
    best = max(known, key=scores.__getitem__)
    if scores[best] < AUTO_GENRE_MIN_PROBABILITY:
        log.info(
            "genre auto: none (the likeliest, %s, has probability %.2f < %.2f)",
            best,
            scores[best],
            AUTO_GENRE_MIN_PROBABILITY,
        )
        return None
    log.info("genre auto: %s (probability %.2f)", best, scores[best])
    return GenreChoice(best, "auto")


@dataclass(frozen=True)
class StoryRequest:
    """Everything that defines one request, validated."""

    prompt: str
    mode: str
    genre: str | None
    params: SamplingParams
    memory: str = ""
    authors_note: str = ""
    history: tuple[ChatMessage, ...] = ()
    #: The story's lorebook: entries its keys bring into the context after the memory.
    lorebook: Lorebook | None = None


def story_texts(
    raw: str, request: StoryRequest, plan: PromptPlan, finish: FinishReason
) -> tuple[str, str, FinishReason]:
    """The story and its new part from what the model wrote (``raw``), on every backend.

    Stop sequences cut it (the finish reason becomes "stop"); a story cut by its length is
    trimmed to its last sentence when asked; in continue mode the story is the given opening,
    exactly as given (its spacing, its blank lines, every character), plus what the model
    wrote after it, post-processed. Returns (story, new text, finish reason).
    """
    trim = request.params.trim_to_sentence and finish == "length"
    new_text, stopped = finish_text(raw, stops=request.params.stop, trim=trim)
    if stopped:
        finish = "stop"
    if not plan.opening:
        return new_text, new_text, finish
    if not new_text:
        return plan.opening, new_text, finish
    # what separated the given text from the new one, as the model wrote it (a finished
    # word, a space, a new line or a new paragraph)
    lead = raw[: len(raw) - len(raw.lstrip())]
    if plan.opening[-1:].isspace():
        lead = ""
    elif "\n" in lead:
        lead = "\n\n" if lead.count("\n") > 1 else "\n"
    elif lead:
        lead = " "
    return plan.opening + lead + new_text, new_text, finish


class StoryStream:
    """An iterator of :class:`StreamChunk` produced by a background generation thread.

    Iterate it to receive text as it is written; call :meth:`cancel` (or leave a ``with``
    block) to stop at the next token. After the iteration ends, :attr:`result` holds the
    finished stories.
    """

    def __init__(self, generator: StoryGenerator, request: StoryRequest) -> None:
        #: How the request was formatted; ``plan.opening`` is the story's given beginning
        #: (continue mode, plain models), which the streamed chunks follow.
        self.plan = generator.plan(request)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._cancel = threading.Event()
        self._stories: list[Story] = []
        self._error: BaseException | None = None
        self._wake: Callable[[], None] | None = None
        self._thread = threading.Thread(
            target=self._run,
            args=(generator, request),
            name="taleforge-generate",
            daemon=True,
        )
        self._thread.start()

    def _run(self, generator: StoryGenerator, request: StoryRequest) -> None:
        try:
            stories = generator._write_stories(request, self.plan, self._cancel, self._put)
            for story in stories:
                self._stories.append(story)
        except BaseException as exc:  # handed to the consumer, never lost in the thread
            self._error = exc
        finally:
            self._put(_DONE)

    def _put(self, item: Any) -> None:
        self._queue.put(item)
        wake = self._wake
        if wake is not None:
            wake()

    def __iter__(self) -> Iterator[StreamChunk]:
        return self

    def __next__(self) -> StreamChunk:
        item = self._queue.get()
        if item is _DONE:
            self._end()
        return item

    def _end(self) -> None:
        """The stream has ended: raise what ended the generation, else StopIteration."""
        self._queue.put(_DONE)  # later calls end too
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        raise StopIteration

    def on_ready(self, wake: Callable[[], None]) -> None:
        """Have ``wake`` called (in the generating thread) whenever a chunk or the end is
        ready: for a consumer that waits elsewhere than in ``next`` (an event loop, which
        then takes what is ready with :meth:`ready`)."""
        self._wake = wake
        if not self._queue.empty():
            wake()

    def ready(self) -> list[StreamChunk] | None:
        """The chunks ready now, without waiting (maybe none); None once the stream has
        ended (raising, as iteration does, the error that ended it)."""
        chunks: list[StreamChunk] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return chunks
            if item is _DONE:
                if chunks:
                    self._queue.put(_DONE)
                    return chunks
                try:
                    self._end()
                except StopIteration:
                    return None
            chunks.append(item)

    def cancel(self) -> None:
        """Stop generating at the next token; the stream then ends with what was written."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def stories(self) -> tuple[Story, ...]:
        """The stories finished so far (all of them once the iteration has ended)."""
        return tuple(self._stories)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the generation thread to end; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def result(self) -> GenerationResult:
        """The finished stories (consumes the rest of the stream first)."""
        for _ in self:
            pass
        return GenerationResult(tuple(self._stories))

    def __enter__(self) -> StoryStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()
        self.wait()

    def __del__(self) -> None:
        cancel = getattr(self, "_cancel", None)  # absent when planning the request failed
        if cancel is not None:
            cancel.set()


class StoryGenerator:
    """Writes stories with a loaded model.

    Example:
        >>> generator = StoryGenerator("smollm2-135m")
        >>> story = generator.generate("magic castle", genre="auto", seed=7).stories[0]
        >>> for chunk in generator.stream("a robot learns to paint", temperature=0.9):
        ...     print(chunk.text, end="")
    """

    def __init__(
        self,
        model: LoadedModel | str | None = None,
        *,
        sampling: SamplingParams | None = None,
        context_length: int | None = None,
        backend: str | Backend | None = None,
        parallel: int = 1,
    ) -> None:
        """Args:
        model: A loaded model or a model spec (default: the default story model).
        sampling: Default sampling parameters; each call may override any of them.
        context_length: Cap on tokens in context (default: the model's window).
        backend: ``auto`` (llama.cpp when installed and the model exports to GGUF, else
            transformers), ``transformers``, ``llama.cpp``, or a :class:`Backend`. Default:
            ``auto`` for a spec, ``transformers`` for a model already loaded with it.
        parallel: Stories written at the same time (llama.cpp batches them; transformers
            writes one at a time whatever this says).
        """
        if isinstance(backend, Backend):
            if not isinstance(model, LoadedModel):
                raise ConfigError("a Backend instance needs the LoadedModel it runs")
            self.model, self.backend = model, backend
        elif isinstance(model, LoadedModel):
            self.model, self.backend = open_backend(
                model, backend or "transformers", parallel=parallel, context_length=context_length
            )
        else:
            self.model, self.backend = open_model(
                model or "default",
                backend=backend or "auto",
                parallel=parallel,
                context_length=context_length,
            )
        self.sampling = sampling or SamplingParams()
        window = min(self.model.context_length, self.backend.context_length)
        if context_length is not None:
            if context_length < 16:
                raise ConfigError(f"context_length {context_length} is too small: use >= 16")
            window = min(window, context_length)
        self.context_length = window

    @classmethod
    def from_config(
        cls,
        model: ModelConfig,
        *,
        sampling: SamplingParams | None = None,
        context_length: int | None = None,
        parallel: int | None = None,
    ) -> StoryGenerator:
        """A generator for the ``[model]`` settings (spec, backend, dtype, export, parallel;
        with ``backend = "remote"`` a :class:`~taleforge.generate.remote.RemoteStoryGenerator`)."""
        if model.backend == "remote":
            from taleforge.generate.remote import RemoteStoryGenerator

            return RemoteStoryGenerator.from_config(model, sampling=sampling)
        loaded, backend = open_model(
            model.spec,
            backend=model.backend,
            dtype=model.dtype,
            trust_remote_code=model.trust_remote_code,
            quantization=model.quantization,
            parallel=parallel or model.parallel,
            context_length=context_length,
            threads=model.threads,
            context_shift=model.context_shift,
        )
        return cls(loaded, sampling=sampling, context_length=context_length, backend=backend)

    @property
    def backend_name(self) -> str:
        """The backend that writes: ``transformers``, ``llama.cpp`` or ``remote``."""
        return self.backend.name

    def close(self) -> None:
        """Free the backend's native resources (the generator is unusable afterwards)."""
        self.backend.close()

    # -- public API ---------------------------------------------------------------------

    def generate(self, prompt: str, **options: Any) -> GenerationResult:
        """Write stories for a prompt and return them when finished.

        Args:
            prompt: The idea, writing prompt, text to continue, or chat message.
            **options: ``mode``, ``genre``, ``memory``, ``authors_note``, ``history``,
                ``lorebook`` (a :class:`Lorebook` or its JSON form) and any
                :class:`SamplingParams` field (``temperature=0.9``, ``seed=7``, ...).
        """
        return self.stream(prompt, **options).result

    def stream(
        self,
        prompt: str,
        *,
        mode: str = "story",
        genre: str | None = "auto",
        memory: str = "",
        authors_note: str = "",
        history: Sequence[ChatMessage] = (),
        lorebook: Lorebook | Mapping[str, Any] | None = None,
        **sampling: Any,
    ) -> StoryStream:
        """Start writing and return a stream of text chunks (see :class:`StoryStream`)."""
        request = self.make_request(
            prompt,
            mode=mode,
            genre=genre,
            memory=memory,
            authors_note=authors_note,
            history=history,
            lorebook=lorebook,
            **sampling,
        )
        return StoryStream(self, request)

    def make_request(
        self,
        prompt: str,
        *,
        mode: str = "story",
        genre: str | None = "auto",
        memory: str = "",
        authors_note: str = "",
        history: Sequence[ChatMessage] = (),
        lorebook: Lorebook | Mapping[str, Any] | None = None,
        **sampling: Any,
    ) -> StoryRequest:
        """Validate a request without generating (errors say what to change)."""
        if mode not in MODES:
            raise ConfigError(f"unknown mode '{mode}': use one of {', '.join(MODES)}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError("the prompt is empty: give an idea, a writing prompt or text")
        for turn in history:
            if turn.get("role") not in ("user", "assistant") or not isinstance(
                turn.get("content"), str
            ):
                raise ConfigError("history turns must be {'role': 'user'|'assistant', 'content'}")
        if genre is not None and genre.strip().lower() not in ("auto", "none", ""):
            genre = normalize_genre(genre)
        params = make_sampling(self.sampling, **sampling)
        self.sampler_tokens(params)  # a token id outside the vocabulary is an error now
        return StoryRequest(
            prompt,
            mode,
            genre,
            params,
            memory,
            authors_note,
            tuple(dict(t) for t in history),
            as_lorebook(lorebook),
        )

    @cached_property
    def vocabulary(self) -> SamplerVocabulary:
        """The model's vocabulary as the samplers need it (token texts, kept once computed)."""
        return SamplerVocabulary(self.model.tokenizer)

    def sampler_tokens(self, params: SamplingParams) -> SamplerTokens:
        """``params``' logit and word biases and DRY sequence breakers in this model's token
        ids (raises :class:`ConfigError` for a token id the model does not have)."""
        return self.vocabulary.sampler_tokens(params)

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model (as lorebook budgets count them)."""
        return len(self._encode(text, special=False))

    def select_lore(self, request: StoryRequest) -> LoreSelection:
        """The lorebook entries the request's text (the prompt; in continue mode the
        manuscript) brings into the context, within the lorebook's budget."""
        if request.lorebook is None:
            return LoreSelection()
        return request.lorebook.triggered(request.prompt, self.count_tokens)

    def plan(self, request: StoryRequest, lore: LoreSelection | None = None) -> PromptPlan:
        """Format a request for this model (pure; shown by ``--json`` as formatted_prompt).

        ``lore``: the triggered lorebook entries (default: :meth:`select_lore`).
        """
        if lore is None:
            lore = self.select_lore(request)
        metadata = self.model.metadata
        render = None
        if self.model.has_chat_template:

            def render(messages: list[ChatMessage]) -> str:
                text = self.model.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
                return str(text)

        prompt = request.prompt
        from_tag = None
        if request.mode not in ("chat", "continue"):
            # "[FANTASY] A dragon ..." names its genre: the tag is the genre, not prompt text
            # (it was doubled in front of tagged models' prompts). An explicit genre wins.
            tag, rest = split_leading_tag(prompt)
            if tag and rest.strip():
                prompt = rest.strip()
                if (request.genre or "auto").strip().lower() in ("auto", "none", ""):
                    from_tag = GenreChoice(tag, "tag")
        genre = from_tag or choose_genre(request.genre, prompt)
        if (
            genre.genre is None
            and genre.source == "none"
            and (request.genre or "").strip().lower() == "auto"
            and metadata.genre_tags
            and request.mode not in ("chat", "continue")
        ):
            # A model trained with genre tags always saw one: when no keyword names the
            # genre, the data step's classifier picks the likeliest of the model's tags.
            genre = _classify_genre(prompt, metadata.genre_tags) or genre
        return plan_prompt(
            prompt,
            mode=request.mode,
            genre=genre,
            template=metadata.template,
            genre_tags=metadata.genre_tags,
            memory=request.memory,
            lore=lore.texts,
            authors_note=request.authors_note,
            history=request.history,
            render_chat=render,
        )

    # -- the decoding loop --------------------------------------------------------------

    def _write_stories(
        self, request: StoryRequest, plan: PromptPlan, cancel: threading.Event, emit: Any
    ) -> Iterator[Story]:
        base_seed = request.params.seed
        if base_seed is None:
            base_seed = secrets.randbelow(2**31)
        encoded = self._encode_request(request, plan)
        first_context = encoded.step((), request.params.max_new_tokens).ids
        with self.backend.reserve(cancel, first_context) as slot:
            if slot is None:  # cancelled while waiting for the model
                return
            for index in range(request.params.num_stories):
                if cancel.is_set():
                    return
                seed = (base_seed + index) % 2**32
                yield self._write_one(request, plan, encoded, seed, index, cancel, emit, slot)

    def _encode(self, text: str, *, special: bool) -> list[int]:
        return list(self.model.tokenizer(text, add_special_tokens=special)["input_ids"])

    def _encode_request(self, request: StoryRequest, plan: PromptPlan) -> EncodedRequest:
        """``plan`` in token ids, and the room it leaves for the story.

        Raises:
            ConfigError: The header and note leave too little room for the story.
        """
        header_ids = self._encode(plan.header, special=not plan.chat)
        opening_ids = self._encode(plan.opening, special=False) if plan.opening else []
        note = "" if plan.chat else authors_note_text(request.authors_note)
        note_ids = self._encode(note, special=False) if note else []
        room = self.context_length - len(header_ids) - len(note_ids)
        if room < max(8, self.context_length // 4):
            raise ConfigError(
                f"the prompt, memory, lorebook entries and author's note take "
                f"{len(header_ids) + len(note_ids)} tokens of the model's "
                f"{self.context_length}-token window: shorten them (or lower the lorebook's "
                "budget)"
            )
        return EncodedRequest(header_ids, opening_ids, note_ids, room)

    def _first_step(
        self, prompt: str, **options: Any
    ) -> tuple[StoryRequest, LoreSelection, PromptPlan, EncodedRequest]:
        """A request validated, its lore chosen, planned and encoded, as its first decoding
        step will read it."""
        request = self.make_request(prompt, **options)
        lore = self.select_lore(request)
        plan = self.plan(request, lore)
        return request, lore, plan, self._encode_request(request, plan)

    def context_preview(self, prompt: str, **options: Any) -> ContextPreview:
        """What the first decoding step of a request sends to the model, part by part.

        Args:
            prompt: As :meth:`stream`.
            **options: As :meth:`stream` (``mode``, ``memory``, ``authors_note``,
                ``lorebook``, ``max_new_tokens``, ...).

        Raises:
            ConfigError: As :meth:`make_request`, or the request does not fit the window.
        """
        from taleforge.generate.context import describe_context

        request, lore, plan, encoded = self._first_step(prompt, **options)
        return describe_context(
            self.model.tokenizer,
            plan,
            encoded.step((), request.params.max_new_tokens),
            lore,
            opening_ids=encoded.opening,
            window=self.context_length,
            lore_budget=0 if request.lorebook is None else request.lorebook.budget,
        )

    def alternatives(self, prompt: str, top: int = 8, **options: Any) -> list[TokenChoice]:
        """The model's ``top`` likeliest next tokens after a request's context (the one the
        first decoding step of ``prompt`` with these options would read: memory, lore, the
        window of the story), in its own distribution, before any sampler; an end of the
        story is left out. What the studio shows when the writer clicks a word.

        Raises:
            ConfigError: As :meth:`make_request`; the backend cannot show them.
        """
        import math

        request, _, _, encoded = self._first_step(prompt, **options)
        context = encoded.step((), request.params.max_new_tokens).ids
        eos = set(self.backend.eos_token_ids)
        choices = []
        for token, logprob in self.backend.next_token_logprobs(context, top + len(eos)):
            text = str(self.model.tokenizer.decode([token], skip_special_tokens=True))
            if token not in eos and text:
                choices.append(TokenChoice(text, token, math.exp(logprob)))
        return choices[:top]

    def _write_one(
        self,
        request: StoryRequest,
        plan: PromptPlan,
        encoded: EncodedRequest,
        seed: int,
        index: int,
        cancel: threading.Event,
        emit: Any,
        slot: Any,
    ) -> Story:
        tokenizer, params = self.model.tokenizer, request.params
        started = time.perf_counter()
        eos_ids = set(self.backend.eos_token_ids)
        sampler_tokens = self.sampler_tokens(params)

        generated: list[int] = []
        shown = 0
        first_token_at: float | None = None
        stop_hit = False

        def decode(ids: Sequence[int]) -> str:
            return str(tokenizer.decode(ids, skip_special_tokens=True))

        def show(piece: str) -> None:
            """Stream ``piece`` without the characters the finished story drops."""
            piece = CONTROL_RE.sub("", piece)
            if piece:
                emit(StreamChunk(index, piece))

        bans = phrase_bans(params)
        backtrack = Backtracker(bans, decode) if bans else None
        banned_at: int | None = None  # where a banned phrase begins in the new text

        def on_token(token_id: int) -> None:
            nonlocal shown, first_token_at, stop_hit, banned_at
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if token_id in eos_ids or banned_at is not None:
                return
            generated.append(token_id)
            text = decode(generated)
            if backtrack is not None:
                banned_at = bans.find(text, start=shown)  # none begins in what was shown
                if banned_at is not None:
                    return  # the step ends; the loop rewinds to where the phrase began
            if params.stop and len(generated) >= params.min_new_tokens:
                at = find_stop(text, params.stop)
                if at is not None:
                    if backtrack is not None:
                        banned_at = bans.find(text[:at], final=True, start=shown)
                        if banned_at is not None:
                            return  # it would end on a banned phrase: that is taken back
                    stop_hit = True
                    text = text[:at]
            limit = len(text) if stop_hit else stream_safe_length(text, params.stop)
            if backtrack is not None and not stop_hit:
                limit = min(limit, backtrack.shown_limit(generated, text))
            if limit > shown:
                show(text[shown:limit])
                shown = limit

        def should_stop() -> bool:
            return cancel.is_set() or stop_hit or banned_at is not None

        rng = self.backend.new_rng(seed)
        finish: FinishReason = "length"
        shifts = 0
        prompt_tokens = len(encoded.header) + len(encoded.opening)
        while len(generated) < params.max_new_tokens:
            window = encoded.step(generated, params.max_new_tokens - len(generated))
            if window.kept < len(encoded.opening) + len(generated):
                shifts += 1
            context, step = window.ids, window.new_tokens
            step_params = params
            taken_back = backtrack.forbidden.get(len(generated)) if backtrack else None
            if taken_back:  # after a rewind: one token, never one that began a ban here
                step = 1
                step_params = params.model_copy(
                    update={"logit_bias": {**params.logit_bias, **dict.fromkeys(taken_back, -100)}}
                )
            decode_step = DecodeStep(
                context=context,
                params=step_params,
                max_new_tokens=step,
                min_new_tokens=min(step, max(0, params.min_new_tokens - len(generated))),
                eos_ids=tuple(sorted(eos_ids)),
                pad_token_id=tokenizer.pad_token_id,
                sampler_tokens=sampler_tokens,
                earlier_tokens=tuple(generated),
            )
            before = len(generated)
            new_tokens = self.backend.decode(slot, decode_step, rng, on_token, should_stop)
            if cancel.is_set():
                finish = "cancelled"
                break
            ended = any(t in eos_ids for t in new_tokens) or len(generated) == before
            if backtrack is not None and not stop_hit:
                # a phrase found while writing, or one the story's end completes
                text = decode(generated)
                at = banned_at
                if at is None and (ended or len(generated) >= params.max_new_tokens):
                    at = bans.find(text, final=True)
                if at is not None:
                    backtrack.rewind(generated, text, at)
                    banned_at = None
                    continue
            if stop_hit:
                finish = "stop"
                break
            if ended:
                finish = "eos"
                break
        if backtrack is not None and backtrack.rewinds:
            log.debug("story %d: %d banned phrases taken back", index, backtrack.rewinds)
        if finish in ("eos", "length"):  # the stream ends with the whole text: what was held
            # back (a possible stop sequence or banned phrase that never came) is shown
            show(stream_tail(decode(generated), shown))
        return self._finish_story(
            request,
            plan,
            seed,
            generated,
            finish,
            prompt_tokens,
            started,
            first_token_at,
            shifts,
        )

    def _finish_story(
        self,
        request: StoryRequest,
        plan: PromptPlan,
        seed: int,
        generated: list[int],
        finish: FinishReason,
        prompt_tokens: int,
        started: float,
        first_token_at: float | None,
        shifts: int,
    ) -> Story:
        raw = self.model.tokenizer.decode(generated, skip_special_tokens=True)
        full_text, new_text, finish = story_texts(raw, request, plan, finish)
        elapsed = time.perf_counter() - started
        return Story(
            text=full_text,
            generated_text=new_text,
            prompt=request.prompt,
            mode=request.mode,
            genre=plan.genre.genre,
            genre_source=plan.genre.source,
            model=self.model.spec,
            backend=self.backend.name,
            seed=seed,
            params=request.params.model_copy(update={"seed": seed}),
            prompt_tokens=prompt_tokens,
            generated_tokens=len(generated),
            finish_reason=finish,
            seconds=round(elapsed, 4),
            time_to_first_token=None
            if first_token_at is None
            else round(first_token_at - started, 4),
            window_shifts=shifts,
            formatted_prompt=plan.header + plan.opening,
            token_ids=tuple(generated),
        )
