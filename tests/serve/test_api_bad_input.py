"""Garbage never gets a 500: every API route, sent a corpus of bad bodies, parameters and
headers, answers 4xx with a JSON error message that says what is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

MAX_BODY = 20_000
JSON = "application/json"
GENERATION_ROUTES = ["/api/generate", "/v1/completions", "/v1/chat/completions"]


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


#: (name, body bytes, content type): what a broken or hostile client sends.
CORPUS: list[tuple[str, bytes, str | None]] = [
    ("empty body", b"", JSON),
    ("whitespace", b"  \n ", JSON),
    ("null", b"null", JSON),
    ("a list", b"[]", JSON),
    ("a string", b'"prompt"', JSON),
    ("a number", b"42", JSON),
    ("truncated JSON", b'{"prompt": "The drag', JSON),
    ("trailing junk", b'{"prompt": "a"} {"x"', JSON),
    ("single quotes", b"{'prompt': 'a'}", JSON),
    ("invalid UTF-8", b'{"prompt": "\xff\xfe\xfa"}', JSON),
    ("overlong UTF-8", b'{"prompt": "\xc0\xaf"}', JSON),
    ("UTF-8 encoded surrogate", b'{"prompt": "\xed\xa0\x80"}', JSON),
    ("truncated UTF-8", b'{"prompt": "\xe2\x82', JSON),
    ("NUL bytes", b'{"prompt": "a\x00b"}', JSON),
    (
        "escaped lone surrogates",
        b'{"prompt": "\\ud800", "model": "\\udfff", "title": "\\ud83d"}',
        JSON,
    ),
    ("escaped NUL", b'{"prompt": "\\u0000", "content": "\\u0000", "title": "\\u0000"}', JSON),
    ("UTF-16 JSON", '{"prompt": "a", "max_new_tokens": 2}'.encode("utf-16"), JSON),
    ("prompt is a number", b'{"prompt": 123, "messages": 1, "title": 5}', JSON),
    ("prompt is null", b'{"prompt": null, "messages": null}', JSON),
    ("prompt is an object", b'{"prompt": {"$gt": ""}, "messages": {"role": "user"}}', JSON),
    ("prompt is a mixed list", b'{"prompt": ["a", {"b": 1}, null], "messages": [1, "x"]}', JSON),
    ("message without content", b'{"messages": [{"role": "user"}], "prompt": "a"}', JSON),
    ("unknown role", b'{"messages": [{"role": "root", "content": "a"}], "prompt": "a"}', JSON),
    ("stop is a number", b'{"prompt": "a", "stop": 5, "messages": [], "score": "five"}', JSON),
    ("booleans as numbers", b'{"prompt": "a", "seed": true, "temperature": false}', JSON),
    (
        "strings as numbers",
        b'{"prompt": "a", "seed": "7", "max_tokens": "many", "score": "x"}',
        JSON,
    ),
    ("1e309", b'{"prompt": "a", "temperature": 1e309, "top_p": 1e309, "score": 1e309}', JSON),
    ("-1e309", b'{"prompt": "a", "temperature": -1e309, "seed": -1e309, "score": -1e309}', JSON),
    ("NaN", b'{"prompt": "a", "temperature": NaN, "top_p": NaN, "score": NaN}', JSON),
    ("Infinity", b'{"prompt": "a", "max_tokens": Infinity, "seed": Infinity}', JSON),
    (
        "10**100",
        b'{"prompt": "a", "seed": 1' + b"0" * 100 + b', "score": 1' + b"0" * 100 + b"}",
        JSON,
    ),
    (
        "huge lengths",
        b'{"prompt": "a", "max_new_tokens": 1'
        + b"0" * 100
        + b', "max_tokens": 1'
        + b"0" * 100
        + b', "min_new_tokens": 1'
        + b"0" * 100
        + b', "top_k": 1'
        + b"0" * 60
        + b"}",
        JSON,
    ),
    ("5,000 digits", b'{"prompt": "a", "seed": ' + b"9" * 5_000 + b"}", JSON),
    ("negative numbers", b'{"prompt": "a", "seed": -1, "n": -5, "max_tokens": -1}', JSON),
    ("floats for integers", b'{"prompt": "a", "seed": 1.5, "top_k": 2.5, "score": 4.5}', JSON),
    ("n too large", b'{"prompt": "a", "n": 1' + b"0" * 50 + b"}", JSON),
    ("nested 100,000 deep", ('{"prompt": ' + _nested(100_000) + "}").encode(), JSON),
    ("nested 9,000 deep", ('{"prompt": ' + _nested(9_000) + "}").encode(), JSON),
    (
        "nested 500 deep",
        ('{"prompt": ' + _nested(500) + ', "messages": ' + _nested(500) + "}").encode(),
        JSON,
    ),
    ("many keys", json.dumps({f"k{i}": i for i in range(1_000)}).encode(), JSON),
    ("too many stops", json.dumps({"prompt": "a", "stop": ["x"] * 1_000}).encode(), JSON),
    ("empty stop", b'{"prompt": "a", "stop": [""], "max_new_tokens": 2}', JSON),
    ("a long model name", json.dumps({"prompt": "a", "model": "m" * 10_000}).encode(), JSON),
    ("a path as model", b'{"prompt": "a", "model": "/etc/passwd"}', JSON),
    ("duplicate keys", b'{"prompt": "a", "prompt": 5}', JSON),
    ("oversized", json.dumps({"prompt": "x" * (MAX_BODY * 2)}).encode(), JSON),
    (
        "the right shape, hostile text",
        json.dumps(
            {
                "prompt": "\x00\ud800 The dragon\x1b[2J slept\r\n" * 5,
                "title": "\x00\ud800<script>alert(1)</script>",
                "text": "\x00\udfff\x1b[2J" * 50,
                "genre": "\x00",
                "mode": "story",
                "name": "\x00\ud800",
                "comment": "\ud800\x00",
                "score": 3,
                "messages": [{"role": "user", "content": "\x00\ud800 Hello\r\n"}],
                "max_new_tokens": 4,
                "max_tokens": 4,
            }
        ).encode(),
        JSON,
    ),
    ("text/plain", b'{"prompt": "a", "max_new_tokens": 2}', "text/plain"),
    ("form encoded", b"prompt=a&max_new_tokens=2", "application/x-www-form-urlencoded"),
    (
        "multipart",
        b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--x--",
        "multipart/form-data; boundary=x",
    ),
    ("no content type", b'{"prompt": "a", "max_new_tokens": 2}', None),
    ("a broken content type", b'{"prompt": "a"}', "application/json; charset=\x7f"),
    (
        "latin-1 declared",
        '{"prompt": "café"}'.encode("latin-1"),
        "application/json; charset=latin-1",
    ),
]

#: Values for path and query parameters.
JUNK_VALUES = ["0", "-1", "1e309", "9" * 40, "NaN", "abc", "%00", "%FF%FE", "..%2F..%2Fetc"]


def _overrides(model: str) -> dict[str, Any]:
    return {
        "model.spec": model,
        "serve.max_body_bytes": MAX_BODY,
        "serve.rate_limit_generate": "100000/minute",
        "serve.rate_limit_login": "100000/minute",
        "serve.max_new_tokens": 24,  # a junk body that happens to be valid writes little
    }


@pytest.fixture(scope="module")
def server(tiny_model_dir, start_server) -> Iterator[str]:
    with start_server(_overrides(str(tiny_model_dir))) as url:
        yield url


@pytest.fixture
def server_on_each_database(tiny_model_dir, database_url, start_server) -> Iterator[str]:
    """A server on SQLite, then on PostgreSQL (their limits differ: NUL in text, say)."""
    overrides = {**_overrides(str(tiny_model_dir)), "serve.database_url": database_url}
    with start_server(overrides) as url:
        yield url


def _routes(url: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every route in the live app's OpenAPI schema."""
    schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def _send(
    client: httpx.Client,
    method: str,
    target: str,
    body: bytes,
    content_type: str | None,
    what: str,
    failures: list[str],
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    for attempt in (1, 2):
        try:
            response = client.request(method, target, content=body, headers=headers)
            break
        except httpx.TransportError as exc:
            # After a 500 the server drops the kept-alive connection: retry on a new one.
            if attempt == 2:  # no answer at all is as bad as a 500
                failures.append(f"{what}: no answer ({exc!r})")
                return
    _check(response, what, failures)


def _check(response: httpx.Response, what: str, failures: list[str]) -> None:
    status = response.status_code
    if status >= 500:
        failures.append(f"{what}: {status} {response.text[:200]}")
        return
    if status < 400 or response.headers.get("content-type", "").startswith("text/event-stream"):
        return
    try:
        data = response.json()
    except ValueError:
        failures.append(f"{what}: {status} is not JSON: {response.text[:120]!r}")
        return
    message = data.get("error", {}).get("message") if isinstance(data, dict) else None
    if not isinstance(message, str) or not message:
        message = data.get("detail") if isinstance(data, dict) else None
    if not message:
        failures.append(f"{what}: {status} without an error message: {response.text[:120]}")


def _send_corpus(client: httpx.Client, method: str, path: str, failures: list[str]) -> None:
    for name, body, content_type in CORPUS:
        _send(client, method, path, body, content_type, f"{method} {path} [{name}]", failures)


def test_every_api_route_survives_the_corpus(server_on_each_database):
    server = server_on_each_database
    schema = httpx.get(f"{server}/openapi.json", timeout=30).json()
    routes = _routes(server)
    paths = {path for _, path, _ in routes}
    assert set(GENERATION_ROUTES) <= paths and "/metrics" in paths
    failures: list[str] = []
    with httpx.Client(base_url=server, timeout=120) as client:
        for path in GENERATION_ROUTES:
            _send_corpus(client, "POST", path, failures)
            # The same with a chunked body (no Content-Length): the limit still holds.
            response = client.post(
                path, content=iter([b'{"prompt": "', b"x" * MAX_BODY * 2, b'"}']), headers={}
            )
            assert response.status_code == 413, response.text
        for method, path, operation in routes:
            _send_junk_parameters(client, method, path, operation, failures)
            if "requestBody" in operation and path not in GENERATION_ROUTES:
                concrete = path
                for parameter in operation.get("parameters", []):
                    if parameter["in"] == "path":
                        concrete = concrete.replace("{" + parameter["name"] + "}", "1")
                _send_corpus(client, method, concrete, failures)
                for text in (HOSTILE_TEXT, "\ud800 lone surrogates \udfff"):
                    body = _shaped_body(schema, operation, text)
                    what = f"{method} {concrete} [valid shape, text {text[:12]!r}]"
                    _send(client, method, concrete, body, JSON, what, failures)
        # The log-in and sign-up forms answer browsers (HTML), but never with a 500 either.
        for path in ("/login", "/signup"):
            for name, body, content_type in CORPUS:
                headers = {} if content_type is None else {"content-type": content_type}
                response = client.post(path, content=body, headers=headers)
                if response.status_code >= 500:
                    failures.append(f"POST {path} [{name}]: {response.status_code}")
    assert not failures, "\n".join(failures)


#: Text a valid body may carry: NUL (PostgreSQL refuses it in text), controls, markup, bidi.
HOSTILE_TEXT = "\x00\x1b[2J<script>alert(1)</script>\u202e\r\n" * 4


def _shaped_body(schema: dict[str, Any], operation: dict[str, Any], text: str) -> bytes:
    """A body of the shape the route documents, every string field set to ``text``."""
    reference = operation["requestBody"]["content"][JSON]["schema"].get("$ref", "")
    model = schema["components"]["schemas"].get(reference.rsplit("/", 1)[-1], {})
    samples = {"string": text, "integer": 3, "number": 0.5, "boolean": True}
    samples |= {"array": [], "object": {}}
    body: dict[str, Any] = {}
    for name, field in model.get("properties", {}).items():
        options = [field, *field.get("anyOf", [])]
        kind = next((o["type"] for o in options if o.get("type") in samples), "string")
        enum = next((o["enum"] for o in options if o.get("enum")), None)
        longest = min((o["maxLength"] for o in options if "maxLength" in o), default=None)
        body[name] = enum[0] if enum else samples[kind]
        if isinstance(body[name], str) and longest is not None:
            body[name] = body[name][:longest]
    return json.dumps(body).encode()


def _send_junk_parameters(
    client: httpx.Client, method: str, path: str, operation: dict[str, Any], failures: list[str]
) -> None:
    parameters = operation.get("parameters", [])
    names = [p["name"] for p in parameters if p["in"] == "query"]
    for value in JUNK_VALUES:
        concrete = path
        for parameter in parameters:
            if parameter["in"] == "path":
                concrete = concrete.replace("{" + parameter["name"] + "}", value)
        query = "&".join(f"{name}={value}" for name in names)
        target = f"{concrete}?{query}" if query else concrete
        body = b'{"junk": ' + value.encode() + b"}" if "requestBody" in operation else b""
        _send(client, method, target, body, JSON, f"{method} {target}", failures)


def test_an_oversized_body_is_refused_before_it_is_read(server):
    response = httpx.post(
        f"{server}/api/generate",
        content=b"x" * (MAX_BODY + 1),
        headers={"content-type": JSON},
        timeout=30,
    )
    assert response.status_code == 413
    assert "max-body-bytes" in response.json()["error"]["message"]


def test_unreadable_bodies_get_400_that_says_why(server):
    cases = {
        b'{"prompt": "\xff"}': "not valid UTF-8",
        b'{"prompt": "a", "seed": ' + b"9" * 5_000 + b"}": "too many digits",
        ('{"prompt": ' + _nested(9_000) + "}").encode(): "nested too deeply",
        b'{"prompt": "a"': "not valid JSON",
    }
    for body, words in cases.items():
        response = httpx.post(
            f"{server}/api/generate", content=body, headers={"content-type": JSON}, timeout=30
        )
        assert response.status_code == 400, response.text
        assert words in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "1e309"),
        ("temperature", "NaN"),
        ("top_p", "-Infinity"),
        ("seed", "1" + "0" * 100),
        ("seed", "1e309"),
        ("max_new_tokens", "1" + "0" * 100),
        ("min_new_tokens", "1" + "0" * 100),
        ("top_k", "1" + "0" * 100),
    ],
)
def test_huge_numbers_are_422(server, field, value):
    body = f'{{"prompt": "a", "{field}": {value}}}'.encode()
    response = httpx.post(
        f"{server}/api/generate", content=body, headers={"content-type": JSON}, timeout=30
    )
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"] or "limit" in response.text
