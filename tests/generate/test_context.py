"""The lorebook in the model's context, and the context preview: what the backend receives.

A recording backend wraps the tiny GPT-2's transformers backend and keeps every
``DecodeStep.context``; the tests read what the model was given from it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from taleforge import ConfigError, StoryGenerator
from taleforge.generate.backends import Backend, DecodeStep
from taleforge.generate.backends.hf import TransformersBackend
from taleforge.generate.lore import Lorebook, LoreEntry
from taleforge.models import load_model

PROMPT = "The dragon slept beneath the castle"
WIZARD = LoreEntry(keys=("dragon",), text="The wizard read his spells.", name="wizard")
ROBOT = LoreEntry(keys=("robot",), text="A robot counted the stars.", name="robot")
CASTLE = LoreEntry(keys=("castle",), text="The castle is old.")
HARBOUR = "They met at the harbour at dawn, and she laughed when the wind stole his hat. "


class RecordingBackend(Backend):
    """The transformers backend, keeping the context of every decoding step."""

    name = "transformers"

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner = inner
        self.context_length = inner.context_length
        self.eos_token_ids = inner.eos_token_ids
        self.contexts: list[list[int]] = []

    @contextmanager
    def reserve(self, cancel: threading.Event, hint: Sequence[int] = ()) -> Iterator[Any]:
        with self.inner.reserve(cancel) as slot:
            yield slot

    def new_rng(self, seed: int) -> Any:
        return self.inner.new_rng(seed)

    def decode(self, slot: Any, step: DecodeStep, rng: Any, on_token, should_stop) -> list[int]:
        self.contexts.append(list(step.context))
        return self.inner.decode(slot, step, rng, on_token, should_stop)


def recording(model) -> tuple[StoryGenerator, RecordingBackend]:
    backend = RecordingBackend(TransformersBackend(model))
    return StoryGenerator(model, backend=backend), backend


@pytest.fixture(scope="module")
def tiny(tiny_model) -> tuple[StoryGenerator, RecordingBackend]:
    """The tiny GPT-2 (a 64-token window, no chat template)."""
    return recording(tiny_model)


@pytest.fixture(scope="module")
def chat_model(tiny_chat_model_dir: Path):
    return load_model(str(tiny_chat_model_dir))


@pytest.fixture(scope="module")
def wide(chat_model) -> tuple[StoryGenerator, RecordingBackend]:
    """The tiny GPT-2 with a 512-token window and a chat template (every mode but continue
    is chat-formatted)."""
    return recording(chat_model)


def first_context(pair, prompt: str = PROMPT, **options) -> str:
    """The text of the first context the backend received for the request."""
    generator, backend = pair
    backend.contexts.clear()
    generator.generate(prompt, seed=1, max_new_tokens=2, genre="none", **options)
    return str(generator.model.tokenizer.decode(backend.contexts[0]))


@pytest.mark.parametrize("mode", ["story", "writing-prompt", "continue", "poem", "dialogue"])
def test_a_triggered_entry_reaches_the_model_and_an_untriggered_one_does_not(tiny, mode):
    lorebook = Lorebook(entries=(WIZARD, ROBOT))
    context = first_context(tiny, mode=mode, lorebook=lorebook)
    assert WIZARD.text in context
    assert ROBOT.text not in context
    assert context.startswith(WIZARD.text)  # first, where the memory would be


@pytest.mark.parametrize("mode", ["story", "continue", "chat"])
def test_lore_follows_the_memory_in_every_format(wide, mode):
    context = first_context(
        wide, mode=mode, memory="The map led the explorers.", lorebook={"entries": [WIZARD]}
    )
    assert "The map led the explorers." in context and WIZARD.text in context
    assert context.index("The map led the explorers.") < context.index(WIZARD.text)
    if mode != "continue":  # chat-formatted: in the system prompt, under its heading
        assert f"What matters now:\n{WIZARD.text}" in context


def test_the_budget_is_respected_in_the_context(tiny):
    generator, _ = tiny
    budget = generator.count_tokens(WIZARD.text)
    lorebook = Lorebook(entries=(WIZARD, CASTLE), budget=budget)
    context = first_context(tiny, lorebook=lorebook)
    assert WIZARD.text in context and CASTLE.text not in context
    roomy = first_context(tiny, lorebook=lorebook.model_copy(update={"budget": budget * 3}))
    assert WIZARD.text in roomy and CASTLE.text in roomy


def test_a_bad_lorebook_is_a_config_error_that_names_the_field(tiny):
    generator, _ = tiny
    with pytest.raises(ConfigError, match=r"lorebook\.budget"):
        generator.make_request(PROMPT, lorebook={"budget": 10**6})
    with pytest.raises(ConfigError, match=r"lorebook\.entries\[0\]"):
        generator.make_request(
            PROMPT, lorebook={"entries": [{"keys": ["("], "text": "x", "regex": True}]}
        )


def test_lore_that_fills_the_window_is_refused_naming_the_lorebook(tiny):
    entry = LoreEntry(keys=("dragon",), text="The dragon slept. " * 30)
    with pytest.raises(ConfigError, match="lorebook"):
        first_context(tiny, lorebook=Lorebook(entries=(entry,), budget=2_000))


# -- the preview ---------------------------------------------------------------------------


def test_the_preview_is_the_first_context_the_backend_receives(tiny):
    generator, backend = tiny
    options = {"lorebook": Lorebook(entries=(WIZARD, ROBOT)), "genre": "none"}
    preview = generator.context_preview(PROMPT, max_new_tokens=5, **options)
    backend.contexts.clear()
    generator.generate(PROMPT, seed=1, max_new_tokens=5, **options)
    assert preview.token_ids == backend.contexts[0]
    assert preview.total == sum(part.tokens for part in preview.parts) == len(preview.token_ids)
    assert [part.kind for part in preview.parts] == ["lore", "story"]
    lore = preview.parts[0]
    assert lore.name == "wizard" and WIZARD.text in lore.text
    assert preview.parts[1].text == PROMPT
    assert (preview.window, preview.reserved, preview.dropped_chars) == (64, 5, 0)
    assert preview.lore_budget == 256 and preview.skipped_lore == ()


def test_the_preview_of_a_manuscript_longer_than_the_window(tiny):
    generator, backend = tiny
    manuscript = HARBOUR * 12 + "The dragon woke."
    options = {"mode": "continue", "lorebook": {"entries": [WIZARD]}, "authors_note": "a cat"}
    preview = generator.context_preview(manuscript, max_new_tokens=40, **options)
    backend.contexts.clear()
    generator.generate(manuscript, seed=1, max_new_tokens=40, **options)
    assert preview.token_ids == backend.contexts[0]
    assert preview.total + preview.reserved <= preview.window == 64
    kinds = [part.kind for part in preview.parts]
    assert kinds[0] == "lore" and "note" in kinds and kinds[-1] == "story"
    story = "".join(part.text for part in preview.parts if part.kind == "story")
    assert preview.dropped_chars > 0
    assert manuscript[preview.dropped_chars :] == story


def test_the_preview_names_every_part_of_a_chat_formatted_context(wide):
    generator, backend = wide
    options = {
        "memory": "The map led the explorers.",
        "authors_note": "a cat",
        "lorebook": Lorebook(entries=(WIZARD, CASTLE, ROBOT)),
        "genre": "none",
    }
    preview = generator.context_preview(PROMPT, max_new_tokens=3, **options)
    backend.contexts.clear()
    generator.generate(PROMPT, seed=1, max_new_tokens=3, **options)
    assert preview.token_ids == backend.contexts[0]
    named = [(part.kind, part.name) for part in preview.parts if part.kind != "instructions"]
    # CASTLE has no name: its first key names it
    assert named == [("memory", ""), ("lore", "wizard"), ("lore", "castle"), ("note", "")]
    assert preview.parts[0].kind == preview.parts[-1].kind == "instructions"


def test_the_preview_names_the_entries_over_the_budget(tiny):
    generator, _ = tiny
    lorebook = Lorebook(entries=(WIZARD, CASTLE), budget=generator.count_tokens(WIZARD.text))
    preview = generator.context_preview(PROMPT, lorebook=lorebook, max_new_tokens=5)
    assert [part.name for part in preview.parts if part.kind == "lore"] == ["wizard"]
    assert preview.skipped_lore == ("castle",)
    assert preview.lore_budget == lorebook.budget
