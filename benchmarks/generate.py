"""Single-stream speed and quality per backend, side by side in one run.

    python benchmarks/generate.py --output benchmarks/results/generate.json

Every candidate runs in a process of its own (so its peak RSS is its own), one after the
other, on the same 64-token prompt: decode tokens/s after the first token, time to first
token, peak RSS, and perplexity on the sample test split (the same token ids for every
candidate). Candidates are taleforge's backends (transformers float32, llama.cpp with the
GGUF export at several quantizations) and CTranslate2 int8 when it is installed
(``pip install ctranslate2``), measured to choose the optimized backend; the JSON records the
choice and why. Ratios between candidates are meaningful on a noisy machine, absolute numbers
less so: run it on an idle one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

PROMPT_TOKENS = 64
SOURCE_TEXT = (
    "The lighthouse keeper had not spoken to anyone in eleven days when the sea began to "
    "knock. It came at night, three slow blows against the rocks below the tower, and each "
    "morning he walked the shore and found nothing but kelp and a smell of iron. On the "
    "twelfth night he took the lamp down the spiral stairs, past the oil room and the cellar, "
    "to the iron hatch that opened onto the water. The knocking stopped as soon as he touched "
    "the latch, as if whoever waited below had heard him coming and was listening too."
)
#: name -> (kind, quantization); "llama.cpp" is the quantization taleforge uses by default.
CANDIDATES: dict[str, tuple[str, str]] = {
    "transformers": ("transformers", "float32"),
    "llama.cpp": ("llama.cpp", "q8_0"),
    "llama.cpp-q5_1": ("llama.cpp", "q5_1"),
    "llama.cpp-q4_1": ("llama.cpp", "q4_1"),
    "ctranslate2": ("ctranslate2", "int8"),
}
PPL_WINDOW = 512
MAX_PPL_GAP = 0.02


def prompt_of_exactly(tokenizer: Any, n_tokens: int, run: int = 0) -> str:
    """``n_tokens`` tokens of the benchmark text, starting ``run`` tokens in: every run reads
    a new prompt (llama.cpp would otherwise reuse the previous run's KV cache for it)."""
    ids = tokenizer(SOURCE_TEXT, add_special_tokens=False)["input_ids"]
    if len(ids) < n_tokens + run:
        raise SystemExit(f"benchmark text has only {len(ids)} tokens; need {n_tokens + run}")
    return str(tokenizer.decode(ids[run : run + n_tokens]))


def test_split_ids(model: str, tokenizer: Any) -> list[list[int]]:
    """The sample test split, formatted as the model was trained, as token ids."""
    from taleforge.config import load_config
    from taleforge.evaluate.dataset import load_data

    config = load_config(None, {"model.spec": model, "evaluate.metrics": ["perplexity"]})
    records = load_data(config).records
    texts = [r["prefix"] + r["text"] for r in records]
    return [tokenizer(t)["input_ids"][:PPL_WINDOW] for t in texts]


def perplexity(scores: list[list[float]]) -> float:
    total = sum(sum(s) for s in scores)
    count = sum(len(s) for s in scores)
    return math.exp(-total / count)


# -- workers: one candidate each, in a process of its own -----------------------------------


def run_taleforge(kind: str, quantization: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from taleforge import StoryGenerator
    from taleforge.generate.backends import open_model

    started = time.perf_counter()
    loaded, backend = open_model(args.model, backend=kind, quantization=quantization, parallel=1)
    generator = StoryGenerator(loaded, backend=backend)
    load_seconds = time.perf_counter() - started
    prompt = prompt_of_exactly(loaded.tokenizer, PROMPT_TOKENS)
    options = {
        "mode": "continue",
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "temperature": 0.8,
        "trim_to_sentence": False,
    }
    generator.generate(prompt, seed=0, **{**options, "max_new_tokens": 8, "min_new_tokens": 8})
    rates, ttfts = [], []
    for run in tqdm(range(args.runs), desc=f"  {kind} {quantization}", file=sys.stderr):
        prompt = prompt_of_exactly(loaded.tokenizer, PROMPT_TOKENS, run + 1)
        story = generator.generate(prompt, seed=run, **options).stories[0]
        assert story.time_to_first_token is not None
        rates.append((story.generated_tokens - 1) / (story.seconds - story.time_to_first_token))
        ttfts.append(story.time_to_first_token * 1000)
    generating_rss = peak_rss_mb()
    scores: list[list[float]] = []
    texts = test_split_ids(args.model, loaded.tokenizer)
    for ids in tqdm(texts, desc="  perplexity", file=sys.stderr):
        if kind == "llama.cpp":
            scores.append(backend.token_logprobs(ids))  # type: ignore[attr-defined]
            continue
        with torch.inference_mode():
            logits = loaded.model(torch.tensor([ids])).logits[0, :-1].float()
        picked = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])
        scores.append(picked.flatten().tolist())
    return summary(rates, ttfts, scores, load_seconds, generating_rss)


