"""Pilot runs of a training recipe: short runs that differ in one setting, plotted together.

    python benchmarks/pilots.py --config corpus-finetune --steps 20 \
        --variant lr3e-4:train.learning_rate=3e-4 --variant lr1e-3:train.learning_rate=1e-3 \
        --output benchmarks/results/pilots.json --plot docs/evaluation/pilots.png

Every pilot trains from the same prepared data, seed and first batches for ``--steps``
updates at the recipe's batch and block size, with a constant learning rate after a short
warmup (so that a pilot says how fast each setting learns, not where a schedule ends), and
measures the validation loss every ``--eval-every`` updates on the same validation rows.
The JSON has each pilot's curve, its last validation loss and tokens per second; the plot
draws the validation curves side by side. Runs go one after another in one process, so the
throughput figures are comparable within one run only.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from taleforge.config import load_config, parse_override
from taleforge.train import train


def pilot(
    config_name: str, name: str, overrides: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    changes = [parse_override(item) for item in overrides]
    run_name = f"pilot-{name}"
    config = load_config(
        config_name,
        [
            ("train.run_name", run_name),
            ("train.max_steps", args.steps),
            ("train.eval_steps", args.eval_every),
            ("train.save_steps", args.eval_every),
            ("train.eval_rows", args.eval_rows),
            ("train.lr_scheduler", "constant_with_warmup"),
            ("train.warmup_ratio", 0.1),
            ("train.early_stopping_patience", 0),
            ("train.tracking", False),
            *changes,
        ],
    )
    run_dir = Path("runs") / run_name
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - started
    history = json.loads((run_dir / "history.json").read_text("utf-8"))
    tokens = args.steps * config.train.batch_size * config.data.block_size
    return {
        "name": name,
        "overrides": overrides,
        "eval": [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h],
        "train": [(h["step"], h["loss"]) for h in history if "loss" in h],
        "last_eval_loss": result.best_eval_loss
        if not [h for h in history if "eval_loss" in h]
        else [h["eval_loss"] for h in history if "eval_loss" in h][-1],
        "loss_before": result.test_loss_before,
        "seconds": round(seconds, 1),
        "train_tokens_per_second": round(tokens / seconds, 1),
    }


def plot(pilots: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for run in pilots:
        steps = [0] + [s for s, _ in run["eval"]]
        losses = [run["loss_before"]] + [v for _, v in run["eval"]]
        axis.plot(steps, losses, marker="o", label=run["name"])
    axis.set_xlabel("update")
    axis.set_ylabel("validation loss (nats / token)")
    axis.set_title("Pilot runs")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="corpus-finetune")
    parser.add_argument(
        "--variant", action="append", required=True, help="NAME:key=value[,key=value...]"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-rows", type=int, default=16)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/pilots.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/evaluation/pilots.png"))
    args = parser.parse_args()
    pilots = []
    for variant in args.variant:
        name, _, settings = variant.partition(":")
        pilots.append(pilot(args.config, name, [s for s in settings.split(",") if s], args))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"machine": platform.node(), "pilots": pilots}, indent=1))
        plot(pilots, args.plot)
    for run in sorted(pilots, key=lambda r: r["last_eval_loss"]):
        print(
            f"{run['name']:>12}: validation loss {run['loss_before']:.3f} -> "
            f"{run['last_eval_loss']:.3f} after {args.steps} updates, "
            f"{run['train_tokens_per_second']} tokens/s"
        )


if __name__ == "__main__":
    main()
