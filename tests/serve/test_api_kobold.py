"""The KoboldAI API over real HTTP on 127.0.0.1: the `koboldapi` client from PyPI, and the
request bodies SillyTavern and KoboldAI Lite send (tests/serve/fixtures/kobold/README.md)."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from koboldapi import KoboldAPI

from taleforge.config import SamplingParams
from taleforge.serve.kobold_request import FIELDS

FIXTURES = Path(__file__).parent / "fixtures" / "kobold"

#: The fields each recorded body gets warnings for while SamplingParams lacks their target
#: (the tiny model's window is 64 tokens, so no recorded rep_pen_range is narrower).
EXPECTED_WARNINGS = {
    "sillytavern-classic-defaults.json": {"top_a"},  # SillyTavern's default top-a is 1
    "sillytavern-classic-tuned.json": {"rep_pen_slope", "sampler_order"},
    "koboldai-lite-story.json": {
        "rep_pen_slope",
        "sampler_order",
        "dry_multiplier",
        "dry_base",
        "dry_allowed_length",
        "dry_penalty_last_n",
        "dry_sequence_breakers",
        "xtc_threshold",
        "xtc_probability",
        "banned_tokens",
    },
    "koboldai-lite-chat.json": {"rep_pen_slope", "sampler_order"},
}


def expected_warnings(name: str) -> set[str]:
    """Those of EXPECTED_WARNINGS whose target SamplingParams still lacks."""
    return {
        field
        for field in EXPECTED_WARNINGS[name]
        if FIELDS[field].target not in SamplingParams.model_fields
    }


def warned(warnings: list[str]) -> set[str]:
    return {re.match(r"\w+", warning).group() for warning in warnings}


def kobold_events(response: httpx.Response) -> list[dict]:
    """The ``data`` of each ``event: message`` of a KoboldCpp stream."""
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            assert name == "message", line
            events.append(json.loads(line[6:]))
    return events


def stream(url: str, body: dict) -> tuple[list[str], dict]:
    """(tokens, final event) of one streamed generation."""
    with httpx.stream("POST", f"{url}/api/extra/generate/stream", json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        events = kobold_events(r)
    *tokens, last = events
    assert last["token"] == "" and last["finish_reason"] in ("length", "stop")
    return [event["token"] for event in tokens], last


@pytest.fixture(scope="module")
def client(tiny_server):
    return KoboldAPI(tiny_server)


# -- the koboldapi client ---------------------------------------------------------------------


def test_koboldapi_connects_like_to_koboldcpp(client, tiny_server, tiny_model_dir):
    version = client.get_version()
    assert version["result"] == "KoboldCpp" and version["version"] >= "1.8"
    assert version["vision"] is False and version["taleforge"]
    assert client.get_model() == f"koboldcpp/{tiny_model_dir}"
    assert client.get_max_context_length() == 64  # the tiny model's window
    assert httpx.get(f"{tiny_server}/api/v1/info/version").json() == {"result": "1.2.5"}
    length = httpx.get(f"{tiny_server}/api/v1/config/max_length").json()["value"]
    assert length == SamplingParams().max_new_tokens
    context = httpx.get(f"{tiny_server}/api/v1/config/max_context_length").json()
    assert context == {"value": 64}


def test_koboldapi_counts_tokens_with_the_models_tokenizer(client, tiny_model_dir):
    from transformers import AutoTokenizer

    text = "The lighthouse keeper counted the waves."
    counted = client.count_tokens(text)
    ids = AutoTokenizer.from_pretrained(str(tiny_model_dir))(text)["input_ids"]
    assert counted == {"count": len(ids), "tokens": ids}
    assert client.tokenize(text) == ids


def test_koboldapi_generates_and_streams_the_same_text(client):
    settings = {"max_length": 24, "sampler_seed": 5, "temperature": 0.9}
    text = client.generate("The storm broke over the harbour", **settings)
    assert isinstance(text, str) and text
    assert client.generate("The storm broke over the harbour", **settings) == text, "seeded"
    assert client.generate_sync("The storm broke over the harbour", **settings) == text


# -- streaming --------------------------------------------------------------------------------


def test_the_stream_is_the_non_streamed_text_in_pieces(tiny_server):
    body = {"prompt": "A robot counted the stars", "max_length": 30, "sampler_seed": 3}
    tokens, last = stream(tiny_server, body)
    assert len(tokens) >= 3, "the text arrives in several events"
    answer = httpx.post(f"{tiny_server}/api/v1/generate", json=body, timeout=120).json()
    (result,) = answer["results"]
    assert "".join(tokens) == result["text"]
    assert last["finish_reason"] == result["finish_reason"] and last["warnings"] == []


def test_abort_with_the_genkey_ends_the_stream_early(client, tiny_server, idle):
    body = {
        "prompt": "A long journey",
        "max_length": 1000,
        "use_default_badwordsids": True,  # no end-of-text: 1000 tokens unless aborted
        "genkey": client.genkey,
    }
    tokens: list[str] = []
    finished: list[dict] = []

    def listen() -> None:
        with httpx.stream("POST", f"{tiny_server}/api/extra/generate/stream", json=body) as r:
            for event in kobold_events(r):
                (tokens if event["finish_reason"] is None else finished).append(event)

    listener = threading.Thread(target=listen)
    listener.start()
    deadline = time.monotonic() + 30
    while not client.check_generation() and time.monotonic() < deadline:
        time.sleep(0.01)
    other = httpx.post(f"{tiny_server}/api/extra/abort", json={"genkey": "KCPP0000"})
    assert other.json() == {"success": False}, "another genkey stops nothing"
    assert client.abort_generation() is True
    listener.join(timeout=10)
    assert not listener.is_alive() and finished[0]["finish_reason"] == "stop"
    assert 0 < len(tokens) < 500, "stopped well before the 1000 tokens it asked for"
    idle(tiny_server, within=2.0)
    assert client.abort_generation() is False, "nothing left to stop"


def test_abort_without_a_genkey_stops_the_callers_generation(tiny_server, idle):
    body = {"prompt": "Far away", "max_length": 1000, "use_default_badwordsids": True}
    answers: list[dict] = []
    request = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{tiny_server}/api/v1/generate", json=body, timeout=120).json()
        )
    )
    request.start()
    deadline = time.monotonic() + 30
    check = f"{tiny_server}/api/extra/generate/check"
    while not httpx.get(check).json()["results"][0]["text"]:  # the poll KoboldAI Lite uses
        assert time.monotonic() < deadline, "the generation did not start"
        time.sleep(0.01)
    # SillyTavern aborts with an empty body when its own client goes away.
    assert httpx.post(f"{tiny_server}/api/extra/abort").json() == {"success": True}
    request.join(timeout=10)
    (result,) = answers[0]["results"]
    assert result["finish_reason"] == "stop" and result["text"]
    idle(tiny_server, within=2.0)


# -- what SillyTavern and KoboldAI Lite send --------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED_WARNINGS))
def test_recorded_bodies_generate_with_the_right_warnings(tiny_server, name):
    body = json.loads((FIXTURES / name).read_text("utf-8"))
    response = httpx.post(f"{tiny_server}/api/v1/generate", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    (result,) = answer["results"]
    assert isinstance(result["text"], str) and result["finish_reason"] in ("length", "stop")
    assert warned(answer["warnings"]) == expected_warnings(name)
    for stop in body.get("stop_sequence", []):
        assert stop not in result["text"], "stop sequences are trimmed"
    _, last = stream(tiny_server, body)
    assert warned(last["warnings"]) == expected_warnings(name)


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "payload", "status", "words"),
    [
        ("/api/v1/generate", {"max_length": 5}, 422, ["'prompt' is required"]),
        ("/api/v1/generate", {"prompt": "x" * 1_048_576}, 413, ["1,048,576 characters"]),
        ("/api/v1/generate", {"prompt": "a", "temperature": -1}, 422, ["'temperature'"]),
        ("/api/v1/generate", {"prompt": "a", "typical": 0}, 422, ["'typical'", "greater than 0"]),
        ("/api/v1/generate", {"prompt": "a", "max_length": 5000}, 422, ["server's limit"]),
        ("/api/v1/generate", {"prompt": "a", "max_length": 10**6}, 422, ["'max_length'"]),
        ("/api/v1/generate", {"prompt": "   "}, 400, ["prompt is empty"]),
        ("/api/v1/generate", ["a list"], 400, ["JSON object"]),
        ("/api/extra/generate/stream", {"prompt": "a", "top_p": 0}, 422, ["'top_p'"]),
        ("/api/extra/tokencount", {"text": "a"}, 422, ["'prompt' must be a string"]),
    ],
)
def test_bad_requests_get_4xx_in_koboldcpps_shape(tiny_server, path, payload, status, words):
    response = httpx.post(f"{tiny_server}{path}", json=payload, timeout=60)
    assert response.status_code == status, response.text
    message = response.json()["detail"]["msg"]
    for word in words:
        assert word in message
    assert "typical_p" not in message and "function-after" not in message


def test_lone_surrogates_anywhere_are_cleaned_not_a_500(tiny_server):
    body = (
        b'{"prompt": "The \\ud800 dragon", "\\udfffspeed": 1, "grammar": "\\ud83droot",'
        b' "stop_sequence": ["\\ud800x"], "max_length": 4}'
    )
    headers = {"content-type": "application/json"}
    answer = httpx.post(f"{tiny_server}/api/v1/generate", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert warned(answer.json()["warnings"]) == {"grammar", "speed"}
    counted = httpx.post(
        f"{tiny_server}/api/extra/tokencount", content=b'{"prompt": "a\\ud800b"}', headers=headers
    )
    assert counted.status_code == 200 and counted.json()["value"] >= 1


def test_invalid_json_is_a_400(tiny_server):
    response = httpx.post(
        f"{tiny_server}/api/v1/generate",
        content=b'{"prompt": "unterminated',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]["msg"]


def test_the_rate_limit_answers_429_with_retry_after(tiny_model_dir, start_server):
    overrides = {"model.spec": str(tiny_model_dir), "serve.rate_limit_generate": "1/minute"}
    with start_server(overrides) as url:
        body = {"prompt": "Once", "max_length": 4}
        assert httpx.post(f"{url}/api/v1/generate", json=body, timeout=60).status_code == 200
        refused = httpx.post(f"{url}/api/extra/generate/stream", json=body, timeout=60)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "too many generations" in refused.json()["detail"]["msg"]


def test_openapi_lists_the_kobold_routes(tiny_server):
    paths = httpx.get(f"{tiny_server}/openapi.json").json()["paths"]
    for path in ("/api/v1/generate", "/api/extra/generate/stream", "/api/extra/abort"):
        assert path in paths
