"""The tables: users, API tokens, log-in sessions, stories and their versions, ratings, cached
generations.

Alembic migrations under ``migrations/versions`` create and change them; these classes are
the current shape (a test checks that the migrated schema matches them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def now() -> datetime:
    return datetime.now(UTC)


#: Constraint names that are the same on every database, so migrations can refer to them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    #: argon2 hash; NULL for the built-in local user of anonymous mode (cannot log in).
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=now)
    password_changed_at: Mapped[datetime] = mapped_column(default=now)

    stories: Mapped[list[Story]] = relationship(back_populates="user", passive_deletes=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    #: The first characters of the token, shown in lists so a writer can tell tokens apart.
    prefix: Mapped[str] = mapped_column(String(16))
    #: SHA-256 of the whole token (tokens are long random strings: no slow hash needed).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=now)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class LoginSession(Base):
    """A browser's log-in. The cookie carries a random session id, this table its SHA-256 (a
    copy of the database gives no usable cookie); deleting the row logs that browser out."""

    __tablename__ = "login_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=now)
    #: Updated at most once a minute while the session is used (for the idle lifetime).
    last_seen_at: Mapped[datetime] = mapped_column(default=now)


class Story(Base):
    __tablename__ = "stories"
    __table_args__ = (Index("ix_stories_user_updated", "user_id", "updated_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text, default="")
    genre: Mapped[str | None] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(32), default="story")
    model: Mapped[str | None] = mapped_column(String(300))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text, default="")
    #: The version the writer is looking at (``text`` and ``title`` are its); NULL before the
    #: first version.
    head: Mapped[int | None] = mapped_column(Integer)
    #: The story's lorebook as JSON (taleforge.generate.lore.Lorebook); ``{}`` is the empty
    #: one, its absent fields read as Lorebook's own defaults.
    lorebook: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now)
    #: Set when deleted; the story can be restored until the undo window has passed.
    deleted_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="stories")
    versions: Mapped[list[StoryVersion]] = relationship(
        back_populates="story", passive_deletes=True, order_by="StoryVersion.number"
    )


class StoryVersion(Base):
    """One state of a story: every save, autosave, generation step, edit and restore.

    The versions of a story form a tree: each grew from its ``parent`` (another version's
    ``number`` in the same story; NULL for a root, the first draft or a fresh start).
    """

    __tablename__ = "story_versions"
    __table_args__ = (UniqueConstraint("story_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    parent: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=now)

    story: Mapped[Story] = relationship(back_populates="versions")


class Rating(Base):
    """A writer's 1-5 rating of a story (feeds the human evaluation)."""

    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("story_id", "user_id"),
        CheckConstraint("score >= 1 AND score <= 5", name="score_1_to_5"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=now)


class CachedGeneration(Base):
    """A finished generation of a seeded request, keyed by a hash of everything that shaped it."""

    __tablename__ = "generation_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(300))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=now)
    last_used_at: Mapped[datetime] = mapped_column(default=now)
    hits: Mapped[int] = mapped_column(Integer, default=0)
