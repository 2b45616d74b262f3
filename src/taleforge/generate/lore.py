"""A story's lorebook (world info): entries the model sees only while they matter.

Each entry has trigger keys (words, or regular expressions) and a text. When a key appears
in the recent part of the manuscript (its last ``scan_chars`` characters), the entry's text
goes into the model's context beside the memory, as long as the triggered entries fit in
the lorebook's token ``budget`` (in the order the writer listed them). This module is the
one definition of an entry, a lorebook and their bounds: the library stores it, the API
bodies and the studio take it from here; :meth:`Lorebook.triggered` is the one definition
of which entries a text brings in.

Keys are written by the writer (or by any client of the API), and a regular expression can
take exponential time on a short text ("catastrophic backtracking": ``(a|aa)+$``). Keys are
compiled and searched with the ``regex`` package, whose searches take a ``timeout``: a
search that runs past :data:`SEARCH_TIMEOUT` counts as no match, and one lorebook's scan
stops searching after :data:`SCAN_TIMEOUT` in all.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import regex
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from taleforge.errors import ConfigError

log = logging.getLogger(__name__)

#: Most entries in one lorebook, keys in one entry, characters in one key and one text.
MAX_ENTRIES = 200
MAX_KEYS = 20
MAX_KEY_CHARS = 100
MAX_TEXT_CHARS = 4_000
#: Seconds one entry's search may take before it counts as no match, and seconds one
#: lorebook's whole scan may take (entries not searched by then are not inserted).
SEARCH_TIMEOUT = 0.1
SCAN_TIMEOUT = 1.0

Key = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_KEY_CHARS)
]


class LoreEntry(BaseModel):
    """One entry: what triggers it and what the model then reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: tuple[Key, ...] = Field(
        ...,
        min_length=1,
        max_length=MAX_KEYS,
        description="Words (or regular expressions, with regex) that bring the entry in.",
    )
    text: str = Field(
        ...,
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="What the model reads while the entry is triggered.",
    )
    name: str = Field("", max_length=MAX_KEY_CHARS, description="A label for the writer.")
    regex: bool = Field(False, description="The keys are regular expressions.")
    case_sensitive: bool = Field(False, description="Keys match only in the same case.")
    enabled: bool = Field(True, description="Off: never inserted (kept for later).")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the entry's text is empty: write what the model should know")
        return value.strip()

    @model_validator(mode="after")
    def _keys_compile(self) -> LoreEntry:
        if self.regex:
            for key in self.keys:
                try:
                    regex.compile(key)
                except regex.error as exc:
                    raise ValueError(
                        f"the key {key!r} is not a regular expression ({exc}): fix it, or "
                        "set regex to false to match it as a plain word"
                    ) from None
        try:
            self.pattern()
        except regex.error as exc:  # each compiles alone; together they do not
            raise ValueError(f"the keys do not combine into one pattern ({exc})") from None
        return self

    @property
    def label(self) -> str:
        """What the writer calls the entry: its name, or its first key."""
        return self.name or self.keys[0]

    def pattern(self) -> Any:
        """One compiled ``regex`` pattern matching any key (whole words for plain keys)."""
        return _pattern(self.keys, self.regex, self.case_sensitive)

    def matches(self, text: str, timeout: float = SEARCH_TIMEOUT) -> bool:
        """Whether a key occurs in ``text``; a search longer than ``timeout`` seconds counts
        as no match (a key that backtracks catastrophically never blocks generation)."""
        try:
            return self.pattern().search(text, timeout=timeout) is not None
        except TimeoutError:
            log.warning("lore entry %r: its keys took over %.2f s to search", self.label, timeout)
            return False


@functools.lru_cache(maxsize=1024)
def _pattern(keys: tuple[str, ...], is_regex: bool, case_sensitive: bool) -> Any:
    parts = [key if is_regex else rf"(?<!\w){regex.escape(key)}(?!\w)" for key in keys]
    flags = 0 if case_sensitive else regex.IGNORECASE
    return regex.compile("|".join(f"(?:{part})" for part in parts), flags)


@dataclass(frozen=True)
class LoreSelection:
    """The entries a text brings into the context, and those that did not fit the budget."""

    #: Inserted, in the writer's order.
    entries: tuple[LoreEntry, ...] = ()
    #: Labels (name or first key) of triggered entries over the budget.
    skipped: tuple[str, ...] = ()

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(entry.text for entry in self.entries)


class Lorebook(BaseModel):
    """A story's entries and how much of the context they may take."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entries: tuple[LoreEntry, ...] = Field((), max_length=MAX_ENTRIES)
    budget: int = Field(
        256, ge=0, le=8_192, description="Most tokens the triggered entries take together."
    )
    scan_chars: int = Field(
        2_000,
        ge=1,
        le=200_000,
        description="How much of the manuscript's end is searched for keys (characters).",
    )

    def triggered(self, text: str, count_tokens: Callable[[str], int]) -> LoreSelection:
        """The entries whose keys occur in the last ``scan_chars`` characters of ``text``.

        Entries are taken in the writer's order while their token counts (by
        ``count_tokens``) add up to at most ``budget``; one that does not fit is skipped,
        and a later, smaller one may still fit.
        """
        tail = text[-self.scan_chars :]
        deadline = time.monotonic() + SCAN_TIMEOUT
        taken: list[LoreEntry] = []
        skipped: list[str] = []
        used = 0
        for entry in self.entries:
            if not entry.enabled:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("lorebook scan over %.1f s: later entries not searched", SCAN_TIMEOUT)
                break
            if not entry.matches(tail, timeout=min(SEARCH_TIMEOUT, left)):
                continue
            tokens = count_tokens(entry.text)
            if used + tokens > self.budget:
                skipped.append(entry.label)
                continue
            taken.append(entry)
            used += tokens
        return LoreSelection(tuple(taken), tuple(skipped))


def as_lorebook(value: Lorebook | Mapping[str, Any] | None) -> Lorebook | None:
    """A :class:`Lorebook` from itself or its JSON form (None stays None).

    Raises:
        ConfigError: The value is not a valid lorebook; the message names the field.
    """
    if value is None or isinstance(value, Lorebook):
        return value
    try:
        return Lorebook.model_validate(value)
    except ValidationError as exc:
        problems = []
        for error in exc.errors()[:3]:
            where = "lorebook" + "".join(
                f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
            )
            problems.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')}")
        raise ConfigError("the lorebook is invalid: " + "; ".join(problems)) from None
