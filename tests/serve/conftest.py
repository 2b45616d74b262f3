"""Live servers on 127.0.0.1: the real app under uvicorn, in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from taleforge.config import load_config
from taleforge.serve.app import build_server, server_url

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@contextmanager
def live_server(overrides: dict[str, Any]) -> Iterator[str]:
    """Start the app with these config overrides on a free port; yields its base URL."""
    config = load_config(None, {"serve.port": 0, **overrides})
    server = build_server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield server_url(server, config)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir: Path) -> Iterator[str]:
    """Default model: the tiny GPT-2 (fast); the embedded model is offered too."""
    with live_server({"model.spec": str(tiny_model_dir)}) as url:
        yield url


@pytest.fixture(scope="module")
def story_server() -> Iterator[str]:
    """The app as `make run` starts it: the default story model."""
    with live_server({}) as url:
        yield url


def wait_idle(url: str, within: float) -> float:
    """Seconds until /health reports no request in flight; fails after ``within``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if httpx.get(f"{url}/health").json()["active_requests"] == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"requests still in flight after {within} s")


@pytest.fixture(scope="session")
def start_server():
    """``with start_server({...overrides}) as url:`` a server of its own for one test."""
    return live_server


@pytest.fixture(scope="session")
def idle():
    """``idle(url, within=1.0)``: seconds until the server has no request in flight."""
    return wait_idle
