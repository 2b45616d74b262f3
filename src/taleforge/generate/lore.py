"""A story's lorebook (world info): entries the model sees only while they matter.

Each entry has trigger keys (words, or regular expressions) and a text. When a key appears
in the recent part of the manuscript (its last ``scan_chars`` characters), the entry's text
goes into the model's context beside the memory, as long as the triggered entries fit in
the lorebook's token ``budget`` (in the order the writer listed them). This module is the
one definition of an entry, a lorebook and their bounds: the library stores it, the API
bodies and the studio take it from here.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

#: Most entries in one lorebook, keys in one entry, characters in one key and one text.
MAX_ENTRIES = 200
MAX_KEYS = 20
MAX_KEY_CHARS = 100
MAX_TEXT_CHARS = 4_000

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
        for key in self.keys:
            _compile(key, self.regex)
        return self

    def pattern(self) -> re.Pattern[str]:
        """One pattern matching any key (whole words for plain keys)."""
        parts = [key if self.regex else rf"(?<!\w){re.escape(key)}(?!\w)" for key in self.keys]
        flags = 0 if self.case_sensitive else re.IGNORECASE
        return re.compile("|".join(f"(?:{part})" for part in parts), flags)


def _compile(key: str, regex: bool) -> None:
    if regex:
        try:
            re.compile(key)
        except re.error as exc:
            raise ValueError(f"the key {key!r} is not a regular expression: {exc}") from None


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
