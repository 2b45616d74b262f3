"""What the server benchmarks share: servers started on 127.0.0.1, N clients streaming
OpenAI completions from one at the same moment, and llama.cpp's llama-server, built once.

The llama-server binary is built from the llama.cpp that the installed llama-cpp-python
vendors (its sdist, from PyPI), with the Makefile's LLAMA_CMAKE_ARGS, under
``$TALEFORGE_CACHE/llama-server/<version>/`` (default ``~/.cache/taleforge``): the same code
and CPU flags as taleforge's llama.cpp backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


# -- the llama-server binary ----------------------------------------------------------------


def makefile_cmake_args(makefile: Path = ROOT / "Makefile") -> list[str]:
    """The Makefile's ``LLAMA_CMAKE_ARGS``: the flags llama-cpp-python is built with."""
    for line in makefile.read_text(encoding="utf-8").splitlines():
        name, assign, value = line.partition(":=")
        if assign and name.strip() == "LLAMA_CMAKE_ARGS":
            return shlex.split(value)
    raise SystemExit(f"{makefile} has no 'LLAMA_CMAKE_ARGS :=' line")


@dataclass(frozen=True)
class BuildPlan:
    """Where llama-server is built for a llama-cpp-python version, and the steps still to run."""

    binary: Path
    steps: tuple[tuple[Path, tuple[str, ...]], ...]  # (working directory, command)


