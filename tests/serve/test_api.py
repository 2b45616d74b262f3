"""The HTTP API against a live server on 127.0.0.1: JSON, SSE, the OpenAI client, errors."""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import logging
import time
from pathlib import Path

import httpx
import openai
import pytest


def sse_events(response: httpx.Response) -> list[dict]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line[6:]))
    return events


def test_generate_json_is_reproducible_by_seed(tiny_server):
    body = {"prompt": "The dragon slept", "seed": 11, "max_new_tokens": 20, "genre": "fantasy"}
    first = httpx.post(f"{tiny_server}/api/generate", json=body, timeout=60)
    assert first.status_code == 200, first.text
    data = first.json()
    story = data["stories"][0]
    assert data["text"] and story["seed"] == 11 and story["genre"] == "fantasy"
    assert story["params"]["max_new_tokens"] == 20 and story["generated_tokens"] <= 20
    again = httpx.post(f"{tiny_server}/api/generate", json=body, timeout=60).json()
    assert again["text"] == data["text"]
    other = httpx.post(f"{tiny_server}/api/generate", json={**body, "seed": 12}, timeout=60)
    assert other.json()["text"] != data["text"]


def test_generate_streams_server_sent_events(tiny_server):
    body = {"prompt": "A robot counted the stars", "seed": 3, "max_new_tokens": 30, "stream": True}
    with httpx.stream("POST", f"{tiny_server}/api/generate", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    texts = [e["text"] for e in events if "text" in e]
    done = events[-1]
    assert len(texts) >= 3, "the story arrives in pieces"
    assert done["done"] is True and done["story"]["seed"] == 3
    # A random tiny model emits invalid byte sequences: streamed as U+FFFD, dropped at the end.
    streamed = "".join(texts).replace("\ufffd", "").strip()
    assert streamed[:10] == done["story"]["generated_text"].strip()[:10]


def test_concurrent_users_get_their_own_stories(tiny_server):
    requests = [
        {"prompt": f"Story number {i} about a harbour", "seed": 100 + i, "max_new_tokens": 24}
        for i in range(4)
    ]

    def ask(body: dict) -> str:
        response = httpx.post(f"{tiny_server}/api/generate", json=body, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()["stories"][0]["prompt"] + "|" + response.json()["text"]

    alone = [ask(body) for body in requests]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(ask, requests))
    assert together == alone


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"seed": 1}, 422, ["'prompt'", "required"]),
        ({"prompt": "x" * 1_048_576}, 413, ["1,048,576 characters", "at most"]),
        ({"prompt": "a story", "temperature": -1}, 422, ["'temperature'", "greater than"]),
        ({"prompt": "a story", "model": "no-such-model"}, 404, ["no-such-model", "use one of"]),
        ({"prompt": "a story", "max_new_tokens": 5000}, 422, ["over this server's limit of"]),
        ({"prompt": "a story", "max_new_tokens": 10**6}, 422, ["'max_new_tokens'", "16384"]),
        ({"prompt": "a story", "mode": "novel"}, 422, ["'mode'"]),
        ({"prompt": "   "}, 400, ["prompt is empty"]),
    ],
    ids=[
        "missing-prompt",
        "1mb-prompt",
        "negative-temperature",
        "unknown-model",
        "length-over-the-server-limit",
        "length-over-any-limit",
        "unknown-mode",
        "blank-prompt",
    ],
)
def test_bad_requests_get_4xx_that_say_what_is_wrong(tiny_server, payload, status, words):
    response = httpx.post(f"{tiny_server}/api/generate", json=payload, timeout=60)
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    for word in words:
        assert word in message


