"""The hostile-input corpus (tests/reliability/rel_corpus.py) typed into the studio of a real
Chromium: every entry is saved to the library or refused with a message that says what to
change; a sample of them is written from; nothing runs, nothing breaks the page or the server.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from test_browser_security import open_library, watch

from reliability.rel_corpus import CORPUS
from taleforge.config import load_config
from taleforge.serve.sanitize import clean_text

pytestmark = pytest.mark.integration

#: Written from (prompt + Write) as well as saved: markup, SQL, paths, controls, sizes.
WRITTEN = (
    "empty",
    "only newlines",
    "a million-character line",
    "every byte",
    "invalid UTF-8",
    "ANSI clear screen",
    "bidi override",
    "script tag",
    "iframe srcdoc",
    "a tokenizer special token",
    "template injection",
    "SQL drop",
    "relative traversal",
    "shell substitution",
)


def pasted(raw: bytes) -> str:
    """What a browser makes of the bytes when they are pasted: undecodable ones as U+FFFD."""
    return raw.decode("utf-8", errors="replace")


def paste(page: Any, selector: str, text: str) -> str:
    """Put ``text`` in a text field as a paste does (one input event); returns what the
    field holds then. (Playwright's fill types line by line: minutes for 10,000 lines.)"""
    script = "(el, t) => { el.value = t; el.dispatchEvent(new Event('input', {bubbles: true})) }"
    page.eval_on_selector(selector, script, text)
    return str(page.input_value(selector))


def toasts(page: Any) -> list[str]:
    return [str(t) for t in page.locator("[data-testid=toast-text]").all_inner_texts()]


def close_toasts(page: Any, within: float = 20) -> None:
    """Close the toasts shown (they are still fading in when first seen: retry)."""
    close = page.locator("[data-testid=toast-close]")
    deadline = time.monotonic() + within
    while close.count():
        if time.monotonic() > deadline:
            raise AssertionError(f"a toast does not close: {toasts(page)}")
        try:
            close.first.click(timeout=1000)
        except Exception:  # inert while animating, or gone meanwhile: look again
            time.sleep(0.1)


def outcome(page: Any, selector: str, before: str, done: Any, within: float = 60) -> str:
    """The new text of ``selector`` once ``done(text)`` holds, or ``"error: <toast>"``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if found := toasts(page):
            close_toasts(page)
            return "error: " + " ".join(found)
        text = str(page.inner_text(selector))
        if text != before and done(text):
            return text
        time.sleep(0.05)
    raise AssertionError(f"no answer in {selector} after {within} s (still {before!r})")


def test_the_hostile_corpus_in_the_studio_is_saved_or_refused_clearly(tiny_studio, launch_chromium):
    serve = load_config(None).serve
    limit, prompt_limit = serve.max_story_chars, serve.max_prompt_chars  # the defaults
    saved: list[str] = []
    written = 0  # each Write of a new story autosaves it in the library
    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(60_000)
        dialogs = watch(page)
        page.goto(tiny_studio)
        page.wait_for_selector("#story textarea")

        for name, raw in CORPUS:
            text = pasted(raw)
            title = f"{name}: {text[:60]}"
            page.click("button:has-text('New story')")
            page.wait_for_function("document.querySelector('#story textarea').value === ''")
            paste(page, "#title input, #title textarea", title)
            typed = paste(page, "#story textarea", text)  # as the textarea holds it (LF only)
            before = page.inner_text("#save-status")
            page.click("#save-btn")
            answer = outcome(page, "#save-status", before, lambda s: "saved" in s)
            kept = clean_text(typed)
            if not kept.strip():
                assert answer.startswith("error: the story is empty"), (name, answer)
            elif len(kept) > limit:
                assert answer.startswith("error: the manuscript is"), (name, answer)
                assert f"at most {limit:,}" in answer and "shorten it" in answer, (name, answer)
            else:
                assert answer.startswith("💾 saved"), (name, answer)
                saved.append(name)
            assert page.input_value("#story textarea") == typed, f"{name}: the text was lost"

        page.fill("#length input[type=number]", "16")
        page.press("#length input[type=number]", "Enter")
        for name, raw in CORPUS:
            if name not in WRITTEN:
                continue
            text = pasted(raw)
            page.click("button:has-text('New story')")  # each Write its own library story
            page.wait_for_function("document.querySelector('#story textarea').value === ''")
            paste(page, "#prompt textarea", text)
            before = page.inner_text("#status")
            page.click("#write-btn")
            answer = outcome(page, "#status", before, lambda s: s.startswith("✓"))
            kept = clean_text(text)
            if not text.strip():
                assert answer.startswith("error: write a prompt first"), (name, answer)
            elif len(kept) > prompt_limit:
                assert answer.startswith("error: the text is"), (name, answer)
                assert f"at most {prompt_limit:,}" in answer and "shorten it" in answer, (
                    name,
                    answer,
                )
            else:
                assert answer.startswith("✓"), (name, answer)
                written += 1

        # the library finds them by their hostile titles and lists them as text
        open_library(page)
        for name in ("SQL drop", "script tag", "relative traversal", "bidi override"):
            paste(page, "#library-search input, #library-search textarea", name)
            page.click("#library-search-btn")
            deadline = time.monotonic() + 30
            while name not in (shown := page.inner_text("#library-table")):
                assert time.monotonic() < deadline, f"{name!r} is not found: {shown!r}"
                time.sleep(0.1)
        assert page.evaluate("window.__xss") == 0 and page.evaluate("window.x") is None
        assert dialogs == [], f"script from the corpus ran: {dialogs}"
        page.close()

    # every story the studio answered "saved" (or wrote) is in the library
    stories = httpx.get(f"{tiny_studio}/api/stories", params={"limit": 500}, timeout=60).json()
    assert len(saved) > 80 and len(stories["stories"]) == len(saved) + written
    assert httpx.get(f"{tiny_studio}/health").json()["status"] == "ok"
