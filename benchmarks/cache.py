"""The generation cache: latency of a seeded request written by the model vs answered again.

    python benchmarks/cache.py --output benchmarks/results/cache.json

Two real servers (``taleforge serve``) start on 127.0.0.1 with the same model and one SQLite
database in a temporary directory. Each repetition sends one new seeded request
(``POST /api/generate``, exactly ``--new-tokens`` tokens) three times, side by side:

* uncached: to server A, which has never seen it: the model writes the story;
* memory: to server A again: its in-memory cache answers;
* database: to server B, whose memory is empty: the shared database answers (what a
  restarted server, or another process on the same database, sees).

All three must return the identical story. Reported: the median latency of each over the
repetitions and the ratio uncached / cached. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

PROMPT = "A lighthouse keeper finds a door at the bottom of the sea."
COLUMNS = ("uncached", "memory", "database")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(model: str, workdir: Path, extra: list[str]) -> Iterator[str]:
    """A ``taleforge serve`` process on a free port of 127.0.0.1; yields its URL."""
    port = free_port()
    env = {**os.environ, "TALEFORGE_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}"}
    command = [sys.executable, "-m", "taleforge", "serve", "--model", model, "--port", str(port),
               "--rate-limit-generate", "100000/minute", "-q", *extra]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise SystemExit(f"the server exited:\n{output[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start within 300 s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def timed(client: httpx.Client, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """(milliseconds, answer) of one ``POST /api/generate`` (on a kept-alive connection)."""
    started = time.perf_counter()
    response = client.post("/api/generate", json=body, timeout=600)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{client.base_url}: {response.status_code} {response.text[:300]}")
    return elapsed, response.json()


def counter(url: str, name: str) -> float:
    """The sum of a counter's samples in ``GET /metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        total += sum(s.value for s in family.samples if s.name == name)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="taleforge-stories", help="Model spec to serve.")
    parser.add_argument("--new-tokens", type=int, default=128, help="Tokens per story.")
    parser.add_argument("--runs", type=int, default=7, help="Repetitions (new seed each).")
    parser.add_argument("--backend", default=None, help="Inference backend (default: auto).")
    parser.add_argument("--output", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    extra = ["--backend", args.backend] if args.backend else []

    latencies: dict[str, list[float]] = {column: [] for column in COLUMNS}
    with tempfile.TemporaryDirectory(prefix="taleforge-bench-cache-") as folder:
        workdir = Path(folder)
        with (
            server(args.model, workdir, extra) as first_url,
            server(args.model, workdir, extra) as second_url,
            httpx.Client(base_url=first_url) as first,
            httpx.Client(base_url=second_url) as second,
        ):
            body = {"prompt": PROMPT, "max_new_tokens": args.new_tokens,
                    "min_new_tokens": args.new_tokens}  # fmt: skip
            # Warm-up: both servers load the model, so the runs time answers, not loading.
            timed(first, {**body, "seed": 10**6})
            timed(second, {**body, "seed": 10**6 + 1})
            for run in range(args.runs):
                seeded = {**body, "seed": run}
                for column, client in zip(COLUMNS, (first, first, second), strict=True):
                    elapsed, answer = timed(client, seeded)
                    latencies[column].append(elapsed)
                    if column == "uncached":
                        story = answer["stories"]
                    elif answer["stories"] != story:
                        raise SystemExit(f"{column}: the cache answered another story")
                print(
                    f"  run {run + 1}/{args.runs}: "
                    + "  ".join(f"{c} {latencies[c][-1]:.1f} ms" for c in COLUMNS),
                    file=sys.stderr,
                )
            hits = {"memory": counter(first_url, "taleforge_cache_hits_total"),
                    "database": counter(second_url, "taleforge_cache_hits_total")}  # fmt: skip
            tokens = story[0]["generated_tokens"]

    medians = {column: statistics.median(values) for column, values in latencies.items()}
    report = {
        "benchmark": "cache",
        "command": "python benchmarks/cache.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "new_tokens": args.new_tokens,
        "generated_tokens": tokens,
        "runs": args.runs,
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "latency_ms": {
            column: {"median": round(medians[column], 2), "runs": [round(v, 2) for v in values]}
            for column, values in latencies.items()
        },
        "speedup": {
            column: round(medians["uncached"] / medians[column], 1) for column in COLUMNS[1:]
        },
        "cache_hits": hits,
    }
    print(f"{args.model}, {tokens} tokens, median of {args.runs} runs (same request each):")
    print(f"{'':<10}{'latency ms':>12}{'speed-up':>10}")
    for column in COLUMNS:
        ratio = medians["uncached"] / medians[column]
        print(f"{column:<10}{medians[column]:>12.1f}{ratio:>9.1f}x")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
