"""Soak: N writers stream and save stories against a real server for M minutes; nothing lost.

    python benchmarks/soak.py --users 32 --minutes 10 --output benchmarks/results/soak.json

A real ``taleforge serve`` process starts on 127.0.0.1 with accounts on, a fresh SQLite
database in a temp folder, the generation cache off (every story is really written) and the
generation rate limit raised (a load test is not a user to slow down). Each simulated writer
signs up through the form (with its CSRF token), then until the time is up: streams a story
(``POST /api/generate``, server-sent events), saves it (``POST /api/stories``) and every third
time edits it (``PATCH``, a new version). Afterwards every writer's library is read back: each
story saved must be there with exactly the text the server acknowledged, and no writer may
see a story of another. The default model is a tiny random GPT-2 built here (fast: the load is
on the server, not on the model); ``--model`` takes any spec ``taleforge serve`` accepts.

Reported (printed and written as JSON): requests, errors by status (the target: no 5xx),
p50/p95 time to first token, tokens/s, the server's RSS at start, after warm-up and at the
end (growth after warm-up, target < 10 %), stories lost or mixed up. Traffic goes to
127.0.0.1 only; every request has a timeout and the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from taleforge.serve.sanitize import clean_text

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "a long soak password 42"
PROMPTS = (
    "The dragon slept beneath the castle",
    "A robot on the space station counted the stars",
    "The detective found a clue in the locked room",
    "They met at the harbour at dawn",
    "Nobody went into the basement after the whispers started",
)


def build_tiny_model(directory: Path) -> Path:
    """The tiny random GPT-2 of the test suite (tests/conftest.py), written to ``directory``."""
    if str(ROOT / "tests") not in sys.path:  # where conftest's own helpers are (as in pytest)
        sys.path.insert(0, str(ROOT / "tests"))
    spec = importlib.util.spec_from_file_location("_tf_tests_conftest", ROOT / "tests/conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.build_tiny_gpt2(directory))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(
    model: str, workdir: Path, users: int, extra: list[str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """``taleforge serve`` with accounts on a free port; returns (process, base URL)."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    env["TALEFORGE_DATABASE_URL"] = f"sqlite:///{workdir / 'soak.db'}"
    command = [sys.executable, "-m", "taleforge", "serve", "--model", model,
               "--port", str(port), "--accounts", "-q",
               # Every writer waits its turn instead of being told "busy" (503).
               "--max-waiting", str(max(8, users)),
               "--set", "serve.cache_size=0",
               "--set", "serve.rate_limit_generate=100000/minute",
               "--set", "serve.rate_limit_login=100000/minute", *(extra or [])]  # fmt: skip
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - closed with the process
    server = subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(
                "the server did not start:\n" + (workdir / "server.log").read_text()[-4000:]
            )
        time.sleep(0.2)


