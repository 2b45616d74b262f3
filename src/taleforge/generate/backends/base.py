"""What a backend does for :class:`~taleforge.generate.StoryGenerator`: turn a context into
new tokens, one at a time, under a sampling configuration.

Everything else (prompt formatting, the sliding window of long stories, stop sequences,
streaming, seeds per story) lives in the generator and is shared by every backend.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from taleforge.config import SamplingParams
from taleforge.errors import ConfigError
from taleforge.generate.vocabulary import SamplerTokens


@dataclass(frozen=True)
class DecodeStep:
    """One call to the model: continue ``context`` by at most ``max_new_tokens`` tokens.

    ``sampler_tokens`` holds the request's logit biases and DRY sequence breakers in token
    ids; ``earlier_tokens`` the tokens the story generated before this step (a story longer
    than the window takes several), which presence and frequency penalties count.
    """

    context: list[int]
    params: SamplingParams
    max_new_tokens: int
    min_new_tokens: int
    eos_ids: tuple[int, ...]
    pad_token_id: int | None
    sampler_tokens: SamplerTokens = field(default_factory=SamplerTokens)
    earlier_tokens: tuple[int, ...] = ()


#: Receives each new token id as soon as it is chosen.
OnToken = Callable[[int], None]
#: Polled between tokens; True ends the step at once (cancel, stop sequence found).
ShouldStop = Callable[[], bool]


class Backend(ABC):
    """An inference engine behind the generator.

    Subclasses set :attr:`name`, :attr:`context_length` and :attr:`eos_token_ids`.
    """

    name: ClassVar[str]
    #: Most tokens the backend attends to (context plus new tokens).
    context_length: int
    #: Tokens that end a story.
    eos_token_ids: frozenset[int]
    #: Stories this backend writes at the same time (more wait in :meth:`reserve`).
    parallel: int = 1

    @abstractmethod
    @contextmanager
    def reserve(self, cancel: threading.Event, hint: Sequence[int] = ()) -> Iterator[Any]:
        """Wait for a place to decode; yields a handle (None when ``cancel`` was set first).

        ``hint`` is the context the first step will read: a backend that keeps state per
        place gives the place that holds most of it.
        """

    @abstractmethod
    def new_rng(self, seed: int) -> Any:
        """Random state for one story, seeded: the same seed gives the same story."""

    @abstractmethod
    def decode(
        self,
        slot: Any,
        step: DecodeStep,
        rng: Any,
        on_token: OnToken,
        should_stop: ShouldStop,
    ) -> list[int]:
        """Generate after ``step.context``; returns the new tokens (an end-of-sequence id
        last when the model ended the story)."""

    def next_token_logprobs(self, context: Sequence[int], top: int) -> list[tuple[int, float]]:
        """The ``top`` likeliest next tokens after ``context`` and their log-probabilities
        in the model's own distribution (before any sampler), likeliest first. Waits for
        the model like a story does."""
        raise ConfigError(f"the {self.name} backend does not show the model's alternatives")

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Free what the backend holds (native memory, threads)."""


def wait_for(lock: threading.Semaphore | threading.Lock, cancel: threading.Event) -> bool:
    """Acquire ``lock``, giving up when ``cancel`` is set; True when acquired."""
    while not lock.acquire(timeout=0.1):
        if cancel.is_set():
            return False
    return True


class Places:
    """``count`` places to decode in, handed out first come, first served.

    A waiter that polls a lock or a queue with a timeout loses its turn every time it wakes
    (the soak saw a p95 wait of 57 s where a round of all writers took 16 s); here each waiter
    holds a ticket, and a freed place goes to the oldest ticket. A waiter may give up
    (``cancel``) without taking a place.
    """

    def __init__(self, count: int) -> None:
        self._ready = threading.Condition()
        self._free = list(range(count))
        self._line: deque[object] = deque()

    def take(
        self, cancel: threading.Event | None = None, score: Callable[[int], int] | None = None
    ) -> int | None:
        """Wait for a place; its number, or None when ``cancel`` was set first.

        Of the free places, the one ``score`` rates highest (what it still holds of this
        request, say), else the one free longest: a place's state is evicted least
        recently used first.
        """
        ticket = object()
        with self._ready:
            self._line.append(ticket)
            try:
                while not (self._free and self._line[0] is ticket):
                    if cancel is not None and cancel.is_set():
                        return None
                    self._ready.wait(timeout=0.1)
                best = 0
                if score is not None:
                    scores = [score(place) for place in self._free]
                    best = scores.index(max(scores))
                return self._free.pop(best)
            finally:
                self._line.remove(ticket)
                self._ready.notify_all()

    @property
    def waiting(self) -> int:
        """Waiters in line."""
        with self._ready:
            return len(self._line)

    def give(self, place: int) -> None:
        """Hand a place back (to the oldest waiter)."""
        with self._ready:
            self._free.append(place)
            self._ready.notify_all()


def top_logprobs(logits: Any, top: int) -> list[tuple[int, float]]:
    """The ``top`` likeliest token ids of one row of logits (a torch tensor) with their
    log-probabilities, likeliest first."""
    import torch

    values, ids = torch.log_softmax(logits.float(), -1).topk(max(1, min(top, logits.shape[-1])))
    return [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
