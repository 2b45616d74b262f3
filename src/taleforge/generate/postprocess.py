"""Pure text post-processing: stop sequences, whitespace, template markers, last sentence."""

from __future__ import annotations

import re
from collections.abc import Sequence

from taleforge.generate.prompts import TEMPLATE_MARKERS

_SENTENCE_END_RE = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")
_TRAILING_SPACE_RE = re.compile(r"[ \t]+\n")
_INNER_SPACES_RE = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")
#: Control characters other than tab and newline, and the replacement character of bad
#: bytes: dropped from a finished story (so phrase bans look through them too).
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop sequence in ``text``, or None."""
    positions = [i for s in stops if (i := text.find(s)) != -1]
    return min(positions) if positions else None


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the first stop sequence; returns the text and whether one was found."""
    index = find_stop(text, stops)
    return (text, False) if index is None else (text[:index], True)


def stream_safe_length(text: str, stops: Sequence[str]) -> int:
    """How much of ``text`` can be shown while streaming.

    Holds back a tail that could be the start of a stop sequence (so a stop sequence never
    flashes on screen) and an incomplete UTF-8 character (decoded as U+FFFD).
    """
    limit = len(text)
    while limit > 0 and text[limit - 1] == "\ufffd":
        limit -= 1
    for stop in stops:
        for size in range(min(len(stop) - 1, limit), 0, -1):
            if text[limit - size : limit] == stop[:size]:
                limit -= size
                break
    return limit


def stream_tail(text: str, shown: int) -> str:
    """What a finished stream still owes after ``shown`` characters of ``text``: the tail
    :func:`stream_safe_length` held back as the possible start of a stop sequence that never
    came, without an unfinished UTF-8 character (its bytes will not be completed now)."""
    return text.rstrip("\ufffd")[shown:]


def strip_template_markers(text: str) -> str:
    """Remove prompt-format markers (``[WP]``, ``<|im_end|>``, ...) that leaked into a story."""
    for marker in TEMPLATE_MARKERS:
        text = text.replace(marker, "")
    return text


def normalize_whitespace(text: str) -> str:
    """Unix newlines, no control characters or trailing spaces, at most one blank line in a
    row, trimmed ends."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = CONTROL_RE.sub("", text)
    text = _TRAILING_SPACE_RE.sub("\n", text)
    text = _INNER_SPACES_RE.sub(" ", text)
    text = _MANY_NEWLINES_RE.sub("\n\n", text)
    return text.strip()


def trim_to_sentence(text: str) -> str:
    """Drop an unfinished last sentence; a text without any sentence end is kept whole."""
    stripped = text.rstrip()
    matches = list(_SENTENCE_END_RE.finditer(stripped))
    if not matches:
        return stripped
    return stripped[: matches[-1].end()]


def finish_text(text: str, *, stops: Sequence[str], trim: bool) -> tuple[str, bool]:
    """The whole post-processing chain; returns the story and whether a stop sequence ended it."""
    text, stopped = cut_at_stop(text, stops)
    text = normalize_whitespace(strip_template_markers(text))
    if trim and not stopped:
        text = trim_to_sentence(text)
    return text, stopped
