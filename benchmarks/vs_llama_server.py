"""taleforge serve (llama.cpp backend) against llama.cpp's own llama-server, on one GGUF file.

    python benchmarks/vs_llama_server.py --llama-server PATH \
        --output benchmarks/results/vs_llama_server.json --plot docs/img/vs_llama_server.png

Both servers run on 127.0.0.1 at the same time (each idle while the other is measured) and load
the same file: the q8_0 export of ``--model`` that the llama.cpp backend makes and uses
(``export_gguf``; the script checks that both server processes map that very file). Both get
the same parallelism, context and threads: taleforge with ``model.parallel`` = ``--parallel``;
llama-server with ``-np`` the same, ``-c`` that many times taleforge's context per story (read
from its log), ``-t`` one per core, and its own defaults for the rest (KV-cache layout, batch
sizes), as a writer would run it. Every request is ``POST
/v1/completions`` with ``"stream": true``, the same sampling (temperature 0.8, top-p 0.95,
top-k 40, min-p 0.05, applied in taleforge's order, no penalties), a seed, and exactly
``--new-tokens`` new tokens (taleforge: ``min_tokens``; llama-server: ``ignore_eos``). Each
prompt is a different 64-token passage of the sample dataset, so no prompt or result cache of
either server can answer, and one that llama.cpp's tokenizer splits into the same tokens as
taleforge's (a safeguard: exports made before EXPORT_VERSION 2 named no pre-tokenizer
and split contractions and digits otherwise); the
``checks`` in the JSON confirm that both wrote exactly as many tokens from as many, read (at
most 5 % from a cache: passages that begin alike).

Rounds are interleaved: in each, for every stream count, both servers take a turn (which goes
first alternates by round); N clients start together behind a barrier and each streams one
completion. Per turn: total tokens/s (all tokens over the wall time from the first start to
the last end), time to first text (median, p95), each stream's tokens/s and fairness (slowest
/ fastest). Reported: the best round's numbers per server and stream count, the ratios
taleforge / llama-server, the targets, and every round raw. Without ``--llama-server`` the
binary is built once (the llama.cpp that llama-cpp-python vendors, with the Makefile's
LLAMA_CMAKE_ARGS) under the taleforge cache; ``--dry-run-build`` prints how.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import PROMPT_TOKENS
from server_bench import (
    ROOT,
    Server,
    build,
    default_plan,
    free_port,
    llama_server_version,
    run_level,
    start,
    stream_one,
)

SERVERS = ("taleforge", "llama-server")
#: Most prompt tokens a turn may take from a server's cache (see ``checks``).
MAX_CACHED_SHARE = 0.05
QUANTIZATION = "q8_0"
#: The sampling both servers get (neutral values sent so neither server's defaults apply).
SAMPLING: dict[str, Any] = {
    "temperature": 0.8,
    "top_p": 0.95,
    "top_k": 40,
    "min_p": 0.05,
    "typical_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "dry_multiplier": 0.0,
    "xtc_probability": 0.0,
}
#: Each server's own names for "no repetition penalty" and "exactly N tokens". llama-server
#: ignores fields it does not know (taleforge refuses them), so each gets its own; the
#: sampler order is taleforge's (transformers': temperature first), not llama.cpp's default.
EXTRA: dict[str, dict[str, Any]] = {
    "taleforge": {"repetition_penalty": 1.0},
    "llama-server": {
        "repeat_penalty": 1.0,
        "ignore_eos": True,
        "samplers": ["temperature", "top_k", "top_p", "min_p"],
    },
}
#: What the summary keeps of a server's best round per stream count.
BEST_KEYS = ("total_tokens_per_s", "ttft_ms_median", "ttft_ms_p95",
             "fairness_slowest_over_fastest", "tokens_exact")  # fmt: skip


# -- prompts and requests -------------------------------------------------------------------


def candidate_prompts(tokenizer: Any, n_tokens: int = PROMPT_TOKENS) -> Iterator[str]:
    """Different ``n_tokens``-token passages of the sample dataset's stories (their openings
    first, then later windows), so no two requests share a prefix."""
    with (ROOT / "data/sample/stories.csv").open(encoding="utf-8", newline="") as file:
        texts = [row["text"] for row in csv.DictReader(file)]
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    for start_at in range(0, max(len(i) for i in ids), n_tokens):
        for story in ids:
            if len(story) >= start_at + n_tokens:
                yield str(tokenizer.decode(story[start_at : start_at + n_tokens]))


def agreeing_prompts(
    llama_url: str, tokenizer: Any, candidates: Iterator[str], count: int
) -> tuple[list[str], int]:
    """``count`` candidates that llama-server tokenizes into the very tokens taleforge does
    (the Hugging Face tokenizer), so both servers read the same prompt; and how many were
    skipped because llama.cpp's tokenizer split them differently."""
    chosen: list[str] = []
    skipped = 0
    for prompt in candidates:
        answer = httpx.post(
            f"{llama_url}/tokenize", json={"content": prompt, "add_special": True}, timeout=60
        )
        answer.raise_for_status()
        if answer.json()["tokens"] == tokenizer(prompt, add_special_tokens=False)["input_ids"]:
            chosen.append(prompt)
            if len(chosen) == count:
                return chosen, skipped
        else:
            skipped += 1
    raise SystemExit(f"only {len(chosen)} passages tokenize alike on both servers; {count} needed")


