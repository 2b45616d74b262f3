"""The manuscript studio's pure parts, without the page or the library: the word counter,
chapters, the marks and trees shown as HTML, the lorebook box, the context viewer.

Every text a writer typed or a model wrote is escaped before it goes into HTML.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

import gradio as gr
from pydantic import ValidationError

from taleforge.generate.lore import Lorebook, LoreEntry

#: Longest text whose tokens the counter counts (a novel's are not worth the wait).
COUNTED_CHARS = 200_000


def counts(text: str, tokenizer: Any = None) -> str:
    """The word counter: words, characters and (given the model's tokenizer, for a text of
    at most :data:`COUNTED_CHARS`) tokens."""
    words = len(re.findall(r"\S+", text))
    line = f"{words:,} words · {len(text):,} characters"
    if tokenizer is not None and len(text) <= COUNTED_CHARS:
        tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        line += f" · {tokens:,} tokens"
    return line


#: A chapter's (or a scene's) heading: a Markdown heading, "Chapter 3", "Part Two: The
#: Road", "Prologue" (a number or a number word after Chapter/Part/Book: "Part of me …" is
#: prose).
_NUMBER = r"(?:\d+|[ivxlc]+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
_HEADING = re.compile(
    rf"^(?:#{{1,3}}[ \t]+\S.*|(?:chapter|part|book)[ \t]+{_NUMBER}\b[^\n.!?]{{0,60}}"
    r"|(?:prologue|epilogue)\b[^\n.!?]{0,60})$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class Chapter:
    """One chapter of a manuscript: its heading, where it starts, how long it is."""

    title: str
    start: int
    words: int


def chapters(text: str) -> list[Chapter]:
    """The manuscript's chapters, by their headings (the text before the first heading, if
    any, is the opening)."""
    found = [(m.start(), m.group().lstrip("#").strip()) for m in _HEADING.finditer(text)]
    if not found or text[: found[0][0]].strip():
        found.insert(0, (0, "(opening)"))
    ends = [start for start, _ in found[1:]] + [len(text)]
    result = []
    for (start, title), end in zip(found, ends, strict=True):
        body = text[start:end]
        if title != "(opening)":  # the heading's own line is not the chapter's text
            body = body.partition("\n")[2]
        result.append(Chapter(title[:80], start, len(body.split())))
    return result


def next_chapter(text: str) -> str:
    """The manuscript with a new chapter's heading at its end."""
    number = sum(1 for c in chapters(text) if c.title != "(opening)") + 1
    joiner = "\n\n" if text.strip() else ""
    return f"{text.rstrip()}{joiner}# Chapter {number}\n\n"


def render_outline(text: str) -> str:
    """The chapters as a list to jump to (HTML, every title escaped); nothing for a
    manuscript without headings."""
    found = chapters(text)
    if len(found) < 2:
        return (
            "<p class='outline-empty'>No chapters yet: a line like “# Chapter 2” or "
            "“Chapter Two: The Road” starts one (New chapter adds it).</p>"
        )
    rows = "".join(
        f"<li class='chapter' data-at='{c.start}'>{html.escape(c.title)} · "
        f"<span class='chapter-words'>{c.words:,} words</span></li>"
        for c in found
    )
    return f"<ol id='outline-list'>{rows}</ol>"


#: How much of the step's new text, and of the text before it, the mark shows.
_FRESH_CHARS, _BEFORE_CHARS = 3_000, 200


def render_fresh(before: str, new: str) -> str:
    """The last step's new text, marked, after the end of what was there before (HTML, all
    text escaped); empty when the step wrote nothing. The page clears it once the writer
    edits the manuscript or starts another step."""
    if not new.strip():
        return ""
    start = len(before) + max(0, len(new) - _FRESH_CHARS)  # where the shown part begins
    shown = new[start - len(before) :]
    lead = before[-_BEFORE_CHARS:]
    lead = ("…" if len(before) > _BEFORE_CHARS else "") + lead
    # each word (with the space before it) is a button: its offset in the manuscript
    spans = []
    for match in re.finditer(r"\s*\S+|\s+", shown):
        at = start + match.start()
        spans.append(f"<span class='tok' data-at='{at}'>{html.escape(match.group())}</span>")
    words = len(new.split())
    return (
        f"<div id='fresh-text'><div class='fresh-label'>new in the last step · {words:,} "
        f"words (marked until you edit or continue; click a word for the model's "
        f"alternatives)</div><span class='fresh-before'>{html.escape(lead)}</span>"
        f"{'…' if start > len(before) else ''}<mark class='fresh-new'>{''.join(spans)}</mark>"
        "</div>"
    )


def render_tree(versions: list[Any], head: int | None) -> str:
    """The story's drafts as an indented tree (HTML, every text escaped); the head marked."""
    if not versions:
        return "<p class='tree-empty'>No drafts yet.</p>"
    children: dict[int | None, list[Any]] = {}
    for version in versions:
        children.setdefault(version.parent, []).append(version)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for version in children.get(parent, []):
            words = len(version.text.split())
            end = " ".join(version.text.split()[-8:])
            mark = "▶ " if version.number == head else ""
            css = "draft head" if version.number == head else "draft"
            lines.append(
                f"<div class='{css}' style='margin-left:{depth * 1.1:.1f}em'>{mark}"
                f"#{version.number} · {html.escape(version.kind)} · {words:,} words · "
                f"<span class='draft-end'>…{html.escape(end)}</span></div>"
            )
            walk(version.number, depth + 1)

    walk(None, 0)
    return f"<div id='drafts-tree'>{''.join(lines)}</div>"


