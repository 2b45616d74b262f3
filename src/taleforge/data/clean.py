"""Cleaning rules, filters and de-duplication, each switchable and each counted."""

from __future__ import annotations

import hashlib
import html
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from taleforge.config import DataConfig
from taleforge.data.records import Record

# Only real HTML tag names, so "<newline>" or "<3" in a story are not mistaken for markup.
_HTML_TAGS = (
    "a|abbr|b|big|blockquote|body|br|center|cite|code|del|div|em|font|h[1-6]|head|hr|html|i|"
    "img|ins|li|meta|ol|p|pre|q|s|small|span|strike|strong|sub|sup|table|tbody|td|th|thead|"
    "title|tr|tt|u|ul|script|style"
)
_TAG_RE = re.compile(rf"<\s*/?\s*(?:{_HTML_TAGS})\b[^<>]*>", re.IGNORECASE)
_BLOCK_TAG_RE = re.compile(r"<\s*(br|/p|/div|/h[1-6]|/li)\s*/?\s*>", re.IGNORECASE)
_ENTITY_RE = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z]{2,8});")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES_RE = re.compile(r"[ \t\u00a0]{2,}|[\t\u00a0]")
_TRAILING_RE = re.compile(r" +\n|\n +")
_BLANKS_RE = re.compile(r"\n{3,}")
_WP_NEWLINE_RE = re.compile(r"\s*<newline>\s*", re.IGNORECASE)
#: Signs of WritingPrompts' tokenized text: "do n't", "end .", "`` quoted ''".
_WP_TOKENIZED_RE = re.compile(r" n't\b| [.,!?;:](?= |$)| `` | ''")
_WP_CONTRACTION_RE = re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE)
_WORD_RE = re.compile(r"\w+")
_LETTERS_RE = re.compile(r"[^\W\d_]")
_SPACE_CHARS_RE = re.compile(r"\s")
_ASCII_SPACES = str.maketrans("", "", " \t\n\r\x0b\x0c")
_ASCII_LETTERS = str.maketrans("", "", string.ascii_letters)
NEAR_DUP_PERMUTATIONS = 64
SHINGLE_WORDS = 5


@dataclass
class CleanReport:
    """What each rule did: texts changed by fixers, records removed by filters."""

    changed: Counter[str] = field(default_factory=Counter)
    removed: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def drop(self, rule: str, record: Record) -> None:
        self.removed[rule] += 1
        self.examples.setdefault(rule, record.source)


def strip_html(text: str) -> str:
    """Remove HTML tags (block tags become line breaks) and decode entities."""
    if "<" in text:
        text = _BLOCK_TAG_RE.sub("\n", text)
        text = _TAG_RE.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    return text


def fix_unicode(text: str) -> str:
    """Repair mojibake (``cafÃ©`` -> ``café``) and NFC-normalize."""
    if not text.isascii():
        import ftfy

        text = ftfy.fix_text(text, unescape_html=False, normalization="NFC")
    return unicodedata.normalize("NFC", text)


def remove_control_chars(text: str) -> str:
    return _CONTROL_RE.sub("", text)


def normalize_whitespace(text: str) -> str:
    """Unix line breaks, single spaces, at most one blank line, trimmed."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES_RE.sub(" ", text)
    text = _TRAILING_RE.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANKS_RE.sub("\n\n", text)
    return text.strip()


def fix_writingprompts(text: str) -> str:
    """``<newline>`` markers to line breaks, and WritingPrompts' tokenization undone."""
    if "<newline>" in text.lower():
        text = _WP_NEWLINE_RE.sub("\n", text)
    if len(_WP_TOKENIZED_RE.findall(text)) >= 2:
        from sacremoses import MosesDetokenizer

        text = _WP_CONTRACTION_RE.sub(r"\1", text)
        detokenizer = MosesDetokenizer(lang="en")
        text = "\n".join(
            detokenizer.detokenize(line.replace("``", '"').replace("''", '"').split())
            for line in text.split("\n")
        )
    return text


