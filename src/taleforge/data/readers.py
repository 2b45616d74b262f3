"""Readers: every supported dataset format to a list of :class:`Record`.

Formats: CSV/TSV, plain text (one story per line, blank-line or ``<|endoftext|>``
separated), JSONL/JSON, WritingPrompts ``*.wp_source``/``*.wp_target`` pairs, a folder of
``.txt``/``.md`` stories, and Hugging Face datasets (a saved directory or ``hf:NAME``).
A file may be gzip-compressed (``stories.jsonl.gz``, ``.csv.gz``, ``.txt.gz``): it is read
through gzip, as a stream. Every error names the file and the line or row, and says what to
change.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taleforge.config import DataConfig
from taleforge.data.records import DataError, Record

SAMPLE_BYTES = 256 * 1024
#: A CSV line may be this many times --data.max-record-chars long.
ROW_FIELDS = 8
EOT = "<|endoftext|>"
TEXT_COLUMNS = (
    "text",
    "story",
    "content",
    "body",
    "response",
    "completion",
    "output",
    "target",
    "story_text",
)
PROMPT_COLUMNS = ("prompt", "writing_prompt", "wp", "source", "instruction", "premise", "input")
GENRE_COLUMNS = ("genre", "genres", "tag", "tags", "category", "label")
TITLE_COLUMNS = ("title", "name", "headline")
#: What a text is (story, poem, dialogue, fable): sets the form it is trained as.
KIND_COLUMNS = ("kind", "form", "type")
#: Which work a record belongs to; consecutive records of one work are its parts in order.
GROUP_COLUMNS = ("group", "work", "story_id", "source")
WP_SUFFIXES = (".wp_source", ".wp_target")


@dataclass(frozen=True)
class ReadResult:
    """Records and how they were read."""

    records: list[Record]
    format: str
    files: list[Path]
    encoding: str | None = None


# -- format detection and decoding ----------------------------------------------------------


def detect_format(spec: str) -> str:
    """Guess the format of a dataset path (or ``hf:NAME``)."""
    if spec.startswith("hf:"):
        return "hf"
    path = Path(spec)
    if not path.exists():
        raise DataError(
            f"dataset '{spec}' not found: give a file, a folder, or hf:NAME for a Hugging "
            "Face dataset (the default is data/sample/stories.csv)"
        )
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return "hf"
        if any(path.glob("*.wp_source")):
            return "writingprompts"
        return "folder"
    suffix = (path.with_suffix("") if compressed(path) else path).suffix.lower()
    by_suffix = {
        ".csv": "csv",
        ".tsv": "tsv",
        ".tab": "tsv",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".json": "json",
        ".txt": "txt",
        ".text": "txt",
        ".md": "txt",
        ".wp_source": "writingprompts",
        ".wp_target": "writingprompts",
    }
    if suffix in by_suffix:
        return by_suffix[suffix]
    try:
        with open_bytes(path) as handle:  # only the start: the file may be gigabytes
            head = handle.read(1024).lstrip()
    except GZIP_ERRORS:
        raise _gzip_error(path) from None
    except OSError as exc:
        raise _os_error(path, exc) from None
    return "jsonl" if head.startswith(b"{") else "txt"


def compressed(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def open_bytes(path: Path) -> io.BufferedIOBase:
    """The file's bytes, decompressed when its name ends in ``.gz``."""
    if compressed(path):
        return gzip.open(path, "rb")
    return path.open("rb")


#: What a damaged or truncated .gz file raises while it is read.
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _gzip_error(path: Path) -> DataError:
    return DataError(
        f"{path}: not a complete gzip file (damaged or cut short); compress it again with "
        "gzip, or give the uncompressed file"
    )


def _os_error(path: Path, exc: OSError) -> DataError:
    reason = exc.strerror or str(exc)
    return DataError(
        f"{path}: cannot read the file ({reason}); check that it exists and that you may read it"
    )


