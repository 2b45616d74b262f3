"""The generation cache: a seeded request asked again gets the identical story, from memory,
from the database after a restart (SQLite and PostgreSQL) and from Redis on another server."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from taleforge.config import load_config
from taleforge.generate.lore import Lorebook
from taleforge.serve.cache import (
    DatabaseLayer,
    GenerationCache,
    Recording,
    RecordingStream,
    RedisLayer,
    ReplayStream,
)

HITS, MISSES = "taleforge_cache_hits_total", "taleforge_cache_misses_total"
GENERATIONS = "taleforge_generations_total"


def post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{url}{path}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def sse_events(url: str, path: str, body: dict[str, Any]) -> list[Any]:
    with httpx.stream("POST", f"{url}{path}", json=body, timeout=120) as response:
        assert response.status_code == 200
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def without_ids(data: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI answer without what differs between any two requests (id, time)."""
    return {k: v for k, v in data.items() if k not in ("id", "created")}


def loaded_models(url: str) -> list[str]:
    return httpx.get(f"{url}/health", timeout=10).json()["loaded_models"]


# -- one server ----------------------------------------------------------------------------


def test_a_repeated_seeded_request_gets_the_identical_story_from_the_cache(
    tiny_server, tiny_model_dir, metric
):
    body = {"prompt": "The keeper heard knocking (cache-1)", "seed": 5, "max_new_tokens": 24}
    hits, misses = metric(tiny_server, HITS, layer="memory"), metric(tiny_server, MISSES)
    generations = metric(tiny_server, GENERATIONS, model=str(tiny_model_dir))
    first = post(tiny_server, "/api/generate", body)
    again = post(tiny_server, "/api/generate", body)
    # Same text, finish reason, token counts, seed, even the timings it was written in.
    assert again == first
    assert metric(tiny_server, HITS, layer="memory") == hits + 1
    assert metric(tiny_server, MISSES) == misses + 1
    assert metric(tiny_server, GENERATIONS, model=str(tiny_model_dir)) == generations + 1


def test_a_streaming_client_gets_the_same_chunks_from_the_cache(tiny_server, metric):
    body = {"prompt": "A robot counted stars (cache-2)", "seed": 8, "max_new_tokens": 30}
    streamed = sse_events(tiny_server, "/api/generate", {**body, "stream": True})
    hits = metric(tiny_server, HITS, layer="memory")
    replayed = sse_events(tiny_server, "/api/generate", {**body, "stream": True})
    assert replayed == streamed
    assert len([e for e in replayed if "text" in e]) >= 3, "a replay still arrives in pieces"
    # Streaming or not is how the story is delivered, not which story: the same entry.
    whole = post(tiny_server, "/api/generate", body)
    assert whole["stories"][0] == streamed[-1]["story"]
    assert metric(tiny_server, HITS, layer="memory") == hits + 2


def test_openai_routes_answer_from_the_cache(tiny_server, metric):
    hits = metric(tiny_server, HITS, layer="memory")
    completion = {"prompt": "Once upon a time (cache-3)", "seed": 3, "max_tokens": 16}
    first = post(tiny_server, "/v1/completions", completion)
    assert without_ids(post(tiny_server, "/v1/completions", completion)) == without_ids(first)
    streamed = sse_events(tiny_server, "/v1/completions", {**completion, "stream": True})
    replayed = sse_events(tiny_server, "/v1/completions", {**completion, "stream": True})
    assert [without_ids(e) for e in replayed] == [without_ids(e) for e in streamed]
    assert metric(tiny_server, HITS, layer="memory") == hits + 3


def test_requests_without_a_seed_or_with_other_parameters_are_written_anew(
    tiny_server, tiny_model_dir, metric
):
    generations = metric(tiny_server, GENERATIONS, model=str(tiny_model_dir))
    hits = metric(tiny_server, HITS, layer="memory")
    body = {"prompt": "The map led across the desert (cache-4)", "max_new_tokens": 16}
    post(tiny_server, "/api/generate", body)
    post(tiny_server, "/api/generate", body)
    post(tiny_server, "/api/generate", {**body, "seed": 1})
    post(tiny_server, "/api/generate", {**body, "seed": 2})
    post(tiny_server, "/api/generate", {**body, "seed": 1, "temperature": 0.5})
    post(tiny_server, "/api/generate", {**body, "seed": 1, "memory": "It is winter."})
    assert metric(tiny_server, GENERATIONS, model=str(tiny_model_dir)) == generations + 6
    assert metric(tiny_server, HITS, layer="memory") == hits