def run_ctranslate2(args: argparse.Namespace) -> dict[str, Any]:
    import ctranslate2

    from taleforge.models import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    started = time.perf_counter()
    generator = ctranslate2.Generator(
        str(args.ct2_dir), device="cpu", compute_type="int8", intra_threads=os.cpu_count() or 1
    )
    load_seconds = time.perf_counter() - started

    def one(seed: int, new_tokens: int) -> tuple[float, float]:
        prompt_ids = tokenizer(prompt_of_exactly(tokenizer, PROMPT_TOKENS, seed + 1))["input_ids"]
        prompt = tokenizer.convert_ids_to_tokens(prompt_ids)
        started = time.perf_counter()
        first = None
        count = 0
        for _ in generator.generate_tokens(
            prompt,
            max_length=new_tokens,
            sampling_temperature=0.8,
            sampling_topk=50,
            sampling_topp=0.95,
            repetition_penalty=1.1,
            end_token=[],
        ):
            count += 1
            first = first or time.perf_counter()
        assert first is not None
        return (count - 1) / (time.perf_counter() - first), (first - started) * 1000

    one(0, 8)
    rates, ttfts = [], []
    for run in tqdm(range(args.runs), desc="  ctranslate2 int8", file=sys.stderr):
        rate, ttft = one(run, args.new_tokens)
        rates.append(rate)
        ttfts.append(ttft)
    generating_rss = peak_rss_mb()
    scores = []
    for ids in test_split_ids(args.model, tokenizer):
        result = generator.score_batch([tokenizer.convert_ids_to_tokens(ids)])[0]
        scores.append(list(result.log_probs))
    return summary(rates, ttfts, scores, load_seconds, generating_rss)