def _is_utf8(name: str) -> bool:
    return codecs.lookup(name).name == "utf-8"


#: Unicode blocks that are Latin or hold no script (a Cyrillic or Greek block is a script).
_NOT_A_SCRIPT = (
    "Latin",
    "Punctuation",
    "Control",
    "Symbol",
    "Number",
    "Spacing Modifier",
    "Letterlike",
    "Arrows",
    "Mathematical",
    "Specials",
    "Box Drawing",
    "Block Elements",
    "Geometric",
)


def _plausible_cp1252(sample: bytes) -> bool:
    """Whether ``sample`` reads as Western European text in cp1252 (a superset of Latin-1).

    In English, French, German or Spanish text decoded right, every non-ASCII character
    inside a word is a letter (café, naïve, Straße). Text in another single-byte code page
    read as cp1252 puts symbols inside words (Polish "Zażółć" becomes "Za¿ó³æ").
    """
    import unicodedata

    try:
        text = sample.decode("cp1252")
    except UnicodeDecodeError:
        return False
    for i, char in enumerate(text):
        if ord(char) < 128 or unicodedata.category(char).startswith("L"):
            continue
        before = text[i - 1] if i else " "
        after = text[i + 1] if i + 1 < len(text) else " "
        if before.isalpha() and after.isalpha():
            return False
    return True


def detect_encoding(path: Path, declared: str | None) -> str:
    """The encoding to read ``path`` with: declared, a BOM, UTF-8, or detected.

    Undeclared non-UTF-8 text is read as cp1252 (the Windows superset of Latin-1) when it
    reads as Western European text and the detector sees no other script; otherwise the
    detector's (charset_normalizer) guess is taken.

    Raises:
        DataError: The file cannot be read, looks binary, or the declared encoding is unknown.
    """
    try:
        with open_bytes(path) as handle:
            sample = handle.read(SAMPLE_BYTES)
    except GZIP_ERRORS:
        raise _gzip_error(path) from None
    except OSError as exc:
        raise _os_error(path, exc) from None
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return declared or "utf-16"
    if b"\x00" in sample:
        offset = sample.index(b"\x00")
        raise DataError(
            f"{path}: looks like a binary file (NUL byte at offset {offset}): give a text "
            "dataset (CSV, TXT, JSONL, WritingPrompts) or a folder of .txt stories"
        )
    if declared:
        try:
            codecs.lookup(declared)
        except LookupError:
            raise DataError(
                f"unknown encoding '{declared}': use e.g. utf-8, latin-1, cp1252"
            ) from None
        if _is_utf8(declared) and sample.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"  # the BOM is not part of the first column's name
        return declared
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        # A multi-byte character may be cut at the end of the sample.
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    latin_only = best is None or all(
        any(word in alphabet for word in _NOT_A_SCRIPT) for alphabet in best.alphabets
    )
    if latin_only and _plausible_cp1252(sample):
        return "cp1252"
    return best.encoding if best is not None else "utf-8"


def _decode_error(path: Path, line: int, encoding: str, exc: UnicodeDecodeError) -> DataError:
    return DataError(
        f"{path}: line {line}: bytes that are not valid {encoding} ({exc.reason}). Declare "
        "the real encoding with --data.encoding (e.g. latin-1), or pass "
        "--data.encoding-errors replace to replace the bad bytes"
    )


def _too_long(path: Path, number: int, max_chars: int) -> DataError:
    return DataError(
        f"{path}: line {number} is longer than {max_chars:,} characters; is it really one "
        "story? Split the file or raise --data.max-record-chars"
    )


