"""A saved story survives the server being killed (SIGKILL) a moment after the save, on
SQLite and on PostgreSQL: the real ``taleforge serve`` process, killed and started again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


@contextmanager
def serve_process(model_dir: Path, database_url: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``taleforge serve`` on a free port; yields (process, base URL)."""
    command = [
        sys.executable, "-m", "taleforge", "serve",
        "--model", str(model_dir), "--port", "0", "--database-url", database_url,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
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
    try:
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_a_story_saved_just_before_sigkill_is_there_after_restart(
    database_url: str, tiny_model_dir: Path
):
    text = "The lighthouse keeper wrote one last line. " * 50
    with serve_process(tiny_model_dir, database_url) as (process, url):
        made = httpx.post(f"{url}/api/stories", json={"text": text, "title": "Last words"})
        assert made.status_code == 201
        sid = made.json()["id"]
        edited = httpx.patch(
            f"{url}/api/stories/{sid}", json={"text": text + "THE END", "kind": "autosave"}
        )
        assert edited.status_code == 200
        process.send_signal(signal.SIGKILL)  # no shutdown, no flush: gone mid-flight
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
    with serve_process(tiny_model_dir, database_url) as (_, url):
        story = httpx.get(f"{url}/api/stories/{sid}").json()
        assert story["text"] == text + "THE END"
        assert story["title"] == "Last words" and story["versions"] == 2
        versions = httpx.get(f"{url}/api/stories/{sid}/versions").json()["versions"]
        assert [v["kind"] for v in versions] == ["save", "autosave"]


def test_a_database_that_cannot_be_opened_stops_the_server_with_a_clear_message(
    tiny_model_dir: Path, tmp_path: Path
):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the database folder should be")
    serve = [sys.executable, "-m", "taleforge", "serve", "--port", "0"]
    result = subprocess.run(
        [*serve, "--model", str(tiny_model_dir), "--database-url", f"sqlite:///{blocked}/x.db"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "database" in (result.stdout + result.stderr).lower()
    assert "Traceback" not in result.stderr
