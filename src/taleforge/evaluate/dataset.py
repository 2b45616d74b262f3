"""What an evaluation reads: the dataset split's texts and the prompts to write for."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from taleforge.config import TaleforgeConfig
from taleforge.data import load_prepared, prepare
from taleforge.evaluate.errors import EvaluationError
from taleforge.genres import GENRES
from taleforge.models import training_base

METRIC_GROUPS: tuple[str, ...] = (
    "perplexity",
    "diversity",
    "repetition",
    "references",
    "relevance",
    "genre",
    "length",
)
GENERATION_GROUPS = frozenset(METRIC_GROUPS) - {"perplexity"}


@dataclass(frozen=True)
class PromptItem:
    """A prompt to write for, with what the dataset knows about it."""

    id: str
    prompt: str
    genre: str | None
    reference: str | None = None


@dataclass(frozen=True)
class EvalData:
    """The texts to score and the prompts to write for."""

    source: str
    directory: Path
    fingerprint: str
    split: str
    #: Records of the split: text, prompt, genre and the template's prefix.
    records: tuple[dict[str, str], ...]
    prompts: tuple[PromptItem, ...]
    prompt_source: str
    #: Texts the TF-IDF vocabulary is fitted on (the dataset's stories and prompts).
    corpus: tuple[str, ...] = field(repr=False, default=())


def selected_groups(config: TaleforgeConfig) -> tuple[set[str], bool]:
    """The metric groups to compute, and whether the user listed them (strict)."""
    asked = config.evaluate.metrics
    return (set(asked), True) if asked else (set(METRIC_GROUPS), False)


def read_prompt_file(path: str) -> list[str]:
    """Prompts from a text file, one per line (blank lines ignored).

    Raises:
        EvaluationError: The file is missing, unreadable or holds no prompt.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise EvaluationError(
            f"cannot read prompts from '{path}': {reason}. Give a UTF-8 text file with one "
            "prompt per line, or --evaluate.prompts dataset"
        ) from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise EvaluationError(
            f"prompt file '{path}' is empty: put one prompt per line, or use "
            "--evaluate.prompts dataset"
        )
    return prompts


def load_data(config: TaleforgeConfig) -> EvalData:
    """Prepare (or open) the dataset and collect the split's texts and the prompts.

    Raises:
        EvaluationError: Empty split, no prompts, or an unusable prompt file.
        DataError: The dataset cannot be read or prepared.
    """
    ev = config.evaluate
    prompt_lines = read_prompt_file(ev.prompts) if ev.prompts != "dataset" else None
    if ev.data:
        prepared = load_prepared(ev.data)
    else:
        prepared = prepare(config.data, training_base(config.model.spec))
    all_records = prepared.load_records()
    if ev.split not in all_records:
        raise EvaluationError(f"{prepared.directory} has no '{ev.split}' split")
    rows = [
        {
            "text": row["text"],
            "prompt": row["prompt"],
            "genre": row["genre"],
            "prefix": row["formatted"][: len(row["formatted"]) - len(row["text"])]
            if row["formatted"].endswith(row["text"])
            else "",
            "id": row["source"],
        }
        for row in all_records[ev.split]
    ]
    if not rows:
        raise EvaluationError(
            f"the '{ev.split}' split of {prepared.directory} is empty: pick another "
            "--evaluate.split, or give the data step a larger --data.test-fraction"
        )
    if prompt_lines is not None:
        items = [
            PromptItem(f"{Path(ev.prompts).name}:{n}", text, None)
            for n, text in enumerate(prompt_lines, start=1)
        ]
        prompt_source = ev.prompts
    else:
        items = [
            PromptItem(
                r["id"] or f"{ev.split}:{n}", r["prompt"], known_genre(r["genre"]), r["text"]
            )
            for n, r in enumerate(rows)
            if r["prompt"].strip()
        ]
        prompt_source = f"{ev.split} split"
        if not items and GENERATION_GROUPS & selected_groups(config)[0]:
            raise EvaluationError(
                f"the '{ev.split}' split of {prepared.directory} has no prompts to write for: "
                "give a prompt file (--evaluate.prompts prompts.txt, one per line) or "
                "--evaluate.metrics perplexity"
            )
    if ev.max_prompts and len(items) > ev.max_prompts:
        keep = sorted(random.Random(base_seed(config)).sample(range(len(items)), ev.max_prompts))
        items = [items[i] for i in keep]
    corpus = [
        text
        for split in all_records.values()
        for row in split
        for text in (row["text"], row["prompt"])
        if text
    ] + [item.prompt for item in items]
    return EvalData(
        source=str(prepared.manifest.get("source", {}).get("input", prepared.directory)),
        directory=prepared.directory,
        fingerprint=prepared.fingerprint,
        split=ev.split,
        records=tuple(rows),
        prompts=tuple(items),
        prompt_source=prompt_source,
        corpus=tuple(corpus),
    )


def base_seed(config: TaleforgeConfig) -> int:
    """The seed of the first story: the sampling seed, or 0 so that reports reproduce."""
    return config.sampling.seed if config.sampling.seed is not None else 0


def known_genre(name: str) -> str | None:
    """A dataset's genre label if it is one of the generator's genres, else None."""
    key = name.strip().lower()
    return key if key in GENRES else None
