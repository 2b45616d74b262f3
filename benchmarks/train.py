"""Training throughput: packing vs the seed recipe (pad every story to 128 tokens, batch 4).

    python benchmarks/train.py --output benchmarks/results/train.json

Both recipes train the same LoRA on the same model, the same corpus and the same shapes
(4 rows of 128 tokens per step), one after the other in this run. What differs is how many
of those 512 positions hold text: padding fills short stories up with EOS that the loss
ignores, packing concatenates stories into full blocks. The figure is **non-padding tokens
per second**: the mean non-padding tokens of a step over the median step time, from rounds
in which the two recipes alternate (the first step of each round warms up, not counted).

Two corpora, both cut from the sample dataset:

- ``one-line``: one paragraph per line, the shape of the seeds' ``long_stories_40k.txt``
  (the data the pad-to-128 recipe was written for). Target: packing ≥ 1.5x.
- ``sample``: the sample dataset as it is (long stories in the WritingPrompts template);
  here most stories are longer than 128 tokens, so padding wastes little, but the seed
  recipe truncates them: the share of the text each recipe trains on is reported too.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from taleforge.config import load_config
from taleforge.data import prepare

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "stories.csv"
ROW_TOKENS = 128
BATCH = 4


def one_line_corpus(path: Path) -> int:
    """Every paragraph of the sample stories on its own line; returns the line count."""
    with SAMPLE.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    lines = [
        " ".join(paragraph.split())
        for row in rows
        for paragraph in row["text"].split("\n\n")
        if len(paragraph.split()) >= 8
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


class _CountingCollator:
    """``default_data_collator`` that records the non-padding tokens of every batch."""

    def __init__(self) -> None:
        from transformers import default_data_collator

        self.collate = default_data_collator
        self.tokens: list[int] = []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate(features)
        self.tokens.append(int(batch["attention_mask"].sum()))
        return batch


def _step_clock() -> Any:
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

    return StepClock()


class Recipe:
    """One recipe ready to train: ``corpus`` prepared with ``packing``, a fresh LoRA model."""

    def __init__(self, corpus: Path, template: str, packing: str, model: str, work: Path):
        from taleforge.train.setup import prepare_model

        self.packing = packing
        self.config = load_config(
            None,
            {
                "model.spec": model,
                "data.input": str(corpus),
                "data.output": str(work / f"{corpus.stem}-{packing}"),
                "data.template": template,
                "data.packing": packing,
                "data.block_size": ROW_TOKENS,
                "data.max_length": ROW_TOKENS,
                "train.method": "lora",
                "train.batch_size": BATCH,
                "train.warmup_ratio": 0.0,
                "train.logging_steps": 1000,
                "train.save_steps": 100_000,
                "train.eval_steps": 100_000,
                "train.tracking": False,
            },
        )
        prepared = prepare(self.config.data, model)
        self.rows = prepared.load_dataset()["train"]
        mask_total = sum(sum(mask) for mask in self.rows["attention_mask"])
        text_tokens = int(prepared.manifest["tokens"]["train"]["tokens"])
        self.padding_share = 1 - mask_total / (len(self.rows) * ROW_TOKENS)
        self.text_trained_share = min(1.0, mask_total / text_tokens)
        _, self.model, _ = prepare_model(self.config, prepared.load_tokenizer())
        self.work = work
        self.step_seconds: list[float] = []
        self.step_tokens: list[int] = []

    def run(self, steps: int, round_: int) -> None:
        """Train ``steps`` steps; the first one of each round warms up and is not counted."""
        from transformers import Trainer

        from taleforge.train.setup import training_arguments

        train_cfg = self.config.train.model_copy(
            update={"max_steps": steps + 1, "seed": self.config.train.seed + round_}
        )
        args = training_arguments(train_cfg, self.work / "checkpoints", has_eval=False)
        args.save_strategy = "no"
        args.disable_tqdm = True
        collator = _CountingCollator()
        clock = _step_clock()
        Trainer(
            model=self.model,
            args=args,
            train_dataset=self.rows,
            data_collator=collator,
            callbacks=[clock],
        ).train()
        ends = clock.ends[1:]  # after the warm-up step
        self.step_seconds += [b - a for a, b in itertools.pairwise(ends)]
        self.step_tokens += collator.tokens[1 : steps + 1]

    def summary(self) -> dict[str, Any]:
        import statistics

        step = statistics.median(self.step_seconds)
        tokens = statistics.mean(self.step_tokens)
        return {
            "packing": self.packing,
            "rows": len(self.rows),
            "measured_steps": len(self.step_seconds),
            "median_step_seconds": round(step, 3),
            "non_padding_tokens_per_step": round(tokens, 1),
            "tokens_per_s": round(tokens / step, 1),
            "padding_share": round(self.padding_share, 3),
            "text_trained_share": round(self.text_trained_share, 3),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="Model to fine-tune.")
    parser.add_argument("--steps", type=int, default=4, help="Measured steps per round.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds, recipes alternating.")
    parser.add_argument(
        "--corpora", default="one-line,sample", help="Comma-separated: one-line, sample."
    )
    parser.add_argument("--output", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    results: dict[str, Any] = {
        "benchmark": "train",
        "model": args.model,
        "row_tokens": ROW_TOKENS,
        "batch_size": BATCH,
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "corpora": {},
    }
    with tempfile.TemporaryDirectory(prefix="taleforge-bench-train-") as tmp:
        work = Path(tmp)
        corpora = {
            "one-line": (work / "one-line.txt", "plain"),
            "sample": (SAMPLE, "writing_prompt"),
        }
        one_line_corpus(corpora["one-line"][0])
        for name in args.corpora.split(","):
            corpus, template = corpora[name]
            recipes = [
                Recipe(corpus, template, packing, args.model, work) for packing in ("pad", "pack")
            ]
            # Alternate the recipes round by round: a noisy machine slows both alike.
            for round_ in range(args.rounds):
                for recipe in recipes:
                    recipe.run(args.steps, round_)
            pad, pack = (recipe.summary() for recipe in recipes)
            ratio = pack["tokens_per_s"] / pad["tokens_per_s"]
            results["corpora"][name] = {"pad": pad, "pack": pack, "ratio": round(ratio, 2)}
            print(
                f"{name:9} pad-to-128 {pad['tokens_per_s']:7.1f} tok/s "
                f"({pad['padding_share']:.0%} padding, {pad['text_trained_share']:.0%} of the "
                f"text) | packed {pack['tokens_per_s']:7.1f} tok/s "
                f"({pack['text_trained_share']:.0%} of the text) | {ratio:.2f}x"
            )
    one_line = results["corpora"].get("one-line")
    if one_line:
        results["target"] = {"ratio_at_least": 1.5, "met": one_line["ratio"] >= 1.5}
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
