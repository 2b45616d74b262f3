"""Which models the server offers, loaded lazily, a bounded number kept in memory.

Loading a model takes seconds; it happens under a lock of that model only, so users of
other models keep generating. Every request is admitted against a per-model bound (one
generating plus ``max_waiting`` queued): past it the answer is "busy", never an unbounded
queue. Of the admitted requests, the backend writes ``model.parallel`` at once on llama.cpp
(batched, one token each per forward pass) and one at a time on transformers. A model
evicted from memory while requests still use it finishes those first (they hold their own
reference). With ``model.backend = "remote"`` a "model" is a client of an OpenAI-compatible
server, which does the batching; only the configured models are offered.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taleforge.config import TaleforgeConfig
from taleforge.errors import TaleforgeError
from taleforge.generate import StoryGenerator
from taleforge.models import EMBEDDED_SPEC, STORY_MODEL_SPEC, LoadedModel, list_models

if TYPE_CHECKING:
    from taleforge.serve.cache import GenerationCache

log = logging.getLogger(__name__)


class UnknownModelError(TaleforgeError, LookupError):
    """A request named a model this server does not offer."""


class BusyError(TaleforgeError):
    """Too many requests are waiting for a model; the client should retry later."""


@dataclass(frozen=True)
class ModelInfo:
    """A model the server offers."""

    id: str
    kind: str  # default, embedded, run, configured
    description: str
    loaded: bool


class ModelRegistry:
    """Loads offered models on first use and keeps the ``max_loaded`` most recent."""

    def __init__(
        self,
        config: TaleforgeConfig,
        loader: Callable[[str], LoadedModel] | None = None,
    ) -> None:
        self.config = config
        #: What a request leaves out is written with: the config's ``[sampling]``, its length
        #: within the most a request may ask for (``serve.max_new_tokens``).
        limit = config.serve.max_new_tokens
        self.sampling = config.sampling.model_copy(
            update={
                "max_new_tokens": min(config.sampling.max_new_tokens, limit),
                "min_new_tokens": min(config.sampling.min_new_tokens, limit),
            }
        )
        self.default = config.model.spec
        #: A custom loader (tests) runs on transformers; by default the configured backend.
        self._loader = loader
        self._loaded: OrderedDict[str, StoryGenerator] = OrderedDict()
        self._guard = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._in_flight: dict[str, int] = {}
        #: Seeded generations answered again without the model (set by ``AppContext.build``).
        self.cache: GenerationCache | None = None

    # -- what is offered ---------------------------------------------------------------------

    def offered(self) -> list[ModelInfo]:
        """The default model first, then the embedded base, configured specs, trained runs."""
        serve = self.config.serve
        entries: dict[str, tuple[str, str]] = {self.default: ("default", "the default model")}
        # A remote backend offers what was configured; local models would be asked of the
        # remote server under names it does not know.
        local = self.config.model.backend != "remote"
        for spec, kind, text in (
            (STORY_MODEL_SPEC, "default", "taleforge's story model (LoRA of smollm2-135m)"),
            (EMBEDDED_SPEC, "embedded", "SmolLM2-135M-Instruct, the embedded base model"),
        ):
            if local:
                entries.setdefault(spec, (kind, text))
        for spec in serve.models:
            entries.setdefault(spec, ("configured", "configured with --serve.models"))
        runs = Path(serve.runs_dir)
        for entry in list_models(runs) if local else []:
            in_runs = entry.path is not None and Path(entry.path).is_relative_to(runs)
            if entry.kind in ("adapter", "local") and in_runs:
                entries.setdefault(entry.spec, ("run", f"trained run ({entry.kind})"))
        with self._guard:
            loaded = set(self._loaded)
        return [
            ModelInfo(spec, kind, text, spec in loaded) for spec, (kind, text) in entries.items()
        ]

    def resolve(self, name: str | None) -> str:
        """The spec of a requested model name (None or "" = the default).

        Raises:
            UnknownModelError: The name is not offered here (paths are never loaded on
                request: only what ``offered`` lists).
        """
        if not name or name == "default":
            return self.default
        ids = [info.id for info in self.offered()]
        if name in ids:
            return name
        raise UnknownModelError(
            f"model '{name[:200]}' is not served here: use one of {', '.join(ids)} "
            "(GET /api/models lists them)"
        )

    # -- loading -----------------------------------------------------------------------------

    def get(self, name: str | None = None) -> StoryGenerator:
        """The generator of a model, loading it if needed (other models stay usable)."""
        spec = self.resolve(name)
        with self._guard:
            generator = self._loaded.get(spec)
            if generator is not None:
                self._loaded.move_to_end(spec)
                return generator
            lock = self._load_locks.setdefault(spec, threading.Lock())
        with lock:  # one load per model; loads of different models run side by side
            with self._guard:
                generator = self._loaded.get(spec)
            if generator is None:
                log.info("loading model %s", spec)
                if self._loader is not None:
                    generator = StoryGenerator(self._loader(spec), sampling=self.sampling)
                else:
                    update: dict[str, Any] = {"spec": spec}
                    if spec != self.default:  # remote_model names the default model only
                        update["remote_model"] = None
                    model = self.config.model.model_copy(update=update)
                    generator = StoryGenerator.from_config(model, sampling=self.sampling)
            with self._guard:
                self._loaded[spec] = generator
                self._loaded.move_to_end(spec)
                while len(self._loaded) > self.config.serve.max_loaded_models:
                    evicted, _ = self._loaded.popitem(last=False)
                    log.info("unloaded model %s (%d kept)", evicted, len(self._loaded))
            return generator

    def tokenizer(self, name: str | None) -> Any | None:
        """The tokenizer of a model if it is in memory (None otherwise: nothing is loaded)."""
        try:
            spec = self.resolve(name)
        except UnknownModelError:
            return None
        with self._guard:
            generator = self._loaded.get(spec)
        return generator.model.tokenizer if generator is not None else None

    @property
    def loaded(self) -> list[str]:
        with self._guard:
            return list(self._loaded)

    # -- admission ---------------------------------------------------------------------------

    @contextmanager
    def admit(self, spec: str) -> Iterator[None]:
        """Hold a place for one request on ``spec``, or raise :class:`BusyError`."""
        limit = 1 + self.config.serve.max_waiting
        with self._guard:
            if self._in_flight.get(spec, 0) >= limit:
                raise BusyError(
                    f"the server is busy: {limit} requests are already using '{spec}'; "
                    "try again in a few seconds"
                )
            self._in_flight[spec] = self._in_flight.get(spec, 0) + 1
        try:
            yield
        finally:
            with self._guard:
                self._in_flight[spec] -= 1

    @property
    def active_requests(self) -> int:
        """Requests admitted and not finished (generating or waiting), over all models."""
        with self._guard:
            return sum(self._in_flight.values())
