"""Scale-out: two ``taleforge serve`` processes behind a round-robin balancer share one
PostgreSQL (accounts, stories) and one Redis (generation cache, rate limits), configured only
by environment variables, as compose.yaml runs them. Whichever process answers, a writer
sees the same session, the same library, the same cached stories and the same limits."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.parametrize("module_database", ["postgresql"], indirect=True)

PASSWORD = "correct horse battery"
HITS, GENERATIONS = "taleforge_cache_hits_total", "taleforge_generations_total"
A, B = 0, 1


@dataclass
class Process:
    """One ``taleforge serve`` process and everything it printed."""

    popen: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    url: str | None = None

    def read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.output.append(line)
            match = re.search(r"running on (http://\S+)", line)
            if match and self.url is None:
                self.url = match.group(1)


def start_together(count: int, env: dict[str, str]) -> list[Process]:
    """``count`` servers started at the same moment (they migrate the empty database at once)."""
    command = [sys.executable, "-m", "taleforge", "serve"]
    processes = [
        Process(
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
        )
        for _ in range(count)
    ]
    for process in processes:
        threading.Thread(target=process.read, daemon=True).start()
    deadline = time.monotonic() + 120
    while any(p.url is None for p in processes):
        if time.monotonic() > deadline or any(p.popen.poll() is not None for p in processes):
            for p in processes:
                p.popen.kill()
            logs = "\n---\n".join("".join(p.output) for p in processes)
            raise AssertionError(f"the servers did not both start:\n{logs}")
        time.sleep(0.05)
    return processes


class RoundRobin(httpx.BaseTransport):
    """The load balancer in front, in miniature: each request goes to the next process in turn
    (``extensions={"backend": i}`` pins one); a process that refuses the connection is skipped,
    as nginx's ``proxy_next_upstream error`` does. Answers carry ``X-Served-By: 0|1``."""

    def __init__(self, urls: list[str], local_address: str) -> None:
        self.ports = [httpx.URL(url).port for url in urls]
        self.turn = 0
        # Each writer comes from an address of its own, so per-address limits are theirs.
        self.transport = httpx.HTTPTransport(local_address=local_address)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pinned = request.extensions.get("backend")
        if pinned is None:
            order = [(self.turn + i) % len(self.ports) for i in range(len(self.ports))]
            self.turn = (self.turn + 1) % len(self.ports)
        else:
            order = [pinned]
        for position, index in enumerate(order):
            request.url = request.url.copy_with(port=self.ports[index])
            request.headers["host"] = f"127.0.0.1:{self.ports[index]}"
            try:
                response = self.transport.handle_request(request)
            except httpx.ConnectError:
                if position == len(order) - 1:
                    raise
                continue
            response.headers["x-served-by"] = str(index)
            return response
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.transport.close()


@dataclass
class Cluster:
    processes: list[Process]
    urls: list[str]
    database_url: str

    def writer(self, name: str, address: str) -> Writer:
        return Writer(self.urls, name, address)


class Writer:
    """A browser behind the balancer: one cookie jar, whichever process answers."""

    def __init__(self, urls: list[str], name: str, address: str) -> None:
        self.name = name
        self.http = httpx.Client(base_url=urls[0], transport=RoundRobin(urls, address), timeout=120)

    def get(self, path: str, on: int | None = None, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, on, **kwargs)

    def request(self, method: str, path: str, on: int | None = None, **kw: Any) -> httpx.Response:
        extensions = {} if on is None else {"backend": on}
        return self.http.request(method, path, extensions=extensions, **kw)

    def form(self, path: str, on: int, fields: dict[str, str]) -> httpx.Response:
        page = self.get(path, on).text
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match, f"{path} has no CSRF token"
        return self.request("POST", path, on, data={**fields, "csrf_token": match.group(1)})

    def api(self, method: str, path: str, on: int | None = None, **kw: Any) -> httpx.Response:
        token = self.get("/api/me", on).json()["csrf_token"]
        return self.request(method, path, on, headers={"x-csrf-token": token}, **kw)


@pytest.fixture(scope="module")
def cluster(module_database: str, tiny_model_dir: Path, start_redis) -> Iterator[Cluster]:
    with start_redis() as redis_url:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            # Shared state, as the plain variables compose.yaml sets.
            "TALEFORGE_DATABASE_URL": module_database,
            "TALEFORGE_REDIS_URL": redis_url,
            "TALEFORGE_SECRET_KEY": "scale-out-test-key-" + "k" * 40,
            # Settings, by TALEFORGE_<SECTION>__<KEY> only: no flags.
            "TALEFORGE_MODEL__SPEC": str(tiny_model_dir),
            "TALEFORGE_MODEL__BACKEND": "transformers",
            "TALEFORGE_SERVE__PORT": "0",
            "TALEFORGE_SERVE__ACCOUNTS": "true",
            "TALEFORGE_SERVE__RATE_LIMIT_GENERATE": "3/minute",
            "TALEFORGE_SERVE__RATE_LIMIT_LOGIN": "1000/minute",
        }
        processes = start_together(2, env)
        try:
            yield Cluster(processes, [p.url or "" for p in processes], module_database)
        except BaseException:
            for p in processes:
                print("".join(p.output[-100:]), file=sys.stderr)
            raise
        finally:
            for p in processes:
                if p.popen.poll() is None:
                    p.popen.kill()
                p.popen.wait(timeout=30)