def iter_lines(path: Path, encoding: str, errors: str, max_chars: int) -> Iterator[str]:
    """Lines of a text file, decoded, each bounded by ``max_chars`` (a 2 GB line is refused
    without being read). Line ends are kept as they are in the file.

    Lines are split on the bytes and decoded one by one, so a decoding error names the line
    of the bad byte. UTF-16/32, where a newline is not one byte, are decoded as a stream.
    """
    wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    try:
        handle: Any = (
            io.TextIOWrapper(open_bytes(path), encoding=encoding, errors=errors, newline="")
            if wide
            else open_bytes(path)
        )
    except OSError as exc:
        raise _os_error(path, exc) from None
    decoder = codecs.getincrementaldecoder(encoding)(errors)
    # Every character takes at most 4 bytes in the encodings read here.
    limit = max_chars + 1 if wide else 4 * max_chars + 1
    with handle:
        number = 0
        while True:
            number += 1
            try:
                raw = handle.readline(limit)
                line = raw if isinstance(raw, str) else decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                raise _decode_error(path, number, encoding, exc) from None
            except GZIP_ERRORS:
                raise _gzip_error(path) from None
            except OSError as exc:
                raise _os_error(path, exc) from None
            if not raw:
                return
            if len(raw) >= limit and not line.endswith("\n"):
                raise _too_long(path, number, max_chars)
            if len(line.rstrip("\r\n")) > max_chars:
                raise _too_long(path, number, max_chars)
            yield line


# -- column mapping -------------------------------------------------------------------------


def _pick(
    columns: list[str],
    wanted: str | None,
    guesses: tuple[str, ...],
    role: str,
    path: Path,
    required: bool,
) -> str | None:
    lowered = {c.strip().lower(): c for c in columns}
    if wanted is not None:
        if wanted in columns:
            return wanted
        if wanted.lower() in lowered:
            return lowered[wanted.lower()]
        raise DataError(
            f"{path}: no column '{wanted}' for the {role} (columns: {', '.join(columns)}): "
            f"set --data.{role}-column to one of them"
        )
    for guess in guesses:
        if guess in lowered:
            return lowered[guess]
    if required:
        raise DataError(
            f"{path}: cannot tell which column holds the {role} (columns: "
            f"{', '.join(columns) or 'none'}): set --data.{role}-column NAME"
        )
    return None


@dataclass(frozen=True)
class Columns:
    text: str
    prompt: str | None
    genre: str | None
    title: str | None
    kind: str | None = None
    group: str | None = None

    @classmethod
    def choose(cls, columns: list[str], config: DataConfig, path: Path) -> Columns:
        text = _pick(columns, config.text_column, TEXT_COLUMNS, "text", path, True)
        assert text is not None
        others = [c for c in columns if c != text]
        prompt = _pick(others, config.prompt_column, PROMPT_COLUMNS, "prompt", path, False)
        genre = _pick(others, config.genre_column, GENRE_COLUMNS, "genre", path, False)
        title = _pick(others, config.title_column, TITLE_COLUMNS, "title", path, False)
        rest = [c for c in others if c not in (prompt, genre, title)]
        return cls(
            text=text,
            prompt=prompt,
            genre=genre,
            title=title,
            kind=_pick(rest, None, KIND_COLUMNS, "kind", path, False),
            group=_pick(rest, None, GROUP_COLUMNS, "group", path, False),
        )

    def record(self, row: Mapping[str, Any], source: str) -> Record | None:
        def cell(name: str | None) -> str | None:
            if name is None:
                return None
            value = row.get(name)
            if value is None:
                return None
            if isinstance(value, list):
                value = value[0] if value else None
                if value is None:
                    return None
            text = str(value).strip()
            return text or None

        text = cell(self.text)
        if text is None:
            return Record(text="", source=source)
        genre = cell(self.genre)
        kind = cell(self.kind)
        return Record(
            text=text,
            prompt=cell(self.prompt),
            genre=genre,
            title=cell(self.title),
            source=source,
            genre_source="column" if genre else "none",
            kind=kind.lower() if kind else None,
            group=cell(self.group),
        )


