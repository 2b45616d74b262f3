"""``prepare``: read → clean → genres → template → split → tokenize → write, cached.

The output directory holds::

    dataset/              DatasetDict (train/validation/test) of input_ids, attention_mask, labels
    records/              the cleaned records per split (text, prompt, genre, title, source)
    tokenizer/            the tokenizer, with the template's marker tokens added
    card.md card.json lengths.png    the data card
    taleforge-data.json   the manifest: fingerprint, template, genre tags, special tokens

It is built in a temporary directory and renamed into place when complete, so a crash or an
error never leaves a half-written output. Re-running with the same input and options finds
the manifest's fingerprint unchanged and returns at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taleforge.config import DataConfig
from taleforge.data.card import write_card
from taleforge.data.clean import clean_records
from taleforge.data.genres import GenreClassifier, assign_genres, check_genres, save_classifier
from taleforge.data.readers import read_dataset
from taleforge.data.records import DataError
from taleforge.data.templates import (
    Rendered,
    is_whole_short,
    render,
    special_tokens,
    truncate_words,
)
from taleforge.data.tokenize import SPLITS, assign_splits, empty_dataset, tokenize_splits
from taleforge.files import replace_dir

log = logging.getLogger(__name__)

MANIFEST = "taleforge-data.json"
#: Bumped when preparation changes its output for the same input and options.
PREPARE_VERSION = 2
#: Options that change how the work is done, not what it produces.
_NOT_IN_FINGERPRINT = {"output", "num_proc"}


@dataclass(frozen=True)
class PreparedData:
    """A prepared dataset directory and its manifest."""

    directory: Path
    manifest: dict[str, Any]
    cached: bool = False

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    def load_dataset(self) -> Any:
        import datasets

        return datasets.load_from_disk(str(self.directory / "dataset"))

    def load_records(self) -> Any:
        import datasets

        return datasets.load_from_disk(str(self.directory / "records"))

    def load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.directory / "tokenizer"))


def default_output(config: DataConfig) -> Path:
    name = Path(config.input.removeprefix("hf:").rstrip("/")).stem or "dataset"
    return Path("runs") / "data" / name.replace(":", "-")


def input_fingerprint(spec: str) -> str:
    """A hash of the input's bytes (every file of a folder, with its relative path)."""
    digest = hashlib.blake2b(digest_size=20)
    path = Path(spec)
    if spec.startswith("hf:") or not path.exists():
        digest.update(spec.encode())
        return digest.hexdigest()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def tokenizer_identity(spec: str) -> str:
    """The tokenizer files' hash for a local or embedded model, else the hub id."""
    from taleforge.models import SourceKind, resolve_spec
    from taleforge.models.embedded import converted_dir

    resolved = resolve_spec(spec)
    directory = converted_dir() if resolved.kind is SourceKind.EMBEDDED else resolved.path
    if directory is None or not directory.is_dir():
        return spec
    digest = hashlib.blake2b(digest_size=16)
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
    ):
        if (directory / name).is_file():
            digest.update(name.encode() + (directory / name).read_bytes())
    return f"{resolved.kind.value}:{digest.hexdigest()}"


