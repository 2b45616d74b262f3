"""Live servers on 127.0.0.1: the real app under uvicorn, in a thread of the test process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_apps import APPS

from needs import need
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
    url = server_url(server, config)
    APPS[url] = server.config.app
    try:
        yield url
    finally:
        APPS.pop(url, None)
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir: Path) -> Iterator[str]:
    """Default model: the tiny GPT-2 (fast) on the reference backend, whose stories these
    tests know; the embedded model is offered too (on the configured backend, auto). A
    module's tests write more than the default 30 stories a minute from one address (the
    rate limit has tests of its own, in test_limits.py)."""
    overrides = {
        "model.spec": str(tiny_model_dir),
        "model.backend": "transformers",
        "serve.rate_limit_generate": "100000/minute",
    }
    with live_server(overrides) as url:
        yield url


@pytest.fixture(scope="module")
def tiny_studio(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of the test module's own on the tiny model, with an empty library."""
    database = tmp_path_factory.mktemp("studio-db") / "taleforge.db"
    overrides = {"model.spec": str(tiny_model_dir), "serve.database_url": f"sqlite:///{database}"}
    with live_server(overrides) as url:
        yield url


@pytest.fixture(scope="module")
def story_server() -> Iterator[str]:
    """The app as `make run` starts it: the default story model on the default backend
    (llama.cpp where it is installed, as in CI)."""
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


def read_metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample of ``GET /metrics`` (0 when it was never counted)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def studio_step(url: str, endpoint: str, **by_label: Any) -> Any:
    """Run a studio button's endpoint (``/write``, ``/continue``, ``/retry``) as a script
    would with ``gradio_client``: the fields named by their label (``Prompt``, ``Seed
    (-1 = random)``), the others at the page's defaults. Returns the final outputs (the
    manuscript first)."""
    from gradio_client import Client

    client = Client(f"{url}/", verbose=False)
    api = client.view_api(return_format="dict", print_info=False)
    parameters = api["named_endpoints"][endpoint]["parameters"]
    unknown = set(by_label) - {p["label"] for p in parameters}
    assert not unknown, f"{endpoint} has no field labelled {unknown}"
    args = [by_label.get(p["label"], p.get("parameter_default")) for p in parameters]
    return client.predict(*args, api_name=endpoint)


@pytest.fixture(scope="session")
def studio():
    """``studio(url, "/write", Prompt="A cat", **{"Seed (-1 = random)": 7})``."""
    return studio_step


@pytest.fixture(scope="session")
def metric():
    """``metric(url, "taleforge_cache_hits_total", layer="memory")``: a counter's value."""
    return read_metric


@contextmanager
def redis_server() -> Iterator[str]:
    """``with redis_server() as url:`` a private, empty ``redis-server`` on a free port (no
    persistence), for a fixture of any scope."""
    import shutil
    import socket
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        need("no redis-server for the Redis tests: install it (apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                need(f"redis-server did not start on port {port}")
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private, empty ``redis-server`` on a free port (no persistence); its URL."""
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def start_redis():
    """``with start_redis() as url:`` a private ``redis-server`` (for module fixtures)."""
    return redis_server


def chromium_path() -> str:
    """Debian's Chromium (or $TALEFORGE_CHROMIUM); skip without it, but fail in CI."""
    import shutil

    path = os.environ.get("TALEFORGE_CHROMIUM") or shutil.which("chromium")
    if path:
        return path
    need("Chromium is not installed (apt install chromium, or set TALEFORGE_CHROMIUM)")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def launch_chromium():
    """``with launch_chromium() as browser:`` a real headless Chromium."""
    return chromium