def test_the_studio_answers_a_seeded_write_from_the_cache(
    tiny_server, tiny_model_dir, metric, studio
):
    fields = {
        "Prompt": "A door at the bottom of the sea (cache-5)",
        "Model": str(tiny_model_dir),
        "Tokens per step": 24,
        "Seed (-1 = random)": 17,
    }
    hits = metric(tiny_server, HITS, layer="memory")
    first = studio(tiny_server, "/write", **fields)
    again = studio(tiny_server, "/write", **fields)
    assert again[0] == first[0] and first[0].strip()
    assert metric(tiny_server, HITS, layer="memory") == hits + 1


# -- across restarts and servers ---------------------------------------------------------------


def test_a_restarted_server_answers_from_the_database(
    tiny_model_dir, database_url, start_server, metric
):
    overrides = {"model.spec": str(tiny_model_dir), "serve.database_url": database_url}
    body = {"prompt": "Nobody went into the basement (cache-6)", "seed": 21, "max_new_tokens": 24}
    with start_server(overrides) as url:
        first = post(url, "/api/generate", body)
    with start_server(overrides) as url:
        again = post(url, "/api/generate", body)
        assert again == first
        assert metric(url, HITS, layer="database") == 1
        assert loaded_models(url) == [], "a hit never loads the model"


def test_two_servers_sharing_redis_share_the_cache(
    tiny_model_dir, tmp_path, redis_url, start_server, metric
):
    common = {"model.spec": str(tiny_model_dir), "serve.redis_url": redis_url}
    body = {"prompt": "They met at the harbour (cache-7)", "seed": 4, "max_new_tokens": 24}
    with (
        start_server({**common, "serve.database_url": f"sqlite:///{tmp_path / 'a.db'}"}) as one,
        start_server({**common, "serve.database_url": f"sqlite:///{tmp_path / 'b.db'}"}) as two,
    ):
        first = post(one, "/api/generate", body)
        again = post(two, "/api/generate", body)
        assert again == first
        assert metric(two, HITS, layer="redis") == 1
        assert loaded_models(two) == []


def test_an_unreachable_redis_costs_hits_not_answers(tiny_model_dir, start_server, metric):
    overrides = {"model.spec": str(tiny_model_dir), "serve.redis_url": "redis://127.0.0.1:1/0"}
    body = {"prompt": "The detective found a clue (cache-8)", "seed": 9, "max_new_tokens": 16}
    with start_server(overrides) as url:
        first = post(url, "/api/generate", body)
        assert post(url, "/api/generate", body) == first  # from memory
        assert metric(url, HITS, layer="memory") == 1


# -- the parts ---------------------------------------------------------------------------------


@pytest.fixture
def cache() -> GenerationCache:
    return GenerationCache(load_config(None, {}))


def test_the_key_covers_everything_that_shapes_the_story(cache, tiny_model_dir, tmp_path):
    spec = str(tiny_model_dir)
    base = {"seed": 1, "mode": "story", "genre": "auto", "temperature": 0.8}
    key = cache.key(spec, "a prompt", base)
    assert key is not None and len(key) == 64
    assert cache.key(spec, "a prompt", dict(base)) == key
    # Defaults spelled out, or numbers written differently, are the same request.
    assert cache.key(spec, "a prompt", {**base, "top_k": 50, "temperature": 0.80}) == key
    changed = [
        cache.key(spec, "another prompt", base),
        cache.key(spec, "a prompt", {**base, "seed": 2}),
        cache.key(spec, "a prompt", {**base, "temperature": 0.9}),
        cache.key(spec, "a prompt", {**base, "mode": "poem"}),
        cache.key(spec, "a prompt", {**base, "genre": "horror"}),
        cache.key(spec, "a prompt", {**base, "memory": "m"}),
        cache.key(spec, "a prompt", {**base, "authors_note": "n"}),
        cache.key(spec, "a prompt", {**base, "history": [{"role": "user", "content": "hi"}]}),
        cache.key(spec, "a prompt", {**base, "stop": ["."]}),
        cache.key(spec, "a prompt", {**base, "lorebook": LOREBOOK}),
        cache.key(spec, "a prompt", {**base, "lorebook": {**LOREBOOK, "budget": 9}}),
        cache.key("smollm2-135m", "a prompt", base),
    ]
    assert None not in changed and len({key, *changed}) == len(changed) + 1
    assert cache.key(spec, "a prompt", {**base, "seed": None}) is None
    # A lorebook given as a model or as its JSON is the same request.
    as_model = cache.key(spec, "a prompt", {**base, "lorebook": Lorebook(**LOREBOOK)})
    assert as_model == cache.key(spec, "a prompt", {**base, "lorebook": LOREBOOK})


