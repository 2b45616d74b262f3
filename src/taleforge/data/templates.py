"""Training text templates; they match what generation puts in front of a story.

=================  ============================================================
template           text (``<eos>`` = the tokenizer's end-of-text token)
=================  ============================================================
plain              ``story<eos>``
genre_tagged       ``[FANTASY] story<eos>``
writing_prompt     ``[FANTASY] [WP] prompt [RESPONSE] story<eos>``
chat               the tokenizer's chat template: the system prompt, the request a writer's
                   mode makes (``instruction()`` of the generator: form, genre, length and
                   premise), then the story as the assistant's answer ``story<eos>``
=================  ============================================================

The genre tag is present only with ``genre_tags`` and a known genre (never in ``plain``).
A record without a prompt under ``writing_prompt`` falls back to ``genre_tagged``. Under
``chat``, a later part of a work cut into parts is plain text with no header: it teaches
``continue`` mode, which gives the model the story so far and nothing else. Each text is
returned as a prefix (the part the loss may skip), the story, and whether the story ends
there (only then is ``<eos>`` appended).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import NamedTuple

from taleforge.data.records import Record
from taleforge.generate.prompts import RESPONSE_TAG, SYSTEM_PROMPT, WP_TAG, instruction
from taleforge.genres import genre_tag

RenderChat = Callable[[list[dict[str, str]]], str]
#: A whole story up to this many words is asked for as "short", a longer one as "long".
#: About what fits in a default-length generation (300 tokens), so that a "short" story
#: asked for at the default settings can end on its own.
SHORT_STORY_WORDS = 250
_SENTENCE_RE = re.compile(r"[^.!?…\n]+(?:[.!?…]+[\"'”’)]*|\n|$)")
_WORD_RE = re.compile(r"[a-z']+")
_SPEAKER_RE = re.compile(r"^([A-Z][A-Za-z .'-]{0,40}):\s*$")


class Rendered(NamedTuple):
    """One training text: the prefix the loss may skip, the story, whether it ends here."""

    prefix: str
    story: str
    ends: bool = True


def is_whole_short(record: Record) -> bool:
    """Whether a record is a whole piece (it ends) of at most :data:`SHORT_STORY_WORDS`."""
    return record.ends and record.part == 0 and len(record.text.split()) <= SHORT_STORY_WORDS


def sentences(text: str) -> list[str]:
    """The sentences (or lines) of a text, stripped, in order."""
    return [s.strip() for s in _SENTENCE_RE.findall(text) if s.strip()]


def premise_of(record: Record, max_candidates: int = 12) -> str:
    """A short premise for a record: its prompt or title, else an extractive summary.

    The summary is the sentence, among the opening ones but never the first (the model must
    not learn to copy the premise as its first sentence), whose content words are the
    text's most frequent ones: a centroid summary that needs no model.
    """
    if record.prompt:
        return record.prompt.strip()
    if record.title:
        return record.title.strip()
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS as STOPWORDS

    words = [w for w in _WORD_RE.findall(record.text.lower()) if w not in STOPWORDS]
    frequency = Counter(words)
    candidates = [
        s for s in sentences(record.text)[1 : max_candidates + 1] if 5 <= len(s.split()) <= 40
    ]
    if not candidates:
        first = sentences(record.text)[:1]
        return " ".join(first[0].split()[:12]) if first else ""

    def centrality(sentence: str) -> float:
        content = [w for w in _WORD_RE.findall(sentence.lower()) if w not in STOPWORDS]
        return sum(frequency[w] for w in content) / (len(content) + 3)

    return max(candidates, key=centrality)


def dialogue_lines(text: str) -> str:
    """Speeches written as ``NAME:`` on a line of its own become ``NAME: words`` lines."""
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        match = _SPEAKER_RE.match(lines[index].strip())
        if match:
            speech: list[str] = []
            index += 1
            while (
                index < len(lines)
                and lines[index].strip()
                and not _SPEAKER_RE.match(lines[index].strip())
            ):
                speech.append(lines[index].strip())
                index += 1
            out.append(f"{match.group(1)}: {' '.join(speech)}")
            continue
        if lines[index].strip():
            out.append(lines[index].strip())
        index += 1
    return "\n".join(out)


def _speakers(dialogue: str, most: int = 3) -> list[str]:
    names = [line.split(":", 1)[0] for line in dialogue.split("\n") if ":" in line[:42]]
    return [name for name, _ in Counter(names).most_common(most)]


def request_of(record: Record) -> tuple[str, str]:
    """The writer's request a record answers: ``(mode, premise)``, and the text to train on."""
    kind = (record.kind or "story").lower()
    if kind == "poem":
        return "poem", premise_of(record)
    if kind == "dialogue":
        return "dialogue", ""
    if record.prompt:
        return "writing-prompt", record.prompt.strip()
    return "story", premise_of(record)


def _render_chat(record: Record, genre_tags: bool, render_chat: RenderChat) -> Rendered:
    if record.part > 0:
        return Rendered("", record.text, record.ends)
    mode, premise = request_of(record)
    genre = record.genre if genre_tags else None
    text = record.text
    if mode == "dialogue":
        text = dialogue_lines(text)
        speakers = _speakers(text)
        names = [", ".join(speakers[:-1]), speakers[-1]] if len(speakers) > 1 else speakers
        premise = " and ".join(names) if speakers else "two people talk"
    length = "short" if is_whole_short(record) else "long"
    request = instruction(mode, premise, genre, length=length)
    header = render_chat(
        [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": request},
        ]
    )
    return Rendered(header, text, record.ends)


def render(
    record: Record, template: str, genre_tags: bool, render_chat: RenderChat | None = None
) -> Rendered:
    """The training text of one record; ``prefix + story`` is what the model reads."""
    if template == "chat":
        if render_chat is None:
            raise ValueError("the chat template needs the tokenizer's chat template")
        return _render_chat(record, genre_tags, render_chat)
    tag = f"{genre_tag(record.genre)} " if genre_tags and record.genre else ""
    if template == "writing_prompt" and record.prompt:
        return Rendered(f"{tag}{WP_TAG} {record.prompt} {RESPONSE_TAG} ", record.text, record.ends)
    if template == "plain":
        return Rendered("", record.text, record.ends)
    return Rendered(tag, record.text, record.ends)


def special_tokens(records: Iterable[Record], template: str, genre_tags: bool) -> list[str]:
    """The marker tokens these texts use, in a stable order (none for plain and chat)."""
    tokens: list[str] = []
    if template == "writing_prompt":
        tokens += [WP_TAG, RESPONSE_TAG]
    if genre_tags and template not in ("plain", "chat"):
        tokens += sorted({genre_tag(r.genre) for r in records if r.genre})
    return tokens


def truncate_words(text: str, max_words: int) -> str:
    """At most ``max_words`` words of a text, cut after a paragraph or else a sentence."""
    if len(text.split()) <= max_words:
        return text
    kept: list[str] = []
    count = 0
    for paragraph in text.split("\n\n"):
        words = len(paragraph.split())
        if count + words > max_words:
            if not kept:  # one long first paragraph: cut it after a sentence
                for sentence in sentences(paragraph):
                    if count + len(sentence.split()) > max_words and kept:
                        break
                    kept.append(sentence)
                    count += len(sentence.split())
                return " ".join(kept)
            break
        kept.append(paragraph)
        count += words
    return "\n\n".join(kept)