def request_body(server: str, prompt: str, seed: int, new_tokens: int) -> dict[str, Any]:
    """One streamed completion of exactly ``new_tokens`` tokens, as ``server`` is asked."""
    exact = {"min_tokens": new_tokens} if server == "taleforge" else {}
    return {"prompt": prompt, "max_tokens": new_tokens, "seed": seed, "stream": True,
            "stream_options": {"include_usage": True},
            **SAMPLING, **EXTRA[server], **exact}  # fmt: skip


# -- the servers ----------------------------------------------------------------------------


def warm_up(server: Server, prompt: str, timeout: float) -> None:
    """One short completion (loads the model, exports it if needed); it must be exact."""
    body = request_body(server.name, prompt, seed=0, new_tokens=8)
    try:
        result = stream_one(server.url, body, timeout)
    except (RuntimeError, httpx.HTTPError) as exc:
        raise SystemExit(f"{server.name}: warm-up failed: {exc}\n{server.tail()}") from None
    if result["tokens"] != 8:
        raise SystemExit(f"{server.name} wrote {result['tokens']} tokens where 8 were asked")


def start_taleforge(args: argparse.Namespace, workdir: Path) -> Server:
    port = free_port()
    # Not quiet: the backend logs its context per story, which llama-server is given.
    command = [sys.executable, "-m", "taleforge", "serve", "--model", args.model,
               "--backend", "llama.cpp", "--host", "127.0.0.1", "--port", str(port),
               "--set", f"model.parallel={args.parallel}",
               "--set", f"model.quantization={QUANTIZATION}",
               "--set", "serve.cache_size=0",
               "--set", "serve.rate_limit_generate=100000/minute",
               "--set", f"serve.max_waiting={max(8, *args.streams)}"]  # fmt: skip
    return start("taleforge", command, port, workdir)


def context_per_story(taleforge: Server, parallel: int) -> int:
    """The context per story taleforge's backend chose (its log line at model load)."""
    found = re.search(r"(\d+) parallel, (\d+)-token window", taleforge.log_text())
    if not found or int(found[1]) != parallel:
        raise SystemExit(f"taleforge logged no llama.cpp backend with {parallel} parallel")
    return int(found[2])


def start_llama_server(args: argparse.Namespace, gguf: Path, context: int, workdir: Path) -> Server:
    port = free_port()
    cores = str(os.cpu_count() or 1)
    # As a writer runs it: llama-server's own defaults (KV layout, batch sizes) with as many
    # slots and as much context per story as taleforge, and a thread per core. Its defaults
    # were faster here than taleforge's engine layout (--kv-unified, -b/-ub 512): the
    # stronger reference. --llama-server-arg adds flags.
    command = [str(args.llama_server), "-m", str(gguf), "-np", str(args.parallel),
               "-c", str(args.parallel * context), "-t", cores, "--host", "127.0.0.1",
               "--port", str(port), *args.llama_server_arg]  # fmt: skip
    return start("llama-server", command, port, workdir)


# -- the run --------------------------------------------------------------------------------


def measure(args: argparse.Namespace, gguf: Path, tokenizer: Any) -> dict[str, Any]:
    """Start both servers, warm them up, run the interleaved rounds; the raw record."""
    candidates = candidate_prompts(tokenizer)
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        workdir = Path(folder)
        taleforge = start_taleforge(args, workdir)
        stack.callback(taleforge.stop)
        warm_up(taleforge, next(candidates), args.timeout)
        context = context_per_story(taleforge, args.parallel)
        llama = start_llama_server(args, gguf, context, workdir)
        stack.callback(llama.stop)
        warm_up(llama, next(candidates), args.timeout)
        needed = args.rounds * sum(args.streams)
        prompts, skipped = agreeing_prompts(llama.url, tokenizer, candidates, needed)
        prompts.reverse()  # taken from the end, in the dataset's order
        servers = {"taleforge": taleforge, "llama-server": llama}
        for server in servers.values():
            if not server.maps(gguf):
                raise SystemExit(f"{server.name} (pid {server.process.pid}) has not mapped {gguf}")
        slot = re.search(r"n_ctx_slot = (\d+), kv_unified = '(\w+)'", llama.log_text())
        record: dict[str, Any] = {
            "prompts": {"used": needed, "skipped_tokenized_differently": skipped},
            "context_per_story": context,
            "llama_server_slots": slot and {"n_ctx_slot": int(slot[1]), "kv_unified": slot[2]},
            "servers": {
                name: {"command": shlex.join(server.command), "maps_gguf": True}
                for name, server in servers.items()
            },
        }
        try:
            record["rounds"] = run_rounds(args, servers, prompts)
        except RuntimeError as exc:  # a failed stream: what the servers said about it
            raise SystemExit(f"{exc}\n{taleforge.tail()}\n{llama.tail()}") from None
    return record


