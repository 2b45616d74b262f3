"""Splits by content hash, tokenization, and packing into blocks or padding to a length."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from taleforge.config import DataConfig
from taleforge.data.clean import content_key
from taleforge.data.records import Record

SPLITS = ("train", "validation", "test")
IGNORE_INDEX = -100
#: Below this many texts, worker processes cost more than they save.
MIN_RECORDS_PER_PROCESS = 2000


def split_of(text: str, config: DataConfig) -> str:
    """The split of a text, from a salted hash of its content.

    The same text always lands in the same split, whatever else is in the dataset, so re-runs
    and added data never move a story between splits, and duplicates cannot leak across.
    """
    digest = hashlib.sha256(f"{config.split_salt}:{content_key(text)}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    if fraction < config.test_fraction:
        return "test"
    if fraction < config.test_fraction + config.validation_fraction:
        return "validation"
    return "train"


def spread_indices(count: int, most: int) -> list[int]:
    """At most ``most`` of ``count`` positions (0 = all), evenly spaced, so that every part
    of a split (its sources come in order) is represented."""
    if not most or count <= most:
        return list(range(count))
    step = count / most
    return [int(i * step) for i in range(most)]


def assign_splits(records: Sequence[Record], config: DataConfig) -> dict[str, list[Record]]:
    """Each record's split; the later parts of a work follow its opening part."""
    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    split = "train"
    for record in records:
        if record.part == 0:
            split = split_of(record.text, config)
        splits[split].append(record)
    return splits


def empty_dataset(features: Any) -> Any:
    """A dataset with no rows that survives save_to_disk/load_from_disk.

    ``Dataset.from_dict`` of empty lists writes no Arrow blocks, and datasets then fails to
    load it back; filtering one row away keeps the schema on disk.
    """
    import datasets

    row = {
        name: ("" if isinstance(feature, datasets.Value) and feature.dtype == "string" else [])
        for name, feature in features.items()
    }
    return datasets.Dataset.from_dict({k: [v] for k, v in row.items()}, features=features).filter(
        lambda _: False
    )


def _tokenize_batch(
    batch: dict[str, list[Any]], tokenizer: Any, eos: str, mask_prefix: bool
) -> dict[str, list[list[int]]]:
    prefixes = tokenizer(batch["prefix"], add_special_tokens=False)["input_ids"]
    # A part that a later part continues does not end: no end-of-text after it.
    stories = tokenizer(
        [s + (eos if ends else "") for s, ends in zip(batch["story"], batch["ends"], strict=True)],
        add_special_tokens=False,
    )["input_ids"]
    ids, labels = [], []
    for prefix, story in zip(prefixes, stories, strict=True):
        ids.append(prefix + story)
        labels.append(([IGNORE_INDEX] * len(prefix) if mask_prefix else prefix) + story)
    return {"input_ids": ids, "labels": labels}


def _pack_batch(batch: dict[str, list[list[int]]], block_size: int) -> dict[str, list[Any]]:
    """Concatenate texts and cut into ``block_size`` blocks (run_clm's group_texts); the
    remainder of each batch is dropped."""
    ids = [t for row in batch["input_ids"] for t in row]
    labels = [t for row in batch["labels"] for t in row]
    total = (len(ids) // block_size) * block_size
    starts = range(0, total, block_size)
    return {
        "input_ids": [ids[i : i + block_size] for i in starts],
        "attention_mask": [[1] * block_size for _ in starts],
        "labels": [labels[i : i + block_size] for i in starts],
    }


def _pad_batch(
    batch: dict[str, list[list[int]]], max_length: int, pad_id: int
) -> dict[str, list[Any]]:
    """One text per row, truncated to ``max_length`` and padded with ``pad_id`` (EOS)."""
    out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        ids, labels = ids[:max_length], labels[:max_length]
        padding = max_length - len(ids)
        out["input_ids"].append(ids + [pad_id] * padding)
        out["attention_mask"].append([1] * len(ids) + [0] * padding)
        out["labels"].append(labels + [IGNORE_INDEX] * padding)
    return out


def tokenize_splits(
    texts: dict[str, list[Any]], tokenizer: Any, config: DataConfig
) -> tuple[Any, dict[str, Any]]:
    """Tokenize ``{split: [(prefix, story[, ends]), ...]}`` into a ``DatasetDict`` of model
    inputs (``ends`` defaults to True: the end-of-text token follows the story).

    Returns:
        The dataset and per-split statistics (texts, tokens, rows, tokens per text).
    """
    import datasets

    eos = tokenizer.eos_token or ""
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id)
    )
    result = {}
    stats: dict[str, Any] = {}
    features = datasets.Features(
        {
            "input_ids": datasets.Sequence(datasets.Value("int32")),
            "attention_mask": datasets.Sequence(datasets.Value("int8")),
            "labels": datasets.Sequence(datasets.Value("int32")),
        }
    )
    for split, pairs in texts.items():
        empty = empty_dataset(features)
        if not pairs:  # e.g. no test split asked for
            result[split] = empty
            stats[split] = {
                "texts": 0,
                "tokens": 0,
                "rows": 0,
                "truncated_texts": 0,
                "text_tokens": [],
            }
            continue
        raw = datasets.Dataset.from_dict(
            {
                "prefix": [pair[0] for pair in pairs],
                "story": [pair[1] for pair in pairs],
                "ends": [bool(pair[2]) if len(pair) > 2 else True for pair in pairs],
            }
        )
        procs = config.num_proc if len(pairs) >= MIN_RECORDS_PER_PROCESS * 2 else None
        tokenized = raw.map(
            _tokenize_batch,
            batched=True,
            num_proc=procs,
            remove_columns=["prefix", "story", "ends"],
            fn_kwargs={
                "tokenizer": tokenizer,
                "eos": eos,
                "mask_prefix": config.loss_on_story_only,
            },
            desc=f"tokenize {split}",
            load_from_cache_file=False,
        )
        lengths = [len(row) for row in tokenized["input_ids"]]
        if config.packing == "pack":
            shaped = tokenized.map(
                _pack_batch,
                batched=True,
                batch_size=1000,
                num_proc=procs,
                fn_kwargs={"block_size": config.block_size},
                desc=f"pack {split}",
                load_from_cache_file=False,
            )
        else:
            shaped = tokenized.map(
                _pad_batch,
                batched=True,
                num_proc=procs,
                fn_kwargs={"max_length": config.max_length, "pad_id": pad_id},
                desc=f"pad {split}",
                load_from_cache_file=False,
            )
        # fewer tokens than one block leave no rows (and no columns) after packing
        result[split] = shaped.cast(features) if len(shaped) else empty
        stats[split] = {
            "texts": len(pairs),
            "tokens": sum(lengths),
            "rows": len(shaped),
            "truncated_texts": sum(n > config.max_length for n in lengths)
            if config.packing == "pad"
            else 0,
            "text_tokens": lengths,
        }
    return datasets.DatasetDict(result), stats
