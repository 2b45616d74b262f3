"""Pure prompt formatting: from a request (prompt, mode, genre, memory) to model text.

A prompt is planned as two parts:

* ``header``: what always stays in the model's context (instructions, memory, the
  triggered lorebook entries, the chat scaffold, a ``[FANTASY] [WP] ... [RESPONSE]`` prefix);
* ``opening``: text that is the start of the story itself (the text to continue, or the
  user's first words for a plain model). It is part of the story and may slide out of the
  window when the story grows past the model's context.

How the request is phrased depends on how the model was trained (its metadata template):
instruct models with a chat template get natural-language instructions; models fine-tuned
with genre tags get ``[GENRE]`` tags; plain models get a short text header.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taleforge.errors import ConfigError
from taleforge.genres import GenreChoice, genre_tag

ChatMessage = dict[str, str]
RenderChat = Callable[[list[ChatMessage]], str]

WP_TAG = "[WP]"
RESPONSE_TAG = "[RESPONSE]"
SYSTEM_PROMPT = (
    "You are a creative writing assistant. You write vivid, original fiction with concrete "
    "details, and you answer with the piece itself, without a preamble."
)
#: Markers that must never appear in a finished story.
TEMPLATE_MARKERS: tuple[str, ...] = (
    WP_TAG,
    RESPONSE_TAG,
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
)


#: What heads the triggered lorebook entries in a chat model's system prompt.
LORE_HEADING = "What matters now:"


@dataclass(frozen=True)
class HeaderSpan:
    """Where the writer's memory, a lorebook entry or (chat) the author's note lies in a
    plan's header: ``header[start:end]``. Lore spans are in the order of the entries."""

    kind: str  # "memory", "lore" or "note"
    start: int
    end: int


@dataclass(frozen=True)
class PromptPlan:
    """The formatted request: a fixed header and the story's opening."""

    header: str
    opening: str
    #: True when ``header`` was rendered by a chat template (it carries its own special tokens).
    chat: bool
    genre: GenreChoice
    #: The writer's parts of ``header`` (what is not in one is instructions and scaffold).
    spans: tuple[HeaderSpan, ...] = ()


def _joined(pieces: Sequence[tuple[str, str]]) -> tuple[str, tuple[HeaderSpan, ...]]:
    """The text of ``(kind, text)`` pieces and the spans of those with a kind ("" =
    scaffold)."""
    text, spans = "", []
    for kind, piece in pieces:
        if kind:
            spans.append(HeaderSpan(kind, len(text), len(text) + len(piece)))
        text += piece
    return text, tuple(spans)


def background(memory: str, lore: Sequence[str]) -> tuple[str, tuple[HeaderSpan, ...]]:
    """What a text model reads first: the memory, one line per triggered lorebook entry,
    then a blank line ("" when there is neither)."""
    pieces: list[tuple[str, str]] = []
    for kind, line in [("memory", memory)] * bool(memory) + [("lore", t) for t in lore]:
        pieces += [(kind, line), ("", "\n")]
    return _joined([*pieces, ("", "\n")] if pieces else [])


def system_prompt(memory: str, lore: Sequence[str]) -> tuple[str, tuple[HeaderSpan, ...]]:
    """A chat model's system prompt: :data:`SYSTEM_PROMPT`, the memory, then the triggered
    lorebook entries under :data:`LORE_HEADING` (one per line)."""
    pieces = [("", SYSTEM_PROMPT)]
    if memory:
        pieces += [("", "\n\nKeep in mind: "), ("memory", memory)]
    if lore:
        pieces.append(("", f"\n\n{LORE_HEADING}"))
        for text in lore:
            pieces += [("", "\n"), ("lore", text)]
    return _joined(pieces)


def _chat_spans(
    header: str, system: str, spans: Sequence[HeaderSpan], user: str, note: str
) -> tuple[HeaderSpan, ...]:
    """``spans`` of the system prompt, and the note at the end of the user's message, where
    the chat template put them in ``header`` (none found: a template that rewrote them)."""
    at = header.find(system)
    if at < 0:
        return ()
    found = [HeaderSpan(s.kind, at + s.start, at + s.end) for s in spans]
    user_at = header.find(user, at + len(system))
    if note and user_at >= 0:
        end = user_at + len(user)
        found.append(HeaderSpan("note", end - len(note), end))
    return tuple(found)


def _genre_words(genre: str | None) -> str:
    return f"{genre} " if genre else ""


#: The lengths a story can be asked for; a model trained on the chat template learned that
#: a "short" story ends within a few hundred words and a "long" one goes on.
STORY_LENGTHS: tuple[str, ...] = ("short", "long")


