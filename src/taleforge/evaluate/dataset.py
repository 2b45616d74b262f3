"""What an evaluation reads: a dataset split's texts, or a file's as written, and the prompts
to write for."""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from taleforge.config import MetricGroup, TaleforgeConfig
from taleforge.data import load_prepared, prepare, read_dataset
from taleforge.data.prepare import MANIFEST
from taleforge.evaluate.errors import EvaluationError
from taleforge.genres import GENRES, split_leading_tag
from taleforge.models import training_base

log = logging.getLogger(__name__)

METRIC_GROUPS: tuple[str, ...] = get_args(MetricGroup)
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
    #: The prepared dataset; None for a file scored as given.
    directory: Path | None
    fingerprint: str
    #: The split scored, or "all" for a file.
    split: str
    #: Records of the split: text, prompt, genre and the template's prefix.
    records: tuple[dict[str, str], ...]
    prompts: tuple[PromptItem, ...]
    prompt_source: str
    #: Texts the TF-IDF vocabulary is fitted on (the dataset's stories and prompts).
    corpus: tuple[str, ...] = field(repr=False, default=())
    #: The dataset's human stories (every split): what the cliché score compares with.
    human: tuple[str, ...] = field(repr=False, default=())
    #: Records of a file skipped because they hold no text.
    skipped: int = 0


@dataclass(frozen=True)
class StoryTexts:
    """What a dataset gives an evaluation before prompts are chosen."""

    source: str
    directory: Path | None
    fingerprint: str
    split: str
    #: How messages name the texts ("the 'test' split of runs/data/x").
    where: str
    rows: list[dict[str, str]]
    #: All the dataset's human texts (every split), the cliché score's reference.
    human: list[str]
    #: All the dataset's prompts (every split), for the TF-IDF vocabulary.
    prompts: list[str]
    skipped: int = 0


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
    """Collect the texts to score and the prompts to write for.

    ``evaluate.data`` may be a prepared dataset directory (its ``evaluate.split`` is used),
    a file of stories (every record, as written: see :func:`read_stories`), or unset (the
    [data] dataset is prepared, or opened from the cache).

    Raises:
        EvaluationError: Empty split or file, no prompts, or an unusable prompt file.
        DataError: The dataset cannot be read or prepared.
    """
    ev = config.evaluate
    prompt_lines = read_prompt_file(ev.prompts) if ev.prompts != "dataset" else None
    if ev.data and not is_prepared(ev.data):
        return _with_prompts(config, read_stories(config), prompt_lines)
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
    texts = StoryTexts(
        source=str(prepared.manifest.get("source", {}).get("input", prepared.directory)),
        directory=prepared.directory,
        fingerprint=prepared.fingerprint,
        split=ev.split,
        where=f"the '{ev.split}' split of {prepared.directory}",
        rows=rows,
        human=[row["text"] for split in all_records.values() for row in split if row["text"]],
        prompts=[row["prompt"] for split in all_records.values() for row in split if row["prompt"]],
    )
    return _with_prompts(config, texts, prompt_lines)


def is_prepared(path: str) -> bool:
    """Whether ``path`` is a directory written by ``taleforge prepare``."""
    return (Path(path) / MANIFEST).is_file()


