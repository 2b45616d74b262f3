"""The generation cache: a seeded request asked again gets the story it got before.

A story is a pure function of the model's files, the request and the seed (principle 6), so
a request with an explicit seed can be answered from a recording of its first generation:
the same chunks in the same order, then the same stories (text, finish reason, token
counts, timings), without loading or admitting the model. Requests without a seed are
never cached: the writer asked for a new story.

The key is a SHA-256 of everything that shapes the story: the model's identity (its spec
and the names, sizes and modification times of its files, so a retrained model is a
different model), the generation-relevant config, the prompt, mode, genre, memory,
author's note, chat history, lorebook and every sampling parameter after defaults are
applied.

Layers, fastest first: an in-memory LRU of ``serve.cache_size`` entries, then Redis when
``serve.redis_url`` / ``$TALEFORGE_REDIS_URL`` is set (several server processes share it),
else the database table ``generation_cache`` (survives restarts). A failing Redis or
database only costs hits: the request is generated as if the cache were empty.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

from cachetools import LRUCache

from taleforge import __version__
from taleforge.config import SamplingParams, TaleforgeConfig, make_sampling
from taleforge.errors import TaleforgeError
from taleforge.generate.lore import as_lorebook
from taleforge.generate.result import Story, StreamChunk
from taleforge.serve.limits import redis_url
from taleforge.serve.metrics import ServerMetrics

if TYPE_CHECKING:
    from taleforge.generate import StoryStream
    from taleforge.store import Database

log = logging.getLogger(__name__)

#: Bumped when the recording format or the key changes: old entries are then never hit.
#: 2: a stream ends with the tail it held back as the possible start of a stop sequence.
#: 3: the key holds the lorebook (its entries can change the story).
CACHE_FORMAT = 3
#: Rows the database layer keeps, per entry of the in-memory cache (least recently used go).
DATABASE_ROWS_PER_MEMORY_ENTRY = 20
#: How long Redis keeps an entry after it was written.
REDIS_TTL_SECONDS = 30 * 86_400
REDIS_PREFIX = "taleforge:generation:"
#: Options of ``StoryGenerator.stream`` that are not sampling parameters, with its defaults.
REQUEST_DEFAULTS: dict[str, Any] = {
    "mode": "story",
    "genre": "auto",
    "memory": "",
    "authors_note": "",
    "history": (),
    "lorebook": None,
}


# -- recordings ----------------------------------------------------------------------------


def _story_from_dict(data: Mapping[str, Any]) -> Story:
    names = {f.name for f in fields(Story)}
    values = {key: value for key, value in data.items() if key in names}
    values["params"] = SamplingParams.model_validate(values["params"])
    values["token_ids"] = tuple(values.get("token_ids", ()))
    return Story(**values)


@dataclass(frozen=True)
class Recording:
    """A finished generation: what was streamed, and the stories it ended with."""

    model: str
    chunks: tuple[StreamChunk, ...]
    stories: tuple[Story, ...]

    def to_json(self) -> str:
        # ASCII: any text survives every database and Redis unchanged.
        return json.dumps(
            {
                "format": CACHE_FORMAT,
                "model": self.model,
                "chunks": [[chunk.index, chunk.text] for chunk in self.chunks],
                "stories": [story.to_dict() for story in self.stories],
            },
            ensure_ascii=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Recording:
        data = json.loads(text)
        if data.get("format") != CACHE_FORMAT:
            raise ValueError(f"cache entry format {data.get('format')} is not {CACHE_FORMAT}")
        return cls(
            data["model"],
            tuple(StreamChunk(int(index), str(piece)) for index, piece in data["chunks"]),
            tuple(_story_from_dict(story) for story in data["stories"]),
        )


class ReplayStream:
    """A :class:`Recording` played back with the interface of a ``StoryStream``."""

    cached = True

    def __init__(self, recording: Recording) -> None:
        self._chunks = iter(recording.chunks)
        self._recording = recording
        self._cancelled = self._done = False

    def __iter__(self) -> Iterator[StreamChunk]:
        return self

    def __next__(self) -> StreamChunk:
        if self._cancelled:
            raise StopIteration
        try:
            return next(self._chunks)
        except StopIteration:
            self._done = True
            raise

    def cancel(self) -> None:
        self._cancelled = True

    def on_ready(self, wake: Callable[[], None]) -> None:
        wake()  # every chunk is ready

    def ready(self) -> list[StreamChunk] | None:
        rest = [] if self._cancelled else list(self._chunks)
        if not rest:
            self._done = not self._cancelled
            return None
        return rest

    @property
    def stories(self) -> tuple[Story, ...]:
        """The stories once the replay has ended (like a generation that finished)."""
        return self._recording.stories if self._done else ()

    def wait(self, timeout: float | None = None) -> bool:
        return True


class RecordingStream:
    """A ``StoryStream`` that keeps the chunks it hands out, to be cached when it finishes."""

    cached = False

    def __init__(self, stream: StoryStream) -> None:
        self._stream = stream
        self._chunks: list[StreamChunk] = []
        self._finished = False

    def __iter__(self) -> Iterator[StreamChunk]:
        return self

    def __next__(self) -> StreamChunk:
        try:
            chunk = next(self._stream)
        except StopIteration:
            self._finished = True
            raise
        self._chunks.append(chunk)
        return chunk

    def cancel(self) -> None:
        self._stream.cancel()

    def on_ready(self, wake: Callable[[], None]) -> None:
        self._stream.on_ready(wake)

    def ready(self) -> list[StreamChunk] | None:
        chunks = self._stream.ready()
        if chunks is None:
            self._finished = True
        else:
            self._chunks.extend(chunks)
        return chunks

    @property
    def stories(self) -> tuple[Story, ...]:
        return self._stream.stories

    def wait(self, timeout: float | None = None) -> bool:
        return self._stream.wait(timeout)

    def recording(self, model: str) -> Recording | None:
        """The generation as a :class:`Recording` if it ran to its end (None otherwise)."""
        stories = self._stream.stories
        complete = (
            self._finished
            and stories
            and len(stories) == stories[0].params.num_stories
            and all(story.finish_reason != "cancelled" for story in stories)
        )
        return Recording(model, tuple(self._chunks), stories) if complete else None


# -- the key -------------------------------------------------------------------------------


def model_fingerprint(spec: str) -> dict[str, Any]:
    """What identifies a model's weights without loading them: the digest of the names,
    sizes and modification times of the files it is loaded from (the one a GGUF export
    records), so a retrained model in the same directory is a different model."""
    from taleforge.models.export import source_fingerprint
    from taleforge.models.loading import resolve_spec

    try:
        resolved = resolve_spec(spec)
        return {
            "spec": spec,
            "kind": str(resolved.kind),
            "path": None if resolved.path is None else str(resolved.path),
            "files": source_fingerprint(resolved),
        }
    except (TaleforgeError, OSError) as exc:
        # Loading fails with a message of its own; the key only must not collide.
        return {"spec": spec, "unresolved": str(exc)}


# -- storage layers ------------------------------------------------------------------------


class _Layer(Protocol):
    name: str

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, model: str, payload: str) -> None: ...


class DatabaseLayer:
    """The ``generation_cache`` table: survives restarts, shared by servers on one database."""

    name = "database"

    def __init__(self, db: Database, max_rows: int) -> None:
        self.db, self.max_rows = db, max_rows
        self._writes = 0

    def get(self, key: str) -> str | None:
        from taleforge.store.models import CachedGeneration, now

        with self.db.session() as session:
            row = session.get(CachedGeneration, key)
            if row is None:
                return None
            row.hits += 1
            row.last_used_at = now()
            return row.payload

    def put(self, key: str, model: str, payload: str) -> None:
        from sqlalchemy.exc import IntegrityError

        from taleforge.store.models import CachedGeneration, now

        try:
            with self.db.session() as session:
                row = session.get(CachedGeneration, key)
                if row is None:
                    session.add(CachedGeneration(key=key, model=model[:300], payload=payload))
                else:
                    row.payload, row.last_used_at = payload, now()
        except IntegrityError:  # another request stored the same generation a moment ago
            return
        self._writes += 1
        if self._writes % 100 == 1:
            self.prune()

    def prune(self) -> int:
        """Delete all but the ``max_rows`` most recently used entries; returns how many went."""
        from sqlalchemy import delete, select

        from taleforge.store.models import CachedGeneration

        with self.db.session() as session:
            cutoff = session.scalar(
                select(CachedGeneration.last_used_at)
                .order_by(CachedGeneration.last_used_at.desc())
                .offset(self.max_rows)
                .limit(1)
            )
            if cutoff is None:
                return 0
            result = session.execute(
                delete(CachedGeneration).where(CachedGeneration.last_used_at <= cutoff)
            )
            return int(getattr(result, "rowcount", 0) or 0)


class RedisLayer:
    """Redis: one cache for several server processes (entries expire after 30 days)."""

    name = "redis"

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def get(self, key: str) -> str | None:
        value = self._client.get(REDIS_PREFIX + key)
        return None if value is None else bytes(value).decode("utf-8")  # type: ignore[arg-type]

    def put(self, key: str, model: str, payload: str) -> None:
        self._client.set(REDIS_PREFIX + key, payload, ex=REDIS_TTL_SECONDS)


# -- the cache -----------------------------------------------------------------------------


class GenerationCache:
    """Seeded generations by key: memory first, then Redis or the database."""

    def __init__(
        self,
        config: TaleforgeConfig,
        *,
        store: _Layer | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.config = config
        self.size = config.serve.cache_size
        self.store = store if self.size else None
        self.metrics = metrics or ServerMetrics()
        self._memory: LRUCache[str, Recording] = LRUCache(maxsize=max(1, self.size))
        self._lock = threading.Lock()
        self._warned_at = 0.0

    @classmethod
    def from_config(
        cls, config: TaleforgeConfig, db: Database | None, metrics: ServerMetrics | None = None
    ) -> GenerationCache:
        """Memory plus Redis when configured, else plus the database ``db`` (when given)."""
        store: _Layer | None = None
        url = redis_url(config)
        if url:
            store = RedisLayer(url)
        elif db is not None:
            rows = max(1_000, DATABASE_ROWS_PER_MEMORY_ENTRY * config.serve.cache_size)
            store = DatabaseLayer(db, max_rows=rows)
        return cls(config, store=store, metrics=metrics)

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def wants(self, options: Mapping[str, Any]) -> bool:
        """Whether a request with these options is cached: only seeded ones are."""
        return self.enabled and options.get("seed") is not None

    def lookup(
        self, spec: str, prompt: str, options: Mapping[str, Any]
    ) -> tuple[str | None, Recording | None]:
        """(key, recording) of a request; the recording is None on a miss, the key when the
        request is not cached."""
        key = self.key(spec, prompt, options)
        return key, None if key is None else self.get(key)

    def key(self, spec: str, prompt: str, options: Mapping[str, Any]) -> str | None:
        """The key of a request for model ``spec``; None when it is not cached (no seed)."""
        if not self.wants(options):
            return None
        sampling = {k: v for k, v in options.items() if k not in REQUEST_DEFAULTS}
        try:
            params = make_sampling(self.config.sampling, **sampling)
        except TaleforgeError:
            return None  # the generation reports the invalid parameter
        request = {name: options.get(name, default) for name, default in REQUEST_DEFAULTS.items()}
        request["history"] = [dict(turn) for turn in request["history"]]
        try:
            lorebook = as_lorebook(request["lorebook"])
        except TaleforgeError:
            return None  # the generation reports the invalid lorebook
        request["lorebook"] = None if lorebook is None else lorebook.model_dump(mode="json")
        description = {
            "format": CACHE_FORMAT,
            "taleforge": __version__,
            "model": model_fingerprint(spec),
            "config": {
                "model": self.config.model.model_dump(mode="json", exclude={"spec"}),
                "sampling": self.config.sampling.model_dump(mode="json"),
                "context_length": self.config.generate.context_length,
            },
            "prompt": prompt,
            "request": request,
            "params": params.model_dump(mode="json"),
        }
        text = json.dumps(description, sort_keys=True, ensure_ascii=True, default=str)
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    def get(self, key: str) -> Recording | None:
        """The recording of ``key`` from the fastest layer that has it (counts hit or miss)."""
        with self._lock:
            recording = self._memory.get(key)
        layer = "memory"
        if recording is None and self.store is not None:
            layer = self.store.name
            payload = self._safely("read", self.store.get, key)
            if payload is not None:
                try:
                    recording = Recording.from_json(payload)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("cache entry %s… unreadable, generating again: %s", key[:12], exc)
                if recording is not None:
                    self._remember(key, recording)
        if recording is None:
            self.metrics.cache_misses.inc()
            return None
        self.metrics.cache_hits.labels(layer).inc()
        return recording

    def put(self, key: str, recording: Recording) -> None:
        """Keep ``recording`` under ``key`` in memory and in the shared layer."""
        self._remember(key, recording)
        if self.store is not None:
            self._safely("write", self.store.put, key, recording.model, recording.to_json())

    def count_generation(self, spec: str) -> None:
        """Count a generation the model ran (a miss, or a request without a seed)."""
        self.metrics.generations.labels(spec).inc()

    def _remember(self, key: str, recording: Recording) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._memory[key] = recording
            self.metrics.cache_entries.set(len(self._memory))

    def _safely(self, action: str, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except Exception as exc:  # a cache that cannot be reached is an empty cache
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("generation cache: cannot %s %s: %s", action, self.store, exc)
            return None

    def __repr__(self) -> str:
        layers = ["memory"] + ([self.store.name] if self.store is not None else [])
        return f"GenerationCache({'+'.join(layers)}, size={self.size})"