def read_metric(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_both_processes_migrated_one_database_at_once_and_are_healthy(cluster):
    from taleforge.store import Database

    for url in cluster.urls:
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
    db = Database(cluster.database_url)
    try:
        assert db.revision() is not None and {"users", "stories"} <= db.tables()
    finally:
        db.dispose()
    for process in cluster.processes:
        assert "Traceback" not in "".join(process.output)


def test_a_session_made_on_one_process_works_on_the_other(cluster):
    ada = cluster.writer("ada", "127.0.0.2")
    # The sign-up form comes from A and is posted to A; the session cookie then works on B.
    signed = ada.form(
        "/signup", A, {"username": "ada", "password": PASSWORD, "password2": PASSWORD}
    )
    assert signed.status_code == 303, signed.text
    me = ada.get("/api/me", B)
    assert me.status_code == 200 and me.json()["username"] == "ada"
    assert me.headers["x-served-by"] == str(B)
    # Another browser logs in through the balancer: the form comes from one process and is
    # posted to the other (its CSRF token lives in the session both can read).
    laptop = cluster.writer("ada", "127.0.0.2")
    page = laptop.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    fields = {"username": "ada", "password": PASSWORD, "csrf_token": token.group(1)}
    posted = laptop.request("POST", "/login", data=fields)
    assert posted.status_code == 303
    assert {page.headers["x-served-by"], posted.headers["x-served-by"]} == {"0", "1"}
    for process in (A, B):
        assert laptop.get("/api/me", process).json()["username"] == "ada"


def test_a_story_saved_on_one_process_is_listed_by_both(cluster):
    bea = cluster.writer("bea", "127.0.0.3")
    assert (
        bea.form(
            "/signup", A, {"username": "bea", "password": PASSWORD, "password2": PASSWORD}
        ).status_code
        == 303
    )
    saved = bea.api("POST", "/api/stories", B, json={"text": "Two doors.", "title": "Doors"})
    assert saved.status_code == 201 and saved.headers["x-served-by"] == str(B)
    for process in (A, B):
        listed = bea.get("/api/stories", process).json()["stories"]
        assert [(s["id"], s["title"]) for s in listed] == [(saved.json()["id"], "Doors")]
    # Through the balancer, request after request, the library is the same.
    served = set()
    for _ in range(4):
        response = bea.get("/api/stories")
        served.add(response.headers["x-served-by"])
        assert [s["title"] for s in response.json()["stories"]] == ["Doors"]
    assert served == {"0", "1"}


def test_a_generation_cached_on_one_process_is_a_hit_on_the_other(cluster):
    cal = cluster.writer("cal", "127.0.0.4")
    assert (
        cal.form(
            "/signup", A, {"username": "cal", "password": PASSWORD, "password2": PASSWORD}
        ).status_code
        == 303
    )
    body = {"prompt": "The map led across the desert (scale-out)", "seed": 11, "max_new_tokens": 24}
    url_b = cluster.urls[B]
    hits, generations = read_metric(url_b, HITS, layer="redis"), read_metric(url_b, GENERATIONS)
    first = cal.api("POST", "/api/generate", A, json=body)
    assert first.status_code == 200, first.text
    again = cal.api("POST", "/api/generate", B, json=body)
    assert again.status_code == 200 and again.headers["x-served-by"] == str(B)
    assert again.json() == first.json()  # the same story, seed and timings
    assert first.json()["stories"][0]["generated_text"]
    assert read_metric(url_b, HITS, layer="redis") == hits + 1
    assert read_metric(url_b, GENERATIONS) == generations  # B's model wrote nothing


def test_the_generate_rate_limit_holds_across_both_processes(cluster):
    dan = cluster.writer("dan", "127.0.0.5")
    assert (
        dan.form(
            "/signup", B, {"username": "dan", "password": PASSWORD, "password2": PASSWORD}
        ).status_code
        == 303
    )
    body = {"prompt": "Nobody went into the basement", "max_new_tokens": 4}
    for process in (A, B, A):  # 3/minute: three spread over both processes pass ...
        assert dan.api("POST", "/api/generate", process, json=body).status_code == 200
    for process in (B, A):  # ... and the fourth is refused by either
        refused = dan.api("POST", "/api/generate", process, json=body)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
    assert read_metric(cluster.urls[A], "taleforge_rate_limited_requests_total", scope="generate")


def test_a_killed_process_leaves_the_other_serving_the_same_writer(cluster):
    eve = cluster.writer("eve", "127.0.0.6")
    assert (
        eve.form(
            "/signup", B, {"username": "eve", "password": PASSWORD, "password2": PASSWORD}
        ).status_code
        == 303
    )
    saved = eve.api("POST", "/api/stories", B, json={"text": "Before the crash.", "title": "One"})
    assert saved.status_code == 201
    victim = cluster.processes[B].popen
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{cluster.urls[B]}/health")
    # The balancer skips the dead process: every answer now comes from A, same session.
    for _ in range(3):
        me = eve.get("/api/me")
        assert me.status_code == 200 and me.json()["username"] == "eve"
        assert me.headers["x-served-by"] == str(A)
    after = eve.api("POST", "/api/stories", json={"text": "After the crash.", "title": "Two"})
    assert after.status_code == 201
    titles = {s["title"] for s in eve.get("/api/stories").json()["stories"]}
    assert titles == {"One", "Two"}