def instruction(mode: str, prompt: str, genre: str | None, length: str = "short") -> str:
    """The natural-language request an instruct model gets for a mode.

    Training data is rendered with this same function (``taleforge.data.templates``), so a
    model fine-tuned on the chat template is asked exactly the way it was taught.
    """
    words = _genre_words(genre)
    if length not in STORY_LENGTHS:
        raise ConfigError(f"length '{length}': use one of {', '.join(STORY_LENGTHS)}")
    if mode == "story":
        return f"Write a {length} {words}story based on this idea: {prompt}"
    if mode == "writing-prompt":
        return (
            f"Writing prompt: {prompt}\n\nWrite a {length} {words}story that answers this prompt."
        )
    if mode == "poem":
        return f"Write a {words}poem about: {prompt}"
    if mode == "dialogue":
        return (
            f"Write a short {words}dialogue, one line per turn in the form NAME: words. "
            f"The scene: {prompt}"
        )
    raise ConfigError(f"mode '{mode}' has no instruction")


def plan_prompt(
    prompt: str,
    *,
    mode: str,
    genre: GenreChoice,
    template: str,
    genre_tags: Sequence[str] = (),
    memory: str = "",
    lore: Sequence[str] = (),
    authors_note: str = "",
    history: Sequence[ChatMessage] = (),
    render_chat: RenderChat | None = None,
) -> PromptPlan:
    """Plan the model text for a request.

    Args:
        prompt: The user's prompt (the text to continue in ``continue`` mode).
        mode: story, writing-prompt, continue, poem, dialogue or chat.
        genre: The resolved genre.
        template: The model's training template: chat, genre_tagged, writing_prompt, plain.
        genre_tags: Genres whose tags the model was trained with.
        memory: Background the model must always see (characters, setting).
        lore: The texts of the triggered lorebook entries, read right after the memory.
        authors_note: Style or direction for what comes next. Chat-formatted requests carry
            it in the instruction; for text models the generator inserts it near the end of
            the context instead.
        history: Earlier chat turns (``chat`` mode).
        render_chat: Renders chat messages with the model's chat template; None when the
            model has no chat template.

    Raises:
        ConfigError: The mode needs something the model lacks (chat without a template).
    """
    memory = memory.strip()
    if mode == "chat" or (template == "chat" and render_chat is not None and mode != "continue"):
        if render_chat is None:
            raise ConfigError(
                "mode 'chat' needs a model with a chat template (for example smollm2-135m); "
                "this model has none: use --mode story or continue"
            )
        system, spans = system_prompt(memory, lore)
        note = f"Author's note: {authors_note.strip()}" if authors_note.strip() else ""
        ask = prompt if mode == "chat" else instruction(mode, prompt, genre.genre)
        user = ask + (f"\n\n{note}" if note else "")
        messages = [
            {"role": "system", "content": system},
            *(history if mode == "chat" else ()),
            {"role": "user", "content": user},
        ]
        header = render_chat(messages)
        found = _chat_spans(header, system, spans, user, note)
        return PromptPlan(header=header, opening="", chat=True, genre=genre, spans=found)

    # Text models read the background first: every header below starts with it.
    prefix, spans = background(memory, lore)
    if mode == "continue":
        return PromptPlan(prefix, prompt, False, genre, spans)
    tagged = genre.genre is not None and genre.genre in genre_tags
    tag = f"{genre_tag(genre.genre)} " if tagged and genre.genre else ""
    if mode == "writing-prompt" or template == "writing_prompt":
        header = f"{prefix}{tag}{WP_TAG} {prompt} {RESPONSE_TAG}"
        return PromptPlan(header, "", False, genre, spans)
    if tag:
        return PromptPlan(f"{prefix}{tag}", _opening_for(mode, prompt), False, genre, spans)
    described = f"A {genre.genre} " if genre.genre else "A "
    kind = {"story": "story", "poem": "poem", "dialogue": "dialogue"}[mode]
    if mode == "story":
        # A plain language model continues text: the prompt becomes the story's first words.
        header = f"{prefix}{described}{kind}.\n\n" if genre.genre else prefix
        return PromptPlan(header, prompt, False, genre, spans)
    header = f"{prefix}{described}{kind} about {prompt}.\n\n"
    return PromptPlan(header, "", False, genre, spans)


def authors_note_text(authors_note: str) -> str:
    """The author's note as a text model reads it, a few tokens before the story's end
    ("" when there is none; chat-formatted requests carry it in the user's message)."""
    note = authors_note.strip()
    return f"\n[Author's note: {note}]\n" if note else ""


def _opening_for(mode: str, prompt: str) -> str:
    return prompt if mode == "story" else f"{prompt}\n\n"
