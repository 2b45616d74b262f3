"""Concurrent users through the HTTP API: total tokens/s with 1, 4 and 8 streams per backend.

    python benchmarks/serve_load.py --output benchmarks/results/serve_load.json

For each backend a real server (``taleforge serve``) starts on 127.0.0.1 with the default
story model; N clients each stream one story (``POST /api/generate``, server-sent events,
a 64-token prompt, exactly ``--new-tokens`` tokens) at the same time. Reported per N: total
tokens/s (all tokens over the wall time of the slowest), each stream's tokens/s (fairness:
slowest / fastest), time to first token, and the server's peak RSS (VmHWM). Traffic goes
to 127.0.0.1 only; every request has a timeout and the run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import PROMPT_TOKENS, prompt_of_exactly

BACKENDS = ("transformers", "llama.cpp")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(model: str, backend: str, workdir: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {
        **os.environ,
        "TALEFORGE_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "PYTHONUNBUFFERED": "1",
    }
    # Repeated seeds must be written again, not replayed from the generation cache, and a
    # load test is not a user to rate-limit.
    command = [sys.executable, "-m", "taleforge", "serve", "--model", model,
               "--backend", backend, "--port", str(port), "-q",
               "--set", "serve.cache_size=0",
               "--set", "serve.rate_limit_generate=100000/minute"]  # fmt: skip
    server = subprocess.Popen(
        command, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = server.stdout.read() if server.stdout else ""
            raise SystemExit(f"the {backend} server exited:\n{output[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    raise SystemExit(f"the {backend} server did not start within 300 s")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def stream_one(url: str, body: dict[str, Any], started: float) -> dict[str, float]:
    """One client: stream a story; seconds to first text and to the end, tokens written."""
    first = None
    tokens = 0
    with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=600) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if "text" in event and first is None:
                first = time.perf_counter()
            if event.get("done"):
                tokens = int(event["story"]["generated_tokens"])
    ended = time.perf_counter()
    assert first is not None and tokens > 0
    return {
        "tokens": tokens,
        "ttft_s": first - started,
        "seconds": ended - started,
        "tokens_per_s": (tokens - 1) / (ended - first),
    }


def load(url: str, prompt: str, streams: int, new_tokens: int) -> dict[str, Any]:
    results: list[dict[str, float] | BaseException] = [RuntimeError("not run")] * streams
    barrier = threading.Barrier(streams)

    def client(index: int) -> None:
        body = {
            "prompt": prompt,
            "mode": "continue",
            "seed": index,
            "max_new_tokens": new_tokens,
            "min_new_tokens": new_tokens,
            "stream": True,
        }
        barrier.wait()
        try:
            results[index] = stream_one(url, body, time.perf_counter())
        except BaseException as exc:  # reported, never lost in the thread
            results[index] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    wall = time.perf_counter() - started
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise RuntimeError(f"{len(failures)} of {streams} streams failed: {failures[0]}")
    done = [r for r in results if isinstance(r, dict)]
    rates = [r["tokens_per_s"] for r in done]
    return {
        "streams": streams,
        "total_tokens": int(sum(r["tokens"] for r in done)),
        "wall_s": round(wall, 2),
        "total_tokens_per_s": round(sum(r["tokens"] for r in done) / wall, 2),
        "per_stream_tokens_per_s": [round(r, 2) for r in rates],
        "fairness_slowest_over_fastest": round(min(rates) / max(rates), 3),
        "ttft_ms_median": round(statistics.median(r["ttft_s"] for r in done) * 1000, 1),
        "ttft_ms_max": round(max(r["ttft_s"] for r in done) * 1000, 1),
    }


def measure_backend(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    from taleforge.models import load_tokenizer

    prompt = prompt_of_exactly(load_tokenizer(args.model), PROMPT_TOKENS)
    with tempfile.TemporaryDirectory() as workdir:
        server, url = start_server(args.model, backend, Path(workdir))
        try:
            load(url, prompt, 1, 8)  # loads the model (and exports it once if needed)
            levels = {}
            for streams in tqdm(args.streams, desc=f"{backend} streams", file=sys.stderr):
                levels[str(streams)] = load(url, prompt, streams, args.new_tokens)
            rss = peak_rss_mb(server.pid)
            health = httpx.get(f"{url}/health", timeout=10).json()
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    one = levels[str(min(args.streams))]["total_tokens_per_s"]
    return {
        "levels": levels,
        "tokens_per_s": one,
        "ratio_vs_one_stream": {
            n: round(level["total_tokens_per_s"] / one, 2) for n, level in levels.items()
        },
        "server_peak_rss_mb": rss,
        "health": health,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="taleforge-stories", help="Model the server runs.")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="Comma-separated.")
    parser.add_argument("--streams", default="1,4,8", help="Concurrent streams to measure.")
    parser.add_argument("--new-tokens", type=int, default=128, help="Tokens per stream.")
    parser.add_argument("--output", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    args.streams = [int(n) for n in args.streams.split(",")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    results = {backend: measure_backend(args, backend) for backend in backends}
    report = {
        "benchmark": "serve_load",
        "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": args.new_tokens,
        "machine": {
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "backends": results,
    }
    if "llama.cpp" in results and "8" in results["llama.cpp"]["levels"]:
        fast = results["llama.cpp"]
        report["targets"] = {
            "8_streams_3x_one_stream": fast["ratio_vs_one_stream"]["8"] >= 3,
            "server_peak_rss_1gb": fast["server_peak_rss_mb"] <= 1024,
        }
    print(f"{'backend':<14}{'streams':>8}{'total tok/s':>13}{'x 1 stream':>12}"
          f"{'fairness':>10}{'TTFT ms':>9}{'RSS MB':>8}")  # fmt: skip
    for backend, numbers in results.items():
        for n, level in numbers["levels"].items():
            print(
                f"{backend:<14}{n:>8}{level['total_tokens_per_s']:>13.1f}"
                f"{numbers['ratio_vs_one_stream'][n]:>12.2f}"
                f"{level['fairness_slowest_over_fastest']:>10.2f}{level['ttft_ms_median']:>9.0f}"
                f"{numbers['server_peak_rss_mb']:>8.0f}"
            )
    if len(results) > 1 and "transformers" in results:
        for n in results["transformers"]["levels"]:
            ratio = (
                results["llama.cpp"]["levels"][n]["total_tokens_per_s"]
                / results["transformers"]["levels"][n]["total_tokens_per_s"]
            )
            print(f"{n} streams: llama.cpp / transformers = {ratio:.2f}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
