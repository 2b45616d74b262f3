"""Banned phrases: words a writer never wants to read (a cliché, a tic of the model).

A ban is enforced while writing, by backtracking (as KoboldCpp's phrase banning and the
antislop sampler do): when a banned phrase appears, the story is rewound to the token where
it began and that token is forbidden there, so the model writes something else. The
generator does the rewinding; this module finds the phrases and says how much of a growing
text is safe to show, so streamed text never shows a phrase that is then taken back.

Matching is case-insensitive, on whole words, and any run of whitespace matches a space:
"the old man" matches "The old\\nman," but neither "the old mango" nor "bathe old man".
It looks through the characters a finished story drops (control characters, the
replacement character of bad bytes), which would otherwise join a banned word back together.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from taleforge.config import SamplingParams
from taleforge.generate.postprocess import CONTROL_RE

_SPACE = re.compile(r"\s+")


def normalize(phrase: str) -> str:
    """A phrase as it is compared: lower-case, single spaces, no outer space."""
    return _SPACE.sub(" ", phrase).strip().lower()


def _word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _visible(text: str) -> tuple[str, Sequence[int]]:
    """``text`` without what a finished story drops, and where each kept character was (a
    range, not a list, in the usual case of nothing dropped: this runs at every token)."""
    if not CONTROL_RE.search(text):
        return text, range(len(text))
    where = [i for i, char in enumerate(text) if not CONTROL_RE.match(char)]
    return "".join(text[i] for i in where), where


class PhraseBans:
    """A compiled list of banned phrases."""

    def __init__(self, phrases: Iterable[str]) -> None:
        self.phrases = tuple(sorted({p for p in map(normalize, phrases) if p}))
        self._prefixes = {p[:n] for p in self.phrases for n in range(1, len(p) + 1)}
        self._longest = max((len(p) for p in self.phrases), default=0)
        alternatives = "|".join(
            (r"(?<![\w])" if _word(p[0]) else "")
            + r"\s+".join(map(re.escape, p.split(" ")))
            + (r"(?![\w])" if _word(p[-1]) else "")
            for p in sorted(self.phrases, key=len, reverse=True)
        )
        self._pattern = re.compile(alternatives, re.IGNORECASE) if self.phrases else None

    def __bool__(self) -> bool:
        return bool(self.phrases)

    def find(self, text: str, *, final: bool = False, start: int = 0) -> int | None:
        """Where the first banned phrase in ``text`` (from ``start`` on) begins, or None.

        A phrase that ends the text and ends in a letter is only a match once the text is
        ``final``: the next character could still make it another word ("man" → "mango").
        """
        if self._pattern is None:
            return None
        seen, where = _visible(text)
        for match in self._pattern.finditer(seen, bisect.bisect_left(where, start)):
            if match.end() == len(seen) and not final and _word(seen[-1]):
                continue
            return where[match.start()]
        return None

    def safe_length(self, text: str) -> int:
        """How much of ``text`` can be shown: everything before the earliest position from
        which the rest of the text could still become a banned phrase."""
        if not self.phrases:
            return len(text)
        seen, where = _visible(text)
        safe = self._safe_visible(seen)
        return where[safe] if safe < len(seen) else len(text)

    def _safe_visible(self, text: str) -> int:
        safe = len(text)
        start = len(text) - 1
        while start >= 0:
            tail = _SPACE.sub(" ", text[start:]).lower()
            if len(tail) > self._longest:
                break
            if tail in self._prefixes and (
                start == 0 or not _word(text[start - 1]) or not _word(tail[0])
            ):
                safe = start
            start -= 1
        return safe


#: Tokens forbidden at one position before the rewind goes one token further back.
MAX_TRIES_PER_POSITION = 32


class Backtracker:
    """The generator's side of the bans for one story: how much is safe to show, and where
    to rewind to when a banned phrase appears.

    Args:
        bans: The compiled bans.
        decode: Token ids to text (the tokenizer's decode, special tokens skipped).
    """

    def __init__(self, bans: PhraseBans, decode: Callable[[Sequence[int]], str]) -> None:
        self.bans = bans
        self.decode = decode
        #: Position in the new tokens -> tokens taken back there (with the same text before).
        self.forbidden: dict[int, set[int]] = {}
        #: Banned phrases taken back so far.
        self.rewinds = 0

    def _tokens_before(self, tokens: Sequence[int], text: str, offset: int) -> int:
        """How many tokens write the text before ``offset`` without reaching past it."""
        count = len(tokens)
        while count > 0:
            count -= 1
            before = self.decode(tokens[:count])
            if len(before) <= offset and text.startswith(before):
                return count
        return 0

    def shown_limit(self, tokens: Sequence[int], text: str) -> int:
        """How much of ``text`` (the decoded ``tokens``) can be shown: what
        :meth:`PhraseBans.safe_length` allows, back to a token boundary (a rewind takes
        whole tokens back, and the token in which a phrase begins may be rewritten)."""
        safe = self.bans.safe_length(text)
        if safe >= len(text):
            return len(text)
        before = self.decode(tokens[: self._tokens_before(tokens, text, safe)])
        # an unfinished UTF-8 character at the boundary may still become another one
        return len(before.rstrip("\ufffd"))

    def rewind(self, tokens: list[int], text: str, at: int) -> None:
        """Take back the token in which the banned phrase at ``at`` begins, and all after it
        (``tokens`` is cut in place); that token is forbidden there from now on."""
        count = self._tokens_before(tokens, text, at)
        while count > 0 and len(self.forbidden.get(count, ())) >= MAX_TRIES_PER_POSITION:
            count -= 1  # every likely token here began a ban: change the one before
        self.forbidden = {p: s for p, s in self.forbidden.items() if p <= count}
        self.forbidden.setdefault(count, set()).add(tokens[count])
        del tokens[count:]
        self.rewinds += 1


@functools.lru_cache(maxsize=64)
def _compiled(phrases: tuple[str, ...]) -> PhraseBans:
    return PhraseBans(phrases)


@functools.lru_cache(maxsize=1)
def default_cliches() -> tuple[str, ...]:
    """The shipped cliché list (``taleforge/assets/cliches.txt``: one phrase per line,
    ``#`` comments), made by ``make cliche-list`` from the story model's own stories."""
    path = Path(__file__).resolve().parents[1] / "assets" / "cliches.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def phrase_bans(params: SamplingParams) -> PhraseBans:
    """The bans of a request: its ``banned_phrases``, and the shipped list when it asks."""
    phrases = params.banned_phrases + (default_cliches() if params.ban_cliches else ())
    return _compiled(tuple(sorted(set(phrases))))
