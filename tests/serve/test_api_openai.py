"""The OpenAI-compatible API with the clients people use (the official ``openai`` client,
``litellm``, ``langchain-openai``), against live servers on 127.0.0.1 on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from needs import need_llama_cpp

PROMPT = "The dragon slept"
MESSAGES = [
    {"role": "system", "content": "You write short tales."},
    {"role": "user", "content": "A robot counted the stars."},
]


def _overrides(model_dir: Path, backend: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "model.spec": str(model_dir),
        "model.backend": backend,
        "serve.cache_size": 0,  # every request is written, none replayed from the cache
        "serve.rate_limit_generate": "100000/minute",
    }
    if backend == "llama.cpp":
        overrides["model.quantization"] = "f32"
    return overrides


@pytest.fixture(scope="module", params=["transformers", "llama.cpp"])
def backend_server(request, tiny_chat_model_dir, start_server) -> Iterator[tuple[str, str]]:
    """(base URL, model id) of a server on the tiny chat GPT-2, on each backend."""
    if request.param == "llama.cpp":
        need_llama_cpp()
    with start_server(_overrides(tiny_chat_model_dir, request.param)) as url:
        yield url, str(tiny_chat_model_dir)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


# -- the answer is the stream, concatenated ------------------------------------------------


def test_a_completion_is_exactly_its_concatenated_stream(backend_server):
    url, model = backend_server
    client, written = _client(url), 0
    for seed in range(4):
        ask: dict[str, Any] = {"model": model, "prompt": PROMPT, "max_tokens": 30, "seed": seed}
        done = client.completions.create(**ask)
        texts, usage, finish = [], None, None
        for chunk in client.completions.create(
            **ask, stream=True, stream_options={"include_usage": True}
        ):
            usage = chunk.usage or usage
            for choice in chunk.choices:
                texts.append(choice.text)
                finish = choice.finish_reason or finish
        assert done.choices[0].text == "".join(texts), f"seed {seed}"
        assert done.choices[0].finish_reason == finish
        assert done.usage == usage
        written += done.usage.completion_tokens
    assert written > 0


def test_a_chat_answer_is_exactly_its_concatenated_stream(backend_server):
    url, model = backend_server
    client, written = _client(url), 0
    for seed in range(4):
        ask: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": 30, "seed": seed}
        done = client.chat.completions.create(**ask)
        texts, usage, finish = [], None, None
        for chunk in client.chat.completions.create(
            **ask, stream=True, stream_options={"include_usage": True}
        ):
            usage = chunk.usage or usage
            for choice in chunk.choices:
                texts.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        reply = done.choices[0]
        assert reply.message.role == "assistant"
        assert reply.message.content == "".join(texts), f"seed {seed}"
        assert reply.finish_reason == finish
        assert done.usage == usage
        written += done.usage.completion_tokens
    assert written > 0


# -- one server (transformers) for the rest -----------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_chat_model_dir, start_server) -> Iterator[str]:
    overrides = _overrides(tiny_chat_model_dir, "transformers")
    with start_server({**overrides, "serve.max_prompt_chars": 200}) as url:
        yield url


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return _client(server)


def _streamed_completion(client: openai.OpenAI, **ask: Any) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in client.completions.create(**ask, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    return texts


def _streamed_chat(client: openai.OpenAI, **ask: Any) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in client.chat.completions.create(**ask, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    return texts


def test_a_list_of_prompts_gets_one_choice_per_prompt_in_order(client, tiny_chat_model_dir):
    prompts = ["The dragon slept", "A robot counted", "The detective found"]
    ask: dict[str, Any] = {"model": str(tiny_chat_model_dir), "max_tokens": 12, "seed": 4}
    alone = [client.completions.create(prompt=p, **ask).choices[0].text for p in prompts]
    assert len(set(alone)) > 1, "the order is seen"
    together = client.completions.create(prompt=prompts, **ask)
    assert [c.index for c in together.choices] == [0, 1, 2]
    assert [c.text for c in together.choices] == alone
    single = client.completions.create(prompt=prompts[0], **ask).usage
    assert together.usage.completion_tokens >= single.completion_tokens
    streamed = _streamed_completion(client, prompt=prompts, **ask)
    assert [streamed[i] for i in range(3)] == alone


def test_n_choices_are_the_seeds_that_follow(client, tiny_chat_model_dir):
    ask: dict[str, Any] = {"model": str(tiny_chat_model_dir), "max_tokens": 12}
    each = [client.completions.create(prompt=PROMPT, seed=7 + i, **ask) for i in range(3)]
    three = client.completions.create(prompt=PROMPT, seed=7, n=3, **ask)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert [c.text for c in three.choices] == [e.choices[0].text for e in each]
    assert three.usage.completion_tokens == sum(e.usage.completion_tokens for e in each)
    assert three.usage.prompt_tokens == each[0].usage.prompt_tokens, "the prompt is read once"
    streamed = _streamed_completion(client, prompt=PROMPT, seed=7, n=3, **ask)
    assert [streamed[i] for i in range(3)] == [c.text for c in three.choices]
    # With two prompts: prompt p's choice j is index p * n + j.
    both = client.completions.create(prompt=[PROMPT, "A robot"], seed=7, n=2, **ask)
    assert [c.text for c in both.choices[:2]] == [c.text for c in three.choices[:2]]
    assert [c.index for c in both.choices] == [0, 1, 2, 3]

    chat = {"model": str(tiny_chat_model_dir), "messages": MESSAGES, "max_tokens": 12}
    replies = client.chat.completions.create(seed=7, n=3, **chat)
    assert [c.index for c in replies.choices] == [0, 1, 2]
    second = client.chat.completions.create(seed=8, **chat).choices[0].message.content
    assert replies.choices[1].message.content == second
    streamed = _streamed_chat(client, seed=7, n=3, **chat)
    assert [streamed[i] for i in range(3)] == [c.message.content for c in replies.choices]


def test_n_is_bounded_as_num_stories_is(server, client, tiny_chat_model_dir):
    from taleforge.config import SamplingParams, field_bounds

    _, most = field_bounds(SamplingParams, "num_stories")
    assert most is not None
    ask: dict[str, Any] = {"model": str(tiny_chat_model_dir), "max_tokens": 2}
    with pytest.raises(openai.UnprocessableEntityError, match=f"'n' .*{int(most)}"):
        client.completions.create(prompt=PROMPT, n=int(most) + 1, **ask)
    # A list of prompts may not multiply past it either: one request, at most that many.
    with pytest.raises(openai.BadRequestError, match=f"at most {int(most)}"):
        client.completions.create(prompt=[PROMPT] * 3, n=int(most) // 2, **ask)


def test_echo_answers_the_prompt_followed_by_the_completion(client, tiny_chat_model_dir):
    ask: dict[str, Any] = {"model": str(tiny_chat_model_dir), "max_tokens": 12, "seed": 2}
    plain = client.completions.create(prompt=PROMPT, **ask).choices[0].text
    echoed = client.completions.create(prompt=PROMPT, echo=True, **ask)
    assert echoed.choices[0].text == PROMPT + plain
    assert _streamed_completion(client, prompt=PROMPT, echo=True, **ask) == {0: PROMPT + plain}


def test_message_content_may_be_a_list_of_text_parts(client, tiny_chat_model_dir):
    ask: dict[str, Any] = {"model": str(tiny_chat_model_dir), "max_tokens": 12, "seed": 3}
    as_text = [{"role": "user", "content": "A robot\ncounted the stars."}]
    as_parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "A robot"},
                {"type": "text", "text": "counted the stars."},
            ],
        }
    ]
    expected = client.chat.completions.create(messages=as_text, **ask).choices[0].message.content
    answer = client.chat.completions.create(messages=as_parts, **ask)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == expected
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\]\.content.*image_url.*text"):
        client.chat.completions.create(
            messages=[{"role": "user", "content": [image]}],  # type: ignore[list-item]
            **ask,
        )


# -- what is not honoured is refused, by name ------------------------------------------------

#: OpenAI fields with a value that would change the answer, if honoured.
OPENAI_SAMPLING = {
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "logit_bias": {"5": -100},
}
NOT_HONOURED = {"logprobs": 2, "best_of": 2, "suffix": " The end."}
CHAT_NOT_HONOURED = {
    "logprobs": True,
    "top_logprobs": 2,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "response_format": {"type": "json_object"},
}


def _post(url: str, path: str, body: dict[str, Any]) -> Any:
    import httpx

    return httpx.post(f"{url}{path}", json=body, timeout=120)


def _completion(**fields: Any) -> dict[str, Any]:
    return {"prompt": PROMPT, "max_tokens": 4, "seed": 1, **fields}


def _chat(**fields: Any) -> dict[str, Any]:
    return {"messages": MESSAGES, "max_tokens": 4, "seed": 1, **fields}


def _is_openai_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


@pytest.mark.parametrize("name", [*OPENAI_SAMPLING, *NOT_HONOURED])
def test_a_completion_field_not_honoured_is_a_400_that_names_it(server, name):
    from taleforge.config import SamplingParams

    value = {**OPENAI_SAMPLING, **NOT_HONOURED}[name]
    response = _post(server, "/v1/completions", _completion(**{name: value}))
    if name in SamplingParams.model_fields:  # honoured once SamplingParams has it
        assert response.status_code == 200, response.text
        return
    error = _is_openai_error(response, 400)
    assert error["param"] == name and error["code"] == "unsupported_parameter"
    assert f"'{name}' is not supported" in error["message"]


@pytest.mark.parametrize("name", [*OPENAI_SAMPLING, *CHAT_NOT_HONOURED])
def test_a_chat_field_not_honoured_is_a_400_that_names_it(server, name):
    from taleforge.config import SamplingParams

    value = {**OPENAI_SAMPLING, **CHAT_NOT_HONOURED}[name]
    response = _post(server, "/v1/chat/completions", _chat(**{name: value}))
    if name in SamplingParams.model_fields:
        assert response.status_code == 200, response.text
        return
    error = _is_openai_error(response, 400)
    assert error["param"] == name and name in error["message"]


def test_unknown_fields_are_refused_with_a_suggestion(server):
    for path, body in [
        ("/v1/completions", _completion(temprature=0.5)),
        ("/v1/chat/completions", _chat(temprature=0.5)),
        ("/api/generate", {"prompt": PROMPT, "temprature": 0.5}),
    ]:
        error = _is_openai_error(_post(server, path, body), 400)
        assert "'temprature' is not a field" in error["message"], path
        assert "did you mean 'temperature'" in error["message"], path
    # taleforge's own names on the OpenAI routes: OpenAI's are the ones honoured there
    # (max_new_tokens used to be dropped silently: 200 tokens written for a request of 8)
    for name, openai_name in [("max_new_tokens", "max_tokens"), ("num_stories", "n")]:
        error = _is_openai_error(_post(server, "/v1/completions", _completion(**{name: 8})), 400)
        assert f"'{name}' is called '{openai_name}' here" in error["message"]


def test_fields_that_change_nothing_are_accepted_and_nulls_are_left_out(server):
    harmless = {
        "user": "writer-7",
        "safety_identifier": "writer-7",
        "prompt_cache_key": "k",
        "metadata": {"book": "one"},
        "logprobs": None,
        "echo": None,
        "stop": None,
    }
    answers = []
    for extra in ({}, harmless):
        completion = _post(server, "/v1/completions", _completion(**extra, seed=5))
        chat = _post(server, "/v1/chat/completions", _chat(**extra, seed=5))
        # a chat feature turned off asks for nothing
        text = {"response_format": {"type": "text"}, "logprobs": False} if extra else {}
        chat_text = _post(server, "/v1/chat/completions", _chat(**{**extra, **text}, seed=5))
        for response in (completion, chat, chat_text):
            assert response.status_code == 200, response.text
        answers.append(
            (
                completion.json()["choices"][0]["text"],
                chat.json()["choices"][0]["message"]["content"],
                chat_text.json()["choices"][0]["message"]["content"],
            )
        )
    assert answers[0] == answers[1]


# -- errors: OpenAI's shape, the client's names ----------------------------------------------

#: What an error message must never show: the server's internal types and pydantic's words.
INTERNAL = ["function-after", "clean_text", "list[", "ChatTurn", "Sampling", "Input should"]


@pytest.mark.parametrize(
    ("path", "body", "param", "words"),
    [
        ("/v1/completions", {"prompt": None}, "prompt", ["string or a list of strings"]),
        ("/v1/completions", {"max_tokens": 5}, "prompt", ["'prompt' is required"]),
        ("/v1/completions", {"prompt": 5}, "prompt", ["string or a list of strings"]),
        ("/v1/completions", {"prompt": ["a", 5]}, "prompt", ["token ids"]),
        ("/v1/completions", {"prompt": []}, "prompt", ["at least 1"]),
        ("/v1/completions", _completion(temperature=float("nan")), "temperature", ["finite"]),
        ("/v1/completions", _completion(stop=5), "stop", ["string or a list of strings"]),
        ("/v1/chat/completions", {"messages": None}, "messages", ["should be a valid list"]),
        ("/v1/chat/completions", {"messages": [1]}, "messages[0]", ["JSON object"]),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": None}]},
            "messages[0].content",
            ["should be a valid string"],
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"text": "a"}]}]},
            "messages[0].content",
            ["text"],
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "tool", "content": "a"}]},
            "messages[0].role",
            ["'user'"],
        ),
        ("/v1/chat/completions", _chat(top_p=float("nan")), "top_p", ["finite"]),
        ("/api/generate", {"prompt": None}, "prompt", ["should be a valid string"]),
        ("/api/generate", {"prompt": "a", "temperature": float("nan")}, "temperature", ["finite"]),
        ("/api/stories", {"title": None, "text": 5}, None, []),
    ],
)
def test_invalid_values_are_named_as_the_client_sent_them(server, path, body, param, words):
    import json

    import httpx

    # NaN is not JSON; Python's json (and JavaScript's JSON.parse) accept it as the servers do.
    content = json.dumps(body).encode()
    response = httpx.post(
        f"{server}{path}", content=content, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    error = _is_openai_error(response, response.status_code)
    for word in INTERNAL:
        assert word not in error["message"], error["message"]
    if param is not None:
        assert error["param"] == param, error
    for word in words:
        assert word in error["message"], error["message"]


def test_the_client_shows_the_message(client, tiny_chat_model_dir):
    with pytest.raises(openai.BadRequestError, match="'logprobs' is not supported"):
        client.completions.create(model=str(tiny_chat_model_dir), prompt=PROMPT, logprobs=2)
    with pytest.raises(openai.UnprocessableEntityError, match="'temperature' should be greater"):
        client.completions.create(model=str(tiny_chat_model_dir), prompt=PROMPT, temperature=-1)


# -- one length limit -----------------------------------------------------------------------


def test_every_route_counts_everything_a_generation_reads_against_one_limit(server):
    # serve.max_prompt_chars is 200 here: 120 + 120 characters are over it on every route,
    # however they are split between prompt, memory and messages. (/api/generate checked
    # the prompt and the memory each on its own: 240 characters were accepted there.)
    half = "x" * 120
    over = [
        ("/api/generate", {"prompt": half, "memory": half, "max_new_tokens": 2}),
        ("/api/generate", {"prompt": half, "authors_note": half, "max_new_tokens": 2}),
        ("/v1/completions", _completion(prompt=half + half)),
        ("/v1/completions", _completion(prompt=["a story", half + half])),
        (
            "/v1/chat/completions",
            _chat(
                messages=[{"role": "system", "content": half}, {"role": "user", "content": half}]
            ),
        ),
        (
            "/v1/chat/completions",
            _chat(
                messages=[
                    {"role": "user", "content": half},
                    {"role": "assistant", "content": "yes"},
                    {"role": "user", "content": half},
                ]
            ),
        ),
    ]
    for path, body in over:
        error = _is_openai_error(_post(server, path, body), 413)
        assert "this server accepts at most 200" in error["message"], (path, error)
        assert "--serve.max-prompt-chars" in error["message"]
    under = [
        ("/api/generate", {"prompt": half, "memory": "y" * 80, "max_new_tokens": 2}),
        ("/v1/completions", _completion(prompt=[half, half])),  # one generation each
        (
            "/v1/chat/completions",
            _chat(
                messages=[
                    {"role": "system", "content": "y" * 80},
                    {"role": "user", "content": half},
                ]
            ),
        ),
    ]
    for path, body in under:
        assert _post(server, path, body).status_code == 200, path


# -- stop sequences ---------------------------------------------------------------------------


def _stops_in(text: str, count: int) -> list[str]:
    """``count`` different two-character printable pieces of ``text``, from its second half."""
    stops: list[str] = []
    for start in range(len(text) // 2, len(text) - 2):
        piece = text[start : start + 2]
        if piece.isprintable() and piece.strip() and piece not in stops:
            stops.append(piece)
        if len(stops) == count:
            return stops
    pytest.fail(f"no {count} stop sequences in {text!r}")


def test_stop_arrays_end_the_text_before_the_first_one_streamed_or_not(client, tiny_chat_model_dir):
    from taleforge.config import SamplingParams

    most = next(
        (
            m.max_length
            for m in SamplingParams.model_fields["stop"].metadata
            if hasattr(m, "max_length")
        ),
        4,
    )
    model = str(tiny_chat_model_dir)
    seeded: dict[str, Any] = {"model": model, "max_tokens": 60, "seed": 9}  # same seed: same text
    text = client.completions.create(prompt=PROMPT, **seeded).choices[0].text
    stops = _stops_in(text, min(most, 3))
    expected = text[: min(text.find(s) for s in stops)]
    done = client.completions.create(prompt=PROMPT, stop=stops, **seeded)
    assert done.choices[0].text == expected and done.choices[0].finish_reason == "stop"
    assert _streamed_completion(client, prompt=PROMPT, stop=stops, **seeded) == {0: expected}
    assert not any(s in expected for s in stops)

    reply = client.chat.completions.create(messages=MESSAGES, **seeded).choices[0]
    stops = _stops_in(reply.message.content, min(most, 3))
    expected = reply.message.content[: min(reply.message.content.find(s) for s in stops)]
    done = client.chat.completions.create(messages=MESSAGES, stop=stops, **seeded)
    assert done.choices[0].message.content == expected
    assert done.choices[0].finish_reason == "stop"
    assert _streamed_chat(client, messages=MESSAGES, stop=stops, **seeded) == {0: expected}

    if most is not None:
        with pytest.raises(openai.UnprocessableEntityError, match=f"'stop'.*{most}"):
            client.completions.create(prompt=PROMPT, stop=["x"] * (most + 1), **seeded)
