"""The OpenAI-compatible API through the libraries people build with: ``litellm`` and
``langchain-openai``, unchanged, against a live server on 127.0.0.1 (the official ``openai``
client: tests/serve/test_api_openai.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

PROMPT = "The dragon slept"
QUESTION = "A robot counted the stars."


@pytest.fixture(scope="module")
def server(tiny_chat_model_dir, start_server) -> Iterator[str]:
    overrides = {
        "model.spec": str(tiny_chat_model_dir),
        "model.backend": "transformers",
        "serve.cache_size": 0,
        "serve.rate_limit_generate": "100000/minute",
    }
    with start_server(overrides) as url:
        yield url


def _direct(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The server's own answer to ``body``, asked without a library."""
    response = httpx.post(f"{url}{path}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def litellm() -> Any:
    # litellm fetches a price list from GitHub when imported, unless told to use its own copy.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return pytest.importorskip("litellm")


def test_litellm_completion_and_streaming(server, tiny_chat_model_dir, litellm):
    model = str(tiny_chat_model_dir)
    ask: dict[str, Any] = {
        "model": f"openai/{model}",
        "api_base": f"{server}/v1",
        "api_key": "unused",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 12,
        "seed": 6,
    }
    expected = _direct(
        server,
        "/v1/chat/completions",
        {"model": model, "messages": ask["messages"], "max_tokens": 12, "seed": 6},
    )["choices"][0]["message"]["content"]
    reply = litellm.completion(**ask)
    assert reply.choices[0].message.content == expected
    assert reply.usage.completion_tokens > 0
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in litellm.completion(**ask, stream=True)
        if chunk.choices
    ]
    assert "".join(pieces) == expected
    # litellm's text completion speaks /v1/completions
    text = litellm.text_completion(
        model=f"text-completion-openai/{model}",
        api_base=f"{server}/v1",
        api_key="unused",
        prompt=PROMPT,
        max_tokens=12,
        seed=6,
    )
    own = _direct(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 12, "seed": 6})
    assert text.choices[0].text == own["choices"][0]["text"]


def test_litellm_shows_the_servers_error(server, tiny_chat_model_dir, litellm):
    with pytest.raises(litellm.BadRequestError, match="'logprobs' is not supported"):
        litellm.completion(
            model=f"openai/{tiny_chat_model_dir}",
            api_base=f"{server}/v1",
            api_key="unused",
            messages=[{"role": "user", "content": QUESTION}],
            logprobs=True,
        )


def test_langchain_chat_model_invoke_and_stream(server, tiny_chat_model_dir):
    langchain_openai = pytest.importorskip("langchain_openai")
    model = str(tiny_chat_model_dir)
    chat = langchain_openai.ChatOpenAI(
        base_url=f"{server}/v1", api_key="unused", model=model, max_tokens=12, seed=6
    )
    expected = _direct(
        server,
        "/v1/chat/completions",
        {
            "model": model,
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 12,
            "seed": 6,
        },
    )["choices"][0]["message"]["content"]
    reply = chat.invoke(QUESTION)
    assert reply.content == expected
    assert reply.usage_metadata["output_tokens"] > 0
    streamed = "".join(str(piece.content) for piece in chat.stream(QUESTION))
    assert streamed == expected
    # n choices, as LangChain asks for them (generate with n)
    from langchain_core.messages import HumanMessage

    several = langchain_openai.ChatOpenAI(
        base_url=f"{server}/v1", api_key="unused", model=model, max_tokens=12, seed=6, n=2
    ).generate([[HumanMessage(QUESTION)]])
    assert several.generations[0][0].text == expected
    assert len(several.generations[0]) == 2


def test_langchain_completion_model_sends_penalties(server, tiny_chat_model_dir):
    """LangChain's completion model sends presence_penalty and frequency_penalty (0) with
    every request: honoured once SamplingParams has them, named in a 400 until then."""
    from taleforge.config import SamplingParams

    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.OpenAI(
        base_url=f"{server}/v1",
        api_key="unused",
        model=str(tiny_chat_model_dir),
        max_tokens=12,
        seed=6,
        max_retries=0,
    )
    if {"presence_penalty", "frequency_penalty"} <= set(SamplingParams.model_fields):
        own = _direct(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 12, "seed": 6})
        assert llm.invoke(PROMPT) == own["choices"][0]["text"]
        return
    import openai

    with pytest.raises(openai.BadRequestError, match="penalty' is not supported"):
        llm.invoke(PROMPT)
