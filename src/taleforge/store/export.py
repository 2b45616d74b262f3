"""A story as a file: plain text, Markdown or EPUB (ebooklib)."""

from __future__ import annotations

import dataclasses
import html
import re
import unicodedata
import uuid

from taleforge.store.library import StoryRecord, VersionRecord

#: What XML 1.0 cannot contain (EPUB chapters are XHTML).
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

FORMATS = {
    "txt": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "epub": "application/epub+zip",
}


def as_of(story: StoryRecord, version: VersionRecord) -> StoryRecord:
    """The story as it was at ``version`` (its title and text), to export that draft."""
    return dataclasses.replace(story, title=version.title, text=version.text, head=version.number)


def filename(story: StoryRecord, fmt: str) -> str:
    """A safe file name from the title (ASCII letters, digits and dashes)."""
    ascii_title = unicodedata.normalize("NFKD", story.title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_title).strip("-").lower()[:60]
    return f"{slug or f'story-{story.id}'}.{fmt}"


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def export_story(story: StoryRecord, fmt: str) -> bytes:
    """The story in ``fmt`` (txt, md or epub).

    Raises:
        ValueError: An unknown format.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt == "txt":
        return f"{story.title}\n\n{story.text.strip()}\n".encode()
    if fmt == "md":
        lines = [f"# {story.title}", ""]
        meta = [f"*{label}: {value}*" for label, value in _meta(story)]
        if meta:
            lines += ["  \n".join(meta), ""]
        return ("\n".join(lines) + "\n" + "\n\n".join(_paragraphs(story.text)) + "\n").encode()
    if fmt == "epub":
        return _epub(story)
    raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")


def _meta(story: StoryRecord) -> list[tuple[str, str]]:
    meta = []
    if story.prompt and story.prompt.strip() != story.title:
        meta.append(("Prompt", story.prompt.strip()))
    if story.genre:
        meta.append(("Genre", story.genre))
    if story.model:
        meta.append(("Written with", story.model))
    return meta


def _epub(story: StoryRecord) -> bytes:
    import io
    import tempfile
    from pathlib import Path

    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier(str(uuid.uuid5(uuid.NAMESPACE_URL, f"taleforge:story:{story.id}")))
    # XML cannot hold U+FFFE/U+FFFF (which the text cleaning keeps): lxml refused them (500).
    title = _XML_ILLEGAL.sub("", story.title)
    book.set_title(title)
    book.set_language("en")
    book.add_author("taleforge")
    paragraphs = _paragraphs(_XML_ILLEGAL.sub("", story.text))
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    chapter = epub.EpubHtml(title=title, file_name="story.xhtml", lang="en")
    chapter.content = f"<h1>{html.escape(title)}</h1>{body}"
    book.add_item(chapter)
    book.toc = [chapter]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", chapter]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "story.epub"
        epub.write_epub(str(path), book)
        return io.BytesIO(path.read_bytes()).getvalue()