def fingerprint(config: DataConfig, tokenizer_spec: str) -> str:
    """What the output depends on: input bytes, options, tokenizer, preparation version."""
    options = config.model_dump(mode="json", exclude=_NOT_IN_FINGERPRINT)
    payload = json.dumps(
        {
            "version": PREPARE_VERSION,
            "input": input_fingerprint(config.input),
            "options": options,
            "tokenizer": tokenizer_identity(tokenizer_spec),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text("utf-8"))
        return manifest
    except (OSError, ValueError):
        return None


def load_prepared(directory: str | Path) -> PreparedData:
    """Open a directory written by :func:`prepare`."""
    path = Path(directory)
    manifest = read_manifest(path)
    if manifest is None:
        raise DataError(
            f"'{directory}' is not a prepared dataset (no {MANIFEST}): run "
            "`taleforge prepare --output` first"
        )
    return PreparedData(path, manifest)


def prepare(config: DataConfig, tokenizer_spec: str, *, force: bool = False) -> PreparedData:
    """Prepare a dataset for training; see the module docstring for the output.

    Args:
        config: The data options.
        tokenizer_spec: Model spec whose tokenizer to use (``config.tokenizer`` wins).
        force: Rebuild even when the output is up to date.

    Raises:
        DataError: Unreadable input, bad options, or nothing left after cleaning.
    """
    from taleforge.models import SourceKind, ensure_converted, load_tokenizer, resolve_spec

    spec = config.tokenizer or tokenizer_spec
    output = Path(config.output) if config.output else default_output(config)
    if resolve_spec(spec).kind is SourceKind.EMBEDDED:
        ensure_converted()  # so that its tokenizer files can be fingerprinted
    print_fp = fingerprint(config, spec)
    if output.exists() and not output.is_dir():
        raise DataError(
            f"--output '{output}' is a file, not a directory; it is left untouched: give a "
            "directory for the prepared dataset"
        )
    existing = read_manifest(output)
    if existing is None and output.is_dir() and any(output.iterdir()):
        raise DataError(
            f"output directory '{output}' exists and is not a prepared dataset; it is left "
            "untouched: choose another --output or empty it"
        )
    if not force and existing is not None and existing.get("fingerprint") == print_fp:
        log.info("%s is up to date (fingerprint %s)", output, print_fp[:12])
        return PreparedData(output, existing, cached=True)

    tokenizer = load_tokenizer(spec)
    read = read_dataset(config)
    log.info("read %d records (%s) from %s", len(read.records), read.format, config.input)
    records, report = clean_records(read.records, config)
    if not records:
        removed = ", ".join(f"{k} {v}" for k, v in report.removed.items()) or "nothing read"
        raise DataError(
            f"{config.input}: no stories left after cleaning ({removed}). Check the text "
            "column and loosen --data.min-words / --data.min-letter-ratio"
        )
    records, genre_sources, classifier = assign_genres(records, config)
    genre_check = check_genres(records, config.genre_check) if config.genre_check else None
    if genre_check:
        log.info(
            "genres agree with %d hand-checked records: %.1f %% (%.1f %% of the sure ones)",
            genre_check["checked"],
            100 * genre_check["accuracy"],
            100 * (genre_check["accuracy_sure"] or 0),
        )
    markers = special_tokens(records, config.template, config.genre_tags)
    if config.add_special_tokens and markers:
        tokenizer.add_tokens(markers, special_tokens=True)
    splits = assign_splits(records, config)
    splits["train"] = training_selection(splits["train"], config)
    render_chat = _chat_renderer(tokenizer) if config.template == "chat" else None
    texts = {
        name: [render(r, config.template, config.genre_tags, render_chat) for r in rows]
        for name, rows in splits.items()
    }
    dataset, token_stats = tokenize_splits(texts, tokenizer, config)

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}-"))
    try:
        dataset.save_to_disk(str(staging / "dataset"))
        _records_dataset(splits, texts).save_to_disk(str(staging / "records"))
        tokenizer.save_pretrained(str(staging / "tokenizer"))
        if isinstance(classifier, GenreClassifier) and config.genre_classifier == "dataset":
            save_classifier(classifier, staging)
        manifest = _manifest(
            config,
            spec,
            print_fp,
            read,
            report,
            records,
            genre_sources,
            classifier,
            markers,
            token_stats,
            texts,
            len(tokenizer),
            genre_check,
        )
        word_counts = {s: [len(r.text.split()) for r in rows] for s, rows in splits.items()}
        token_counts = {s: v.pop("text_tokens") for s, v in token_stats.items()}
        write_card(staging, manifest, word_counts, token_counts)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        replace_dir(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s", output)
    return PreparedData(output, manifest)


def training_selection(records: list[Any], config: DataConfig) -> list[Any]:
    """The training split as trained on: the first parts of each work, cut to a length,
    each kind repeated as ``train_repeat`` weights it."""
    if config.train_max_parts:
        records = [r for r in records if r.part < config.train_max_parts]
    if config.train_truncate_words:
        cut = []
        for record in records:
            text = truncate_words(record.text, config.train_truncate_words)
            cut.append(record if text == record.text else record.with_(text=text, ends=False))
        records = cut
    if config.train_repeat:
        repeated = []
        weights: dict[str, int] = {str(k): v for k, v in config.train_repeat.items()}
        for record in records:
            key = "short" if is_whole_short(record) else (record.kind or "story")
            repeated += [record] * weights.get(key, 1)
        records = repeated
    return records


def _chat_renderer(tokenizer: Any) -> Any:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "--data.template chat needs a tokenizer with a chat template (e.g. the embedded "
            "smollm2-135m); this one has none: use writing_prompt or genre_tagged"
        )

    def render_chat(messages: list[dict[str, str]]) -> str:
        return str(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )

    return render_chat


