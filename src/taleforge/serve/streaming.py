"""Bridges between the threaded :class:`StoryStream` and async web handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio.to_thread

from taleforge.generate import StoryGenerator, StoryStream
from taleforge.generate.result import StreamChunk
from taleforge.serve.registry import ModelRegistry


def _next(stream: StoryStream) -> StreamChunk | None:
    return next(stream, None)


async def chunks(stream: StoryStream) -> AsyncIterator[StreamChunk]:
    """The stream's chunks, awaited off the event loop; leaving early cancels generation.

    Whoever stops iterating (a client that disconnects, a Pause button that cancels the
    handler) stops the model at its next token: ``finally`` cancels the stream.
    """
    try:
        while True:
            # abandon_on_cancel: a cancelled consumer leaves at once; the thread ends
            # with the generation, which ``finally`` stops at its next token.
            chunk = await anyio.to_thread.run_sync(_next, stream, abandon_on_cancel=True)
            if chunk is None:
                return
            yield chunk
    finally:
        stream.cancel()


@asynccontextmanager
async def generation(
    registry: ModelRegistry, model: str | None, prompt: str, **options: Any
) -> AsyncIterator[tuple[str, StoryStream]]:
    """Admit, load (off the event loop) and start one generation; yields (spec, stream).

    Raises:
        UnknownModelError, BusyError: Before anything is loaded or generated.
        ConfigError: The request is invalid for this model.
    """
    spec = registry.resolve(model)
    with registry.admit(spec):
        generator: StoryGenerator = await anyio.to_thread.run_sync(registry.get, spec)
        stream = generator.stream(prompt, **options)
        try:
            yield spec, stream
        finally:
            stream.cancel()
            await anyio.to_thread.run_sync(stream.wait)


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
