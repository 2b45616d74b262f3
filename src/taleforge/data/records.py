"""The unit of data preparation: one story (or poem, dialogue) with what is known about it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from taleforge.errors import TaleforgeError


class DataError(TaleforgeError, ValueError):
    """A dataset cannot be read or prepared; the message names the file, row and fix."""


@dataclass(frozen=True)
class Record:
    """One piece of writing read from a dataset."""

    text: str
    prompt: str | None = None
    genre: str | None = None
    title: str | None = None
    #: Where it came from, for messages: ``stories.csv:row 12``.
    source: str = ""
    #: How the genre was set: column, tag, classifier, or none.
    genre_source: str = "none"
    #: What it is: story, poem, dialogue or fable (None: not said; treated as a story).
    kind: str | None = None
    #: The work it belongs to: consecutive records of one group are one work's parts.
    group: str | None = None
    #: Its place among its work's parts (0 = the opening, or a whole work).
    part: int = 0
    #: Whether the work ends with this record (False: a later part continues it).
    ends: bool = True

    def with_(self, **changes: object) -> Record:
        return replace(self, **changes)  # type: ignore[arg-type]
