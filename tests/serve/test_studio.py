"""The studio's handlers without a browser: each action on one document, checked in the
library it writes (the tiny GPT-2 on the reference backend, a SQLite library of its own)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from taleforge.config import load_config
from taleforge.serve.context import AppContext
from taleforge.serve.studio import Doc, Knobs, Studio, View, new_doc


class Request:
    """What the handlers read of a ``gr.Request``: the browser session, no account name."""

    def __init__(self, session: str = "s1") -> None:
        self.session_hash = session
        self.username = None
        self.client = None
        self.headers: dict[str, str] = {}


@pytest.fixture(scope="module")
def studio(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    database = tmp_path_factory.mktemp("studio") / "library.db"
    config = load_config(
        None,
        {
            "model.spec": str(tiny_model_dir),
            "model.backend": "transformers",
            "serve.database_url": f"sqlite:///{database}",
            "serve.rate_limit_generate": "100000/minute",
        },
    )
    ctx = AppContext.build(config)
    yield Studio(ctx.registry, ctx)
    ctx.db.dispose()


KNOBS = Knobs(length=16, full_length=True, seed=3)


def run(views: Any) -> list[View]:
    async def collect() -> list[View]:
        return [view async for view in views]

    return asyncio.run(collect())


def apply(doc: Doc, views: list[View]) -> Doc:
    """The document as the page holds it after these updates."""
    for view in views:
        changed = view.changed()
        doc = replace(
            doc,
            text=changed.get("text", doc.text),
            story_id=changed.get("story_id", doc.story_id),
            head=changed.get("head", doc.head),
            title=changed.get("title", doc.title),
        )
    return doc


def library_of(studio: Studio) -> list[Any]:
    account = studio.ctx.accounts.local_user()
    return studio.ctx.library.search(account)


def tree_of(studio: Studio, story_id: int) -> list[Any]:
    return studio.ctx.library.versions(studio.ctx.accounts.local_user(), story_id)


def test_write_makes_one_story_named_by_the_title_field(studio):
    before = len(library_of(studio))
    doc = Doc(key=new_doc(), title="Moon Thief", prompt="A fox steals the moon")
    views = run(studio.write(doc, KNOBS, Request()))
    doc = apply(doc, views)
    assert views[-1].status.startswith("✓") and doc.text.strip()
    stories = library_of(studio)[: len(library_of(studio)) - before]
    assert [s.title for s in stories] == ["Moon Thief"]
    assert doc.story_id == stories[0].id and stories[0].text == doc.text

    # a second Write (a new prompt) is a new draft of the same story: the first one stays
    first = doc.text
    doc = apply(
        doc,
        run(studio.write(replace(doc, prompt="The moon wants her light back"), KNOBS, Request())),
    )
    assert len(library_of(studio)) == before + 1
    tree = tree_of(studio, doc.story_id)
    assert [v.parent for v in tree] == [None, None]  # two roots: drafts side by side
    assert first in [v.text for v in tree] and doc.title == "Moon Thief"


def test_two_saves_of_a_new_document_racing_make_one_story(studio):
    before = len(library_of(studio))
    doc = Doc(key=new_doc(), text="The first lines, typed by hand.")

    async def race() -> list[Any]:
        return list(
            await asyncio.gather(
                studio.save(doc, doc.text, "edit", Request()),
                studio.save(doc, doc.text + " And more.", "autosave", Request()),
            )
        )

    first, second = asyncio.run(race())
    assert first.id == second.id
    assert len(library_of(studio)) == before + 1


def test_continue_retry_undo_and_alternatives_move_in_one_tree(studio):
    doc = Doc(key=new_doc(), title="Salt", text="The road to the sea was white with salt.")
    views = run(studio.continue_(doc, KNOBS, Request()))
    doc = apply(doc, views)
    continued = doc.text
    assert continued.startswith("The road to the sea was white with salt.")
    head = {v.number: v for v in tree_of(studio, doc.story_id)}[doc.head]
    assert head.text == continued  # the page shows what the library keeps
    last = next(v.last for v in reversed(views) if v.last is not View.last)

    alternatives = replace(KNOBS, alternatives=3)
    retried = run(studio.retry(doc, alternatives, last, Request()))
    doc = apply(doc, retried)
    tree = tree_of(studio, doc.story_id)
    typed = tree[0]
    children = [v for v in tree if v.parent == typed.number]
    assert len(children) == 4, tree  # the continuation and three alternatives: siblings
    assert doc.text in [v.text for v in children]

    # ← and → walk the siblings; the ends say so
    seen = {doc.text}
    for _ in range(3):
        view = asyncio.run(studio.sibling(doc, -1, Request()))
        doc = apply(doc, [view])
        seen.add(doc.text)
    assert seen == {v.text for v in children}
    assert "first of 4" in asyncio.run(studio.sibling(doc, -1, Request())).status

    # Undo goes back to the typed text, writing nothing
    doc = apply(doc, [asyncio.run(studio.undo(doc, Request()))])
    assert doc.text == typed.text and doc.head == typed.number
    assert len(tree_of(studio, doc.story_id)) == len(tree)
    assert "nothing to undo" in asyncio.run(studio.undo(doc, Request())).status


def test_pause_keeps_what_was_written_in_the_one_story(studio):
    before = len(library_of(studio))
    doc = Doc(key=new_doc(), title="Paused", prompt="A very long walk")
    knobs = replace(KNOBS, length=400)

    async def write_and_pause() -> list[View]:
        views: list[View] = []

        async def consume() -> None:
            async for view in studio.write(doc, knobs, Request("pausing")):
                views.append(view)

        task = asyncio.create_task(consume())
        while len(views) < 3 and not task.done():
            await asyncio.sleep(0.01)
        assert await studio.pause(Request("pausing")), "the writing stopped and was saved"
        await task
        return views

    views = asyncio.run(write_and_pause())
    assert "paused" in views[-1].status
    stories = library_of(studio)
    assert len(stories) == before + 1
    assert stories[0].title == "Paused" and stories[0].text == views[-1].text


def test_a_manuscript_over_the_limit_is_refused_naming_it(studio):
    limit = studio.limits.max_story_chars
    doc = Doc(key=new_doc(), text="word " * (limit // 5 + 1))
    with pytest.raises(gr.Error, match=f"{limit:,}|{limit}"):
        run(studio.continue_(doc, KNOBS, Request()))


def test_export_is_named_after_the_title(studio):
    doc = Doc(title="Moon Thief", prompt="A fox steals the moon", text="Once.")
    path = Path(studio.export(doc, ".md"))
    assert path.name.endswith("moon-thief.md")
    assert path.read_text().startswith("# Moon Thief\n\nOnce.")


def test_saving_only_control_characters_says_the_story_is_empty(studio):
    # NUL bytes pasted into the manuscript: nothing is left to save once they are cleaned,
    # and Save says so (it answered nothing at all)
    before = len(library_of(studio))
    doc = Doc(key=new_doc(), text="\x00" * 1024)
    with pytest.raises(gr.Error, match="the story is empty"):
        asyncio.run(studio.save(doc, doc.text, "save", Request()))
    assert asyncio.run(studio.save(doc, doc.text, "edit", Request())) is None
    assert len(library_of(studio)) == before


def test_the_lorebook_box_goes_into_the_step_and_the_story(studio):
    lore = "Mira, the smuggler: Mira owes the harbour master money.\n/d[rw]agons?/: Scales."
    doc = Doc(key=new_doc(), title="Harbour", text="Mira jumped onto the pier.", lore=lore)
    prompt, options = studio.next_step(doc, KNOBS)
    assert prompt == doc.text and options["mode"] == "continue"
    assert [e.name for e in options["lorebook"].entries] == ["Mira", "/d[rw]agons?/"]
    record = asyncio.run(studio.save(doc, doc.text, "edit", Request()))
    account = studio.ctx.accounts.local_user()
    assert studio.ctx.library.get(account, record.id).lorebook == options["lorebook"]
    # opened again, the box reads as it was typed
    _, view = asyncio.run(studio.open(record.id, Request()))
    assert view.lore == lore and view.lore_budget == options["lorebook"].budget
    # a line without text is refused, naming the line
    with pytest.raises(gr.Error, match="lorebook line 2"):
        studio.next_step(replace(doc, lore="Mira: a smuggler\nOrrin"), KNOBS)


def test_the_context_view_shows_the_triggered_entry_only(studio):
    lore = "Mira: Mira owes the harbour master money.\nOrrin: Orrin keeps the lighthouse."
    doc = Doc(key=new_doc(), text="The boat came in. Mira", lore=lore, memory="A port town.")
    shown = asyncio.run(studio.context(doc, KNOBS))
    assert "owes the harbour master" in shown and "keeps the lighthouse" not in shown
    assert "lore · Mira" in shown and "memory" in shown
    empty = asyncio.run(studio.context(Doc(key=new_doc()), KNOBS))
    assert "Nothing to continue yet" in empty


def test_chapters_are_found_by_their_headings_and_new_chapter_numbers_the_next():
    from taleforge.serve.manuscript import chapters, next_chapter, render_outline

    text = (
        "It began in the rain.\n\n# Chapter 1\n\nOne two three.\n\n"
        "Chapter Two: The Road\nPart of me wanted to stay.\n\nPrologue <b>"
    )
    found = chapters(text)
    assert [c.title for c in found] == [
        "(opening)",
        "Chapter 1",
        "Chapter Two: The Road",
        "Prologue <b>",
    ]
    assert [c.words for c in found] == [5, 3, 6, 0]  # "Part of me …" is prose, not a part
    assert all(text[c.start :].startswith(("It", "#", "Chapter", "Prologue")) for c in found)
    assert next_chapter(text).endswith("Prologue <b>\n\n# Chapter 4\n\n")
    assert "&lt;b&gt;" in render_outline(text) and "<b>" not in render_outline(text)
    assert "No chapters yet" in render_outline("Just prose.")


def test_a_clicked_word_branches_beside_the_draft_it_replaces(studio):
    doc = Doc(key=new_doc(), title="Branch", prompt="The fox looked at the moon and")
    doc = apply(doc, run(studio.write(doc, KNOBS, Request())))
    draft = doc.text
    at = len("The fox looked")
    choices = asyncio.run(studio.alternatives(doc, at, KNOBS))
    assert len(choices) == 8 and all("%" in label for label, _ in choices)
    token = choices[1][1]
    doc = apply(doc, run(studio.continue_from(doc, at, token, KNOBS, Request())))
    assert doc.text.startswith(draft[:at] + token) and doc.text != draft
    tree = {v.number: v for v in tree_of(studio, doc.story_id)}
    branch = tree[tree[doc.head].parent]  # the text up to the chosen word
    assert branch.text == draft[:at] + token
    assert branch.parent is None and any(v.text == draft for v in tree.values())
    with pytest.raises(gr.Error, match="click a word"):
        asyncio.run(studio.alternatives(doc, len(doc.text) + 5, KNOBS))
