"""Data preparation speed on a 40,000-story corpus: stories/s and tokens/s, end to end.

    python benchmarks/prepare.py --output benchmarks/results/prepare.json

The corpus is recombined from the sample dataset (each story takes the prompt of one sample
story and paragraphs from several of the same genre); it need not be literature, only of the
size and shape of a real one. Target: the whole corpus ready in under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

from taleforge.config import DataConfig
from taleforge.data import prepare

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "stories.csv"


def build_corpus(path: Path, stories: int, seed: int = 0) -> int:
    """Write a recombined corpus of ``stories`` rows; returns its size in words."""
    rng = random.Random(seed)
    with SAMPLE.open(encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["kind"] == "story"]
    by_genre: dict[str, list[str]] = {}
    for row in rows:
        by_genre.setdefault(row["genre"], []).extend(row["text"].split("\n\n"))
    words = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title", "genre", "prompt", "text"])
        for index in range(stories):
            base = rng.choice(rows)
            paragraphs = rng.sample(by_genre[base["genre"]], rng.randint(3, 6))
            text = "\n\n".join(paragraphs)
            words += len(text.split())
            writer.writerow([f"{base['title']} {index}", base["genre"], base["prompt"], text])
    return words


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=40_000, help="Corpus size.")
    parser.add_argument("--model", default="smollm2-135m", help="Tokenizer's model spec.")
    parser.add_argument("--output", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus.csv"
        words = build_corpus(corpus, args.stories)
        config = DataConfig(input=str(corpus), output=str(Path(scratch) / "prepared"))
        started = time.perf_counter()
        prepared = prepare(config, args.model)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        cached = prepare(config, args.model)
        cached_seconds = time.perf_counter() - started
        assert cached.cached
    manifest = prepared.manifest
    tokens = sum(split["tokens"] for split in manifest["tokens"].values())
    report = {
        "benchmark": "prepare",
        "stories": args.stories,
        "words": words,
        "kept": manifest["counts"]["kept"],
        "removed": manifest["cleaning"]["removed"],
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "stories_per_s": round(args.stories / seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1),
        "cached_rerun_seconds": round(cached_seconds, 2),
        "target_seconds": 60,
        "meets_target": seconds < 60,
    }
    print(
        f"{args.stories} stories, {tokens:,} tokens in {seconds:.1f} s: "
        f"{report['stories_per_s']:.0f} stories/s, {report['tokens_per_s']:,.0f} tokens/s "
        f"(target < 60 s: {'met' if report['meets_target'] else 'MISSED'}); "
        f"cached re-run {cached_seconds:.2f} s"
    )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
