"""Training text templates; they match what generation puts in front of a story.

=================  ============================================================
template           text (``<eos>`` = the tokenizer's end-of-text token)
=================  ============================================================
plain              ``story<eos>``
genre_tagged       ``[FANTASY] story<eos>``
writing_prompt     ``[FANTASY] [WP] prompt [RESPONSE] story<eos>``
=================  ============================================================

The genre tag is present only with ``genre_tags`` and a known genre (never in ``plain``).
A record without a prompt under ``writing_prompt`` falls back to ``genre_tagged``. Each text
is returned as a prefix (the part the loss may skip) and the story.
"""

from __future__ import annotations

from collections.abc import Iterable

from taleforge.data.records import Record
from taleforge.generate.prompts import RESPONSE_TAG, WP_TAG
from taleforge.genres import genre_tag


def render(record: Record, template: str, genre_tags: bool) -> tuple[str, str]:
    """``(prefix, story)`` for one record; ``prefix + story`` is the training text."""
    tag = f"{genre_tag(record.genre)} " if genre_tags and record.genre else ""
    if template == "writing_prompt" and record.prompt:
        return f"{tag}{WP_TAG} {record.prompt} {RESPONSE_TAG} ", record.text
    if template == "plain":
        return "", record.text
    return tag, record.text


def special_tokens(records: Iterable[Record], template: str, genre_tags: bool) -> list[str]:
    """The marker tokens these texts use, in a stable order."""
    tokens: list[str] = []
    if template == "writing_prompt":
        tokens += [WP_TAG, RESPONSE_TAG]
    if genre_tags and template != "plain":
        tokens += sorted({genre_tag(r.genre) for r in records if r.genre})
    return tokens
