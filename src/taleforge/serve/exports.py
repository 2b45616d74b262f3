"""The studio's exported files: in a folder only the server's user can read, each deleted
``serve.export_max_age_seconds`` after it was made.

Gradio serves a handler's file from its cache folder; the studio's blocks use this folder as
that cache, so the file is never copied to the shared temporary folder.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path

from taleforge.files import private_file

log = logging.getLogger(__name__)


class ExportFolder:
    """A private (0700) folder of exports, one private sub-folder per file."""

    def __init__(self, root: Path, max_age_seconds: int) -> None:
        self.root = root
        self.max_age_seconds = max_age_seconds

    @classmethod
    def create(cls, max_age_seconds: int) -> ExportFolder:
        """A new folder under the temporary directory (mkdtemp makes it 0700)."""
        return cls(Path(tempfile.mkdtemp(prefix="taleforge-exports-")), max_age_seconds)

    def write(self, name: str, data: bytes) -> Path:
        """Save ``data`` as ``name`` (a plain file name) owner-only (0600); the file's path."""
        self.prune()
        path = Path(tempfile.mkdtemp(dir=self.root)) / (Path(name).name or "export")
        private_file(path)
        path.write_bytes(data)
        return path

    def prune(self, now: float | None = None) -> int:
        """Delete what is older than the maximum age; how many entries were deleted."""
        cutoff = (time.time() if now is None else now) - self.max_age_seconds
        removed = 0
        for entry in list(self.root.iterdir()) if self.root.is_dir() else []:
            try:
                if entry.lstat().st_mtime < cutoff:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
                    removed += 1
            except FileNotFoundError:  # another prune got there first
                continue
        return removed

    async def prune_forever(self) -> None:
        """Prune every minute (or sooner for short ages) until cancelled."""
        while True:
            await asyncio.sleep(min(60, self.max_age_seconds))
            try:
                await asyncio.to_thread(self.prune)
            except OSError as exc:
                log.warning("cannot delete old exports in %s: %s", self.root, exc)

    def remove(self) -> None:
        """Delete the folder and everything in it (when the server stops)."""
        shutil.rmtree(self.root, ignore_errors=True)
