"""The story library's REST API over real HTTP, on SQLite and on PostgreSQL: drafts that
branch, the lorebook, and stories the length of a novel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.parametrize("module_database", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="module")
def http(module_database: str, tiny_model_dir, start_server) -> Iterator[httpx.Client]:
    """A client of a server of this module's own (one anonymous local writer)."""
    overrides = {"model.spec": str(tiny_model_dir), "serve.database_url": module_database}
    with start_server(overrides) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client


def new_story(http: httpx.Client, text: str, title: str = "Door") -> int:
    made = http.post("/api/stories", json={"text": text, "title": title})
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def patch(http: httpx.Client, sid: int, **body: Any) -> httpx.Response:
    return http.patch(f"/api/stories/{sid}", json=body)


def test_a_writer_branches_drafts_and_moves_between_them(http):
    sid = new_story(http, "The door opened.")
    assert patch(http, sid, text="The door opened. A wolf came in.").json()["head"] == 2
    other = patch(http, sid, text="The door opened. Nobody.", parent=1).json()
    assert (other["head"], other["text"]) == (3, "The door opened. Nobody.")
    fresh = patch(http, sid, text="Rain all night.", title="Rain", parent=None).json()
    assert (fresh["head"], fresh["title"]) == (4, "Rain")
    tree = http.get(f"/api/stories/{sid}/versions").json()
    assert tree["head"] == 4
    assert [(v["number"], v["parent"]) for v in tree["versions"]] == [
        (1, None),
        (2, 1),
        (3, 1),
        (4, None),
    ]

    shown = http.post(f"/api/stories/{sid}/versions/2/checkout")
    assert shown.status_code == 200
    assert (shown.json()["text"], shown.json()["title"]) == (
        "The door opened. A wolf came in.",
        "Door",
    )
    story = http.get(f"/api/stories/{sid}").json()
    assert (story["head"], story["versions"]) == (2, 4)  # moving created nothing
    # the next save goes on from the version shown
    assert patch(http, sid, text="The door opened. A wolf came in. It sat.").json()["head"] == 5
    assert http.get(f"/api/stories/{sid}/versions").json()["versions"][-1]["parent"] == 2

    first = http.get(f"/api/stories/{sid}/export", params={"format": "txt", "version": 1})
    assert first.text == "Door\n\nThe door opened.\n"
    head = http.get(f"/api/stories/{sid}/export", params={"format": "md"})
    assert head.text.startswith("# Door") and "It sat." in head.text


def test_a_version_that_does_not_exist_is_a_clear_404_and_changes_nothing(http):
    sid = new_story(http, "Kept.", "Kept")
    for response in (
        http.post(f"/api/stories/{sid}/versions/9/checkout"),
        patch(http, sid, text="Lost?", parent=9),
        http.get(f"/api/stories/{sid}/export", params={"version": 9}),
        http.post(f"/api/stories/{sid}/versions/{10**30}/checkout"),
    ):
        assert response.status_code in (404, 422), response.text
        assert "version" in response.json()["error"]["message"]
    assert patch(http, sid, text="x", parent=0).status_code == 422
    story = http.get(f"/api/stories/{sid}").json()
    assert (story["text"], story["versions"], story["head"]) == ("Kept.", 1, 1)


LORE = {
    "entries": [
        {"keys": ["Mira"], "text": "Mira is a cartographer,\r\nthirty years old.", "name": "Mira"},
        {"keys": ["drag(on|ons)"], "text": "Dragons hoard maps.", "regex": True},
    ],
    "budget": 128,
}


def test_each_story_keeps_a_lorebook_that_is_no_version_of_its_text(http):
    sid = new_story(http, "Mira met the dragon.", "Mira")
    empty = http.get(f"/api/stories/{sid}/lorebook").json()
    assert empty["entries"] == [] and empty["budget"] == 256  # Lorebook's own defaults
    saved = http.put(f"/api/stories/{sid}/lorebook", json=LORE)
    assert saved.status_code == 200, saved.text
    lore = http.get(f"/api/stories/{sid}/lorebook").json()
    assert lore == saved.json()
    assert lore["budget"] == 128 and [e["keys"] for e in lore["entries"]] == [
        ["Mira"],
        ["drag(on|ons)"],
    ]
    assert lore["entries"][0]["text"] == "Mira is a cartographer,\nthirty years old."
    story = http.get(f"/api/stories/{sid}").json()
    assert story["versions"] == 1 and story["lorebook"] == lore

    bad = http.put(
        f"/api/stories/{sid}/lorebook",
        json={"entries": [{"keys": ["(unclosed"], "text": "x", "regex": True}]},
    )
    assert bad.status_code == 422
    assert "not a regular expression" in bad.json()["error"]["message"]
    unknown = http.put(f"/api/stories/{sid}/lorebook", json={"entries": [], "budjet": 5})
    assert unknown.status_code == 400 and "budjet" in unknown.json()["error"]["message"]
    assert http.get(f"/api/stories/{sid}/lorebook").json() == lore  # unchanged by refusals
    other = new_story(http, "Another tale.", "Other")
    assert http.get(f"/api/stories/{other}/lorebook").json()["entries"] == []


def test_a_novel_length_manuscript_saves_and_a_longer_one_is_refused_whole(http):
    novel = ("The lighthouse keeper wrote another page of the log. " * 30_000)[:1_500_000]
    sid = new_story(http, novel, "The Log")
    assert http.get(f"/api/stories/{sid}").json()["text"] == novel

    too_long = "x" * 2_000_001
    refused = patch(http, sid, text=too_long)
    assert refused.status_code == 413
    message = refused.json()["error"]["message"]
    assert "2,000,001" in message and "at most 2,000,000" in message
    assert "--serve.max-story-chars" in message
    story = http.get(f"/api/stories/{sid}").json()
    assert (story["text"], story["versions"]) == (novel, 1)  # nothing half-saved

    before = len(http.get("/api/stories", params={"limit": 500}).json()["stories"])
    assert http.post("/api/stories", json={"text": too_long}).status_code == 413
    assert len(http.get("/api/stories", params={"limit": 500}).json()["stories"]) == before
