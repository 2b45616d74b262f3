"""Helpers of the reliability tests: the real ``taleforge serve`` process, killed at will."""

from __future__ import annotations

import importlib.util
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from needs import need

ROOT = Path(__file__).resolve().parents[2]


def taleforge_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@contextmanager
def serve_process(
    model: Path | str, database_url: str, *extra: str
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``taleforge serve`` (anonymous, tiny model, no rate limit) on a free port."""
    command = [sys.executable, "-m", "taleforge", "serve", "--model", str(model),
               "--backend", "transformers", "--port", "0", "--database-url", database_url,
               "--set", "serve.rate_limit_generate=100000/minute", *extra]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=taleforge_env()
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    url, seen = None, []
    while url is None:
        line = process.stdout.readline()
        seen.append(line)
        match = re.search(r"running on (http://\S+)", line)
        if match:
            url = match.group(1)
        elif process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the server did not start:\n" + "".join(seen))
    # Keep reading its output: a full pipe would block the server at its next log line.
    log: list[str] = seen
    threading.Thread(target=lambda: log.extend(process.stdout or ()), daemon=True).start()
    try:
        yield process, url
    except BaseException:
        print("".join(log[-200:]), file=sys.stderr)  # the server's side of a failure
        raise
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def sqlite_integrity(database_url: str) -> str:
    """``PRAGMA integrity_check`` of a SQLite URL's file ("ok" when sound)."""
    path = database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])


def load_soak() -> ModuleType:
    """``benchmarks/soak.py`` as a module (benchmarks are programs, not a package)."""
    spec = importlib.util.spec_from_file_location("taleforge_soak", ROOT / "benchmarks/soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@contextmanager
def small_disk(folder: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted on ``folder`` (needs root and mount: skipped on a
    machine that does not allow it, failing in CI); grow it with :func:`grow_disk`."""
    folder.mkdir(parents=True, exist_ok=True)
    size = f"size={max(4096, size_bytes)}"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(folder)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        need(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def grow_disk(folder: Path, size_bytes: int) -> None:
    """Give a :func:`small_disk` more room (what a writer does after freeing space)."""
    subprocess.run(["mount", "-o", f"remount,size={size_bytes}", str(folder)], check=True)
