"""What the decoding benchmarks share: the story model they run, and the corpus's human texts
the cliché score compares with (as `taleforge evaluate` does)."""

from __future__ import annotations

import argparse
import platform

from taleforge.config import TaleforgeConfig, load_config
from taleforge.data import prepare
from taleforge.models import training_base


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --model, --backend, --threads and --tokens."""
    parser.add_argument("--config", default="corpus-finetune")
    parser.add_argument("--model", default="taleforge-stories")
    parser.add_argument("--backend", default="llama.cpp")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="llama.cpp threads; 0 = one per core (on a busy machine 1 keeps llama.cpp's "
        "threads from spinning while they wait for each other)",
    )
    parser.add_argument("--tokens", type=int, default=300, help="new tokens per story")


def model_config(args: argparse.Namespace) -> TaleforgeConfig:
    """The config the arguments of :func:`add_model_arguments` ask for."""
    return load_config(
        args.config,
        {
            "model.spec": args.model,
            "model.backend": args.backend,
            "model.threads": args.threads,
            "sampling.max_new_tokens": args.tokens,
        },
    )


def corpus_records(config: TaleforgeConfig) -> dict[str, list[dict[str, str]]]:
    """The prepared [data] dataset's records by split (prepared once, then cached)."""
    return prepare(config.data, training_base(config.model.spec)).load_records()


def human_texts(records: dict[str, list[dict[str, str]]]) -> list[str]:
    """Every human text of every split: the cliché score's reference."""
    return [row["text"] for split in records.values() for row in split if row["text"]]


def run_record(script: str, args: argparse.Namespace) -> dict[str, str]:
    """How a run was made, for the head of its JSON: the command, the machine, the model."""
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    return {
        "command": f"python benchmarks/{script} {flags}",
        "machine": platform.platform(),
        "model": args.model,
        "backend": args.backend,
    }
