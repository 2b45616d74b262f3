"""Faults: SIGKILL during generation, saves and a migration; a broken model; a full disk.

Each test runs the real ``taleforge`` process, breaks it the way a machine does, starts it
again and checks what a writer would: every story they were told was saved is there, whole.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from rel_helpers import serve_process, sqlite_integrity, taleforge_env
from rel_helpers import small_disk as mount_small_disk


def test_sigkill_during_generation_and_saves_loses_no_acknowledged_story(
    database_url: str, tiny_model_dir: Path
):
    saved: dict[int, str] = {}
    with serve_process(tiny_model_dir, database_url) as (process, url):
        for n in range(10):
            text = f"Story {n}: the keeper lit the lamp. " * 40
            reply = httpx.post(f"{url}/api/stories", json={"text": text, "title": f"s{n}"})
            assert reply.status_code == 201
            saved[reply.json()["id"]] = text

        # A long story streaming, and eight writers saving big stories, when the kill comes.
        stream = httpx.stream(
            "POST",
            f"{url}/api/generate",
            json={"prompt": "The sea", "stream": True, "max_new_tokens": 1000, "seed": 1},
            timeout=60,
        )
        reply = stream.__enter__()
        first_event = next(line for line in reply.iter_lines() if line.startswith("data: "))
        assert "text" in json.loads(first_event[6:])
        acknowledged: dict[int, str] = {}
        sent: set[str] = set()
        stop = threading.Event()

        def save_until_killed(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                for n in range(10**6):
                    if stop.is_set():
                        return
                    text = f"Burst {worker}.{n}: " + "a wave broke on the rocks. " * 3000
                    sent.add(text)
                    try:
                        answer = client.post("/api/stories", json={"text": text})
                    except httpx.HTTPError:
                        return  # the server is gone
                    if answer.status_code == 201:
                        acknowledged[answer.json()["id"]] = text

        with ThreadPoolExecutor(8) as pool:
            for worker in range(8):
                pool.submit(save_until_killed, worker)
            deadline = time.monotonic() + 60
            while len(acknowledged) < 12 and time.monotonic() < deadline:
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)  # saves in flight, a story half written
            process.wait(timeout=30)
            stop.set()
        assert process.returncode == -signal.SIGKILL
        assert len(acknowledged) >= 12, "the burst of saves did not get going"
        with contextlib.suppress(httpx.HTTPError):
            stream.__exit__(None, None, None)

    if database_url.startswith("sqlite"):
        assert sqlite_integrity(database_url) == "ok"
    with serve_process(tiny_model_dir, database_url) as (_, url):
        for story_id, text in {**saved, **acknowledged}.items():
            story = httpx.get(f"{url}/api/stories/{story_id}")
            assert story.status_code == 200, f"story {story_id} was acknowledged, then lost"
            assert story.json()["text"] == text
        # A save cut off by the kill is either all there or not there: never half a story.
        listed = httpx.get(f"{url}/api/stories", params={"limit": 500}).json()["stories"]
        for summary in listed:
            if summary["id"] not in saved and summary["id"] not in acknowledged:
                text = httpx.get(f"{url}/api/stories/{summary['id']}").json()["text"]
                assert text in sent
        # And the server writes again.
        again = httpx.post(
            f"{url}/api/generate",
            json={"prompt": "After the storm", "max_new_tokens": 8},
            timeout=120,  # the model loads on this first request, on 2 busy cores
        )
        assert again.status_code == 200 and again.json()["text"]


# -- migrations --------------------------------------------------------------------------------


def _fill_first_schema(path: Path, stories: int) -> None:
    """Many stories in a database at the first schema (0001), so upgrading takes seconds."""
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO users (id, username, password_hash, created_at, password_changed_at)"
            " VALUES (1, 'local', NULL, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
        rows = (
            (i, 1, f"story {i}", "", None, "story", None, "{}", None, f"story number {i}",
             "2026-01-01 00:00:00", f"2026-01-{1 + i % 28:02d} 00:{i % 60:02d}:00")
            for i in range(1, stories + 1)
        )  # fmt: skip
        db.executemany("INSERT INTO stories VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)


def _db(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "taleforge", "db", *args, "--database-url", url]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=taleforge_env())


def test_a_migration_killed_midway_completes_when_run_again(tmp_path: Path):
    path = tmp_path / "taleforge.db"
    url = f"sqlite:///{path}"
    assert _db(url, "upgrade", "0001").returncode == 0
    _fill_first_schema(path, 400_000)
    wal = path.with_name(path.name + "-wal")
    wal.unlink(missing_ok=True)

    upgrade = subprocess.Popen(
        [sys.executable, "-m", "taleforge", "db", "upgrade", "--database-url", url],
        env=taleforge_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # The new index over 400,000 stories is being written into the log: kill it then.
    deadline = time.monotonic() + 120
    while not (wal.exists() and wal.stat().st_size > 512 * 1024):
        assert upgrade.poll() is None, "the upgrade finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    upgrade.send_signal(signal.SIGKILL)
    upgrade.wait(timeout=30)

    current = _db(url, "current")
    assert "0001" in current.stdout + current.stderr, "killed too late: the upgrade was done"
    assert sqlite_integrity(url) == "ok"
    again = _db(url, "upgrade")
    assert again.returncode == 0, again.stderr
    assert "0003" in again.stdout + again.stderr
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM stories").fetchone()[0] == 400_000
        assert db.execute("SELECT text FROM stories WHERE id = 123456").fetchone()[0] == (
            "story number 123456"
        )
        assert db.execute("SELECT count(*) FROM stories WHERE deleted_at IS NULL").fetchone()[0]
    assert sqlite_integrity(url) == "ok"


# -- a broken model ------------------------------------------------------------------------------


@pytest.fixture
def corrupt_model_dir(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """The tiny model with its config.json cut in half (a copy interrupted, a bad disk)."""
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    config = (broken / "config.json").read_text()
    (broken / "config.json").write_text(config[: len(config) // 2])
    yield broken


@pytest.mark.parametrize("which", ["missing", "corrupt", "empty"])
def test_a_missing_or_corrupt_model_stops_the_server_at_start_with_a_clear_error(
    which: str, corrupt_model_dir: Path, tmp_path: Path
):
    model = {
        "missing": tmp_path / "no-such-model",
        "corrupt": corrupt_model_dir,
        "empty": tmp_path,
    }[which]
    command = [sys.executable, "-m", "taleforge", "serve", "--model", str(model), "--port", "0",
               "--database-url", f"sqlite:///{tmp_path / 'db' / 'taleforge.db'}"]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=taleforge_env()
    )
    assert result.returncode != 0
    assert "running on" not in result.stdout
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("taleforge: error:") and str(model) in error


# -- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs."""
    with mount_small_disk(tmp_path / "small-disk", 4 * 2**20) as folder:
        yield folder


def test_a_full_disk_answers_saves_with_a_clear_error_and_keeps_what_was_saved(
    small_disk: Path, tiny_model_dir: Path
):
    url_db = f"sqlite:///{small_disk / 'taleforge.db'}"
    with serve_process(tiny_model_dir, url_db) as (process, url):
        first = "The first story, saved while there was room. " * 20
        made = httpx.post(f"{url}/api/stories", json={"text": first, "title": "Room"})
        assert made.status_code == 201
        first_id = made.json()["id"]
        answers = []
        for n in range(60):  # 60 x 90 kB (and a version each) is more than 4 MB
            text = f"Filler {n}: " + "the tide came in and the tide went out. " * 2300
            answers.append(httpx.post(f"{url}/api/stories", json={"text": text}, timeout=60))
            if answers[-1].status_code != 201:
                break
        refused = answers[-1]
        assert refused.status_code == 507, refused.text
        assert "disk" in refused.json()["error"]["message"].lower()
        # What was saved before is still there, and the server still answers.
        assert httpx.get(f"{url}/api/stories/{first_id}").json()["text"] == first
        assert process.poll() is None
    assert sqlite_integrity(url_db) == "ok"
