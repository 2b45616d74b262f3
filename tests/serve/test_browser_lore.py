"""The lorebook in a real Chromium: typed in the page, shown in the context viewer, sent to
the model, kept with the story.

The server is the module's own (``lore_studio``); the test records every context its model's
backend receives, so it asserts on the request itself, not on what the page says about it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_apps import APPS
from test_browser_manuscript import finished, set_length, status, type_in, wait_for

pytestmark = pytest.mark.integration

MIRA = "Mira is a one-eyed smuggler who owes the harbour master money."
ORRIN = (
    "Orrin keeps the lighthouse on the northern cape, has not slept since the storm of the "
    "wolf winter, and counts every ship that passes, aloud, in the old tongue."
)
SCALES = "Dragons shed their scales in the first frost."
LOREBOOK = f"Mira, the smuggler: {MIRA}\nOrrin: {ORRIN}\n/d[rw]agons?/, wyrm: {SCALES}"


@pytest.fixture(scope="module")
def lore_studio(
    tiny_chat_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, start_server: Any
) -> Iterator[str]:
    """A server of the module's own on the tiny GPT-2 with a 512-token window: room for a
    lorebook (its tokenizer spells Mira's entry in 39 tokens; the usual tiny model reads 64)."""
    database = tmp_path_factory.mktemp("lore-db") / "taleforge.db"
    overrides = {
        "model.spec": str(tiny_chat_model_dir),
        "serve.database_url": f"sqlite:///{database}",
    }
    with start_server(overrides) as url:
        yield url


@pytest.fixture
def received(lore_studio: str, tiny_chat_model_dir: Path) -> Iterator[list[str]]:
    """The text of every context the studio's model receives while the test runs."""
    registry = APPS[lore_studio].state.registry
    generator = registry.get(str(tiny_chat_model_dir))
    backend, tokenizer = generator.backend, generator.model.tokenizer
    seen: list[str] = []
    decode = backend.decode

    def recording(slot: Any, step: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(tokenizer.decode(list(step.context)))
        return decode(slot, step, *args, **kwargs)

    backend.decode = recording
    try:
        yield seen
    finally:
        del backend.decode


def viewer(page: Any) -> str:
    return str(page.inner_text("#context-box"))


def test_a_triggered_entry_is_in_the_viewer_and_the_request_within_the_budget(
    lore_studio, launch_chromium, received
):
    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(lore_studio)
        page.wait_for_selector("#story textarea")
        page.fill("#title input, #title textarea", "Harbour Lights")
        type_in(page, "#lorebook textarea", LOREBOOK)
        type_in(page, "#story textarea", "The boat came in at dawn. Mira jumped onto the pier.")
        page.click("#context")  # the viewer updates while it is open
        wait_for(lambda: MIRA in viewer(page), 60, "Mira's entry in the viewer", page)
        assert "lore · Mira" in viewer(page)
        assert ORRIN not in viewer(page) and SCALES not in viewer(page)

        set_length(page, 16)
        page.click("#continue-btn")
        wait_for(finished(page), 120, "the continuation", page)
        assert received and MIRA in received[0] and ORRIN not in received[0], received[:1]

        # both triggered, a budget for one: the first listed goes in, the other is named
        time.sleep(0.5)
        text = page.input_value("#story textarea")
        type_in(page, "#story textarea", text + " Up on the cape, Orrin watched the boat.")
        marked = page.locator("#fresh")
        wait_for(lambda: not marked.inner_text().strip(), 10, "an edit to end the mark", page)
        wait_for(lambda: ORRIN in viewer(page), 60, "Orrin's entry in the viewer", page)
        page.fill("#lore-budget input[type=number]", "64")
        page.press("#lore-budget input[type=number]", "Enter")
        wait_for(lambda: "over the lore budget: Orrin" in viewer(page), 60, "the budget", page)
        assert MIRA in viewer(page)
        before = len(received)
        done = status(page)
        page.click("#continue-btn")
        wait_for(finished(page, done), 120, "the second continuation", page)
        sent = received[before]
        assert MIRA in sent and ORRIN not in sent, sent

        # the lorebook is the story's: kept in the library with it
        (story,) = httpx.get(f"{lore_studio}/api/stories", timeout=30).json()["stories"]
        lorebook = httpx.get(f"{lore_studio}/api/stories/{story['id']}/lorebook").json()
        assert [e["name"] for e in lorebook["entries"]] == ["Mira", "Orrin", "/d[rw]agons?/"]
        assert lorebook["budget"] == 64