def _records_dataset(splits: dict[str, list[Any]], texts: dict[str, list[Rendered]]) -> Any:
    import datasets

    columns = ("text", "prompt", "genre", "genre_source", "title", "source", "formatted")
    features = datasets.Features({c: datasets.Value("string") for c in columns})
    parts = {}
    for name in SPLITS:
        rows = splits[name]
        if not rows:
            parts[name] = empty_dataset(features)
            continue
        parts[name] = datasets.Dataset.from_dict(
            features=features,
            mapping={
                "text": [r.text for r in rows],
                "prompt": [r.prompt or "" for r in rows],
                "genre": [r.genre or "" for r in rows],
                "genre_source": [r.genre_source for r in rows],
                "title": [r.title or "" for r in rows],
                "source": [r.source for r in rows],
                "formatted": [t.prefix + t.story for t in texts[name]],
            },
        )
    return datasets.DatasetDict(parts)


def _manifest(
    config: DataConfig,
    spec: str,
    print_fp: str,
    read: Any,
    report: Any,
    records: list[Any],
    genre_sources: Counter[str],
    classifier: Any,
    markers: list[str],
    token_stats: dict[str, Any],
    texts: dict[str, list[Rendered]],
    vocab_size: int,
    genre_check: dict[str, Any] | None = None,
) -> dict[str, Any]:
    genre_tags = (
        sorted({r.genre for r in records if r.genre})
        if (config.genre_tags and config.template != "plain")
        else []
    )
    examples = [
        t.prefix + t.story[:400] + ("…" if len(t.story) > 400 else "") for t in texts["train"][:2]
    ]
    return {
        "fingerprint": print_fp,
        "prepare_version": PREPARE_VERSION,
        "source": {
            "input": config.input,
            "format": read.format,
            "encoding": read.encoding,
            "files": [str(f) for f in read.files[:50]],
        },
        "counts": {"read": len(read.records), "kept": len(records)},
        "cleaning": {
            "changed": dict(report.changed),
            "removed": dict(report.removed),
            "examples": report.examples,
        },
        "genres": {
            "counts": dict(Counter(r.genre or "(none)" for r in records)),
            "sources": dict(genre_sources),
            "classifier": None
            if classifier is None
            else {"cv_accuracy": classifier.cv_accuracy, "trained_on": classifier.trained_on},
            "check": genre_check,
        },
        "template": {
            "name": config.template,
            "genre_tags": genre_tags,
            "special_tokens": markers if config.add_special_tokens else [],
            "loss_on_story_only": config.loss_on_story_only,
        },
        "tokenizer": {
            "spec": spec,
            "vocab_size": vocab_size,
            "packing": config.packing,
            "block_size": config.block_size,
            "max_length": config.max_length,
        },
        "tokens": token_stats,
        "examples": examples,
        "config": config.model_dump(mode="json"),
    }
