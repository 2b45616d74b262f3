"""The co-writing studio in a real browser: Debian's Chromium driven headless by Playwright.

Screenshots of each step go to ``test-artifacts/`` (kept by CI as test artifacts). The app
runs the default story model, as `make run` starts it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def page(story_server: str, launch_chromium: Any) -> Iterator[Any]:
    with launch_chromium() as browser:
        tab = browser.new_page(viewport={"width": 1280, "height": 1000})
        tab.set_default_timeout(60_000)
        tab.goto(story_server)
        tab.wait_for_selector("#story textarea")
        yield tab


def story(page: Any) -> str:
    return str(page.input_value("#story textarea"))


def status(page: Any) -> str:
    return str(page.inner_text("#status"))


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"))


def set_length(page: Any, tokens: int) -> None:
    page.fill("#length input[type=number]", str(tokens))
    page.press("#length input[type=number]", "Enter")


def test_write_streams_then_pause_edit_continue_undo(page):
    page.fill("#prompt textarea", "A lighthouse keeper finds a door at the bottom of the sea")
    set_length(page, 600)
    page.fill("input[aria-label='Seed (-1 = random)']", "4")
    page.check("#full-length input")  # 600 tokens: on llama.cpp about 10 s to pause in
    page.click("#write-btn")

    lengths: list[int] = []

    def streaming() -> bool:
        lengths.append(len(story(page)))
        return len({n for n in lengths if n > 0}) >= 3  # seen growing, piece by piece

    # the first request loads the model (and, on llama.cpp, exports it once): minutes on a
    # busy CI machine; then the text must grow piece by piece
    wait_for(lambda: bool(story(page).strip()), 240, "the first words")
    wait_for(streaming, 90, "the story to stream in")
    shot(page, "1-streaming")
    assert not status(page).startswith("✓"), "still writing when Pause is clicked"
    page.click("#pause-btn")
    try:
        wait_for(lambda: "paused" in status(page), 60, "the paused status")
    except AssertionError:
        shot(page, "failed-pause")
        raise AssertionError(
            f"no paused status after 60 s: status {status(page)!r}, "
            f"{len(story(page))} characters written"
        ) from None
    paused = story(page)
    time.sleep(1.5)
    assert story(page) == paused, "nothing is written after Pause"
    assert paused.strip()
    shot(page, "2-paused")

    edited = paused.rstrip() + " Then the keeper whispered the name of the drowned bell."
    page.fill("#story textarea", edited)
    set_length(page, 60)
    page.uncheck("#full-length input")
    page.fill("input[aria-label='Seed (-1 = random)']", "-1")
    page.click("#continue-btn")
    wait_for(lambda: status(page).startswith("✓"), 180, "the continuation to finish")
    continued = story(page)
    shot(page, "3-continued")
    assert continued.startswith(edited.strip()), "the continuation starts from the edit"
    assert len(continued) > len(edited)

    page.click("#undo-btn")
    wait_for(lambda: story(page) == edited, 10, "Undo to restore the edited text")


def test_retry_replaces_the_last_part(page):
    set_length(page, 40)
    # the whole 40 tokens each time, so Retry has a story to replace and ← one to go back to
    page.check("#full-length input")
    page.click("#write-btn")
    wait_for(lambda: status(page).startswith("✓"), 180, "a short story")
    first, first_status = story(page), status(page)
    assert first.strip(), first_status
    page.click("#retry-btn")
    # finished: a new status line (another seed), not the first story's
    wait_for(
        lambda: status(page).startswith("✓") and status(page) != first_status, 180, "the retry"
    )
    assert story(page).strip() and story(page) != first
    page.click("#prev-btn")  # the retry is an alternative beside the first draft
    try:
        wait_for(lambda: story(page) == first, 30, "← to bring back the first draft")
    except AssertionError:
        shot(page, "failed-undo")
        raise AssertionError(
            f"← gave {story(page)!r}, status {status(page)!r}, wanted {first!r}"
        ) from None
    assert "tokens" in page.inner_text("#counts") and "words" in page.inner_text("#counts")

    page.click("#export-btn")
    link = page.locator("#export [data-testid=download-link]")
    wait_for(lambda: link.count() > 0, 60, "the exported file")
    assert str(link.first.get_attribute("download")).endswith(".txt")
    exported = httpx.get(str(link.first.get_attribute("href")), timeout=30)
    assert exported.text.strip() == first.strip()
    shot(page, "4-exported")


def test_switch_model(page):
    page.click("#model input")
    page.locator("[role=option]", has_text="smollm2-135m").first.click()
    page.fill("#prompt textarea", "A robot learns to paint")
    set_length(page, 40)
    page.click("#write-btn")
    wait_for(lambda: status(page).startswith("✓"), 120, "a story from the other model")
    assert status(page).endswith("smollm2-135m")
    assert story(page).strip()
    shot(page, "4-switched-model")


def chat_turn(page: Any, message: str, turn: int) -> str:
    """Send a chat message and wait for the finished reply."""
    page.fill("#chat-input textarea", message)
    page.click("#send-btn")
    bots = page.locator("#chatbot [data-testid=bot]")
    wait_for(
        lambda: bots.count() == turn and "✓" in page.inner_text("#chat-status"),
        120,
        f"reply {turn}",
    )
    return str(bots.nth(turn - 1).inner_text().strip())


def test_chat_two_turns_then_the_reply_goes_into_the_story(page):
    page.get_by_role("tab", name="Chat").click()
    page.fill("#chat-length input[type=number]", "60")  # the chat's own reply length
    page.press("#chat-length input[type=number]", "Enter")
    first = chat_turn(page, "Write a short poem about the sea.", 1)
    shot(page, "5-chat-1")
    second = chat_turn(page, "Make it <b>darker</b>.", 2)
    shot(page, "6-chat-2")
    users = page.locator("#chatbot [data-testid=user]")
    # a message is shown as typed: markup in it is text, not formatting
    assert users.count() == 2 and "Make it <b>darker</b>." in users.nth(1).inner_text()
    assert first and second and first != second
    page.click("#insert-btn")
    page.wait_for_selector("#story textarea", state="visible")  # back on the Write tab
    wait_for(
        lambda: " ".join(page.input_value("#story textarea").split()).endswith(
            " ".join(second.split())
        ),
        30,
        "the reply in the manuscript",
    )
