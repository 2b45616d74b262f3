"""`taleforge serve`, as `make run` starts it: a real process, its URL, a clean Ctrl+C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx


def _start(*flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "taleforge", "serve", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_serve_prints_its_url_serves_and_stops_on_ctrl_c():
    process = _start("--port", "0")
    try:
        assert process.stdout is not None
        line = ""
        deadline = time.monotonic() + 120
        while "running on" not in line and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line or process.poll() is None, process.stderr.read() if process.stderr else ""
        url = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert url, line
        health = httpx.get(f"{url.group(1)}/health", timeout=10).json()
        assert health["default_model"] == "taleforge-stories"
        assert httpx.get(url.group(1), timeout=30).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    assert code == 0


def test_serve_refuses_bad_settings_with_a_clear_message(tmp_path):
    missing = tmp_path / "cert.pem"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "taleforge",
            "serve",
            "--ssl-certfile",
            str(missing),
            "--ssl-keyfile",
            str(missing),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "no such file" in run.stderr and str(missing) in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "taleforge", "serve", "--auth", "nopassword"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "user:password" in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "taleforge", "serve", "--ssl-certfile", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "both --ssl-certfile and --ssl-keyfile" in run.stderr
