"""The database: a SQLite file by default, PostgreSQL when ``TALEFORGE_DATABASE_URL`` says so.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed save is on disk before the
request is answered, so a server killed a moment later still has it. The schema is created
and upgraded by Alembic migrations on first start (``Database.migrate``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from taleforge.errors import ConfigError, TaleforgeError
from taleforge.files import private_dir, private_file

log = logging.getLogger(__name__)

ENV_URL = "TALEFORGE_DATABASE_URL"
MIGRATIONS = Path(__file__).with_name("migrations")


class StoreError(TaleforgeError, RuntimeError):
    """The database cannot be reached or used."""


def default_url() -> str:
    """``TALEFORGE_DATABASE_URL`` or a SQLite file in the user's data directory."""
    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL]
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'taleforge' / 'taleforge.db'}"


def parse_url(url: str) -> URL:
    """The URL with the driver taleforge ships (psycopg 3 for PostgreSQL)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"database URL {url!r} is not valid: use sqlite:///path/to/taleforge.db or "
            "postgresql://user:password@host:5432/dbname"
        ) from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"database {parsed.get_backend_name()!r} is not supported: use SQLite or PostgreSQL"
        )
    return parsed


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _private_sqlite_file(path: Path) -> None:
    """Create the database file (and its folder) owner-only before SQLite opens it: it holds
    password hashes and every story. SQLite gives its WAL and shared-memory files the same
    permissions. A database left readable by others is made owner-only, with a warning."""
    try:
        private_dir(path.parent)
        exposed = [
            file
            for file in (path, *(path.with_name(path.name + end) for end in ("-wal", "-shm")))
            if file.exists() and file.stat().st_mode & 0o077
        ]
        if not path.exists():
            private_file(path)
    except OSError as exc:
        raise StoreError(
            f"cannot create the database {path}: {exc.strerror}. Point "
            f"--serve.database-url (or ${ENV_URL}) to a writable place"
        ) from None
    for file in exposed:
        if private_file(file):
            log.warning("%s was readable by other users: made it owner-only (0600)", file)
        else:
            log.warning("%s is readable by other users and not yours: chmod 600 it", file)


class Database:
    """An engine and a session factory for one database URL."""

    def __init__(self, url: str | None = None) -> None:
        self.url = parse_url(url or default_url())
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        options: dict[str, Any] = {}
        if self.is_sqlite:
            database = self.url.database
            if database and database != ":memory:":
                _private_sqlite_file(Path(database).expanduser())
            options["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            options.update(pool_pre_ping=True, pool_size=5, max_overflow=10)
        self.engine: Engine = create_engine(self.url, **options)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits at the end of the block and rolls back on error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    # -- schema --------------------------------------------------------------------------

    def _alembic(self, connection: Any) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        return config

    def migrate(self, revision: str = "head") -> None:
        """Create or upgrade the schema to ``revision`` (idempotent; safe on every start).

        Raises:
            StoreError: The database cannot be reached (with the URL, password hidden).
        """
        from alembic import command

        try:
            with self.engine.begin() as connection:
                if not self.is_sqlite:
                    # Several app processes may start at once: one migrates, the others wait.
                    connection.execute(text("SELECT pg_advisory_xact_lock(7860)"))
                else:
                    # pysqlite runs DDL outside any transaction: a process killed midway
                    # left half a schema under the old revision, and every later start
                    # failed ("duplicate column"). One explicit transaction makes it all or
                    # nothing (and serializes processes that start at once).
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                command.upgrade(self._alembic(connection), revision)
        except OperationalError as exc:
            raise StoreError(
                f"cannot open the database {self!r}: {str(exc.orig).strip()}. Check that it "
                f"runs and the URL (--serve.database-url or ${ENV_URL}) is right"
            ) from None

    def downgrade(self, revision: str) -> None:
        from alembic import command

        with self.engine.begin() as connection:
            command.downgrade(self._alembic(connection), revision)

    def revision(self) -> str | None:
        """The schema revision the database is at (None for an empty database)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def tables(self) -> set[str]:
        return set(inspect(self.engine).get_table_names())

    def dispose(self) -> None:
        self.engine.dispose()
