"""Checkpoints that survive ``kill -9``: a checkpoint counts only once it is marked complete.

transformers writes ``checkpoint-N`` file by file; a process killed midway leaves a directory
that looks like a checkpoint but is not one. taleforge writes a marker file (fsynced) after
the Trainer has written everything, resumes only from marked checkpoints, sets incomplete
ones aside, and rotates old checkpoints itself, only ever deleting complete ones that are
neither among the newest nor the best.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".taleforge-complete"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def step_of(path: Path) -> int:
    match = _CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match else -1


def checkpoints(directory: Path) -> list[Path]:
    """All ``checkpoint-N`` directories, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and step_of(p) >= 0]
    return sorted(found, key=step_of)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / COMPLETE_MARKER).is_file()


def mark_complete(checkpoint: Path) -> None:
    """Flush the checkpoint's files to disk, then write the marker (also flushed)."""
    for path in checkpoint.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    marker = checkpoint / COMPLETE_MARKER
    with marker.open("w") as handle:
        handle.write(f"{step_of(checkpoint)}\n")
        handle.flush()
        os.fsync(handle.fileno())
    directory_fd = os.open(checkpoint, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def latest_complete(directory: Path) -> Path | None:
    """The newest checkpoint that is marked complete."""
    complete = [c for c in checkpoints(directory) if is_complete(c)]
    return complete[-1] if complete else None


def discard_incomplete(directory: Path) -> list[Path]:
    """Delete checkpoints without the marker (left by a crash); returns what was removed."""
    removed = []
    for checkpoint in checkpoints(directory):
        if not is_complete(checkpoint):
            log.warning(
                "ignoring incomplete %s (the run was interrupted while saving)", checkpoint.name
            )
            shutil.rmtree(checkpoint, ignore_errors=True)
            removed.append(checkpoint)
    return removed


def rotate(directory: Path, keep: int, protect: Path | None = None) -> list[Path]:
    """Delete complete checkpoints beyond the newest ``keep`` (never ``protect``, the best)."""
    complete = [c for c in checkpoints(directory) if is_complete(c)]
    doomed = complete[:-keep] if keep > 0 else []
    removed = []
    for checkpoint in doomed:
        if protect is not None and checkpoint.resolve() == protect.resolve():
            continue
        shutil.rmtree(checkpoint, ignore_errors=True)
        removed.append(checkpoint)
    return removed