def stop_server(server: subprocess.Popen[str]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


@dataclass
class Tally:
    """What all writers saw, shared by the tasks of one event loop (no locks needed)."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    stream_errors: int = 0
    first_token_seconds: list[float] = field(default_factory=list)
    tokens: int = 0
    stories_generated: int = 0
    #: Saved text that differs from what was sent (after the documented cleaning).
    altered_on_save: int = 0

    def record(self, response: httpx.Response) -> httpx.Response:
        self.requests += 1
        self.statuses[response.status_code] += 1
        return response


class SoakWriter:
    """One signed-up writer: a cookie session, its CSRF token and the stories it saved."""

    def __init__(self, url: str, name: str, tally: Tally) -> None:
        self.name = name
        self.tally = tally
        self.http = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(300, connect=30))
        self.csrf = ""
        #: story id -> the text the server acknowledged on the last save.
        self.saved: dict[int, str] = {}

    async def sign_up(self) -> None:
        page = self.tally.record(await self.http.get("/signup"))
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if match is None:
            raise RuntimeError(f"no CSRF token on /signup ({page.status_code})")
        form = {"username": self.name, "password": PASSWORD, "password2": PASSWORD,
                "csrf_token": match.group(1)}  # fmt: skip
        answer = self.tally.record(await self.http.post("/signup", data=form))
        if answer.status_code != 303:
            raise RuntimeError(f"sign-up of {self.name}: {answer.status_code} {answer.text[:200]}")
        me = self.tally.record(await self.http.get("/api/me"))
        self.csrf = me.json()["csrf_token"]

    async def stream_story(self, prompt: str, max_new_tokens: int) -> str | None:
        """One story by server-sent events; None when it failed (counted in the tally)."""
        body = {"prompt": prompt, "stream": True, "max_new_tokens": max_new_tokens,
                "seed": random.randrange(2**31), "genre": "none"}  # fmt: skip
        headers = {"x-csrf-token": self.csrf}
        started = time.monotonic()
        first: float | None = None
        async with self.http.stream("POST", "/api/generate", json=body, headers=headers) as reply:
            self.tally.record(reply)
            if reply.status_code != 200:
                await reply.aread()
                return None
            story: dict[str, Any] | None = None
            async for line in reply.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    self.tally.stream_errors += 1
                    return None
                if "text" in event and first is None:
                    first = time.monotonic() - started
                if event.get("done"):
                    story = event["story"]
        if story is None:
            self.tally.stream_errors += 1
            return None
        if first is not None:
            self.tally.first_token_seconds.append(first)
        self.tally.tokens += int(story["generated_tokens"])
        self.tally.stories_generated += 1
        return str(story["text"])

    async def save(self, text: str, title: str) -> None:
        headers = {"x-csrf-token": self.csrf}
        body = {"text": text, "title": title}
        reply = self.tally.record(await self.http.post("/api/stories", json=body, headers=headers))
        if reply.status_code == 201:
            stored = reply.json()
            self.saved[int(stored["id"])] = stored["text"]
            self.tally.altered_on_save += stored["text"] != clean_text(text)

    async def edit(self, story_id: int, text: str) -> None:
        headers = {"x-csrf-token": self.csrf}
        path = f"/api/stories/{story_id}"
        reply = self.tally.record(await self.http.patch(path, json={"text": text}, headers=headers))
        if reply.status_code == 200:
            self.saved[story_id] = reply.json()["text"]
            self.tally.altered_on_save += reply.json()["text"] != clean_text(text)

    async def write_until(self, deadline: float, max_new_tokens: int) -> None:
        turn = 0
        while time.monotonic() < deadline:
            turn += 1
            try:
                text = await self.stream_story(random.choice(PROMPTS), max_new_tokens)
                if text is None:
                    continue
                # A signature only this writer's story can carry: a mix-up shows at once.
                signed = f"{text}\n\n-- {self.name}, story {turn}"
                await self.save(signed, f"{self.name} #{turn}")
                if turn % 3 == 0 and self.saved:
                    story_id = max(self.saved)
                    await self.edit(story_id, self.saved[story_id] + "\nTHE END")
            except httpx.HTTPError as exc:
                self.tally.requests += 1
                self.tally.transport_errors[type(exc).__name__] += 1

    async def verify(self, others: list[SoakWriter]) -> dict[str, int]:
        """Read the library back: stories lost, altered, or belonging to another writer."""
        listed = await self.http.get("/api/stories", params={"limit": 500})
        listed_ids = {int(s["id"]) for s in listed.json()["stories"]}
        lost = altered = 0
        for story_id, text in self.saved.items():
            reply = await self.http.get(f"/api/stories/{story_id}")
            if reply.status_code != 200 or story_id not in listed_ids:
                lost += 1
            elif reply.json()["text"] != text:
                altered += 1
        foreign = listed_ids - set(self.saved)
        # Another writer's story must answer 404, exactly like a missing one.
        leaked = 0
        for other in others[:3]:
            for story_id in list(other.saved)[:2]:
                leaked += (await self.http.get(f"/api/stories/{story_id}")).status_code != 404
        return {"lost": lost, "altered": altered, "foreign": len(foreign), "leaked": leaked}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def drive(
    url: str, pid: int, users: int, seconds: float, max_new_tokens: int
) -> dict[str, Any]:
    tally = Tally()
    run_tag = f"{os.getpid() % 10000}x{random.randrange(10**6)}"
    writers = [SoakWriter(url, f"soak{run_tag}u{i}", tally) for i in range(users)]
    try:
        await asyncio.gather(*(w.sign_up() for w in writers))
        rss_start = rss_mb(pid)
        started = time.monotonic()
        deadline = started + seconds
        load = asyncio.gather(*(w.write_until(deadline, max_new_tokens) for w in writers))
        # Warm-up: the first tenth of the run (at least 10 s), when caches and pools fill.
        await asyncio.sleep(min(seconds, max(10.0, seconds / 10)))
        rss_warm = rss_mb(pid)
        await load
        elapsed = time.monotonic() - started
        rss_end = rss_mb(pid)
        checks = await asyncio.gather(
            *(w.verify([o for o in writers if o is not w]) for w in writers)
        )
    finally:
        await asyncio.gather(*(w.http.aclose() for w in writers))
    totals = Counter[str]()
    for check in checks:
        totals.update(check)
    by_status = {str(code): n for code, n in sorted(tally.statuses.items())}
    ttft = tally.first_token_seconds
    return {
        "users": users,
        "seconds": round(elapsed, 1),
        "requests": tally.requests,
        "statuses": by_status,
        "errors_5xx": sum(n for code, n in tally.statuses.items() if code >= 500),
        "errors_4xx": sum(n for code, n in tally.statuses.items() if 400 <= code < 500),
        "transport_errors": dict(tally.transport_errors),
        "stream_errors": tally.stream_errors,
        "stories_generated": tally.stories_generated,
        "stories_saved": sum(len(w.saved) for w in writers),
        "stories_lost": totals["lost"],
        "stories_altered": totals["altered"] + tally.altered_on_save,
        "stories_mixed_up": totals["foreign"] + totals["leaked"],
        "ttft_p50_s": _rounded(percentile(ttft, 50)),
        "ttft_p95_s": _rounded(percentile(ttft, 95)),
        "tokens": tally.tokens,
        "tokens_per_s": round(tally.tokens / elapsed, 1),
        "rss_start_mb": round(rss_start, 1),
        "rss_warm_mb": round(rss_warm, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_after_warmup_pct": round(100 * (rss_end - rss_warm) / rss_warm, 1),
    }


def run_soak(
    *, users: int, seconds: float, model: str | None = None, max_new_tokens: int = 48
) -> dict[str, Any]:
    """Start a server, drive it, stop it; the figures as a dict (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="taleforge-soak-") as folder:
        workdir = Path(folder)
        spec = model or str(build_tiny_model(workdir / "tiny-gpt2"))
        backend = ["--backend", "transformers"] if model is None else []
        server, url = start_server(spec, workdir, users, backend)
        try:
            result = asyncio.run(drive(url, server.pid, users, seconds, max_new_tokens))
        finally:
            stop_server(server)
        result["server_exit_code"] = server.returncode
        result["model"] = model or "tiny-gpt2 (random, built by benchmarks/soak.py)"
        result["max_new_tokens"] = max_new_tokens
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=32, help="Concurrent writers.")
    parser.add_argument("--minutes", type=float, default=10.0, help="How long the load lasts.")
    parser.add_argument("--model", default=None, help="Model spec (default: a tiny GPT-2).")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="Tokens per story.")
    parser.add_argument("--output", type=Path, default=None, help="Write the figures as JSON.")
    args = parser.parse_args()
    # A SIGTERM (a CI timeout) still stops the server and removes the temp folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run_soak(
        users=args.users,
        seconds=args.minutes * 60,
        model=args.model,
        max_new_tokens=args.max_new_tokens,
    )
    result["command"] = " ".join(["python", *sys.argv])
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    failed = (
        result["errors_5xx"]
        or result["stories_lost"]
        or result["stories_altered"]
        or result["stories_mixed_up"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
