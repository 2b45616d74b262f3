"""The database and the secret key are created owner-only (0600 files, 0700 folders), whatever
the umask: they hold password hashes, sessions and every writer's stories."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from taleforge.store import Accounts, Database


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 000: every file would be world-writable unless created owner-only."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_sqlite_database_is_owner_only(tmp_path, open_umask):
    folder = tmp_path / "data" / "taleforge"
    db = Database(f"sqlite:///{folder / 'taleforge.db'}")
    db.migrate()
    Accounts(db).sign_up("ada", "correct horse battery")
    files = sorted(folder.iterdir())
    assert files[0].name == "taleforge.db" and len(files) >= 2
    for file in files:  # the database, its WAL and shared-memory files
        assert mode(file) == 0o600, (file.name, oct(mode(file)))
    assert mode(folder) == 0o700
    db.dispose()


def test_an_existing_world_readable_database_is_made_owner_only(tmp_path, caplog):
    path = tmp_path / "taleforge.db"
    Database(f"sqlite:///{path}").migrate()
    path.chmod(0o644)
    Database(f"sqlite:///{path}").migrate()
    assert mode(path) == 0o600
    assert "0600" in caplog.text


def test_the_secret_key_is_owner_only(tmp_path, open_umask, monkeypatch):
    from taleforge.config import load_config
    from taleforge.serve.auth import SECRET_ENV, secret_key
    from taleforge.serve.context import AppContext

    monkeypatch.delenv(SECRET_ENV, raising=False)
    folder = tmp_path / "keys"
    config = load_config(None, {"serve.database_url": f"sqlite:///{folder / 'taleforge.db'}"})
    key = secret_key(AppContext.build(config))
    assert len(key) >= 32
    assert mode(folder / "secret_key") == 0o600 and mode(folder) == 0o700