def number_parts(records: list[Record], max_parts: int) -> list[Record]:
    """Number the parts of works cut into consecutive records of one group.

    A run of consecutive records with the same group is one work in order: its first record
    is part 0 and only its last one ``ends``. A run longer than ``max_parts`` is a collection
    (a file of many short pieces sharing a source), not one work: each record stands alone.
    """
    numbered: list[Record] = []
    start = 0
    while start < len(records):
        group = records[start].group
        stop = start + 1
        while group is not None and stop < len(records) and records[stop].group == group:
            stop += 1
        run = records[start:stop]
        if len(run) == 1 or len(run) > max_parts:
            numbered += [r.with_(part=0, ends=True) for r in run]
        else:
            numbered += [r.with_(part=i, ends=i == len(run) - 1) for i, r in enumerate(run)]
        start = stop
    return numbered


# -- readers --------------------------------------------------------------------------------


def read_csv(path: Path, config: DataConfig, delimiter: str | None) -> ReadResult:
    encoding = detect_encoding(path, config.encoding)

    def lines() -> Iterator[str]:
        # A row holds several fields (title, prompt, genre, story): bound the line more
        # loosely and let the csv module's field limit name the field that is too long.
        line_limit = ROW_FIELDS * config.max_record_chars
        return iter_lines(path, encoding, config.encoding_errors, line_limit)

    if delimiter is None:
        sample = []
        for line in lines():
            sample.append(line)
            if sum(map(len, sample)) > 20_000:
                break
        try:
            delimiter = csv.Sniffer().sniff("".join(sample), delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    records = []
    # The field limit is process-wide: set it for this file only.
    previous_limit = csv.field_size_limit(config.max_record_chars)
    reader = csv.DictReader(lines(), delimiter=delimiter)
    try:
        columns = [c for c in (reader.fieldnames or []) if c is not None]
        mapping = Columns.choose(columns, config, path)
        for row in reader:
            if None in row:  # more cells than header fields
                raise DataError(
                    f"{path}: row ending at line {reader.line_num} has more cells than "
                    "the header; quote fields that contain the delimiter"
                )
            record = mapping.record(row, f"{path.name}:line {reader.line_num}")
            if record is not None:
                records.append(record)
    except csv.Error as exc:
        # DictReader.line_num lags behind; the inner reader knows the line being read.
        raise DataError(
            f"{path}: line {reader.reader.line_num}: {exc}. Fix the quoting, or raise "
            "--data.max-record-chars if a story really is that long"
        ) from None
    finally:
        csv.field_size_limit(previous_limit)
    return ReadResult(records, "tsv" if delimiter == "\t" else "csv", [path], encoding)


_BLANK_LINE_RE = re.compile(r"\n[ \t]*\n")


def _split_text(text: str, mode: str) -> list[str]:
    # Only line feeds end lines: form feeds or U+2028 inside a story stay in it.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if mode == "auto":
        if EOT in text:
            mode = "eot"
        else:
            # Blank-line separated when blank lines exist and the blocks hold several lines
            # each; a file of one story per line with the odd blank line stays "line".
            lines = [line for line in text.split("\n") if line.strip()]
            blocks = [b for b in _BLANK_LINE_RE.split(text) if b.strip()]
            several = len(blocks) > 1 and len(lines) / len(blocks) >= 1.5
            mode = "blank" if several else "line"
    if mode == "eot":
        parts = text.split(EOT)
    elif mode == "blank":
        parts = _BLANK_LINE_RE.split(text)
    else:
        parts = text.split("\n")
    return [p.strip() for p in parts if p.strip()]


def read_txt(path: Path, config: DataConfig) -> ReadResult:
    encoding = detect_encoding(path, config.encoding)
    text = "".join(iter_lines(path, encoding, config.encoding_errors, config.max_record_chars))
    records = [
        Record(text=part, source=f"{path.name}:story {i}")
        for i, part in enumerate(_split_text(text, config.txt_split), start=1)
    ]
    return ReadResult(records, "txt", [path], encoding)


def _rows_from_json(data: Any, path: Path) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in ("data", "stories", "records", "train", "rows", "items"):
            if isinstance(data.get(key), list):
                return list(data[key])
    raise DataError(
        f'{path}: expected a list of objects (or {{"data": [...]}}), found {type(data).__name__}'
    )


def _records_from_rows(
    rows: list[Any],
    config: DataConfig,
    path: Path,
    label: str,
    numbers: list[int] | None = None,
) -> list[Record]:
    """Records from JSON-like rows; ``numbers`` are the rows' line numbers (1, 2, … if None)."""
    numbered = list(zip(numbers or range(1, len(rows) + 1), rows, strict=True))
    objects = [r for r in rows if isinstance(r, dict)]
    if not objects:
        return [
            Record(text=str(r).strip(), source=f"{path.name}:{label} {i}")
            for i, r in numbered
            if isinstance(r, str)
        ]
    columns = list(dict.fromkeys(k for row in objects[:1000] for k in row))
    mapping = Columns.choose(columns, config, path)
    records = []
    for i, row in numbered:
        if not isinstance(row, dict):
            raise DataError(f"{path}: {label} {i} is {type(row).__name__}, not an object")
        record = mapping.record(row, f"{path.name}:{label} {i}")
        if record is not None:
            records.append(record)
    return records


def read_jsonl(path: Path, config: DataConfig) -> ReadResult:
    encoding = detect_encoding(path, config.encoding)
    rows = []
    numbers = []
    lines = iter_lines(path, encoding, config.encoding_errors, config.max_record_chars)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        numbers.append(number)
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "each line must be one JSON object"
            ) from None
    records = _records_from_rows(rows, config, path, "line", numbers)
    return ReadResult(records, "jsonl", [path], encoding)