def summary(
    rates: list[float],
    ttfts: list[float],
    scores: list[list[float]],
    load_seconds: float,
    generating_rss: float,
) -> dict[str, Any]:
    return {
        "tokens_per_s": round(statistics.median(rates), 2),
        "tokens_per_s_runs": [round(r, 2) for r in rates],
        "ttft_ms": round(statistics.median(ttfts), 1),
        "ttft_ms_runs": [round(t, 1) for t in ttfts],
        "perplexity": round(perplexity(scores), 3),
        "perplexity_tokens": sum(len(s) for s in scores),
        # Loading and writing stories; scoring the test split (all logits of 512-token
        # texts at once) needs more and is reported apart.
        "peak_rss_mb": generating_rss,
        "peak_rss_with_scoring_mb": peak_rss_mb(),
        "load_s": round(load_seconds, 2),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    parent that started it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def worker(args: argparse.Namespace) -> int:
    kind, quantization = CANDIDATES[args.worker]
    result = (
        run_ctranslate2(args)
        if kind == "ctranslate2"
        else (run_taleforge(kind, quantization, args))
    )
    print(json.dumps(result))
    return 0


# -- the run --------------------------------------------------------------------------------


def prepare_candidates(args: argparse.Namespace, names: list[str]) -> dict[str, str]:
    """Export what the candidates read (outside their processes); name -> why skipped."""
    from taleforge.models import load_model
    from taleforge.models.export import export_gguf

    skipped: dict[str, str] = {}
    loaded = load_model(args.model)
    for name in names:
        kind, quantization = CANDIDATES[name]
        if kind == "llama.cpp":
            from taleforge.generate.backends.llama import llama_cpp_missing

            missing = llama_cpp_missing()
            if missing:
                skipped[name] = missing
                continue
            export_gguf(args.model, quantization=quantization, loaded=loaded)
        elif kind == "ctranslate2":
            try:
                import ctranslate2.converters
            except ImportError:
                skipped[name] = "ctranslate2 is not installed (pip install ctranslate2)"
                continue
            if not (args.ct2_dir / "model.bin").is_file():
                with tempfile.TemporaryDirectory() as merged:
                    loaded.model.save_pretrained(merged)
                    loaded.tokenizer.save_pretrained(merged)
                    ctranslate2.converters.TransformersConverter(merged).convert(
                        str(args.ct2_dir), quantization="int8", force=True
                    )
    return skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="taleforge-stories", help="Model spec to measure.")
    parser.add_argument("--new-tokens", type=int, default=128, help="Tokens per run.")
    parser.add_argument("--runs", type=int, default=5, help="Timed runs per candidate.")
    parser.add_argument(
        "--candidates", default=",".join(CANDIDATES), help="Comma-separated candidate names."
    )
    parser.add_argument("--output", type=Path, help="Write the results as JSON here.")
    parser.add_argument("--worker", choices=list(CANDIDATES), help=argparse.SUPPRESS)
    parser.add_argument("--ct2-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from taleforge.models import cache_root

    safe = "".join(c if c.isalnum() else "-" for c in args.model)[-40:]
    args.ct2_dir = args.ct2_dir or cache_root() / "bench" / f"ct2-{safe}-int8"
    if args.worker:
        return worker(args)

    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = set(names) - set(CANDIDATES)
    if unknown or "transformers" not in names:
        raise SystemExit(
            f"--candidates: use names from {', '.join(CANDIDATES)} (transformers is the "
            f"baseline and must be one); unknown: {sorted(unknown)}"
        )
    print("preparing (exports, conversions) ...", file=sys.stderr)
    skipped = prepare_candidates(args, names)
    results: dict[str, Any] = {}
    for name in tqdm([n for n in names if n not in skipped], desc="candidates", file=sys.stderr):
        command = [sys.executable, __file__, "--worker", name, "--model", args.model,
                   "--new-tokens", str(args.new_tokens), "--runs", str(args.runs),
                   "--ct2-dir", str(args.ct2_dir)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            skipped[name] = f"failed: {done.stderr.strip().splitlines()[-1:]}"
            continue
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    base = results["transformers"]
    for numbers in results.values():
        numbers["speedup_vs_transformers"] = round(
            numbers["tokens_per_s"] / base["tokens_per_s"], 2
        )
        numbers["perplexity_vs_fp32"] = round(numbers["perplexity"] / base["perplexity"] - 1, 4)
    report = {
        "benchmark": "generate",
        "command": "python benchmarks/generate.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": args.new_tokens,
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "backends": results,
        "skipped": skipped,
        "choice": choose(results),
        "targets": {
            "single_stream_4x_transformers": results.get("llama.cpp", {}).get(
                "speedup_vs_transformers", 0
            )
            >= 4,
            "ttft_150ms": results.get("llama.cpp", {}).get("ttft_ms", 1e9) <= 150,
            "perplexity_within_2_percent": abs(
                results.get("llama.cpp", {}).get("perplexity_vs_fp32", 1)
            )
            <= MAX_PPL_GAP,
        },
    }
    header = f"{'candidate':<16}{'tokens/s':>10}{'x fp32':>8}{'TTFT ms':>9}{'ppl':>9}{'ppl Δ':>8}"
    print(header + f"{'RSS MB':>8}")
    for name, n in results.items():
        print(
            f"{name:<16}{n['tokens_per_s']:>10.1f}{n['speedup_vs_transformers']:>8.2f}"
            f"{n['ttft_ms']:>9.0f}{n['perplexity']:>9.2f}{n['perplexity_vs_fp32']:>+8.2%}"
            f"{n['peak_rss_mb']:>8.0f}"
        )
    for name, why in skipped.items():
        print(f"{name:<16}skipped: {why}")
    print(f"choice: {report['choice']['why']}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def choose(results: dict[str, Any]) -> dict[str, Any]:
    """The fastest taleforge backend whose perplexity is within 2 % of float32."""
    fit = {
        name: n
        for name, n in results.items()
        if abs(n["perplexity_vs_fp32"]) <= MAX_PPL_GAP and CANDIDATES[name][0] != "ctranslate2"
    }
    best = max(fit, key=lambda name: fit[name]["tokens_per_s"])
    others = ", ".join(
        f"{name} {n['tokens_per_s']:.0f} tokens/s (ppl {n['perplexity_vs_fp32']:+.1%})"
        for name, n in results.items()
        if name != best
    )
    return {
        "backend": CANDIDATES[best][0],
        "quantization": CANDIDATES[best][1],
        "why": f"{best}: {fit[best]['tokens_per_s']:.0f} tokens/s, perplexity "
        f"{fit[best]['perplexity_vs_fp32']:+.1%} vs float32 — the fastest within 2 % "
        f"perplexity; others: {others}",
    }


if __name__ == "__main__":
    sys.exit(main())
