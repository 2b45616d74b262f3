"""The remote backend against a real OpenAI-compatible server: another taleforge server.

``upstream`` runs the tiny GPT-2 on transformers; a generator (and a second server) with
``backend = "remote"`` writes through it, and must give what the upstream gives itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from taleforge.errors import ConfigError, ModelLoadError
from taleforge.generate.remote import API_KEY_ENV, RemoteStoryGenerator

PROMPT = "The castle"


@pytest.fixture(scope="module")
def upstream(tiny_model_dir: Path, start_server) -> str:
    overrides = {
        "model.spec": str(tiny_model_dir),
        "model.backend": "transformers",
        "serve.max_new_tokens": 8000,
        "serve.cache_size": 0,  # every request is written, none replayed
    }
    with start_server(overrides) as url:
        yield url


@pytest.fixture(scope="module")
def remote(upstream: str, tiny_model_dir: Path) -> RemoteStoryGenerator:
    generator = RemoteStoryGenerator(f"{upstream}/v1", model=str(tiny_model_dir))
    yield generator
    generator.close()


def upstream_story(url: str, **body: object) -> dict:
    """The upstream server's own story for ``PROMPT`` (its /api/generate)."""
    answer = httpx.post(f"{url}/api/generate", json={"prompt": PROMPT, **body}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["stories"][0]


def test_greedy_and_seeded_stories_equal_the_upstream_servers_own(upstream, remote):
    greedy = {"mode": "story", "genre": "none", "temperature": 0, "max_new_tokens": 40}
    own = upstream_story(upstream, **greedy)
    story = remote.generate(PROMPT, **greedy).stories[0]
    assert story.text == own["text"] and story.text.startswith(PROMPT)
    assert len(story.generated_text) > 10
    assert (story.backend, story.finish_reason) == ("remote", own["finish_reason"])
    assert story.generated_tokens == own["generated_tokens"]

    # Seeds and the sampling extras (top_k, repetition_penalty) reach the server.
    sampled = {**greedy, "temperature": 0.9, "top_k": 5, "repetition_penalty": 1.3, "seed": 11}
    story = remote.generate(PROMPT, **sampled).stories[0]
    assert story.text == upstream_story(upstream, **sampled)["text"]
    assert story.seed == 11 and story.params.top_k == 5
    again = remote.generate(PROMPT, **sampled).stories[0]
    other = remote.generate(PROMPT, **{**sampled, "top_k": 50}).stories[0]
    assert again.text == story.text and other.text != story.text


def test_stop_sequences_end_the_story_before_them(upstream, remote):
    greedy = {"mode": "story", "genre": "none", "temperature": 0, "max_new_tokens": 40}
    written = upstream_story(upstream, **greedy)["generated_text"]
    stop = written[len(written) // 2 : len(written) // 2 + 2]
    story = remote.generate(PROMPT, stop=[stop], **greedy).stories[0]
    assert story.finish_reason == "stop" and stop not in story.generated_text
    assert len(story.generated_text) < len(written) // 2 + 1
    assert story.text == upstream_story(upstream, stop=[stop], **greedy)["text"]


def test_stream_cancelled_mid_story_frees_the_upstream(upstream, remote, idle):
    # min_new_tokens: the upstream would write 4000 tokens (tens of seconds) if not stopped.
    stream = remote.stream(PROMPT, genre="none", max_new_tokens=4000, min_new_tokens=4000)
    received = [next(stream).text for _ in range(5)]
    assert "".join(received).strip()
    assert httpx.get(f"{upstream}/health").json()["active_requests"] == 1
    stream.cancel()
    assert stream.wait(timeout=5)
    idle(upstream, within=2.0)
    (story,) = stream.result.stories
    assert story.finish_reason == "cancelled" and story.generated_tokens < 4000


@pytest.fixture(scope="module")
def remote_server(upstream: str, tiny_model_dir: Path, start_server) -> str:
    """A second taleforge server whose model is the upstream's, through the remote backend."""
    overrides = {
        "model.spec": str(tiny_model_dir),
        "model.backend": "remote",
        "model.remote_url": f"{upstream}/v1",
        "serve.max_new_tokens": 8000,
        "serve.cache_size": 0,
    }
    with start_server(overrides) as url:
        yield url


def test_second_server_streams_the_upstreams_story_and_frees_it_on_disconnect(
    upstream, remote_server, tiny_model_dir, idle
):
    body = {"prompt": PROMPT, "genre": "none", "temperature": 0, "max_new_tokens": 40}
    texts, done = [], None
    with httpx.stream("POST", f"{remote_server}/api/generate", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if "text" in event:
                    texts.append(event["text"])
                done = event.get("story", done)
    assert len(texts) >= 5, "streamed in pieces as they arrive, not at the end"
    assert done is not None and done["backend"] == "remote"
    assert done["text"] == upstream_story(upstream, **body)["text"]
    models = httpx.get(f"{remote_server}/v1/models").json()["data"]
    assert [m["id"] for m in models] == [str(tiny_model_dir)]

    # A client that leaves mid-stream: both servers stop writing within a couple of seconds.
    long_body = {**body, "temperature": 0.9, "max_new_tokens": 4000, "min_new_tokens": 4000}
    with httpx.stream(
        "POST", f"{remote_server}/api/generate", json={**long_body, "stream": True}
    ) as r:
        assert r.status_code == 200
        events = (line for line in r.iter_lines() if line.startswith("data: "))
        pieces = [json.loads(next(events)[6:])["text"] for _ in range(3)]
        assert "".join(pieces).strip()
        assert httpx.get(f"{upstream}/health").json()["active_requests"] == 1
        events.close()  # the client goes away mid-story
    idle(remote_server, within=2.0)
    idle(upstream, within=2.0)


def test_unreachable_server_or_unknown_model_fail_at_start_with_what_to_change(
    upstream, tiny_model_dir
):
    with pytest.raises(ModelLoadError, match="cannot reach the remote server .*remote-url"):
        RemoteStoryGenerator("http://127.0.0.1:9/v1", model="x", retries=0)
    with pytest.raises(ConfigError, match=f"does not serve 'nope'.*{tiny_model_dir}"):
        RemoteStoryGenerator(f"{upstream}/v1", model="nope")
    with pytest.raises(ConfigError, match="ending in /v1"):
        RemoteStoryGenerator(f"{upstream}/nothing", model="x")
    # Chat without a chat template here goes to the server's chat API, which says why not.
    with pytest.raises(ConfigError, match="refused the request: mode 'chat' needs a model with"):
        RemoteStoryGenerator(f"{upstream}/v1", model=str(tiny_model_dir)).generate(
            PROMPT, mode="chat"
        )

    # The CLI: `taleforge serve` refuses to start, with the models the server offers.
    command = [sys.executable, "-m", "taleforge", "serve", "--port", "0", "--backend", "remote"]
    command += ["--model.remote-url", f"{upstream}/v1", "--model", "nope"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "does not serve 'nope'" in done.stderr and str(tiny_model_dir) in done.stderr


def test_api_key_comes_from_the_environment(
    tiny_model_dir, module_database, start_server, monkeypatch
):
    from taleforge.store import Accounts, Database

    overrides = {
        "model.spec": str(tiny_model_dir),
        "model.backend": "transformers",
        "serve.accounts": True,
        "serve.database_url": module_database,
    }
    with start_server(overrides) as url:
        monkeypatch.delenv(API_KEY_ENV, raising=False)
        with pytest.raises(ConfigError, match=f"refused the request \\(401\\).*\\${API_KEY_ENV}"):
            RemoteStoryGenerator(f"{url}/v1", model=str(tiny_model_dir))
        accounts = Accounts(Database(module_database))
        token = accounts.create_token(accounts.sign_up("remote-writer", "correct horse battery"))
        monkeypatch.setenv(API_KEY_ENV, token)
        generator = RemoteStoryGenerator(f"{url}/v1", model=str(tiny_model_dir))
        story = generator.generate(PROMPT, genre="none", max_new_tokens=8).stories[0]
        assert story.generated_tokens > 0 and story.backend == "remote"


def test_cli_generate_writes_through_the_remote_server(upstream, tiny_model_dir):
    greedy = {"mode": "story", "genre": "none", "temperature": 0, "max_new_tokens": 40}
    command = [sys.executable, "-m", "taleforge", "generate", PROMPT, "--json", "--backend"]
    command += ["remote", "--model.remote-url", f"{upstream}/v1", "--model", str(tiny_model_dir)]
    command += ["--temperature", "0", "--genre", "none", "--max-new-tokens", "40"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (story,) = json.loads(done.stdout)["stories"]
    assert (
        story["backend"] == "remote" and story["text"] == upstream_story(upstream, **greedy)["text"]
    )
    assert "HTTP Request" not in done.stderr


def test_the_new_samplers_are_sent_under_the_names_servers_read(tiny_model_dir, monkeypatch):
    """OpenAI's presence_penalty, frequency_penalty and logit_bias (word bias resolved with
    the model's tokenizer here); DRY and XTC as llama.cpp's server and KoboldCpp name them;
    nothing new when they are off."""
    from taleforge.config import SamplingParams
    from taleforge.generate import remote

    monkeypatch.setattr(remote, "check_server", lambda *args, **kwargs: [str(tiny_model_dir)])
    generator = RemoteStoryGenerator("http://127.0.0.1:9/v1", model=str(tiny_model_dir))
    try:
        plain = generator._body(SamplingParams(), seed=1)
        assert not {"presence_penalty", "frequency_penalty", "logit_bias"} & set(plain)
        assert not any(k.startswith(("dry_", "xtc_")) for k in plain.get("extra_body", {}))
        params = SamplingParams(
            presence_penalty=0.5,
            frequency_penalty=-0.25,
            logit_bias={7: 3},
            word_bias={"castle": -5},
            dry_multiplier=0.8,
            dry_sequence_breakers=("\n",),
            xtc_probability=0.5,
        )
        body = generator._body(params, seed=1)
        castle = generator.vocabulary.word_tokens("castle")
        assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, -0.25)
        assert body["logit_bias"] == {"7": 3.0, **{str(t): -5.0 for t in sorted(castle)}}
        assert body["extra_body"] == {
            "top_k": 50,
            "repetition_penalty": 1.1,
            "dry_multiplier": 0.8,
            "dry_base": 1.75,
            "dry_allowed_length": 2,
            "dry_penalty_last_n": -1,
            "dry_sequence_breakers": ["\n"],
            "xtc_probability": 0.5,
            "xtc_threshold": 0.1,
        }
    finally:
        generator.close()