def read_json(path: Path, config: DataConfig) -> ReadResult:
    encoding = detect_encoding(path, config.encoding)
    text = "".join(iter_lines(path, encoding, config.encoding_errors, config.max_record_chars))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}); for one object per line "
            "use a .jsonl file"
        ) from None
    rows = _rows_from_json(data, path)
    return ReadResult(_records_from_rows(rows, config, path, "item"), "json", [path], encoding)


_WP_TAG_RE = re.compile(r"^\s*\[\s*([A-Za-z]{2,4})\s*\]\s*")


def _wp_pairs(path: Path) -> list[tuple[Path, Path]]:
    if path.is_dir():
        sources = sorted(path.glob("*.wp_source"))
    else:
        sources = [path.with_suffix(".wp_source")]
    pairs = []
    for source in sources:
        target = source.with_suffix(".wp_target")
        if not source.is_file() or not target.is_file():
            raise DataError(
                f"WritingPrompts needs both {source.name} and {target.name} side by side "
                f"in {source.parent}"
            )
        pairs.append((source, target))
    if not pairs:
        raise DataError(f"{path}: no *.wp_source / *.wp_target pairs found")
    return pairs


def read_writingprompts(path: Path, config: DataConfig) -> ReadResult:
    """WritingPrompts as released by Fan et al. 2018: line N of the source is the prompt of
    line N of the target; prompts start with a tag such as ``[WP]``."""
    records: list[Record] = []
    files: list[Path] = []
    for source, target in _wp_pairs(path):
        encoding = detect_encoding(source, config.encoding)
        prompts = list(
            iter_lines(source, encoding, config.encoding_errors, config.max_record_chars)
        )
        stories = list(
            iter_lines(
                target,
                detect_encoding(target, config.encoding),
                config.encoding_errors,
                config.max_record_chars,
            )
        )
        if len(prompts) != len(stories):
            raise DataError(
                f"{source.name} has {len(prompts)} lines but {target.name} has "
                f"{len(stories)}: the files must be line-aligned pairs"
            )
        for number, (prompt, story) in enumerate(zip(prompts, stories, strict=True), 1):
            prompt = _WP_TAG_RE.sub("", prompt.strip())
            records.append(
                Record(
                    text=story.strip(),
                    prompt=prompt.strip() or None,
                    source=f"{target.name}:line {number}",
                )
            )
        files += [source, target]
    return ReadResult(records, "writingprompts", files, None)