def run_rounds(
    args: argparse.Namespace, servers: dict[str, Server], prompts: list[str]
) -> list[dict[str, Any]]:
    """Every round: each stream count on both servers (the first alternating), the same
    prompts and seeds on both; new prompts for every turn."""
    rounds: list[dict[str, Any]] = []
    seed = 0
    with tqdm(total=args.rounds * len(args.streams) * 2, desc="turns", file=sys.stderr) as bar:
        for number in range(args.rounds):
            order = SERVERS if number % 2 == 0 else SERVERS[::-1]
            levels: dict[str, dict[str, Any]] = {}
            for streams in args.streams:
                chosen = [prompts.pop() for _ in range(streams)]
                seeds = list(range(seed, seed + streams))
                seed += streams
                levels[str(streams)] = {}
                for name in order:
                    bar.set_postfix_str(f"round {number + 1}, {streams} streams, {name}")
                    bodies = [request_body(name, p, s, args.new_tokens)
                              for p, s in zip(chosen, seeds, strict=True)]  # fmt: skip
                    time.sleep(args.pause)  # the other server's threads settle
                    levels[str(streams)][name] = run_level(servers[name].url, bodies, args.timeout)
                    bar.update()
            rounds.append({"round": number + 1, "first": order[0], "levels": levels})
    return rounds


def summarize(rounds: list[dict[str, Any]], streams: list[int]) -> dict[str, Any]:
    """Per server and stream count the best round (total tokens/s) with its TTFT; ratios."""
    best: dict[str, dict[str, Any]] = {name: {} for name in SERVERS}
    for name in SERVERS:
        for n in map(str, streams):
            top = max(rounds, key=lambda r: r["levels"][n][name]["total_tokens_per_s"])
            level = top["levels"][n][name]
            best[name][n] = {"round": top["round"]} | {key: level[key] for key in BEST_KEYS}
    tf, ls = best["taleforge"], best["llama-server"]
    ratios = {
        n: {
            key: round(tf[n][key] / ls[n][key], 3)
            for key in ("total_tokens_per_s", "ttft_ms_median")
        }
        for n in map(str, streams)
    }
    turns = [level for r in rounds for level in r["levels"].values()]
    checks = {  # that both did the same work, every turn
        "tokens_exact": all(turn[name]["tokens_exact"] for turn in turns for name in SERVERS),
        "same_prompt_tokens": all(
            turn["taleforge"]["prompt_tokens"] == turn["llama-server"]["prompt_tokens"]
            for turn in turns
        ),
        # llama-server keeps a slot's last prompt: two passages that begin alike ("The")
        # share a token or two, which is not a cache answering
        "prompts_read_not_cached": all(
            turn[name]["cached_prompt_tokens"]
            <= MAX_CACHED_SHARE * turn[name]["streams"] * PROMPT_TOKENS
            for turn in turns
            for name in SERVERS
        ),
    }
    targets = {}
    if "1" in ratios:
        targets["1_stream_tokens_per_s_0.95x"] = ratios["1"]["total_tokens_per_s"] >= 0.95
    if "8" in ratios:
        targets["8_streams_tokens_per_s_1.0x"] = ratios["8"]["total_tokens_per_s"] >= 1.0
        targets["8_streams_ttft_median_at_most_llama_server"] = ratios["8"]["ttft_ms_median"] <= 1
    return {"best": best, "ratios": ratios, "targets": targets, "checks": checks}


