"""Writing directories so that a crash never leaves a half-written one in place, and files and
folders that only their owner can read, whatever the umask."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents owner-only (0700). A folder that exists is left
    as it is: it may be shared on purpose (the working directory, a mounted volume)."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        folder.chmod(0o700)


def private_file(path: Path) -> bool:
    """Make ``path`` owner-only (0600), creating it empty when missing; False when it belongs
    to another user (and so cannot be changed)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_uid != os.getuid():
            return False
        path.chmod(0o600)
        return True
    os.fchmod(descriptor, 0o600)
    os.close(descriptor)
    return True


def replace_dir(staging: Path, target: Path, mode: int = 0o755) -> None:
    """Move a finished ``staging`` directory to ``target``, replacing an older one.

    ``staging`` must be on the same file system (create it next to ``target``). The old
    directory is renamed aside before the new one is renamed in, so at every moment
    ``target`` is either the complete old directory or the complete new one. ``mode`` is the
    new directory's (0o700 for one only its owner may read).
    """
    staging.chmod(mode)
    if target.exists():
        trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-old-"))
        os.replace(target, trash / target.name)
        os.replace(staging, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, target)
