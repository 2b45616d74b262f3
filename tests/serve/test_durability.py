"""A saved story survives the server being killed (SIGKILL) a moment after the save, on
SQLite and on PostgreSQL: the real ``taleforge serve`` process, killed and started again."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from reliability.rel_helpers import serve_process  # the real server, on a free port


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
