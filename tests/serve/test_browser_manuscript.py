"""The manuscript studio in a real Chromium: one document per story, counted in the library
after every action a writer takes.

The server is the test module's own (``tiny_studio``: the tiny GPT-2, an empty library), so
every story in its library was made by these tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_browser_hostile import close_toasts, paste, toasts

from taleforge.config import load_config
from taleforge.serve.sanitize import clean_text

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def page(tiny_studio: str, launch_chromium: Any) -> Iterator[Any]:
    with launch_chromium() as browser:
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.set_default_timeout(60_000)
        tab.goto(tiny_studio)
        tab.wait_for_selector("#story textarea")
        yield tab


def stories(url: str) -> list[dict[str, Any]]:
    """The library as the API lists it (this server's only writer is the local one)."""
    found = httpx.get(f"{url}/api/stories", timeout=30).json()["stories"]
    return sorted(found, key=lambda s: s["id"])


def text_of(page: Any) -> str:
    return str(page.input_value("#story textarea"))


def status(page: Any) -> str:
    return str(page.inner_text("#status"))


def wait_for(condition: Any, timeout: float, what: str, page: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    if page is not None:
        page.screenshot(path=str(ARTIFACTS / "manuscript-failed.png"), full_page=True)
    raise AssertionError(f"timed out waiting for {what}")


def settle(url: str, page: Any) -> None:
    """Wait until the page's autosave has reached the library (no request in flight)."""
    page.wait_for_timeout(500)
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/health").json()["active_requests"]:
        if time.monotonic() > deadline:
            raise AssertionError("requests still in flight after 30 s")
        time.sleep(0.1)
    page.wait_for_timeout(1000)


def set_length(page: Any, tokens: int) -> None:
    page.fill("#length input[type=number]", str(tokens))
    page.press("#length input[type=number]", "Enter")


def start_write(page: Any, title: str, prompt: str, tokens: int) -> None:
    """Title, prompt, a draft of exactly ``tokens`` tokens: Write."""
    page.fill("#title input, #title textarea", title)
    page.fill("#prompt textarea", prompt)
    set_length(page, tokens)
    page.check("#full-length input")
    page.click("#write-btn")


def type_in(page: Any, selector: str, text: str) -> None:
    """Fill a text box as typing does (Gradio's textbox reports its input on key events:
    the last character is typed)."""
    page.fill(selector, text[:-1])
    page.press(selector, "End")
    page.keyboard.type(text[-1])


def write_and_pause(page: Any, url: str, title: str, prompt: str) -> None:
    """Write a long draft and pause it once its first words are in; wait for its save."""
    start_write(page, title, prompt, 200)
    wait_for(lambda: bool(text_of(page).strip()), 120, "the first words", page)
    page.click("#pause-btn")
    wait_for(lambda: "paused" in status(page) or status(page).startswith("✓"), 60, "pause", page)
    settle(url, page)


def test_pause_does_not_make_a_second_story(page, tiny_studio):
    before = len(stories(tiny_studio))
    write_and_pause(
        page,
        tiny_studio,
        "The Coughing Clock",
        "A clockmaker's apprentice hears the town hall clock cough",
    )
    made = stories(tiny_studio)[before:]
    assert [s["title"] for s in made] == ["The Coughing Clock"], made


def test_a_second_write_keeps_the_first_draft_and_the_title(page, tiny_studio):
    before = len(stories(tiny_studio))
    page.fill("#prompt textarea", "A fox steals the moon")
    page.fill("#title input, #title textarea", "Moon Thief")
    set_length(page, 24)
    page.check("#full-length input")
    page.click("#write-btn")
    wait_for(lambda: status(page).startswith("✓"), 120, "the first draft", page)
    settle(tiny_studio, page)
    first = text_of(page)

    page.fill("#prompt textarea", "The moon asks for her light back")
    page.click("#write-btn")
    wait_for(lambda: status(page).startswith("✓") and text_of(page) != first, 120, "draft 2")
    settle(tiny_studio, page)
    made = stories(tiny_studio)[before:]
    # the open story stays the one story: a new prompt starts no story behind the writer's
    # back, and the first draft is kept in it
    assert [s["title"] for s in made] == ["Moon Thief"], made
    assert page.input_value("#title input, #title textarea") == "Moon Thief"
    versions = httpx.get(f"{tiny_studio}/api/stories/{made[0]['id']}/versions").json()
    assert first in [v["text"] for v in versions["versions"]]


def versions_of(url: str, story_id: int) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/api/stories/{story_id}/versions", timeout=30).json())


def finished(page: Any, before: str = "") -> Any:
    """A condition: the status line says a (new) step has finished."""
    return lambda: status(page).startswith("✓") and status(page) != before


def test_write_pause_continue_retry_undo_new_story_write_makes_two_stories(page, tiny_studio):
    before = len(stories(tiny_studio))
    write_and_pause(page, tiny_studio, "The Salt Road", "Two sisters walk the salt road to the sea")
    assert len(stories(tiny_studio)) == before + 1, "Write and Pause make one story"

    set_length(page, 24)
    # the tiny model writes control characters too; the studio keeps the text without them
    edited = clean_text(text_of(page).rstrip() + " The younger one stopped.")
    page.fill("#story textarea", edited)
    page.click("#continue-btn")
    wait_for(finished(page), 120, "the continuation", page)
    continued = text_of(page)
    assert continued.startswith(edited.strip()) and len(continued) > len(edited)
    done = status(page)
    page.click("#retry-btn")
    wait_for(finished(page, done), 120, "the retry", page)
    retried = text_of(page)
    assert retried.startswith(edited.strip()) and retried != continued
    page.click("#undo-btn")
    wait_for(lambda: text_of(page).strip() == edited.strip(), 30, "Undo to the edit", page)
    settle(tiny_studio, page)
    assert len(stories(tiny_studio)) == before + 1, "every step versions the one story"

    page.click("#new-btn")
    wait_for(lambda: text_of(page) == "", 10, "an empty manuscript")
    page.fill("#title input, #title textarea", "Lantern Fish")
    page.fill("#prompt textarea", "A lantern fish falls in love with a lighthouse")
    page.click("#write-btn")
    wait_for(finished(page), 120, "the second story", page)
    settle(tiny_studio, page)

    made = stories(tiny_studio)[before:]
    assert [s["title"] for s in made] == ["The Salt Road", "Lantern Fish"], made
    salt = versions_of(tiny_studio, made[0]["id"])
    texts = [v["text"] for v in salt["versions"]]
    assert continued in texts and retried in texts and edited.strip() in texts
    by_text = {v["text"]: v for v in salt["versions"]}
    # the retry is a sibling of the part it replaced; Undo moved the head back to the edit
    assert by_text[continued]["parent"] == by_text[retried]["parent"]
    assert by_text[edited.strip()]["number"] == by_text[retried]["parent"]
    assert salt["head"] == by_text[edited.strip()]["number"]
    assert len(versions_of(tiny_studio, made[1]["id"])["versions"]) == 1


def test_retry_alternatives_are_siblings_to_switch_between_reload_and_export(page, tiny_studio):
    before = len(stories(tiny_studio))
    start_write(page, "Three Doors", "A house with three front doors", 24)
    wait_for(finished(page), 120, "the first draft", page)
    done = status(page)
    page.fill("#alternatives input[type=number]", "3")
    page.press("#alternatives input[type=number]", "Enter")
    page.click("#retry-btn")
    wait_for(finished(page, done), 180, "three alternatives", page)
    settle(tiny_studio, page)
    (made,) = stories(tiny_studio)[before:]
    tree = versions_of(tiny_studio, made["id"])
    roots = [v for v in tree["versions"] if v["parent"] is None]
    assert len(roots) == 4, tree  # the first draft and three alternatives: siblings
    shown = text_of(page)
    assert shown == next(v["text"] for v in roots if v["number"] == tree["head"])

    page.click("#prev-btn")
    wait_for(lambda: text_of(page) != shown, 30, "← to show another alternative", page)
    other = text_of(page)
    assert other in [v["text"] for v in roots]
    settle(tiny_studio, page)
    page.reload()
    page.wait_for_selector("#story textarea")
    wait_for(lambda: text_of(page) == other, 60, "the reloaded page to reopen the draft", page)
    page.click("#drafts")  # the accordion with the tree
    drafts = page.locator("#drafts-tree .draft")
    wait_for(lambda: drafts.count() == 4, 30, "the tree of four drafts", page)
    assert page.input_value("#title input, #title textarea") == "Three Doors"

    page.click("#export-btn")
    link = page.locator("#export [data-testid=download-link]")
    wait_for(lambda: link.count() > 0, 60, "the exported file", page)
    assert str(link.first.get_attribute("download")) == "three-doors.txt"
    exported = httpx.get(str(link.first.get_attribute("href")), timeout=30)
    assert exported.text.strip() == other.strip()


def test_a_novel_length_manuscript_saves_reopens_and_continues(page, tiny_studio):
    limit = load_config(None).serve.max_story_chars
    paragraph = "The keeper counted the ships again. None of them came home.\n\n"
    novel = (paragraph * (1_500_000 // len(paragraph) + 1))[:1_500_000].rstrip() + " She"
    assert len(novel) > 1_499_000
    before = len(stories(tiny_studio))
    page.fill("#title input, #title textarea", "The Long Watch")
    paste(page, "#story textarea", novel)
    page.click("#save-btn")
    saved = page.locator("#save-status")
    wait_for(lambda: "saved" in saved.inner_text(), 120, "the novel saved", page)
    (made,) = stories(tiny_studio)[before:]
    record = httpx.get(f"{tiny_studio}/api/stories/{made['id']}", timeout=60).json()
    assert record["title"] == "The Long Watch" and record["text"] == novel

    page.reload()  # the page reopens the story it showed
    page.wait_for_selector("#story textarea")
    wait_for(lambda: text_of(page) == novel, 120, "the reopened novel", page)

    set_length(page, 16)
    page.check("#full-length input")
    page.click("#continue-btn")
    wait_for(finished(page), 180, "the continuation of the novel", page)
    continued = text_of(page)
    assert continued.startswith(novel) and len(continued) > len(novel)
    settle(tiny_studio, page)
    versions = versions_of(tiny_studio, made["id"])["versions"]
    assert continued in [v["text"] for v in versions]

    # one character over the limit: refused, naming it, and nothing is saved
    paste(page, "#story textarea", "x" * (limit + 1))
    page.click("#save-btn")
    wait_for(lambda: bool(toasts(page)), 60, "the refusal", page)
    refusal = " ".join(toasts(page))
    close_toasts(page)
    assert f"at most {limit:,}" in refusal and "shorten it" in refusal, refusal
    assert len(versions_of(tiny_studio, made["id"])["versions"]) == len(versions)


def test_a_clicked_word_shows_the_models_alternatives_and_continues_from_one(page, tiny_studio):
    before = len(stories(tiny_studio))
    start_write(page, "Other Words", "The fox looked at the moon and", 24)
    wait_for(finished(page), 120, "the draft", page)
    draft = text_of(page)
    words = page.locator("#fresh .tok")
    assert words.count() > 3
    third = words.nth(3)
    at = int(str(third.get_attribute("data-at")))
    third.click()
    options = page.locator("#word-pick label")
    wait_for(lambda: options.count() == 8, 60, "the model's alternatives", page)
    label = options.nth(1).inner_text()  # the second likeliest: “ word” · 12.3%
    assert "%" in label
    token = label[label.index("“") + 1 : label.rindex("”")]
    options.nth(1).click()
    done = status(page)
    page.click("#word-btn")
    wait_for(finished(page, done), 120, "the branch from that word", page)
    branched = text_of(page)
    assert branched.startswith(draft[:at] + token) and branched != draft
    settle(tiny_studio, page)
    (made,) = stories(tiny_studio)[before:]
    tree = versions_of(tiny_studio, made["id"])["versions"]
    texts = [v["text"] for v in tree]
    assert draft in texts and branched in texts  # the draft it branched from is kept


def test_chapters_are_listed_and_new_chapter_adds_the_next(page):
    text = "It began in the rain.\n\n# Chapter 1\n\nThe road.\n\nChapter Two: The Sea\nWaves"
    type_in(page, "#story textarea", text)
    page.click("#chapters")
    items = page.locator("#outline-list .chapter")
    wait_for(lambda: items.count() == 3, 30, "the chapter list", page)
    assert "Chapter Two: The Sea" in items.nth(2).inner_text()
    page.click("#chapter-btn")
    wait_for(lambda: text_of(page).rstrip().endswith("# Chapter 3"), 30, "a new chapter", page)
    wait_for(lambda: items.count() == 4, 30, "the new chapter listed", page)
    assert text_of(page).startswith(text)

    # Ctrl+Enter in the manuscript continues it; the status is in view at 900 px
    page.fill("#story textarea", text)
    set_length(page, 16)
    page.press("#story textarea", "Control+Enter")
    wait_for(finished(page), 120, "the continuation Ctrl+Enter asked for", page)
    assert text_of(page).startswith(text) and len(text_of(page)) > len(text)
    box = page.locator("#status").bounding_box()
    assert box is not None and box["y"] + box["height"] < 900


def test_stories_with_one_title_are_told_apart_in_the_library(page, tiny_studio):
    made = [
        httpx.post(f"{tiny_studio}/api/stories", json={"title": "Twins", "text": text}).json()
        for text in ("The first twin.", "The second twin, longer by some words.")
    ]
    page.click("button[role=tab]:has-text('Library')")
    page.click("#library-search-btn")
    cells = page.locator("#library-table").get_by_role("gridcell")
    wanted = str(made[1]["id"])
    wait_for(lambda: wanted in [c.strip() for c in cells.all_inner_texts()], 30, "rows", page)
    at = [c.strip() for c in cells.all_inner_texts()].index(wanted)  # its id cell
    cells.nth(at).click()
    selected = page.locator("#library-status")
    wait_for(lambda: f"#{made[1]['id']}" in selected.inner_text(), 30, "the selection", page)
    assert "“Twins”" in selected.inner_text() and "7 words" in selected.inner_text()
    page.click("#open-btn")
    wait_for(lambda: text_of(page) == made[1]["text"], 30, "the second twin opened", page)
