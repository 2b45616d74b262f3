"""The story library: each writer's stories, every version of them, deletion with undo.

Every method takes the account it acts for and only ever sees that account's stories: a
story of another writer is "not found", exactly like one that does not exist, so ids cannot
be probed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from taleforge.errors import TaleforgeError
from taleforge.store.accounts import Account
from taleforge.store.db import Database
from taleforge.store.models import Rating, Story, StoryVersion, User, now

MAX_TITLE = 200
#: How long a deleted story can be restored.
UNDO_SECONDS = 600
VERSION_KINDS = ("save", "autosave", "generate", "edit", "restore", "rename")


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

    def to_dict(self) -> dict[str, Any]:
        data = self.__dict__.copy()
        for key in ("created_at", "updated_at", "deleted_at"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        return data


@dataclass(frozen=True)
class VersionRecord:
    number: int
    kind: str
    title: str
    text: str
    created_at: datetime
    words: int = field(default=0)


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
        with self.db.session() as session:
            story = self._own(session, account, story_id)
            return [
                VersionRecord(
                    v.number, v.kind, v.title, v.text, _aware(v.created_at), len(v.text.split())
                )
                for v in story.versions
            ]

    # -- writing ----------------------------------------------------------------------------

    def _add_version(self, session: Session, story: Story, kind: str) -> None:
        last = session.scalar(
            select(StoryVersion)
            .where(StoryVersion.story_id == story.id)
            .order_by(StoryVersion.number.desc())
            .limit(1)
        )
        if last is not None and last.text == story.text and last.title == story.title:
            return  # nothing changed: no new version
        number = (last.number if last is not None else 0) + 1
        session.add(
            StoryVersion(
                story_id=story.id, number=number, kind=kind, title=story.title, text=story.text
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
            self._add_version(session, story, kind)
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
        **fields: Any,
    ) -> StoryRecord:
        """Change a story's text and/or title (and generation fields); adds a version."""
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
            self._add_version(session, story, kind)
            session.flush()
            return self._record(session, story, account)

    def rename(self, account: Account, story_id: int, title: str) -> StoryRecord:
        return self.update(account, story_id, title=title, kind="rename")

    def restore_version(self, account: Account, story_id: int, number: int) -> StoryRecord:
        """Make an earlier version the current text (itself a new version: nothing is lost)."""
        with self.db.session() as session:
            story = self._own(session, account, story_id)
            version = session.scalar(
                select(StoryVersion).where(
                    StoryVersion.story_id == story.id, StoryVersion.number == number
                )
            )
            if version is None:
                raise StoryNotFound(f"story {story_id} has no version {number}")
            story.text, story.title = version.text, version.title
            story.updated_at = now()
            self._add_version(session, story, "restore")
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