LOREBOOK = {"entries": [{"keys": ["prompt"], "text": "Prompts are short."}]}


def test_a_retrained_model_in_the_same_directory_is_a_new_key(cache, tiny_model_dir, tmp_path):
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    key = cache.key(str(model), "a prompt", {"seed": 1})
    weights = next(model.glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.key(str(model), "a prompt", {"seed": 1}) != key


def test_a_recording_replays_the_same_chunks_and_stories(tiny_generator):
    stream = RecordingStream(tiny_generator.stream("The dragon slept", seed=6, max_new_tokens=20))
    chunks = list(stream)
    recording = stream.recording("tiny")
    assert recording is not None and recording.stories == stream.stories
    restored = Recording.from_json(recording.to_json())
    assert restored == recording
    replay = ReplayStream(restored)
    assert replay.stories == (), "stories arrive at the end, as from a model"
    assert list(replay) == chunks
    assert replay.stories == stream.stories


def test_an_unfinished_generation_is_not_recorded(tiny_generator):
    stream = RecordingStream(tiny_generator.stream("The dragon slept", seed=6, max_new_tokens=40))
    next(stream)
    stream.cancel()
    stream.wait()
    assert stream.recording("tiny") is None


def _recording(tiny_generator, seed: int = 6) -> Recording:
    stream = RecordingStream(tiny_generator.stream("A cat", seed=seed, max_new_tokens=8))
    list(stream)
    recording = stream.recording("tiny")
    assert recording is not None
    return recording


def test_the_database_layer_keeps_counts_and_prunes(database, tiny_generator):
    from taleforge.store.models import CachedGeneration

    config = load_config(None, {"serve.cache_size": 1})
    layer = DatabaseLayer(database, max_rows=2)
    cache = GenerationCache(config, store=layer)
    recording = _recording(tiny_generator)
    for name in "abc":
        cache.put(name * 64, recording)
    layer.prune()
    cache = GenerationCache(config, store=layer)  # an empty memory: a restart
    assert cache.get("c" * 64) == recording
    assert cache.get("c" * 64) == recording  # memory now
    with database.session() as session:
        rows = {row.key[0]: row.hits for row in session.query(CachedGeneration)}
    assert len(rows) == 2 and rows["c"] == 1
    assert cache.metrics.cache_hits.labels("database")._value.get() == 1


def test_an_unreadable_entry_is_a_miss(database, tiny_generator):
    from taleforge.store.models import CachedGeneration

    with database.session() as session:
        session.add(CachedGeneration(key="d" * 64, model="tiny", payload="{not json"))
    cache = GenerationCache(load_config(None, {}), store=DatabaseLayer(database, max_rows=10))
    assert cache.get("d" * 64) is None
    assert cache.metrics.cache_misses._value.get() == 1


def test_an_unreachable_redis_is_an_empty_cache(tiny_generator):
    cache = GenerationCache(load_config(None, {}), store=RedisLayer("redis://127.0.0.1:1/0"))
    recording = _recording(tiny_generator)
    cache.put("e" * 64, recording)  # logged, not raised
    assert cache.get("e" * 64) == recording  # the memory layer still works
    assert GenerationCache(cache.config, store=cache.store).get("e" * 64) is None


def test_cache_size_zero_turns_the_cache_off(tiny_generator):
    cache = GenerationCache(load_config(None, {"serve.cache_size": 0}))
    assert cache.key("tiny", "a prompt", {"seed": 1}) is None
