"""The story library: each writer's stories, every version of them, deletion with undo.

A story's versions form a tree: every save grows a new version from the one the writer is
looking at (the head), from an earlier one (a branch), or from nothing (a fresh draft). The
writer can move the head to any version without adding one, so trying an alternative costs
nothing and loses nothing.

Every method takes the account it acts for and only ever sees that account's stories: a
story of another writer is "not found", exactly like one that does not exist, so ids cannot
be probed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Final, Literal

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from taleforge.errors import TaleforgeError
from taleforge.generate.lore import Lorebook
from taleforge.store.accounts import Account
from taleforge.store.db import Database
from taleforge.store.models import Rating, Story, StoryVersion, User, now

MAX_TITLE = 200
#: How long a deleted story can be restored.
UNDO_SECONDS = 600
VERSION_KINDS = ("save", "autosave", "generate", "edit", "restore", "rename")


class _Head(Enum):
    HEAD = "head"


#: ``parent`` of :meth:`Library.update`: grow the new version from the current head.
HEAD: Final = _Head.HEAD


class StoryNotFound(TaleforgeError, LookupError):
    """No story with this id in the writer's library (never says whether another has it)."""


class LibraryError(TaleforgeError, ValueError):
    """A library request that cannot be done; the message says what to change."""


@dataclass(frozen=True)
class StoryRecord:
    """A story as the UI and API show it."""

    id: int
    title: str
    prompt: str
    genre: str | None
    mode: str
    model: str | None
    parameters: dict[str, Any]
    seed: int | None
    text: str
    created_at: datetime
    updated_at: datetime
    versions: int = 0
    rating: int | None = None
    deleted_at: datetime | None = None
    #: The number of the version shown (``text`` and ``title`` are its).
    head: int | None = None
    lorebook: Lorebook = field(default_factory=Lorebook)

    def to_dict(self) -> dict[str, Any]:
        data = self.__dict__.copy()
        for key in ("created_at", "updated_at", "deleted_at"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        data["lorebook"] = self.lorebook.model_dump(mode="json")
        return data


@dataclass(frozen=True)
class VersionRecord:
    """One version; ``parent`` is the number of the version it grew from (None: a root)."""

    number: int
    kind: str
    title: str
    text: str
    created_at: datetime
    words: int = field(default=0)
    parent: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": self.created_at.isoformat()}


def _version_record(version: StoryVersion) -> VersionRecord:
    return VersionRecord(
        number=version.number,
        kind=version.kind,
        title=version.title,
        text=version.text,
        created_at=_aware(version.created_at),
        words=len(version.text.split()),
        parent=version.parent,
    )


def title_of(title: str | None, prompt: str = "", text: str = "") -> str:
    """The given title, or the first line of the prompt or the story."""
    for candidate in (title, prompt, text):
        if candidate and candidate.strip():
            line = candidate.strip().splitlines()[0].strip()
            return line[: MAX_TITLE - 1] + "…" if len(line) > MAX_TITLE else line
    return "Untitled story"


def _check_title(title: str) -> str:
    title = title.strip()
    if not title:
        raise LibraryError("the title is empty: give the story a name")
    if len(title) > MAX_TITLE:
        raise LibraryError(f"the title is {len(title)} characters: use at most {MAX_TITLE}")
    return title


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC)."""
    from datetime import UTC

    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Library:
    """Stories in ``db``; ``undo_seconds`` is how long a deleted story can be restored."""

    def __init__(self, db: Database, undo_seconds: int = UNDO_SECONDS) -> None:
        self.db = db
        self.undo = timedelta(seconds=undo_seconds)

    # -- reading ----------------------------------------------------------------------------

    def _own(self, session: Session, account: Account, story_id: int, *, deleted: bool = False):
        story = session.get(Story, story_id) if 0 < story_id < 2**63 else None
        if story is None or story.user_id != account.id:
            raise StoryNotFound(f"no story {story_id} in your library")
        if (story.deleted_at is not None) != deleted:
            if deleted:
                raise StoryNotFound(f"story {story_id} is not deleted: nothing to restore")
            raise StoryNotFound(f"no story {story_id} in your library (it was deleted)")
        return story

    def _record(self, session: Session, story: Story, account: Account) -> StoryRecord:
        versions = session.scalar(
            select(func.count()).select_from(StoryVersion).where(StoryVersion.story_id == story.id)
        )
        rating = session.scalar(
            select(Rating.score).where(Rating.story_id == story.id, Rating.user_id == account.id)
        )
        return StoryRecord(
            id=story.id,
            title=story.title,
            prompt=story.prompt,
            genre=story.genre,
            mode=story.mode,
            model=story.model,
            parameters=dict(story.parameters or {}),
            seed=story.seed,
            text=story.text,
            created_at=_aware(story.created_at),
            updated_at=_aware(story.updated_at),
            versions=versions or 0,
            rating=rating,
            deleted_at=_aware(story.deleted_at) if story.deleted_at else None,
            head=story.head,
            lorebook=Lorebook.model_validate(story.lorebook or {}),
        )

    def get(self, account: Account, story_id: int) -> StoryRecord:
        with self.db.session() as session:
            return self._record(session, self._own(session, account, story_id), account)

    def search(
        self,
        account: Account,
        query: str = "",
        *,
        genre: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[StoryRecord]:
        """The writer's stories, newest first; ``query`` matches title or text (any case)."""
        self.purge()
        statement = select(Story).where(Story.user_id == account.id, Story.deleted_at.is_(None))
        if query.strip():
            escaped = query.strip().replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
            pattern = f"%{escaped}%"
            statement = statement.where(
                or_(Story.title.ilike(pattern, "\\"), Story.text.ilike(pattern, "\\"))
            )
        if genre:
            statement = statement.where(Story.genre == genre)
        statement = statement.order_by(Story.updated_at.desc(), Story.id.desc())
        statement = statement.limit(max(1, min(limit, 500))).offset(max(0, offset))
        with self.db.session() as session:
            return [self._record(session, s, account) for s in session.scalars(statement)]

    def versions(self, account: Account, story_id: int) -> list[VersionRecord]:
        """Every version of the story, by number, each with the parent it grew from."""
        with self.db.session() as session:
            story = self._own(session, account, story_id)
            return [_version_record(v) for v in story.versions]

    def version(self, account: Account, story_id: int, number: int) -> VersionRecord:
        """One version of the story (for a story's text at that point, e.g. to export it)."""
        with self.db.session() as session:
            story = self._own(session, account, story_id)
            return _version_record(self._version(session, story, number))

    def siblings(self, account: Account, story_id: int, number: int) -> list[int]:
        """The numbers of the versions that grew from the same parent as ``number`` (itself
        included, in order): the alternatives a writer can flip between."""
        with self.db.session() as session:
            links = self._links(session, self._own(session, account, story_id), number)
        return [n for n, parent in links.items() if parent == links[number]]

    def path(self, account: Account, story_id: int, number: int) -> list[int]:
        """The numbers from the root of ``number``'s branch to ``number`` itself."""
        with self.db.session() as session:
            links = self._links(session, self._own(session, account, story_id), number)
        path: list[int] = []
        step: int | None = number
        while step is not None and step not in path:  # a parent is always an earlier number
            path.append(step)
            step = links.get(step)
        return path[::-1]

    def _version(self, session: Session, story: Story, number: int) -> StoryVersion:
        version = session.scalar(
            select(StoryVersion).where(
                StoryVersion.story_id == story.id, StoryVersion.number == number
            )
        )
        if version is None:
            raise StoryNotFound(f"story {story.id} has no version {number}")
        return version

    def _links(self, session: Session, story: Story, number: int) -> dict[int, int | None]:
        """Each version's number with its parent's (texts are not read: they can be long)."""
        rows = session.execute(
            select(StoryVersion.number, StoryVersion.parent)
            .where(StoryVersion.story_id == story.id)
            .order_by(StoryVersion.number)
        )
        links = {version: parent for version, parent in rows}
        if number not in links:
            raise StoryNotFound(f"story {story.id} has no version {number}")
        return links

    # -- writing ----------------------------------------------------------------------------

    def _add_version(
        self, session: Session, story: Story, kind: str, parent: int | Literal[_Head.HEAD] | None
    ) -> None:
        """Make the story's text and title a version grown from ``parent`` and the head.

        A version the same as its parent is not added: the head moves to the parent.
        """
        if parent is HEAD:
            parent = story.head
        base = self._version(session, story, parent) if parent is not None else None
        if base is not None and base.text == story.text and base.title == story.title:
            story.head = base.number  # nothing changed: no new version
            return
        last = session.scalar(
            select(func.max(StoryVersion.number)).where(StoryVersion.story_id == story.id)
        )
        story.head = (last or 0) + 1
        session.add(
            StoryVersion(
                story_id=story.id,
                number=story.head,
                parent=parent,
                kind=kind,
                title=story.title,
                text=story.text,
            )
        )

    def create(
        self,
        account: Account,
        *,
        text: str,
        title: str | None = None,
        prompt: str = "",
        genre: str | None = None,
        mode: str = "story",
        model: str | None = None,
        parameters: dict[str, Any] | None = None,
        seed: int | None = None,
        kind: str = "save",
    ) -> StoryRecord:
        """Save a new story (its first version)."""
        with self.db.session() as session:
            story = Story(
                user_id=account.id,
                title=_check_title(title_of(title, prompt, text)),
                prompt=prompt,
                genre=genre,
                mode=mode,
                model=model,
                parameters=parameters or {},
                seed=seed,
                text=text,
            )
            session.add(story)
            session.flush()
            self._add_version(session, story, kind, parent=None)
            session.flush()
            return self._record(session, story, account)

    def update(
        self,
        account: Account,
        story_id: int,
        *,
        text: str | None = None,
        title: str | None = None,
        kind: str = "save",
        parent: int | Literal[_Head.HEAD] | None = HEAD,
        **fields: Any,
    ) -> StoryRecord:
        """Change a story's text and/or title (and generation fields); adds a version.

        Args:
            text, title: The new ones (None: the head's, unchanged).
            kind: What made the change (one of :data:`VERSION_KINDS`).
            parent: The version the new one grows from: :data:`HEAD` (the default: linear
                history), another version's number (a branch), or None (a fresh root draft).
            fields: Generation fields (prompt, genre, mode, model, parameters, seed).

        The new version becomes the head. One that is the same as its parent is not added
        (the head moves to the parent).

        Raises:
            StoryNotFound: No such story, or no version ``parent`` in it.
            LibraryError: An unknown kind or field, or a bad title.
        """
        if kind not in VERSION_KINDS:
            raise LibraryError(f"unknown version kind {kind!r}: use one of {VERSION_KINDS}")
        unknown = set(fields) - {"prompt", "genre", "mode", "model", "parameters", "seed"}
        if unknown:
            raise LibraryError(f"cannot change {sorted(unknown)} of a story")
        with self.db.session() as session:
            story = self._own(session, account, story_id)
            if text is not None:
                story.text = text
            if title is not None:
                story.title = _check_title(title)
            for key, value in fields.items():
                if value is not None:
                    setattr(story, key, value)
            story.updated_at = now()
            self._add_version(session, story, kind, parent)
            session.flush()
            return self._record(session, story, account)

    def checkout(self, account: Account, story_id: int, number: int) -> StoryRecord:
        """Show version ``number``: it becomes the head (text and title follow); no version is
        added, so moving between branches creates nothing."""
        with self.db.session() as session:
            story = self._own(session, account, story_id)
            version = self._version(session, story, number)
            story.text, story.title, story.head = version.text, version.title, version.number
            story.updated_at = now()
            session.flush()
            return self._record(session, story, account)

    def set_lorebook(self, account: Account, story_id: int, lorebook: Lorebook) -> StoryRecord:
        """Replace the story's lorebook (not a text version: the manuscript is unchanged)."""
        with self.db.session() as session:
            story = self._own(session, account, story_id)
            story.lorebook = lorebook.model_dump(mode="json")
            story.updated_at = now()
            session.flush()
            return self._record(session, story, account)

    def rename(self, account: Account, story_id: int, title: str) -> StoryRecord:
        return self.update(account, story_id, title=title, kind="rename")

    def restore_version(self, account: Account, story_id: int, number: int) -> StoryRecord:
        """Make an earlier version the current text: a new version grown from the head (the
        head's text stays a version: nothing is lost)."""
        with self.db.session() as session:
            story = self._own(session, account, story_id)
            version = self._version(session, story, number)
            story.text, story.title = version.text, version.title
            story.updated_at = now()
            self._add_version(session, story, "restore", HEAD)
            session.flush()
            return self._record(session, story, account)

    def delete(self, account: Account, story_id: int) -> datetime:
        """Move a story to the bin; returns until when :meth:`undelete` can bring it back."""
        with self.db.session() as session:
            story = self._own(session, account, story_id)
            story.deleted_at = now()
            return _aware(story.deleted_at) + self.undo

    def undelete(self, account: Account, story_id: int) -> StoryRecord:
        """Bring back a story deleted less than the undo window ago."""
        self.purge()
        with self.db.session() as session:
            story = self._own(session, account, story_id, deleted=True)
            story.deleted_at = None
            return self._record(session, story, account)

    def purge(self) -> int:
        """Erase stories deleted longer ago than the undo window; returns how many."""
        cutoff = now() - self.undo
        with self.db.session() as session:
            result = session.execute(
                delete(Story).where(Story.deleted_at.is_not(None), Story.deleted_at < cutoff)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def rate(self, account: Account, story_id: int, score: int, comment: str = "") -> StoryRecord:
        """Rate a story 1-5 (a new rating replaces the writer's earlier one)."""
        if not 1 <= int(score) <= 5:
            raise LibraryError(f"a rating is 1 to 5 stars, not {score}")
        with self.db.session() as session:
            story = self._own(session, account, story_id)
            rating = session.scalar(
                select(Rating).where(Rating.story_id == story.id, Rating.user_id == account.id)
            )
            if rating is None:
                session.add(
                    Rating(story_id=story.id, user_id=account.id, score=score, comment=comment)
                )
            else:
                rating.score, rating.comment, rating.created_at = score, comment, now()
            session.flush()
            return self._record(session, story, account)

    def ratings(self, account: Account | None = None) -> list[dict[str, Any]]:
        """Ratings with their stories (all writers', or one's), for the human evaluation."""
        statement = (
            select(Rating, Story, User.username)
            .join(Story, Rating.story_id == Story.id)
            .join(User, Rating.user_id == User.id)
        )
        if account is not None:
            statement = statement.where(Rating.user_id == account.id)
        with self.db.session() as session:
            return [
                {
                    "story_id": story.id,
                    "model": story.model,
                    "prompt": story.prompt,
                    "genre": story.genre,
                    "text": story.text,
                    "score": rating.score,
                    "comment": rating.comment,
                    "rater": rater,
                    "rated_at": _aware(rating.created_at).isoformat(),
                }
                for rating, story, rater in session.execute(statement.order_by(Rating.id))
            ]