def draft_choices(versions: list[Any], head: int | None) -> Any:
    choices = [
        (f"#{v.number} · {v.kind} · {len(v.text.split()):,} words", v.number)
        for v in reversed(versions)
    ]
    return gr.Dropdown(choices=choices, value=head if versions else None)


#: How the studio's lorebook box reads: one entry per line.
LORE_HELP = (
    "One entry per line: keys separated by commas, a colon, then what the model should "
    "know. A key in slashes is a regular expression; a line starting with # is switched "
    "off. Example: `Mira, the smuggler: Mira is a one-eyed smuggler who owes the harbour "
    "master money.`"
)


def parse_lorebook(text: str, budget: int, scan_chars: int | None = None) -> Lorebook:
    """The lorebook box's lines as a :class:`Lorebook`; a bad line is refused naming it."""
    entries = []
    for number, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.strip()
        enabled = not line.startswith("#")
        line = line.lstrip("#").strip()
        if not line:
            continue
        keys_part, colon, body = _split_entry(line)
        if not colon or not body.strip():
            raise gr.Error(
                f"lorebook line {number} has no text after its keys: write "
                "“keys: what the model should know”"
            )
        keys = [k.strip() for k in keys_part.split(",") if k.strip()]
        regex = any(_is_regex(k) for k in keys)
        if regex:  # one entry, one kind of key: plain words become whole-word patterns
            keys = [k[1:-1] if _is_regex(k) else rf"(?<!\w){re.escape(k)}(?!\w)" for k in keys]
        try:
            entries.append(
                LoreEntry(
                    keys=tuple(keys),
                    text=body.strip(),
                    name=keys_part.split(",")[0].strip()[:100],
                    regex=regex,
                    enabled=enabled,
                )
            )
        except ValidationError as exc:
            reason = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise gr.Error(f"lorebook line {number}: {reason}") from None
    options: dict[str, Any] = {"entries": tuple(entries), "budget": int(budget)}
    if scan_chars is not None:
        options["scan_chars"] = scan_chars
    try:
        return Lorebook(**options)
    except ValidationError as exc:
        reason = "; ".join(str(e["msg"]) for e in exc.errors())
        raise gr.Error(f"the lorebook cannot be used: {reason}") from None


def _is_regex(key: str) -> bool:
    return len(key) > 2 and key.startswith("/") and key.endswith("/")


#: A /regular expression/ key, up to its closing slash (an escaped slash does not close it).
_REGEX_KEY = re.compile(r"\s*/(?:\\.|[^/\\])+/\s*")


def _split_entry(line: str) -> tuple[str, str, str]:
    """Split at the first colon outside a /regex/ key: (keys, ":", text)."""
    at = 0
    while at < len(line):
        key = _REGEX_KEY.match(line, at)
        if key is not None and line[key.end() : key.end() + 1] in (",", ":"):
            at = key.end()
            continue
        if line[at] == ":":
            return line[:at], ":", line[at + 1 :]
        at += 1
    return line, "", ""


def format_lorebook(lorebook: Lorebook) -> str:
    """A lorebook as the box shows it (``parse_lorebook`` reads it back)."""
    lines = []
    for entry in lorebook.entries:
        keys = [f"/{k}/" for k in entry.keys] if entry.regex else list(entry.keys)
        mark = "" if entry.enabled else "# "
        lines.append(f"{mark}{', '.join(keys)}: {entry.text}")
    return "\n".join(lines)


#: The context viewer's colour for each kind of part.
PART_COLOURS = {
    "instructions": "#8a8a8a",
    "memory": "#2f7ed8",
    "lore": "#2e9e5b",
    "story": "#b07d2b",
    "note": "#c2456b",
}


def render_context(preview: Any) -> str:
    """The context viewer: a bar of the window's budget, then every part the model reads, in
    order, coloured by kind with its token count (all text escaped)."""
    window = max(1, int(preview.window))
    bar = []
    for part in preview.parts:
        width = 100 * part.tokens / window
        colour = PART_COLOURS.get(part.kind, "#888")
        bar.append(f"<span class='ctx-bar' style='width:{width:.2f}%;background:{colour}'></span>")
    free = 100 * max(0, window - preview.total) / window
    bar.append(f"<span class='ctx-bar' style='width:{free:.2f}%;background:#e5e5e5'></span>")
    summary = (
        f"{preview.total:,} of {window:,} tokens · {preview.reserved:,} kept for the next step"
    )
    if preview.dropped_chars:
        summary += f" · the first {preview.dropped_chars:,} characters are outside the window"
    if preview.skipped_lore:
        summary += " · over the lore budget: " + ", ".join(
            html.escape(n) for n in preview.skipped_lore
        )
    parts = []
    for part in preview.parts:
        colour = PART_COLOURS.get(part.kind, "#888")
        label = part.kind + (f" · {part.name}" if part.name else "")
        parts.append(
            f"<div class='ctx-part ctx-{part.kind}' style='border-left:4px solid {colour};"
            f"padding-left:6px;margin:4px 0'><div class='ctx-label' style='color:{colour};"
            f"font-size:0.8rem'>{html.escape(label)} · {part.tokens:,} tokens</div>"
            f"<div class='ctx-text'>{html.escape(part.text)}</div></div>"
        )
    return (
        f"<div id='context-view'><div style='width:100%;line-height:0'>{''.join(bar)}</div>"
        f"<p class='ctx-summary'>{summary}</p>{''.join(parts)}</div>"
    )