def print_table(summary: dict[str, Any], rounds: int) -> None:
    best, ratios = summary["best"], summary["ratios"]
    print(f"best of {rounds} rounds (total tok/s; TTFT median of that round)")
    print(f"{'streams':>7}{'taleforge':>11}{'llama-srv':>11}{'ratio':>7}"
          f"{'TTFT tf ms':>12}{'TTFT ls ms':>12}{'ratio':>7}{'fair tf/ls':>12}")  # fmt: skip
    for n, ratio in ratios.items():
        tf, ls = best["taleforge"][n], best["llama-server"][n]
        print(
            f"{n:>7}{tf['total_tokens_per_s']:>11.1f}{ls['total_tokens_per_s']:>11.1f}"
            f"{ratio['total_tokens_per_s']:>7.2f}{tf['ttft_ms_median']:>12.0f}"
            f"{ls['ttft_ms_median']:>12.0f}{ratio['ttft_ms_median']:>7.2f}"
            f"{tf['fairness_slowest_over_fastest']:>7.2f}/{ls['fairness_slowest_over_fastest']:.2f}"
        )
    for target, met in summary["targets"].items():
        print(f"target {target}: {'met' if met else 'MISSED'}")
    for check, held in summary["checks"].items():
        if not held:
            print(f"WARNING: check {check} failed (see all_rounds in the JSON)")


def plot(summary: dict[str, Any], path: Path, rounds: int) -> None:
    """Two panels: total tokens/s and median TTFT per stream count, a line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    counts = list(summary["ratios"])
    for name, color in zip(SERVERS, ("#4c72b0", "#dd8452"), strict=True):
        levels = summary["best"][name]
        for axis, key in zip(axes, ("total_tokens_per_s", "ttft_ms_median"), strict=True):
            values = [levels[n][key] for n in counts]
            axis.plot([int(n) for n in counts], values, "o-", color=color, label=name)
    for axis, title in zip(axes, ("total tokens/s", "time to first token, median (ms)"),
                           strict=True):  # fmt: skip
        axis.set_title(title)
        axis.set_xlabel("concurrent streams")
        axis.set_xticks([int(n) for n in counts])
        axis.set_ylim(bottom=0)
        axis.legend()
    figure.suptitle(f"taleforge serve vs llama-server, same GGUF (best of {rounds} rounds)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="taleforge-stories", help="Model spec both run.")
    parser.add_argument("--llama-server", type=Path, help="llama-server binary (default: build).")
    parser.add_argument("--dry-run-build", action="store_true", help="Print the build; exit.")
    parser.add_argument("--streams", default="1,4,8", help="Concurrent streams to measure.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds.")
    parser.add_argument("--new-tokens", type=int, default=96, help="Tokens per stream.")
    parser.add_argument("--parallel", type=int, default=8, help="Slots of both servers.")
    parser.add_argument("--pause", type=float, default=1.0, help="Seconds between turns.")
    parser.add_argument("--timeout", type=float, default=600, help="Seconds per request.")
    parser.add_argument(
        "--llama-server-arg", action="append", default=[], help="Extra llama-server flag."
    )
    parser.add_argument("--output", type=Path, help="Write the results as JSON here.")
    parser.add_argument("--plot", type=Path, help="Write the two-panel plot (PNG) here.")
    args = parser.parse_args()
    args.streams = [int(n) for n in args.streams.split(",")]
    if args.dry_run_build:
        plan = default_plan()
        for cwd, command in plan.steps:
            print(f"(cd {cwd} && {shlex.join(command)})")
        print(f"# -> {plan.binary}{' (built: nothing to do)' if not plan.steps else ''}")
        return 0
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    args.llama_server = args.llama_server or build(default_plan())

    from taleforge.models import load_tokenizer
    from taleforge.models.export import export_gguf

    gguf = export_gguf(args.model, quantization=QUANTIZATION).path  # what the backend runs
    record = measure(args, gguf, load_tokenizer(args.model))
    summary = summarize(record["rounds"], args.streams)
    import llama_cpp

    megabytes = round(gguf.stat().st_size / 2**20, 1)
    report = {
        "benchmark": "vs_llama_server",
        "command": "python benchmarks/vs_llama_server.py " + shlex.join(sys.argv[1:]),
        "model": args.model,
        "gguf": {"path": str(gguf), "quantization": QUANTIZATION, "megabytes": megabytes},
        "prompt_tokens": PROMPT_TOKENS,
        "prompts": record["prompts"],
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "parallel": args.parallel,
        "context_per_story": record["context_per_story"],
        "llama_server_slots": record["llama_server_slots"],
        "sampling": {name: {**SAMPLING, **EXTRA[name]} for name in SERVERS},
        "servers": record["servers"],
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "llama_cpp_python": llama_cpp.__version__,
            "llama_server": str(args.llama_server),
            "llama_server_version": llama_server_version(args.llama_server),
        },
        **summary,
        "all_rounds": record["rounds"],
    }
    print_table(summary, args.rounds)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    if args.plot:
        plot(summary, args.plot, args.rounds)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
