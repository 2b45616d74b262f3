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


def test_pause_does_not_make_a_second_story(page, tiny_studio):
    before = len(stories(tiny_studio))
    page.fill("#prompt textarea", "A clockmaker's apprentice hears the town hall clock cough")
    page.fill("#title input, #title textarea", "The Coughing Clock")
    set_length(page, 200)
    page.check("#full-length input")
    page.click("#write-btn")
    wait_for(lambda: bool(text_of(page).strip()), 120, "the first words", page)
    page.click("#pause-btn")
    wait_for(lambda: "paused" in status(page) or status(page).startswith("✓"), 60, "pause", page)
    settle(tiny_studio, page)
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
