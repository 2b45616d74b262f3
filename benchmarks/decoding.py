"""Decoding for fiction, measured: the story model with and without DRY and phrase bans.

    python benchmarks/decoding.py --output benchmarks/results/decoding.json \
        --plot docs/img/decoding.png

The default story model (llama.cpp) writes one story of ``--tokens`` new tokens for each of
the first ``--prompts`` ideas of data/corpus/eval-prompts.txt (the evaluation report's
prompts; the shipped cliché list was made from other prompts), seed = the prompt's number,
once per setting: the default sampling, then each variant on top of it. Settings take turns
prompt by prompt, so a busy machine slows them alike. Per setting: the cliché score (the
evaluation's, against every human text of the corpus), seq-rep-4, distinct-2, words per
story, banned phrases left in the final text (must be 0 where bans are on) and tokens per
second; ratios to the default are printed side by side and written to the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from story_model import (
    add_model_arguments,
    corpus_records,
    human_texts,
    model_config,
    run_record,
)
from taleforge.config import make_sampling
from taleforge.evaluate.cliche import find_cliches
from taleforge.evaluate.metrics import distinct_n, seq_rep_n, words
from taleforge.generate import StoryGenerator
from taleforge.generate.bans import phrase_bans
from taleforge.genres import split_leading_tag

#: The settings compared with the default sampling (each on top of it): DRY at the
#: multiplier its author recommends (0.8, its other settings at their defaults) and the
#: shipped cliché list banned.
VARIANTS: dict[str, dict[str, Any]] = {
    "dry+bans": {"dry_multiplier": 0.8, "ban_cliches": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--prompt-file", type=Path, default=Path("data/corpus/eval-prompts.txt"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/decoding.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/decoding.png"))
    args = parser.parse_args()

    config = model_config(args)
    lines = args.prompt_file.read_text(encoding="utf-8").splitlines()
    ideas = [split_leading_tag(line.strip()) for line in lines if line.strip()][: args.prompts]
    settings = {"default": config.sampling}
    settings |= {name: make_sampling(config.sampling, **v) for name, v in VARIANTS.items()}
    generator = StoryGenerator.from_config(config.model, sampling=config.sampling)

    stories: dict[str, list[Any]] = {name: [] for name in settings}
    bar = tqdm(total=len(ideas) * len(settings), desc="writing", unit="story")
    with bar:
        for seed, (tag, idea) in enumerate(ideas):
            for name, params in settings.items():
                started = time.perf_counter()
                story = generator.generate(
                    idea, mode="story", genre=tag or "auto", **{**params.model_dump(), "seed": seed}
                ).stories[0]
                stories[name].append((story, time.perf_counter() - started))
                bar.update()

    print("comparing with the corpus's human texts …", flush=True)
    human = human_texts(corpus_records(config))
    results: dict[str, dict[str, Any]] = {}
    for name, written in stories.items():
        texts = [s.generated_text for s, _ in written]
        bans = phrase_bans(make_sampling(config.sampling, ban_cliches=True))
        results[name] = {
            "settings": dict(VARIANTS.get(name, {})),
            "cliche_score": find_cliches(
                texts, human, threshold=config.evaluate.cliche_threshold
            ).score,
            "seq_rep_4": statistics.fmean(seq_rep_n(t, 4) for t in texts),
            "distinct_2": distinct_n(texts, 2),
            "words_mean": statistics.fmean(len(words(t)) for t in texts),
            "cliches_left": sum(bans.find(t, final=True) is not None for t in texts),
            "tokens_per_second": sum(s.generated_tokens for s, _ in written)
            / sum(sec for _, sec in written),
        }
    base = results["default"]
    for result in results.values():
        result["ratio_to_default"] = {
            key: (result[key] / base[key] if base[key] else None)
            for key in ("cliche_score", "seq_rep_4", "distinct_2", "tokens_per_second")
        }
    header = f"{'setting':<10} {'cliché':>8} {'seq-rep-4':>10} {'distinct-2':>10} {'tok/s':>7}"
    print(header)
    for name, r in results.items():
        ratio = r["ratio_to_default"]
        print(
            f"{name:<10} {r['cliche_score']:>8.2f} {r['seq_rep_4']:>10.4f} "
            f"{r['distinct_2']:>10.3f} {r['tokens_per_second']:>7.1f}   "
            f"(× {ratio['cliche_score'] or 0:.2f}, {ratio['seq_rep_4'] or 0:.2f}, "
            f"{ratio['distinct_2'] or 0:.2f}, {ratio['tokens_per_second'] or 0:.2f})"
        )
    report = {
        **run_record("decoding.py", args),
        "prompts": len(ideas),
        "tokens": args.tokens,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot(results, args.plot)
    print(f"-> {args.output}, {args.plot}")


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per measure, a bar per setting, relative to the default sampling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [
        ("cliche_score", "cliché score"),
        ("seq_rep_4", "seq-rep-4"),
        ("distinct_2", "distinct-2"),
        ("tokens_per_second", "tokens/s"),
    ]
    figure, axes = plt.subplots(1, len(measures), figsize=(13, 3.4))
    names = list(results)
    for axis, (key, title) in zip(axes, measures, strict=True):
        values = [results[n]["ratio_to_default"][key] or 0 for n in names]
        axis.bar(names, values, color=["#888", "#4c72b0", "#dd8452", "#55a868"][: len(names)])
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_title(f"{title} (× default)")
        axis.tick_params(axis="x", rotation=30)
    figure.suptitle("Decoding settings on the story model, relative to the default sampling")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
