"""Long manuscripts on llama.cpp: Continue on a 3,000-token manuscript and stories that run
2,000 tokens past the window, with the cached context moved (``model.context_shift``) and
with every window read afresh.

    python benchmarks/long_context.py --output benchmarks/results/long_context.json \
        --plot docs/img/long_context.png

In one process, on the default story model's q8_0 export, with the server's layout (8 slots,
1,024 tokens of context each). Both settings are measured in the same run, alternating:

- **Continue**: a 3,000-token manuscript from the sample dataset is continued by 50 tokens,
  then the writer continues the result (the window slid by those 50 tokens), ``--continues``
  times; time to first token of each later Continue, with and without an author's note (which
  moves with the end of the manuscript).
- **Long story**: one story of window + 2,000 new tokens against a 96-token story: tokens/s
  after the first token, and their ratio.

Time to first token is measured from the call to the first streamed text, as a writer waits
for it (planning, tokenizing, reading the context). The seeded-result cache is not involved
(the generator is called directly).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "stories.csv"
MANUSCRIPT_TOKENS = 3000
CONTINUE_TOKENS = 50
SHORT_TOKENS = 96
PAST_WINDOW = 2000
PARALLEL = 8
NOTE = "The storm is coming; keep the tone tense."
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05}


def manuscript(tokenizer: Any, tokens: int) -> str:
    """The first ``tokens`` tokens of the sample stories, as text."""
    ids = tokenizer(SAMPLE.read_text(encoding="utf-8")[: tokens * 8])["input_ids"]
    if len(ids) < tokens:
        raise SystemExit(f"{SAMPLE} holds fewer than {tokens} tokens")
    return str(tokenizer.decode(ids[:tokens], skip_special_tokens=True))


def timed_stream(generator: Any, prompt: str, **options: Any) -> tuple[float, Any]:
    """Seconds from the call to the first text, and the finished story."""
    started = time.perf_counter()
    first = None
    stream = generator.stream(prompt, **options)
    for _ in stream:
        if first is None:
            first = time.perf_counter() - started
    story = stream.result.stories[0]
    return (first if first is not None else float("nan")), story


def continues(generator: Any, text: str, count: int, seed: int, note: str) -> list[float]:
    """TTFT of ``count`` Continues after a first one, each on the text the last one made."""
    options = {"mode": "continue", "max_new_tokens": CONTINUE_TOKENS,
               "min_new_tokens": CONTINUE_TOKENS, "authors_note": note, **SAMPLING}  # fmt: skip
    _, story = timed_stream(generator, text, seed=seed, **options)
    times = []
    for step in range(count):
        text = story.text
        ttft, story = timed_stream(generator, text, seed=seed + step + 1, **options)
        times.append(ttft)
    return times


def speed(generator: Any, tokens: int, seed: int) -> dict[str, float]:
    started = time.perf_counter()
    first = None
    stream = generator.stream(
        "The lighthouse keeper found a letter", max_new_tokens=tokens, min_new_tokens=tokens,
        seed=seed, trim_to_sentence=False, **SAMPLING,
    )  # fmt: skip
    for _ in stream:
        if first is None:
            first = time.perf_counter()
    ended = time.perf_counter()
    story = stream.result.stories[0]
    assert first is not None
    return {
        "tokens": story.generated_tokens,
        "window_shifts": story.window_shifts,
        "tokens_per_s": round((story.generated_tokens - 1) / (ended - first), 2),
        "seconds": round(ended - started, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="taleforge-stories")
    parser.add_argument("--continues", type=int, default=5, help="Timed Continues per case.")
    parser.add_argument("--output", type=Path, help="Write the results as JSON here.")
    parser.add_argument("--plot", type=Path, help="Write a PNG of the results here.")
    args = parser.parse_args()

    from taleforge import StoryGenerator
    from taleforge.generate.backends import open_model

    generators = {}
    for shift in (True, False):
        loaded, backend = open_model(
            args.model, backend="llama.cpp", parallel=PARALLEL, context_shift=shift
        )
        generators[shift] = StoryGenerator(loaded, backend=backend)
    window = generators[True].context_length
    text = manuscript(generators[True].model.tokenizer, MANUSCRIPT_TOKENS)
    load_at_start = os.getloadavg()

    cases = [(shift, note) for note in ("", NOTE) for shift in (True, False)]
    ttft: dict[str, list[float]] = {}
    for shift, note in tqdm(cases, desc="Continue", file=sys.stderr):
        key = f"shift={'on' if shift else 'off'} note={'yes' if note else 'no'}"
        ttft[key] = continues(generators[shift], text, args.continues, 1, note)
    long_runs: dict[str, dict[str, Any]] = {}
    for shift in tqdm((True, False), desc="long story", file=sys.stderr):
        generator = generators[shift]
        short = speed(generator, SHORT_TOKENS, 7)
        long = speed(generator, window + PAST_WINDOW, 7)
        long_runs["on" if shift else "off"] = {
            "short": short,
            "long": long,
            "long_over_short": round(long["tokens_per_s"] / short["tokens_per_s"], 3),
        }
    for generator in generators.values():
        generator.close()

    summary = {key: round(statistics.median(values) * 1000, 1) for key, values in ttft.items()}
    report = {
        "benchmark": "long_context",
        "command": "python benchmarks/long_context.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "window_per_story": window,
        "parallel": PARALLEL,
        "manuscript_tokens": MANUSCRIPT_TOKENS,
        "continue_tokens": CONTINUE_TOKENS,
        "authors_note": NOTE,
        "sampling": SAMPLING,
        "machine": {
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "continue_ttft_ms_median": summary,
        "continue_ttft_ms_all": {k: [round(v * 1000, 1) for v in vs] for k, vs in ttft.items()},
        "long_story": long_runs,
        "targets": {
            "continue_ttft_at_most_150_ms": max(
                summary["shift=on note=no"], summary["shift=on note=yes"]
            )
            <= 150,
            "past_window_keeps_80_percent": long_runs["on"]["long_over_short"] >= 0.8,
        },
    }
    print(f"Continue on a {MANUSCRIPT_TOKENS}-token manuscript, time to first token (median ms)")
    for key, value in summary.items():
        print(f"  {key:<24}{value:>8}")
    print(f"{window} + {PAST_WINDOW} new tokens against {SHORT_TOKENS} (tokens/s)")
    for shift, run in long_runs.items():
        print(
            f"  shift={shift:<4} short {run['short']['tokens_per_s']:>6}  long "
            f"{run['long']['tokens_per_s']:>6}  ({run['long']['window_shifts']} window moves)"
            f"  ratio {run['long_over_short']}"
        )
    for target, met in report["targets"].items():
        print(f"target {target}: {'met' if met else 'MISSED'}")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}")
    return 0


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    ttft = report["continue_ttft_ms_median"]
    left.bar(list(ttft), list(ttft.values()), color=["#4c72b0", "#c44e52"] * 2)
    left.axhline(150, color="grey", linestyle="--", linewidth=1)
    left.set_ylabel("ms to first token (median)")
    left.set_title(f"Continue on a {report['manuscript_tokens']}-token manuscript")
    left.tick_params(axis="x", labelrotation=20, labelsize=8)
    runs = report["long_story"]
    labels = [f"shift {shift}" for shift in runs]
    short = [run["short"]["tokens_per_s"] for run in runs.values()]
    long = [run["long"]["tokens_per_s"] for run in runs.values()]
    positions = range(len(labels))
    right.bar([p - 0.2 for p in positions], short, 0.4, label="96 tokens")
    right.bar([p + 0.2 for p in positions], long, 0.4, label="window + 2,000 tokens")
    right.set_xticks(list(positions), labels)
    right.set_ylabel("tokens/s after the first")
    right.set_title("A story past the window")
    right.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
