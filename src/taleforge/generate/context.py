"""What the model reads: a decoding step's context, part by part, for the writer to see.

:meth:`StoryGenerator.context_preview <taleforge.generate.StoryGenerator.context_preview>`
plans, encodes and windows a request exactly as the decoding loop does, and hands the first
step's context here to be named: the instructions and scaffold, the memory, each lorebook
entry, the kept window of the story and the author's note, in the order the model reads
them. The parts' token ids, concatenated, are the context the backend receives.

The header is encoded as one text (its tokens may cross from one part into the next), so
it is split by the tokenizer's character offsets: a token belongs to the part its first
character is in. A tokenizer without offsets (a "slow" one) shows the header as one part.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taleforge.generate.decoding import StepContext
from taleforge.generate.lore import LoreSelection
from taleforge.generate.prompts import PromptPlan

#: The kinds of part, in the words the studio's context viewer uses.
PART_KINDS: tuple[str, ...] = ("instructions", "memory", "lore", "story", "note")


@dataclass(frozen=True)
class ContextPart:
    """One part of the context: its kind (one of :data:`PART_KINDS`), its text as the model
    reads it, its length in tokens and, for a lorebook entry, the entry's name."""

    kind: str
    text: str
    tokens: int
    name: str = ""
    #: The part's token ids (``tokens`` of them).
    token_ids: tuple[int, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The part as JSON (without its token ids)."""
        return {"kind": self.kind, "name": self.name, "text": self.text, "tokens": self.tokens}


@dataclass(frozen=True)
class ContextPreview:
    """A decoding step's context and how the window is spent."""

    #: In the order the model reads them.
    parts: tuple[ContextPart, ...]
    #: The model's context length (tokens).
    window: int
    #: Tokens of all parts together.
    total: int
    #: Tokens kept free for the step's new text.
    reserved: int
    #: Characters of the story's beginning outside the window.
    dropped_chars: int
    #: Names of triggered lorebook entries that did not fit the lorebook's budget.
    skipped_lore: tuple[str, ...]
    #: The lorebook's budget (tokens; 0 without a lorebook).
    lore_budget: int

    @property
    def token_ids(self) -> list[int]:
        """The context, as the backend receives it."""
        return [token for part in self.parts for token in part.token_ids]

    def to_dict(self) -> dict[str, Any]:
        """The preview as JSON."""
        return {
            "parts": [part.to_dict() for part in self.parts],
            "window": self.window,
            "total": self.total,
            "reserved": self.reserved,
            "dropped_chars": self.dropped_chars,
            "skipped_lore": list(self.skipped_lore),
            "lore_budget": self.lore_budget,
        }


def describe_context(
    tokenizer: Any,
    plan: PromptPlan,
    step: StepContext,
    lore: LoreSelection,
    *,
    opening_ids: Sequence[int],
    window: int,
    lore_budget: int,
) -> ContextPreview:
    """Name the parts of ``step``'s context (built from ``plan`` with ``lore``'s entries).

    Args:
        tokenizer: The model's tokenizer (the one that encoded ``plan``).
        plan: The planned request.
        step: The decoding step (:meth:`~taleforge.generate.decoding.EncodedRequest.step`).
        lore: The triggered entries, whose texts ``plan`` holds.
        opening_ids: ``plan.opening`` encoded (the story's tokens before the first step).
        window: The model's context length.
        lore_budget: The lorebook's budget.
    """

    def part(kind: str, ids: Sequence[int], name: str = "") -> ContextPart:
        text = str(tokenizer.decode(list(ids), skip_special_tokens=False))
        return ContextPart(kind, text, len(ids), name, tuple(ids))

    parts = [part(kind, ids, name) for kind, name, ids in _header_runs(tokenizer, plan, step, lore)]
    for kind, ids in (
        ("story", step.story_before_note),
        ("note", step.note),
        ("story", step.story_after_note),
    ):
        if ids:
            parts.append(part(kind, ids))
    return ContextPreview(
        parts=tuple(parts),
        window=window,
        total=len(step.ids),
        reserved=step.new_tokens,
        dropped_chars=_dropped_chars(tokenizer, plan.opening, opening_ids, step.kept),
        skipped_lore=lore.skipped,
        lore_budget=lore_budget,
    )


def _offsets(tokenizer: Any, text: str, ids: Sequence[int], special: bool) -> list[int] | None:
    """Where each of ``ids`` (``text`` encoded) begins in ``text``; None when the tokenizer
    gives no offsets (or encodes differently with them)."""
    try:
        encoded = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    except NotImplementedError:  # a slow tokenizer
        return None
    if list(encoded["input_ids"]) != list(ids):
        return None
    return [int(start) if start < end else -1 for start, end in encoded["offset_mapping"]]


def _header_runs(
    tokenizer: Any, plan: PromptPlan, step: StepContext, lore: LoreSelection
) -> list[tuple[str, str, list[int]]]:
    """The header's tokens as runs of (kind, name, ids), in order."""
    header = list(step.header)
    starts = _offsets(tokenizer, plan.header, header, special=not plan.chat)
    if not header:
        return []
    if starts is None or not plan.spans:
        return [("instructions", "", header)]
    # Each part begins at its span; whitespace after a span (the line breaks between
    # memory and lore) stays with it, other text after it is instructions again.
    names = iter(entry.label for entry in lore.entries)
    bounds: list[tuple[int, str, str]] = [(0, "instructions", "")]
    for number, span in enumerate(plan.spans):
        name = next(names, "") if span.kind == "lore" else ""
        bounds.append((span.start, span.kind, name))
        after = plan.spans[number + 1].start if number + 1 < len(plan.spans) else None
        if plan.header[span.end : after].strip():
            bounds.append((span.end, "instructions", ""))
    positions = [position for position, _, _ in bounds]
    runs: list[tuple[int, list[int]]] = []  # (index in bounds, ids)
    for token, start in zip(header, starts, strict=True):
        # a special token of no width (a BOS) joins the run before it
        at = runs[-1][0] if start < 0 and runs else bisect.bisect_right(positions, start) - 1
        if runs and runs[-1][0] == at:
            runs[-1][1].append(token)
        else:
            runs.append((max(at, 0), [token]))
    return [(bounds[at][1], bounds[at][2], ids) for at, ids in runs]


def _dropped_chars(tokenizer: Any, opening: str, ids: Sequence[int], kept: int) -> int:
    """Characters at the start of ``opening`` (encoded: ``ids``) whose tokens are not among
    the last ``kept``."""
    dropped = len(ids) - kept
    if dropped <= 0:
        return 0
    starts = _offsets(tokenizer, opening, ids, special=False)
    if starts is not None and starts[dropped] >= 0:
        return starts[dropped]
    kept_text = str(tokenizer.decode(list(ids[dropped:]), skip_special_tokens=True))
    return max(0, len(opening) - len(kept_text))
