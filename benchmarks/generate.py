"""Single-stream generation speed: tokens/s and time to first token, per backend, in one run.

    python benchmarks/generate.py --output benchmarks/results/generate.json

Every backend available here is measured side by side on the same 64-token prompt, so the
ratios between them are meaningful even on a noisy machine (absolute numbers are not).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

from taleforge import StoryGenerator, load_model

PROMPT_TOKENS = 64
SOURCE_TEXT = (
    "The lighthouse keeper had not spoken to anyone in eleven days when the sea began to "
    "knock. It came at night, three slow blows against the rocks below the tower, and each "
    "morning he walked the shore and found nothing but kelp and a smell of iron. On the "
    "twelfth night he took the lamp down the spiral stairs, past the oil room and the cellar, "
    "to the iron hatch that opened onto the water. The knocking stopped as soon as he touched "
    "the latch, as if whoever waited below had heard him coming and was listening too."
)


def prompt_of_exactly(tokenizer, n_tokens: int) -> str:
    ids = tokenizer(SOURCE_TEXT, add_special_tokens=False)["input_ids"]
    if len(ids) < n_tokens:
        raise SystemExit(f"benchmark text has only {len(ids)} tokens; need {n_tokens}")
    return str(tokenizer.decode(ids[:n_tokens]))


def measure(generator: StoryGenerator, prompt: str, new_tokens: int, runs: int) -> dict:
    """Time ``runs`` generations of exactly ``new_tokens`` tokens after one warm-up."""
    options = {
        "mode": "continue",
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "temperature": 0.8,
        "trim_to_sentence": False,
    }
    generator.generate(prompt, seed=0, **{**options, "max_new_tokens": 8, "min_new_tokens": 8})
    rates, ttfts = [], []
    for run in tqdm(range(runs), desc="  runs", file=sys.stderr, leave=False):
        story = generator.generate(prompt, seed=run, **options).stories[0]
        # Decode rate after the first token, so prompt processing does not blur it.
        assert story.time_to_first_token is not None
        decode_seconds = story.seconds - story.time_to_first_token
        rates.append((story.generated_tokens - 1) / decode_seconds)
        ttfts.append(story.time_to_first_token * 1000)
    return {
        "tokens_per_s": round(statistics.median(rates), 2),
        "tokens_per_s_runs": [round(r, 2) for r in rates],
        "ttft_ms": round(statistics.median(ttfts), 1),
        "ttft_ms_runs": [round(t, 1) for t in ttfts],
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": new_tokens,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="Model spec to measure.")
    parser.add_argument("--new-tokens", type=int, default=128, help="Tokens per run.")
    parser.add_argument("--runs", type=int, default=3, help="Timed runs per backend.")
    parser.add_argument("--output", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()

    started = time.perf_counter()
    loaded = load_model(args.model)
    load_seconds = time.perf_counter() - started
    prompt = prompt_of_exactly(loaded.tokenizer, PROMPT_TOKENS)
    backends = {"transformers": StoryGenerator(loaded)}  # more backends join here
    results = {}
    for name, generator in backends.items():
        print(f"{name}: {args.runs} x {args.new_tokens} tokens ...", file=sys.stderr)
        results[name] = measure(generator, prompt, args.new_tokens, args.runs)
    baseline = results["transformers"]["tokens_per_s"]
    for numbers in results.values():
        numbers["speedup_vs_transformers"] = round(numbers["tokens_per_s"] / baseline, 2)

    report = {
        "benchmark": "generate",
        "model": args.model,
        "model_load_s": round(load_seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cores": __import__("os").cpu_count(),
        },
        "backends": results,
    }
    print(f"{'backend':<14}{'tokens/s':>10}{'TTFT ms':>10}{'x baseline':>12}")
    for name, numbers in results.items():
        print(
            f"{name:<14}{numbers['tokens_per_s']:>10.1f}{numbers['ttft_ms']:>10.0f}"
            f"{numbers['speedup_vs_transformers']:>12.2f}"
        )
    print(f"peak RSS {report['peak_rss_mb']} MB, model load {report['model_load_s']} s")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
