"""`taleforge serve`, as `make run` starts it: a real process, its URL, a clean Ctrl+C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx

from taleforge.config import SamplingParams, sampling_preset


def _start(*flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "taleforge", "serve", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _url(process: subprocess.Popen[str]) -> str:
    """The address the server prints once it is running."""
    assert process.stdout is not None
    line = ""
    deadline = time.monotonic() + 120
    while "running on" not in line and time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line or process.poll() is None, process.stderr.read() if process.stderr else ""
    url = re.search(r"(http://127\.0\.0\.1:\d+)", line)
    assert url, line
    return url.group(1)


def test_serve_prints_its_url_serves_and_stops_on_ctrl_c():
    process = _start("--port", "0")
    try:
        url = _url(process)
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["default_model"] == "taleforge-stories"
        assert httpx.get(url, timeout=30).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    assert code == 0


def test_serve_with_a_config_serves_its_sampling(tiny_model_dir, monkeypatch):
    """`serve --config creative` writes with creative's [sampling] (min-p .08, no repeated
    4-grams, ...) wherever a request leaves a parameter out: the API, the OpenAI API and the
    studio's sliders; the environment wins over the preset, a request over both."""
    creative = sampling_preset("creative")
    assert creative != SamplingParams()  # else this test could not tell them apart
    monkeypatch.setenv("TALEFORGE_SAMPLING__TOP_P", "0.9")
    process = _start(
        "--port", "0", "--config", "creative", "--model", str(tiny_model_dir),
        "--backend", "transformers",
    )  # fmt: skip
    try:
        url = _url(process)
        body = {"prompt": "A fox steals the moon", "seed": 3, "max_new_tokens": 8}
        story = httpx.post(f"{url}/api/generate", json=body, timeout=120).json()["stories"][0]
        params = story["params"]
        for name in ("temperature", "top_k", "min_p", "repetition_penalty", "no_repeat_ngram_size"):
            assert params[name] == getattr(creative, name), name
        assert params["top_p"] == 0.9  # from the environment
        asked = {**body, "temperature": 0.7}
        story = httpx.post(f"{url}/api/generate", json=asked, timeout=120).json()["stories"][0]
        assert story["params"]["temperature"] == 0.7 and story["params"]["min_p"] == creative.min_p

        config = httpx.get(f"{url}/config", timeout=30).json()
        sliders = {c["props"].get("elem_id"): c["props"].get("value") for c in config["components"]}
        assert sliders["temperature"] == creative.temperature
        assert sliders["repetition-penalty"] == creative.repetition_penalty
        assert sliders["top-p"] == 0.9
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


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