def test_invalid_json_is_a_400(tiny_server):
    response = httpx.post(
        f"{tiny_server}/api/generate",
        content=b'{"prompt": "unterminated',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/api/generate", b'{"prompt": null}', ["'prompt' should be a valid string"]),
        ("/v1/completions", b'{"prompt": null}', ["'prompt'", "string"]),
        ("/v1/completions", b'{"prompt": "a", "temperature": NaN}', ["'temperature'", "finite"]),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": 5}]}',
            ["'messages[0].content' should be a valid string"],
        ),
    ],
)
def test_errors_are_in_openais_shape_and_name_fields_as_sent(tiny_server, path, body, words):
    response = httpx.post(
        f"{tiny_server}{path}", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    # never pydantic's internal names ('prompt.function-after[clean_text(), str]') or words
    for internal in ("function-after", "clean_text", "list[", "Input should"):
        assert internal not in error["message"]
    for word in words:
        assert word in error["message"]


def test_models_health_and_openapi(tiny_server, tiny_model_dir):
    models = httpx.get(f"{tiny_server}/api/models").json()
    ids = [m["id"] for m in models["models"]]
    assert models["default"] == str(tiny_model_dir) == ids[0]
    assert "smollm2-135m" in ids and "taleforge-stories" in ids
    assert [m["id"] for m in httpx.get(f"{tiny_server}/v1/models").json()["data"]] == ids
    health = httpx.get(f"{tiny_server}/health").json()
    assert health["status"] == "ok"
    schema = httpx.get(f"{tiny_server}/openapi.json").json()
    for path in ("/api/generate", "/api/models", "/v1/completions", "/v1/chat/completions"):
        assert path in schema["paths"]
    assert "prompt" in schema["components"]["schemas"]["GenerateRequest"]["properties"]


def test_the_ui_is_served_at_the_root(tiny_server):
    page = httpx.get(f"{tiny_server}/", timeout=30)
    assert page.status_code == 200 and "taleforge" in page.text


# -- the OpenAI client, unchanged -----------------------------------------------------------


@pytest.fixture(scope="module")
def client(tiny_server):
    return openai.OpenAI(base_url=f"{tiny_server}/v1", api_key="unused", max_retries=0)


def test_openai_completions(client, tiny_model_dir):
    done = client.completions.create(
        model=str(tiny_model_dir), prompt="Once upon a time", max_tokens=12, seed=5
    )
    assert done.choices[0].text and done.choices[0].finish_reason in ("stop", "length")
    assert 0 < done.usage.completion_tokens <= 12
    streamed = client.completions.create(
        model=str(tiny_model_dir), prompt="Once upon a time", max_tokens=12, seed=5, stream=True
    )
    pieces = [c.choices[0].text for c in streamed]
    assert len([p for p in pieces if p]) >= 2

    def letters(text: str) -> str:  # the tiny model writes bytes that may not decode
        return "".join(c for c in text if c.isalnum())

    assert letters("".join(pieces))[:6] == letters(done.choices[0].text)[:6]


@pytest.mark.integration
def test_openai_chat_with_and_without_streaming(client):
    messages = [
        {"role": "system", "content": "You are a poet."},
        {"role": "user", "content": "Write one line about the sea."},
    ]
    done = client.chat.completions.create(
        model="smollm2-135m", messages=messages, max_tokens=24, seed=1
    )
    reply = done.choices[0].message
    assert reply.role == "assistant" and reply.content.strip()
    stream = client.chat.completions.create(
        model="smollm2-135m", messages=messages, max_tokens=24, seed=1, stream=True
    )
    deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([d for d in deltas if d]) >= 3
    assert "".join(deltas).strip()[:10] == reply.content.strip()[:10]
    follow_up = client.chat.completions.create(
        model="smollm2-135m",
        messages=[
            *messages,
            {"role": "assistant", "content": reply.content},
            {"role": "user", "content": "Make it darker."},
        ],
        max_tokens=24,
        seed=1,
    )
    assert follow_up.choices[0].message.content.strip()


def test_openai_errors_reach_the_client(client):
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.completions.create(model="nope", prompt="x", max_tokens=5)
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        client.completions.create(model=None, prompt="x", max_tokens=5, temperature=-1)


# -- cancellation and limits -----------------------------------------------------------------


@pytest.mark.integration
def test_a_client_that_disconnects_stops_its_generation(tiny_server, idle):
    body = {
        "prompt": "A long journey",
        "model": "smollm2-135m",
        "max_new_tokens": 600,
        "min_new_tokens": 600,
        "stream": True,
    }
    with httpx.stream("POST", f"{tiny_server}/api/generate", json=body, timeout=120) as response:
        lines = response.iter_lines()
        while not next(lines).startswith("data: "):
            pass
        assert httpx.get(f"{tiny_server}/health").json()["active_requests"] == 1
    # 600 tokens would take ~25 s; the disconnect ends it at the next token.
    assert idle(tiny_server, within=1.0) < 1.0


@pytest.mark.integration
def test_a_full_queue_answers_busy(tiny_model_dir, start_server, idle):
    with start_server({"model.spec": str(tiny_model_dir), "serve.max_waiting": 0}) as url:
        body = {
            "prompt": "A long journey",
            "model": "smollm2-135m",
            "max_new_tokens": 400,
            "min_new_tokens": 400,
            "stream": True,
        }
        with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=120) as first:
            lines = first.iter_lines()
            while not next(lines).startswith("data: "):
                pass
            second = httpx.post(f"{url}/api/generate", json={**body, "stream": False})
            assert second.status_code == 503
            assert "busy" in second.json()["error"]["message"]
            other_model = httpx.post(
                f"{url}/api/generate", json={"prompt": "meanwhile", "max_new_tokens": 5}
            )
            assert other_model.status_code == 200, "another model is not blocked"
        idle(url, within=2.0)
        again = httpx.post(
            f"{url}/api/generate",
            json={**body, "max_new_tokens": 4, "min_new_tokens": 0, "stream": False},
        )
        assert again.status_code == 200


# -- access ---------------------------------------------------------------------------------


def test_basic_auth(tiny_model_dir, start_server):
    with start_server({"model.spec": str(tiny_model_dir), "serve.auth": "writer:s3cret"}) as url:
        assert httpx.get(f"{url}/health").status_code == 200  # for load balancers
        denied = httpx.get(f"{url}/api/models")
        assert denied.status_code == 401 and "password" in denied.json()["error"]["message"]
        assert httpx.get(f"{url}/", auth=("writer", "wrong")).status_code == 401
        assert httpx.get(f"{url}/api/models", auth=("writer", "s3cret")).status_code == 200


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https(tiny_model_dir, tmp_path, start_server):
    cert, key = _self_signed(tmp_path)
    overrides = {
        "model.spec": str(tiny_model_dir),
        "serve.ssl_certfile": str(cert),
        "serve.ssl_keyfile": str(key),
    }
    with start_server(overrides) as url:
        assert url.startswith("https://")
        response = httpx.post(
            f"{url}/api/generate", json={"prompt": "a secret", "max_new_tokens": 5}, verify=False
        )
        assert response.status_code == 200
        page = httpx.get(f"{url}/account", verify=False)  # sets the session cookie (CSRF)
        assert "; secure" in page.headers["set-cookie"].lower()
        assert page.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https://", "http://") + "/health", timeout=5)


def test_share_without_internet_says_so_and_keeps_serving(tiny_model_dir, caplog, start_server):
    caplog.set_level(logging.ERROR, logger="taleforge")
    with start_server({"model.spec": str(tiny_model_dir), "serve.share": True}) as url:
        for _ in range(300):
            if any("share link" in r.getMessage() for r in caplog.records):
                break
            time.sleep(0.1)
        messages = " ".join(r.getMessage() for r in caplog.records)
        assert "no public share link" in messages and "ngrok" in messages
        assert httpx.get(f"{url}/health").status_code == 200
