"""Storage: accounts, the story library, ratings and cached generations (SQLAlchemy 2).

SQLite by default (a file in the user's data directory, WAL mode), PostgreSQL when
``TALEFORGE_DATABASE_URL`` points to one; Alembic migrations create and upgrade the schema.
"""

from taleforge.store.accounts import LOCAL_USER, Account, AccountError, Accounts
from taleforge.store.db import Database, StoreError, default_url
from taleforge.store.library import Library, LibraryError, StoryNotFound, StoryRecord

__all__ = [
    "LOCAL_USER",
    "Account",
    "AccountError",
    "Accounts",
    "Database",
    "Library",
    "LibraryError",
    "StoreError",
    "StoryNotFound",
    "StoryRecord",
    "default_url",
]