def read_stories(config: TaleforgeConfig) -> StoryTexts:
    """Every record of the file ``evaluate.data``, its text exactly as the file has it.

    The data step's readers are used (with the [data] format, encoding and column
    settings), its cleaning is not: curly quotes, dashes and spacing inside a story stay as
    written, so perplexity is measured on the file's own text. Records without text are
    skipped and counted.

    Raises:
        EvaluationError: The file is missing, empty, or holds no story text.
        DataError: The file cannot be read (the message names the row and the fix).
    """
    spec = config.evaluate.data or ""
    path = Path(spec)
    if not spec.startswith("hf:") and not path.exists():
        raise EvaluationError(
            f"--data '{spec}' not found: give a file of stories (JSONL, CSV or text, .gz "
            "too) or a prepared dataset directory (taleforge prepare --data.output DIR)"
        )
    if path.is_file() and path.stat().st_size == 0:
        raise EvaluationError(
            f"--data '{spec}' is empty: give a file with one story per record (a JSONL line "
            'with a "text" field, a CSV row with a text column, or a paragraph of text)'
        )
    read = read_dataset(config.data.model_copy(update={"input": spec}))
    records = [r for r in read.records if r.text.strip()]
    if not records:
        raise EvaluationError(
            f"--data '{spec}' holds no story text ({len(read.records)} records, all empty): "
            "point --data.text-column at the field that holds the stories"
        )
    if len(records) < len(read.records):
        log.warning("%s: %d records without text skipped", spec, len(read.records) - len(records))
    if config.evaluate.context == "dataset":
        log.warning("%s has no data template: its stories are scored without context", spec)
    digest = hashlib.sha256()
    for record in records:
        for part in (record.prompt or "", record.text):
            digest.update(part.encode("utf-8") + b"\0")
    rows = [
        {
            "text": r.text,
            "prompt": r.prompt or "",
            "genre": r.genre or "",
            "prefix": "",
            "id": r.source,
        }
        for r in records
    ]
    return StoryTexts(
        source=spec,
        directory=None,
        fingerprint=digest.hexdigest(),
        split="all",
        where=f"'{spec}'",
        rows=rows,
        human=[r.text for r in records],
        prompts=[r.prompt for r in records if r.prompt],
        skipped=len(read.records) - len(records),
    )


def _with_prompts(
    config: TaleforgeConfig, texts: StoryTexts, prompt_lines: list[str] | None
) -> EvalData:
    """The evaluation data: ``texts`` and the prompts to write for."""
    ev = config.evaluate
    groups, strict = selected_groups(config)
    if prompt_lines is not None:
        # "[HORROR] a prompt" asks for that genre, as on the command line.
        tagged = [split_leading_tag(line) for line in prompt_lines]
        items = [
            PromptItem(f"{Path(ev.prompts).name}:{n}", text.strip(), genre)
            for n, (genre, text) in enumerate(tagged, start=1)
        ]
        prompt_source = ev.prompts
    else:
        items = [
            PromptItem(
                r["id"] or f"{texts.split}:{n}", r["prompt"], known_genre(r["genre"]), r["text"]
            )
            for n, r in enumerate(texts.rows)
            if r["prompt"].strip()
        ]
        prompt_source = f"{texts.split} split" if texts.directory else f"records of {texts.source}"
        # A file of stories without prompts is still worth scoring (perplexity alone),
        # unless stories were asked for by name.
        lenient = texts.directory is None and not strict
        if not items and GENERATION_GROUPS & groups and not lenient:
            raise EvaluationError(
                f"{texts.where} has no prompts to write for: give a prompt file "
                "(--evaluate.prompts prompts.txt, one per line) or --evaluate.metrics perplexity"
            )
        if not items and lenient:
            log.warning(
                "%s has no prompts: only perplexity is measured (give --evaluate.prompts "
                "prompts.txt, one per line, to write and measure stories)",
                texts.source,
            )
    if ev.max_prompts and len(items) > ev.max_prompts:
        keep = sorted(random.Random(base_seed(config)).sample(range(len(items)), ev.max_prompts))
        items = [items[i] for i in keep]
    return EvalData(
        source=texts.source,
        directory=texts.directory,
        fingerprint=texts.fingerprint,
        split=texts.split,
        records=tuple(texts.rows),
        prompts=tuple(items),
        prompt_source=prompt_source,
        corpus=tuple(texts.human + texts.prompts + [item.prompt for item in items]),
        human=tuple(texts.human),
        skipped=texts.skipped,
    )


def base_seed(config: TaleforgeConfig) -> int:
    """The seed of the first story: the sampling seed, or 0 so that reports reproduce."""
    return config.sampling.seed if config.sampling.seed is not None else 0


def known_genre(name: str) -> str | None:
    """A dataset's genre label if it is one of the generator's genres, else None."""
    key = name.strip().lower()
    return key if key in GENRES else None