def read_folder(path: Path, config: DataConfig) -> ReadResult:
    """One story per ``.txt``/``.md`` file; a genre-named parent folder sets the genre."""
    from taleforge.genres import GENRE_ALIASES, GENRES

    known = set(GENRES) | {g.lower() for g in config.extra_genres}
    files = sorted(
        p for p in path.rglob("*") if p.suffix.lower() in (".txt", ".md") and p.is_file()
    )
    if not files:
        raise DataError(f"{path}: the folder has no .txt or .md files")
    records = []
    for file in files:
        encoding = detect_encoding(file, config.encoding)
        text = "".join(iter_lines(file, encoding, config.encoding_errors, config.max_record_chars))
        title = file.stem.replace("_", " ").replace("-", " ").strip()
        heading = re.match(r"\s*#\s+(.+)\n", text)
        if heading:
            title, text = heading.group(1).strip(), text[heading.end() :]
        folder = file.parent.name.lower()
        genre = GENRE_ALIASES.get(folder, folder) if file.parent != path else None
        genre = genre if genre in known else None
        records.append(
            Record(
                text=text.strip(),
                title=title,
                genre=genre,
                genre_source="column" if genre else "none",
                source=str(file.relative_to(path)),
            )
        )
    return ReadResult(records, "folder", files, None)


def read_hf(spec: str, config: DataConfig) -> ReadResult:
    """A dataset saved with ``save_to_disk``, or ``hf:NAME[:split]`` from the local cache."""
    import datasets

    try:
        if spec.startswith("hf:"):
            name, _, split = spec[3:].partition(":")
            loaded = datasets.load_dataset(name, split=split or None)
        else:
            loaded = datasets.load_from_disk(spec)
    except Exception as exc:  # datasets raises many types; all mean "cannot read it"
        raise DataError(
            f"cannot load the Hugging Face dataset '{spec}': {str(exc).splitlines()[0]}. "
            "Offline, only datasets in the local cache (HF_HOME) or saved directories load"
        ) from None
    parts = list(loaded.items()) if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    records: list[Record] = []
    path = Path(spec)
    for split, part in parts:
        label = f"{split} row" if split else "row"  # saved:train row 3
        records += _records_from_rows(part.to_list(), config, path, label)
    return ReadResult(records, "hf", [], None)


def read_dataset(config: DataConfig) -> ReadResult:
    """Read the dataset ``config.input`` in ``config.format`` (auto-detected by default).

    Raises:
        DataError: The dataset cannot be read; the message names the file and the fix.
    """
    try:
        read = _read_dataset(config)
    except OSError as exc:  # permissions, sockets, names too long, I/O errors …
        raise _os_error(Path(exc.filename or config.input), exc) from None
    return ReadResult(
        number_parts(read.records, config.max_parts_per_work),
        read.format,
        read.files,
        read.encoding,
    )


def _read_dataset(config: DataConfig) -> ReadResult:
    fmt = config.format if config.format != "auto" else detect_format(config.input)
    if fmt == "hf":
        return read_hf(config.input, config)
    path = Path(config.input)
    if not path.exists():
        raise DataError(f"dataset '{config.input}' not found")
    if fmt in ("csv", "tsv") and path.is_file():
        return read_csv(path, config, "\t" if fmt == "tsv" else None)
    if fmt == "writingprompts":
        return read_writingprompts(path, config)
    if fmt == "folder" or path.is_dir():
        return read_folder(path, config)
    if fmt == "jsonl":
        return read_jsonl(path, config)
    if fmt == "json":
        return read_json(path, config)
    return read_txt(path, config)
