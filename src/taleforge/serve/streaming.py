"""Bridges between the threaded :class:`StoryStream` and async web handlers.

:func:`generation` is the one way the API and the studio generate; a seeded request the
registry's cache has seen is replayed from it there, without the model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import anyio
import anyio.to_thread

from taleforge.generate import StoryGenerator, StoryStream
from taleforge.generate.result import Story, StreamChunk
from taleforge.serve.cache import RecordingStream, ReplayStream
from taleforge.serve.registry import ModelRegistry


class GenerationStream(Protocol):
    """What handlers use of a stream: a ``StoryStream``, or a replay from the cache."""

    def __iter__(self) -> Iterator[StreamChunk]: ...
    def __next__(self) -> StreamChunk: ...
    def on_ready(self, wake: Callable[[], None]) -> None: ...
    def ready(self) -> list[StreamChunk] | None: ...
    def cancel(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    @property
    def stories(self) -> tuple[Story, ...]: ...


async def chunk_batches(stream: GenerationStream) -> AsyncIterator[list[StreamChunk]]:
    """The stream's chunks as they are written: at each wake-up, every chunk ready (several
    when the consumer fell behind, so it can send them in one write). Leaving early cancels
    the generation.

    The generating thread wakes the event loop itself (``call_soon_threadsafe``): no worker
    thread waits for each token, which cost every token two thread switches and, on a
    machine whose cores all decode, a share of the decoding. Whoever stops iterating (a
    client that disconnects, a Pause button that cancels the handler) stops the model at its
    next token: ``finally`` cancels the stream.
    """
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    # Set before the consumer looks for chunks and waits: a chunk put after that wakes it,
    # one put while it is still sending the last ones costs the generating thread nothing
    # (with 8 streams that is most tokens).
    waiting = False

    def wake() -> None:
        nonlocal waiting
        if waiting:
            waiting = False
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(ready.set)

    stream.on_ready(wake)
    try:
        while True:
            ready.clear()
            waiting = True
            batch = stream.ready()
            if batch is None:
                return
            if batch:
                waiting = False
                yield batch
            else:
                await ready.wait()
    finally:
        stream.cancel()


async def chunks(stream: GenerationStream) -> AsyncIterator[StreamChunk]:
    """The stream's chunks one by one (see :func:`chunk_batches`)."""
    try:
        async for batch in chunk_batches(stream):
            for chunk in batch:
                yield chunk
    finally:
        stream.cancel()


@asynccontextmanager
async def generation(
    registry: ModelRegistry, model: str | None, prompt: str, **options: Any
) -> AsyncIterator[tuple[str, GenerationStream]]:
    """Admit, load (off the event loop) and start one generation; yields (spec, stream).

    A seeded request found in ``registry.cache`` is replayed instead (same chunks, same
    stories; nothing admitted or loaded); a seeded one that runs to its end is recorded.

    Raises:
        UnknownModelError, BusyError: Before anything is loaded or generated.
        ConfigError: The request is invalid for this model.
    """
    spec = registry.resolve(model)
    cache, key = registry.cache, None
    if cache is not None and cache.wants(options):
        # Off the event loop: the key stats the model's files, the lookup may query a database.
        key, recording = await anyio.to_thread.run_sync(cache.lookup, spec, prompt, options)
        if recording is not None:
            yield spec, ReplayStream(recording)
            return
    with registry.admit(spec):
        generator: StoryGenerator = await anyio.to_thread.run_sync(registry.get, spec)
        # Off the event loop too: planning scans the lorebook and tokenizes its entries.
        # Shielded: a stream that started is always cancelled by the ``finally`` below.
        with anyio.CancelScope(shield=True):
            started = await anyio.to_thread.run_sync(partial(generator.stream, prompt, **options))
        stream = RecordingStream(started)
        if cache is not None:
            cache.count_generation(spec)
        try:
            yield spec, stream
        finally:
            stream.cancel()
            await anyio.to_thread.run_sync(stream.wait)
    finished = stream.recording(spec)
    if cache is not None and key is not None and finished is not None:
        await anyio.to_thread.run_sync(cache.put, key, finished)


@dataclass(frozen=True)
class Collected:
    """A generation run to its end: the model that wrote it, its stories, and the text each
    story streamed (by story index), exactly as a streaming client received it."""

    spec: str
    stories: tuple[Story, ...]
    streamed: dict[int, str]

    def text(self, index: int) -> str:
        return self.streamed.get(index, "")


async def collect(
    registry: ModelRegistry,
    model: str | None,
    prompt: str,
    options: dict[str, Any],
    left: Callable[[], Awaitable[bool]] | None = None,
) -> Collected:
    """Generate to the end, or until ``left()`` says the client is gone (the stories are then
    cancelled). Raises as :func:`generation`."""
    streamed: dict[int, str] = {}
    async with generation(registry, model, prompt, **options) as (spec, stream):
        async for chunk in chunks(stream):
            streamed[chunk.index] = streamed.get(chunk.index, "") + chunk.text
            if left is not None and await left():
                break
        stories = stream.stories
    return Collected(spec, stories, streamed)


@contextmanager
def sync_generation(
    registry: ModelRegistry, model: str | None, prompt: str, **options: Any
) -> Iterator[tuple[str, StoryStream]]:
    """:func:`generation` for threads (blocking)."""
    spec = registry.resolve(model)
    with registry.admit(spec):
        stream = registry.get(spec).stream(prompt, **options)
        try:
            yield spec, stream
        finally:
            stream.cancel()
            stream.wait()
