"""The lorebook over HTTP: /api/generate puts triggered entries in the model's context,
/api/context shows that context part by part, a bad lorebook is a 4xx naming the field.

The server runs in this process, so what the model receives is read by recording every
``DecodeStep.context`` the transformers backend decodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from taleforge.errors import ConfigError
from taleforge.generate.backends.hf import TransformersBackend
from taleforge.generate.remote import RemoteStoryGenerator
from taleforge.models import load_model

PROMPT = "The dragon slept beneath the castle"
WIZARD = {"keys": ["dragon"], "text": "The wizard read his spells.", "name": "wizard"}
ROBOT = {"keys": ["robot"], "text": "A robot counted the stars.", "name": "robot"}
CASTLE = {"keys": ["castle"], "text": "The castle is old.", "name": "castle"}


@pytest.fixture(scope="module")
def server(tiny_server: str) -> str:
    """The module's server: the tiny GPT-2 on transformers (whose decode the tests record)."""
    return tiny_server


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return load_model(str(tiny_model_dir)).tokenizer


@pytest.fixture
def received(monkeypatch, tokenizer) -> list[str]:
    """The text of every context the server's model decodes during the test."""
    contexts: list[str] = []
    decode = TransformersBackend.decode

    def recording(self, slot, step, rng, on_token, should_stop):
        contexts.append(tokenizer.decode(step.context))
        return decode(self, slot, step, rng, on_token, should_stop)

    monkeypatch.setattr(TransformersBackend, "decode", recording)
    return contexts


def post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=120)


def generate(url: str, **body: Any) -> dict[str, Any]:
    answer = post(url, "/api/generate", {"max_new_tokens": 3, "genre": "none", **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_triggered_entry_reaches_the_model_and_an_untriggered_one_does_not(server, received):
    generate(server, prompt=PROMPT, lorebook={"entries": [WIZARD, ROBOT]})
    assert WIZARD["text"] in received[0] and ROBOT["text"] not in received[0]
    received.clear()
    generate(server, prompt="The robot slept", lorebook={"entries": [WIZARD, ROBOT]})
    assert ROBOT["text"] in received[0] and WIZARD["text"] not in received[0]


def test_a_seeded_request_with_another_lorebook_is_not_answered_from_the_cache(server, received):
    body = {"prompt": PROMPT, "seed": 21, "lorebook": {"entries": [WIZARD]}}
    generate(server, **body)
    generate(server, **body)
    assert len(received) == 1, "the same seeded request is answered from the cache"
    generate(server, **{**body, "lorebook": {"entries": [CASTLE]}})
    assert len(received) == 2 and CASTLE["text"] in received[1]
    assert WIZARD["text"] not in received[1]


def test_context_shows_the_lore_and_is_what_the_model_receives(server, received):
    lorebook = {"entries": [WIZARD, ROBOT]}
    body = {"prompt": PROMPT, "genre": "none", "max_new_tokens": 4, "lorebook": lorebook}
    answer = post(server, "/api/context", body)
    assert answer.status_code == 200, answer.text
    preview = answer.json()
    assert [(p["kind"], p["name"]) for p in preview["parts"]] == [("lore", "wizard"), ("story", "")]
    assert WIZARD["text"] in preview["parts"][0]["text"]
    assert preview["total"] == sum(part["tokens"] for part in preview["parts"])
    assert (preview["window"], preview["reserved"], preview["dropped_chars"]) == (64, 4, 0)
    assert received == [], "a preview decodes nothing"
    generate(server, **body, seed=1)
    assert "".join(part["text"] for part in preview["parts"]) == received[0]


def test_context_respects_the_lorebook_budget(server, tokenizer):
    budget = len(tokenizer(WIZARD["text"], add_special_tokens=False)["input_ids"])
    lorebook = {"entries": [WIZARD, CASTLE], "budget": budget}
    preview = post(server, "/api/context", {"prompt": PROMPT, "lorebook": lorebook}).json()
    lore = [part for part in preview["parts"] if part["kind"] == "lore"]
    assert [part["name"] for part in lore] == ["wizard"]
    assert preview["skipped_lore"] == ["castle"] and preview["lore_budget"] == budget


def test_context_of_a_long_manuscript_says_what_falls_outside_the_window(server):
    manuscript = "They met at the harbour at dawn, and the wind stole his hat. " * 20
    body = {"prompt": manuscript, "mode": "continue", "max_new_tokens": 30}
    preview = post(server, "/api/context", body).json()
    assert preview["total"] + preview["reserved"] <= preview["window"]
    assert manuscript[preview["dropped_chars"] :] == preview["parts"][-1]["text"]


@pytest.mark.parametrize("path", ["/api/generate", "/api/context"])
@pytest.mark.parametrize(
    ("lorebook", "status", "words"),
    [
        (
            {"entries": [{"keys": ["(unclosed"], "text": "x", "regex": True}]},
            422,
            ["'lorebook.entries[0]'", "not a regular expression"],
        ),
        ({"budget": 100_000}, 422, ["'lorebook.budget'", "less than or equal to 8192"]),
        ({"budget": -1}, 422, ["'lorebook.budget'", "greater than or equal to 0"]),
        ({"entries": [{"keys": [], "text": "x"}]}, 422, ["'lorebook.entries[0].keys'"]),
        ({"entries": [{"keys": ["a"], "txt": "x"}]}, 400, ["'lorebook.entries[0].txt'"]),
    ],
)
def test_a_bad_lorebook_is_a_4xx_naming_the_field(server, path, lorebook, status, words):
    answer = post(server, path, {"prompt": PROMPT, "lorebook": lorebook})
    assert answer.status_code == status, answer.text
    message = answer.json()["error"]["message"]
    for word in words:
        assert word in message


def test_a_lorebook_that_leaves_no_room_is_a_400_naming_it(server):
    entry = {"keys": ["dragon"], "text": "The dragon slept. " * 30}
    lorebook = {"entries": [entry], "budget": 2_000}
    answer = post(server, "/api/context", {"prompt": PROMPT, "lorebook": lorebook})
    assert answer.status_code == 400 and "lorebook" in answer.json()["error"]["message"]


# -- through the remote backend --------------------------------------------------------------


def test_a_remote_generator_sends_the_lore_and_previews_only_with_a_tokenizer(
    server, tiny_model_dir, received
):
    lorebook = {"entries": [WIZARD]}
    remote = RemoteStoryGenerator(f"{server}/v1", model=str(tiny_model_dir))
    try:
        remote.generate(PROMPT, genre="none", max_new_tokens=2, lorebook=lorebook)
        assert WIZARD["text"] in received[0]
        preview = remote.context_preview(PROMPT, genre="none", lorebook=lorebook)
        assert [part.name for part in preview.parts if part.kind == "lore"] == ["wizard"]
    finally:
        remote.close()
    blind = RemoteStoryGenerator(f"{server}/v1", model=str(tiny_model_dir), spec="no/such-model")
    try:
        assert blind.model.tokenizer is None
        with pytest.raises(ConfigError, match="tokenizer"):
            blind.context_preview(PROMPT, lorebook=lorebook)
    finally:
        blind.close()