def build_plan(version: str, folder: Path, cmake_args: list[str], cores: int) -> BuildPlan:
    """The steps that build llama-server from llama-cpp-python's sdist in ``folder``: none
    when the binary is there; the download and extraction only when not done yet."""
    tarball = folder / f"llama_cpp_python-{version}.tar.gz"
    source = folder / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    binary = source / "build" / "bin" / "llama-server"
    if binary.is_file():
        return BuildPlan(binary, ())
    steps: list[tuple[Path, tuple[str, ...]]] = []
    if not tarball.is_file():
        steps.append((folder, (sys.executable, "-m", "pip", "download", "--no-deps",
                               "--no-binary", ":all:", f"llama-cpp-python=={version}",
                               "-d", str(folder))))  # fmt: skip
    if not source.is_dir():
        steps.append((folder, ("tar", "-xzf", tarball.name)))
    steps.append((source, ("cmake", "-S", ".", "-B", "build", "-G", "Ninja",
                           "-DCMAKE_BUILD_TYPE=Release", *cmake_args, "-DLLAMA_CURL=OFF",
                           "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                           "-DLLAMA_BUILD_SERVER=ON", "-DBUILD_SHARED_LIBS=OFF")))  # fmt: skip
    steps.append((source, ("cmake", "--build", "build", "--target", "llama-server",
                           "-j", str(cores))))  # fmt: skip
    return BuildPlan(binary, tuple(steps))


def default_plan() -> BuildPlan:
    """The build of the llama.cpp this venv's llama-cpp-python vendors, in the cache."""
    import llama_cpp

    from taleforge.models import cache_root

    version = str(llama_cpp.__version__)
    folder = cache_root() / "llama-server" / version
    return build_plan(version, folder, makefile_cmake_args(), os.cpu_count() or 1)


def build(plan: BuildPlan) -> Path:
    """Run the plan's steps (minutes on a few cores); the built binary."""
    from filelock import FileLock

    if plan.steps:
        plan.steps[0][0].mkdir(parents=True, exist_ok=True)
        with FileLock(str(plan.steps[0][0] / ".build.lock"), timeout=3 * 3600):
            print("building llama-server once (6-10 minutes on 2 cores) ...", file=sys.stderr)
            for cwd, command in plan.steps:
                print(f"+ (cd {cwd} && {shlex.join(command)})", file=sys.stderr)
                subprocess.run(command, cwd=cwd, check=True)
    if not plan.binary.is_file():
        raise SystemExit(f"the build finished without {plan.binary}")
    return plan.binary


def llama_server_version(binary: Path) -> str:
    """What ``llama-server --version`` says (its ``version:`` line)."""
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return next((line.strip() for line in lines if line.startswith("version:")), "unknown")


# -- running servers ----------------------------------------------------------------------


@dataclass
class Server:
    """A server process this benchmark started; its output goes to ``log``."""

    name: str
    command: list[str]
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def tail(self) -> str:
        """The end of the server's output, for error messages."""
        return f"--- {self.name} output (end) ---\n{self.log_text()[-3000:]}"

    def maps(self, path: Path) -> bool:
        """Whether the process has ``path`` mapped (llama.cpp mmaps the GGUF it loads)."""
        maps = Path(f"/proc/{self.process.pid}/maps").read_text(encoding="utf-8")
        return any(line.endswith(" " + str(path.resolve())) for line in maps.splitlines())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(name: str, command: list[str], port: int, workdir: Path) -> Server:
    """Start a server (output to a log file) and wait until its /health answers 200."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
           "TALEFORGE_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}"}  # fmt: skip
    log = workdir / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=output, stderr=output)
    server = Server(name, command, process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited ({process.returncode}):\n{server.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    return server
            time.sleep(0.5)
        raise SystemExit(f"{name} did not answer /health within 300 s:\n{server.tail()}")
    except BaseException:
        server.stop()
        raise


# -- clients ----------------------------------------------------------------------------------


def stream_one(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One client: seconds to the first non-empty text and to the end, tokens written (the
    final usage; text chunks counted when a server sends none)."""
    started = time.perf_counter()
    first, chunks, usage = None, 0, None
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=timeout) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        for line in response.iter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            event = json.loads(line[5:])
            if "error" in event:
                raise RuntimeError(f"error in the stream: {event['error']}")
            for choice in event.get("choices") or ():
                if choice.get("text"):
                    chunks += 1
                    first = first or time.perf_counter()
            usage = event.get("usage") or usage
    ended = time.perf_counter()
    if first is None:
        raise RuntimeError("the stream ended without text")
    tokens = int(usage["completion_tokens"]) if usage else chunks
    return {
        "started": started,
        "ended": ended,
        "tokens": tokens,
        "counted_by": "usage" if usage else "chunks",
        "text_chunks": chunks,
        "prompt_tokens": usage.get("prompt_tokens") if usage else None,
        "cached_tokens": ((usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens"),
        "ttft_s": first - started,
        "tokens_per_s": (tokens - 1) / max(ended - first, 1e-9),
    }


def run_level(url: str, bodies: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
    """N clients released together by a barrier, one body each; the level's numbers."""
    streams = len(bodies)
    results: list[dict[str, Any] | BaseException] = [RuntimeError("not run")] * streams
    barrier = threading.Barrier(streams)

    def client(index: int) -> None:
        try:
            barrier.wait(timeout=60)
            results[index] = stream_one(url, bodies[index], timeout)
        except BaseException as exc:  # reported, never lost in the thread
            results[index] = exc

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout + 60)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures or any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"{len(failures)} of {streams} streams failed: {failures[:1]}")
    done = [r for r in results if isinstance(r, dict)]
    wall = max(r["ended"] for r in done) - min(r["started"] for r in done)
    rates = [r["tokens_per_s"] for r in done]
    ttfts = sorted(r["ttft_s"] * 1000 for r in done)
    p95 = statistics.quantiles(ttfts, n=20, method="inclusive")[18] if streams > 1 else ttfts[0]
    return {
        "streams": streams,
        "total_tokens": sum(r["tokens"] for r in done),
        "tokens_exact": all(
            r["tokens"] == b["max_tokens"] for r, b in zip(done, bodies, strict=True)
        ),
        "counted_by": sorted({r["counted_by"] for r in done}),
        "text_chunks": sum(r["text_chunks"] for r in done),
        "prompt_tokens": sorted({r["prompt_tokens"] for r in done if r["prompt_tokens"]}),
        "cached_prompt_tokens": sum(r["cached_tokens"] or 0 for r in done),
        "wall_s": round(wall, 3),
        "total_tokens_per_s": round(sum(r["tokens"] for r in done) / wall, 2),
        "per_stream_tokens_per_s": [round(r, 2) for r in rates],
        "fairness_slowest_over_fastest": round(min(rates) / max(rates), 3),
        "ttft_ms_median": round(statistics.median(ttfts), 1),
        "ttft_ms_p95": round(p95, 1),
        "ttft_ms": [round(t, 1) for t in ttfts],
    }
