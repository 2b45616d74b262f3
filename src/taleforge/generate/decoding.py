"""The pieces between our sampling parameters and ``model.generate``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from taleforge.config import SamplingParams

#: How many story tokens from the end the author's note is inserted (as KoboldAI does), so it
#: steers what comes next without being the very last thing the model read.
AUTHORS_NOTE_DEPTH = 48


def generation_config(
    params: SamplingParams,
    *,
    max_new_tokens: int,
    pad_token_id: int | None,
    eos_token_id: int | list[int] | None,
) -> Any:
    """A transformers ``GenerationConfig`` that samples (or decodes greedily) and builds no
    logits processor of its own: ``generate`` gets ours, from
    :func:`taleforge.generate.sampling.logits_processors`, the list llama.cpp samples with.

    The neutral values are explicit: ``generate`` fills a value left unset from the model's
    ``generation_config.json`` or its own defaults (top-k 50), which would add processors
    the other backend does not have.
    """
    from transformers import GenerationConfig

    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": 0,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id,
        "do_sample": not params.greedy,
    }
    if not params.greedy:  # greedy decoding applies no warper (and warns about their flags)
        options.update(temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0)
    return GenerationConfig(**options)


def window_plan(story_length: int, remaining: int, room: int) -> tuple[int, int]:
    """Decide one decoding step of a story that may outgrow the context window.

    Args:
        story_length: Story tokens so far (opening plus generated).
        remaining: Tokens still to generate.
        room: Context tokens available for story plus new tokens (window minus header).

    Returns:
        ``(keep, step)``: how many of the latest story tokens to keep in context and how many
        new tokens to generate in this step. When everything fits, all is kept and all is
        generated; otherwise half the room is kept as context and half is generated.
    """
    if story_length + remaining <= room:
        return story_length, remaining
    step = min(remaining, max(room // 2, 1))
    return min(story_length, room - step), step


@dataclass(frozen=True)
class StepContext:
    """One decoding step's context, in the order the model reads it, and its new tokens."""

    header: tuple[int, ...]
    #: The kept story tokens before the author's note, and after it (the last
    #: :data:`AUTHORS_NOTE_DEPTH`); all of them in ``story_before_note`` without a note.
    story_before_note: tuple[int, ...]
    note: tuple[int, ...]
    story_after_note: tuple[int, ...]
    #: Tokens this step may write (the room kept free after the context).
    new_tokens: int

    @property
    def ids(self) -> list[int]:
        """The context the backend receives."""
        return [*self.header, *self.story_before_note, *self.note, *self.story_after_note]

    @property
    def kept(self) -> int:
        """Story tokens in the context (the latest ones)."""
        return len(self.story_before_note) + len(self.story_after_note)


def _split_story(
    story_ids: Sequence[int], keep: int, note_ids: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The last ``keep`` story tokens, split where the author's note goes."""
    tail = tuple(story_ids[len(story_ids) - keep :]) if keep > 0 else ()
    at = max(0, len(tail) - AUTHORS_NOTE_DEPTH) if note_ids else len(tail)
    return tail[:at], tail[at:]


def step_context(
    header_ids: Sequence[int],
    story_ids: Sequence[int],
    remaining: int,
    room: int,
    note_ids: Sequence[int] = (),
) -> StepContext:
    """The next decoding step of a story: what :func:`window_plan` keeps of ``story_ids``,
    after the header and with the author's note near the end (see :func:`window_plan` for
    ``remaining`` and ``room``)."""
    keep, step = window_plan(len(story_ids), remaining, room)
    before, after = _split_story(story_ids, keep, note_ids)
    return StepContext(tuple(header_ids), before, tuple(note_ids), after, step)


@dataclass(frozen=True)
class EncodedRequest:
    """A planned request in the model's token ids: what every decoding step's context is
    built from (the one encoding the decoding loop and the context preview share)."""

    header: list[int]
    opening: list[int]
    note: list[int]
    #: Context tokens left for the story and its new tokens (the window minus the rest).
    room: int

    def step(self, generated: Sequence[int], remaining: int) -> StepContext:
        """The context of the next decoding step after ``generated`` new tokens."""
        story = [*self.opening, *generated]
        return step_context(self.header, story, remaining, self.room, self.note)


def build_context(
    header_ids: Sequence[int],
    story_ids: Sequence[int],
    keep: int,
    note_ids: Sequence[int] = (),
) -> list[int]:
    """Header + the last ``keep`` story tokens, with the author's note inserted near the end."""
    before, after = _split_story(story_ids, keep, note_ids)
    return [*header_ids, *before, *note_ids, *after]


class TokenSink:
    """A transformers streamer that hands each new token id to a callback.

    ``generate`` first puts the prompt, then one token per step; the prompt is skipped.
    """

    def __init__(self, on_token: Callable[[int], None]) -> None:
        self._on_token = on_token
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self._on_token(int(token_id))

    def end(self) -> None:
        """Called by ``generate`` when it finishes; nothing to flush."""


def stopping_criteria(should_stop: Callable[[], bool]) -> Any:
    """A criteria list that ends ``generate`` at the next token once ``should_stop()`` is true."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), should_stop(), dtype=torch.bool)

    return StoppingCriteriaList([_Stop()])