def letter_ratio(text: str) -> float:
    """Share of letters among the visible (non-space) characters."""
    if text.isascii():  # the common case, ~10x faster than the regexes
        visible = len(text.translate(_ASCII_SPACES))
        letters = len(text) - len(text.translate(_ASCII_LETTERS))
    else:
        visible = len(text) - len(_SPACE_CHARS_RE.findall(text))
        letters = len(_LETTERS_RE.findall(text))
    return letters / visible if visible > 0 else 0.0


def fixers(config: DataConfig) -> list[tuple[str, Callable[[str], str]]]:
    """The enabled text fixers, in the order they run."""
    chosen: list[tuple[str, Callable[[str], str]]] = []
    if config.fix_writingprompts:
        chosen.append(("writingprompts", fix_writingprompts))
    if config.fix_html:
        chosen.append(("html", strip_html))
    if config.fix_unicode:
        chosen.append(("unicode", fix_unicode))
    if config.fix_control_chars:
        chosen.append(("control_chars", remove_control_chars))
    if config.fix_whitespace:
        chosen.append(("whitespace", normalize_whitespace))
    return chosen


def _fix(
    record: Record, rules: list[tuple[str, Callable[[str], str]]], report: CleanReport
) -> Record:
    text = record.text
    for name, rule in rules:
        fixed = rule(text)
        if fixed != text:
            report.changed[name] += 1
            text = fixed
    prompt = record.prompt
    if prompt:
        for _name, rule in rules:
            prompt = rule(prompt)
    return record.with_(text=text, prompt=prompt or None)


def _filter_reason(record: Record, config: DataConfig) -> str | None:
    if not record.text.strip():
        return "empty"
    words = len(record.text.split())
    if config.min_words and words < config.min_words:
        return "too_short"
    if config.max_words and words > config.max_words:
        return "too_long"
    if config.min_letter_ratio and letter_ratio(record.text) < config.min_letter_ratio:
        return "not_language"
    return None


def content_key(text: str) -> str:
    """A hash of the text with case and spacing folded: equal keys = exact duplicates."""
    folded = " ".join(_WORD_RE.findall(text.lower()))
    return hashlib.blake2b(folded.encode("utf-8"), digest_size=16).hexdigest()


def minhash(text: str) -> Any:
    """A MinHash signature of the text's 5-word shingles (xxhash: fast and seed-stable)."""
    import xxhash
    from datasketch import MinHash

    words = _WORD_RE.findall(text.lower())
    shingles = {
        " ".join(words[i : i + SHINGLE_WORDS])
        for i in range(max(1, len(words) - SHINGLE_WORDS + 1))
    }
    signature = MinHash(num_perm=NEAR_DUP_PERMUTATIONS, seed=1, hashfunc=xxhash.xxh32_intdigest)
    signature.update_batch([s.encode("utf-8") for s in shingles])
    return signature


def clean_records(
    records: Iterable[Record], config: DataConfig
) -> tuple[list[Record], CleanReport]:
    """Fix, filter and de-duplicate records; the report counts what each rule did.

    Of duplicates, the first in input order is kept, so the result is reproducible.
    """
    report = CleanReport()
    rules = fixers(config)
    seen: set[str] = set()
    lsh = None
    if config.dedup_near:
        from datasketch import MinHashLSH

        lsh = MinHashLSH(threshold=config.near_dup_threshold, num_perm=NEAR_DUP_PERMUTATIONS)
    from tqdm import tqdm

    records = list(records)
    kept = []
    progress = tqdm(records, desc="clean", unit=" texts", disable=len(records) < 2000)
    for index, raw in enumerate(progress):
        record = _fix(raw, rules, report)
        reason = _filter_reason(record, config)
        if reason:
            report.drop(reason, record)
            continue
        if config.dedup_exact:
            key = content_key(record.text)
            if key in seen:
                report.drop("duplicate", record)
                continue
            seen.add(key)
        if lsh is not None:
            signature = minhash(record.text)
            if lsh.query(signature):
                report.drop("near_duplicate", record)
                continue
            lsh.insert(str(index), signature)
        kept.append(record)
    return kept, report
