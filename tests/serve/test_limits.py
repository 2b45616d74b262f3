"""Rate limits (per account, IP address and user name; shared through Redis) and the
request body size limit (413 for a declared or a chunked body over it)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from taleforge.serve.limits import Limiter, RateLimited


def test_generation_is_limited_per_ip_address_and_per_account():
    limiter = Limiter({"generate": "2/minute"})
    limiter.hit("generate", "10.0.0.1", None)
    limiter.hit("generate", "10.0.0.1", None)
    with pytest.raises(RateLimited, match="2 per 1 minute per IP address") as refused:
        limiter.hit("generate", "10.0.0.1", None)
    assert 1 <= refused.value.retry_after <= 60
    limiter.hit("generate", "10.0.0.2", None)  # another address has its own count
    # An account is limited wherever it comes from.
    limiter.hit("generate", "10.0.0.3", "7")
    limiter.hit("generate", "10.0.0.4", "7")
    with pytest.raises(RateLimited, match="per account"):
        limiter.hit("generate", "10.0.0.5", "7")


def test_log_in_attempts_are_limited_per_user_name_and_per_address():
    limiter = Limiter({"login": "3/minute"})
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        limiter.hit("login", address, "Ada")
    with pytest.raises(RateLimited, match="log-in attempts.*per user name"):
        limiter.hit("login", "10.0.0.4", "ada")  # the same name, however it is capitalized
    for name in ("bob", "carol", "dave"):
        limiter.hit("login", "10.0.0.9", name)
    with pytest.raises(RateLimited, match="per IP address"):
        limiter.hit("login", "10.0.0.9", "erin")


def test_a_refused_request_is_not_counted():
    limiter = Limiter({"generate": "1/minute"})
    limiter.hit("generate", "10.0.0.1", "7")
    with pytest.raises(RateLimited):
        limiter.hit("generate", "10.0.0.2", "7")  # refused for the account ...
    limiter.hit("generate", "10.0.0.2", "8")  # ... so the address was not charged for it


def test_servers_sharing_redis_share_the_counts(redis_url):
    one = Limiter({"generate": "2/minute"}, storage_uri=redis_url)
    two = Limiter({"generate": "2/minute"}, storage_uri=redis_url)
    one.hit("generate", "10.0.0.1", None)
    two.hit("generate", "10.0.0.1", None)
    with pytest.raises(RateLimited):
        one.hit("generate", "10.0.0.1", None)


def test_an_unreachable_redis_still_limits_in_memory(caplog):
    limiter = Limiter({"generate": "1/minute"}, storage_uri="redis://127.0.0.1:1/0")
    limiter.hit("generate", "10.0.0.1", None)
    with pytest.raises(RateLimited):
        limiter.hit("generate", "10.0.0.1", None)
    assert "counting in memory" in caplog.text


# -- against a live server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_server(tiny_model_dir, start_server) -> Iterator[str]:
    overrides = {
        "model.spec": str(tiny_model_dir),
        "serve.rate_limit_generate": "2/minute",
        "serve.max_body_bytes": 10_000,
    }
    with start_server(overrides) as url:
        yield url


def test_the_api_answers_429_with_retry_after_past_the_limit(strict_server, metric):
    body = {"prompt": "The dragon slept", "max_new_tokens": 8}
    assert httpx.post(f"{strict_server}/api/generate", json=body, timeout=60).status_code == 200
    completion = {"prompt": "The dragon slept", "max_tokens": 8}  # OpenAI's name on /v1
    answer = httpx.post(f"{strict_server}/v1/completions", json=completion, timeout=60)
    assert answer.status_code == 200
    refused = httpx.post(f"{strict_server}/api/generate", json=body, timeout=60)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and "try again in" in error["message"]
    assert metric(strict_server, "taleforge_rate_limited_requests_total", scope="generate") == 1
    # Other routes are not generation: still answered.
    assert httpx.get(f"{strict_server}/api/models", timeout=10).status_code == 200


def test_the_studio_shows_the_rate_limit(tiny_model_dir, start_server, studio):
    from gradio_client.exceptions import AppError

    overrides = {"model.spec": str(tiny_model_dir), "serve.rate_limit_generate": "1/minute"}
    fields = {"Prompt": "A cat", "Model": str(tiny_model_dir), "Tokens per step": 16}
    with start_server(overrides) as url:
        studio(url, "/write", **fields)
        with pytest.raises(AppError, match="too many generations.*try again in"):
            studio(url, "/write", **fields)


def test_a_body_over_the_limit_gets_413(strict_server):
    response = httpx.post(
        f"{strict_server}/api/generate", json={"prompt": "x" * 20_000}, timeout=30
    )
    assert response.status_code == 413
    message = response.json()["error"]["message"]
    assert "10,000 bytes" in message and "--serve.max-body-bytes" in message


def test_a_chunked_body_without_a_length_is_cut_at_the_limit(strict_server):
    sent = []

    def pieces() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(100):
            sent.append(1)
            yield b"x" * 1_000
        yield b'"}'

    response = httpx.post(
        f"{strict_server}/api/generate",
        content=pieces(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert "10,000 bytes" in response.json()["error"]["message"]
