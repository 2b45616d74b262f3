"""The optimized CPU backend: llama.cpp (through llama-cpp-python) on a GGUF export.

Chosen by measurement (``benchmarks/generate.py``, ``docs/backends.md``): on two cores it
writes about 5x the tokens per second of transformers in float32, and batches
concurrent stories. llama.cpp computes the logits; the token is chosen by
:mod:`taleforge.generate.sampling`, with transformers' own processors, so every sampling
control means what it means on the transformers backend.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taleforge.errors import ConfigError
from taleforge.generate.backends.base import Backend, DecodeStep, OnToken, Places, ShouldStop
from taleforge.generate.backends.llama_engine import LlamaEngine, Sequence
from taleforge.generate.sampling import TokenChooser
from taleforge.models.export import KEY_CONTEXT, KEY_EOS, read_gguf_info

#: Context tokens per story on llama.cpp unless configured.
DEFAULT_CONTEXT = 2048
#: KV-cache tokens shared out among the parallel stories unless a context length is given:
#: 8192 tokens of SmolLM2-135M take 180 MB, which keeps a server with 8 parallel stories
#: (1024 tokens each; longer stories slide their window) under 1 GB.
KV_BUDGET = 8192


def llama_cpp_missing() -> str | None:
    """Why llama.cpp cannot be used here, or None when it can."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return (
            "llama-cpp-python is not installed (`make setup` builds it; or "
            "`pip install 'taleforge[llama]'` with CMAKE_ARGS as in the Makefile)"
        )
    except OSError as exc:  # the shared library does not load on this CPU
        return f"llama-cpp-python does not load here: {exc}"
    return None


class LlamaCppBackend(Backend):
    """llama.cpp on a GGUF file; up to ``parallel`` stories decoded in one batch.

    Args:
        path: The GGUF export (``taleforge export --format gguf``).
        parallel: Stories written at the same time; more wait for a place.
        context_length: Tokens of context per story (default: 2048 shared out so that all
            stories hold at most 8192 tokens, at least 512 each; capped by the model's window).
            KV-cache memory grows with ``parallel`` x this.
        threads: CPU threads (default: all cores).
        context_shift: Move cached keys instead of re-reading them where the model allows
            (see ``model.context_shift``).
    """

    name = "llama.cpp"

    def __init__(
        self,
        path: Path,
        *,
        parallel: int = 8,
        context_length: int | None = None,
        threads: int | None = None,
        context_shift: bool = True,
    ) -> None:
        missing = llama_cpp_missing()
        if missing:
            raise ConfigError(f"the llama.cpp backend is not available: {missing}")
        if parallel < 1:
            raise ConfigError(f"parallel must be at least 1 (got {parallel})")
        info = read_gguf_info(path)
        window = int(info.get(KEY_CONTEXT) or DEFAULT_CONTEXT)
        self.path = path
        self.parallel = parallel
        default = min(DEFAULT_CONTEXT, max(512, KV_BUDGET // parallel))
        self.context_length = min(window, context_length or default)
        self.eos_token_ids = frozenset(int(t) for t in info.get(KEY_EOS) or ())
        self.engine = LlamaEngine(
            path,
            slots=parallel,
            context_per_slot=self.context_length,
            threads=threads or os.cpu_count() or 1,
            context_shift=context_shift,
        )
        self._places = Places(parallel)

    @contextmanager
    def reserve(self, cancel: threading.Event, hint: Seq[int] = ()) -> Iterator[Any]:
        # First come, first served. Of the free slots, the one whose cache serves most of the
        # context when that is at least half of it (a Continue, a Retry, the same story
        # again); else the one unused longest, so that a header every story shares does not
        # make a new story evict another's cache while a slot is empty or older.
        context = list(hint)

        def serves(slot: int) -> int:
            reused = self.engine.reusable(slot, context)
            return reused if 2 * reused >= len(context) else 0

        slot = self._places.take(cancel, serves if context else None)
        if slot is None:
            yield None
            return
        try:
            yield slot
        finally:
            self._places.give(slot)

    def new_rng(self, seed: int) -> Any:
        import torch

        return torch.Generator().manual_seed(seed)

    def decode(
        self,
        slot: Any,
        step: DecodeStep,
        rng: Any,
        on_token: OnToken,
        should_stop: ShouldStop,
    ) -> list[int]:
        chooser = TokenChooser(
            step.params,
            step.context,
            min_new_tokens=step.min_new_tokens,
            eos_ids=step.eos_ids,
            rng=rng,
            sampler_tokens=step.sampler_tokens,
            earlier_tokens=step.earlier_tokens,
        )
        sequence = Sequence(
            slot=slot,
            context=list(step.context),
            chooser=chooser,
            max_new_tokens=step.max_new_tokens,
            eos_ids=frozenset(step.eos_ids),
            on_token=on_token,
            should_stop=should_stop,
        )
        self.engine.submit(sequence)
        while True:
            try:
                item = sequence.out.get(timeout=0.05)
            except queue.Empty:
                if should_stop() and not sequence.cancelled.is_set():
                    # cancelled while the prompt is still being read: the engine drops the
                    # sequence at its next step and answers END (no token after this one).
                    sequence.cancelled.set()
                continue
            if isinstance(item, BaseException):
                raise item
            return list(sequence.tokens)

    @contextmanager
    def _whole_model(self) -> Iterator[None]:
        """Every place at once: the engine's slot 0 is then free for scoring a text."""
        slots = [self._places.take() for _ in range(self.parallel)]
        try:
            yield
        finally:
            for slot in slots:
                self._places.give(slot)  # type: ignore[arg-type]  # never None without cancel

    def next_token_logprobs(self, context: Any, top: int) -> list[tuple[int, float]]:
        with self._whole_model():
            return self.engine.next_token_logprobs(list(context), top)

    def token_logprobs(self, tokens: list[int]) -> list[float]:
        """Log-probabilities of ``tokens[1:]`` (for perplexity); waits for a free model."""
        with self._whole_model():
            return self.engine.token_logprobs(tokens)

    def close(self) -> None:
        self.engine.close()
