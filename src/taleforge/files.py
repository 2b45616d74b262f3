"""Writing directories so that a crash never leaves a half-written one in place."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def replace_dir(staging: Path, target: Path) -> None:
    """Move a finished ``staging`` directory to ``target``, replacing an older one.

    ``staging`` must be on the same file system (create it next to ``target``). The old
    directory is renamed aside before the new one is renamed in, so at every moment
    ``target`` is either the complete old directory or the complete new one.
    """
    staging.chmod(0o755)
    if target.exists():
        trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-old-"))
        os.replace(target, trash / target.name)
        os.replace(staging, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, target)
