"""The studio's exports: owner-only files in a private folder, deleted after their age."""

from __future__ import annotations

import os
import stat
import time

import pytest

from taleforge.serve.exports import ExportFolder


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_exports_are_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        exports = ExportFolder.create(max_age_seconds=3600)
        path = exports.write("../../the-tale.txt", b"Once upon a time.")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"Once upon a time." and path.name == "the-tale.txt"
    assert path.parent.parent == exports.root  # a plain name: never outside the folder
    assert mode(path) == 0o600 and mode(path.parent) == 0o700 and mode(exports.root) == 0o700
    assert exports.write("", b"x").name == "export"
    exports.remove()
    assert not exports.root.exists()


def test_exports_older_than_their_age_are_deleted(tmp_path):
    exports = ExportFolder(tmp_path, max_age_seconds=600)
    old, new = exports.write("old.txt", b"old"), exports.write("new.txt", b"new")
    hour_ago = time.time() - 3600
    os.utime(old.parent, (hour_ago, hour_ago))
    assert exports.prune() == 1
    assert not old.exists() and new.exists()
    assert exports.prune(now=time.time() + 601) == 1 and not new.exists()


@pytest.mark.parametrize("age", [59, 7 * 86_400 + 1])
def test_the_export_age_is_bounded(age):
    from taleforge.config import load_config
    from taleforge.errors import ConfigError

    with pytest.raises(ConfigError, match="export_max_age_seconds"):
        load_config(None, {"serve.export_max_age_seconds": age})
