"""Batched decoding on llama.cpp: many stories share one model and one forward pass per token.

One engine thread owns a llama.cpp context with a KV-cache sequence (and buffer) per slot.
Each loop it puts into a single batch the next token of every story being written and the
next chunk of every new context (prompt processing), runs one ``llama_decode``, and chooses
each story's next token from its logits. The weights are read from memory once per pass, so
on two cores a pass over 8 tokens costs about 2.8x one over a single token (39 vs 14 ms
measured): 8 streams write more tokens per second than one, and every story gets one token
per loop.

A slot keeps the tokens its KV cache holds, and a new context re-reads only what it cannot
find there (:func:`reuse_plan`): the common prefix (the header, the next story of the same
request) stays, and on models with rotary positions the chunks of the cache that reappear
further on are moved into place (a window that slid, a Continue after the author's note
moved) instead of being read again, as llama-server's ``--cache-reuse`` does.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taleforge.errors import ModelLoadError, TaleforgeError
from taleforge.generate.sampling import TokenChooser

log = logging.getLogger(__name__)

#: Ends a sequence's token queue.
END = object()


#: Fewest tokens of a cached chunk moved into place rather than read again (smaller
#: matches are mostly coincidences, and reading them is cheap).
REUSE_MIN_CHUNK = 16


@dataclass(frozen=True)
class ReusePlan:
    """How a slot's cache becomes a new context: keep ``common`` tokens, move each chunk
    ``(cached_at, context_at, length)`` to its place in the new context (in order), read the
    rest (``reused`` tokens come from the cache in all)."""

    common: int
    moves: tuple[tuple[int, int, int], ...]

    @property
    def reused(self) -> int:
        return self.common + sum(length for _, _, length in self.moves)


def reuse_plan(
    cached: list[int], context: list[int], *, shift: bool, min_chunk: int = REUSE_MIN_CHUNK
) -> ReusePlan:
    """What of ``cached`` (a slot's KV cache, from position 0) serves ``context``.

    The common prefix always; with ``shift`` (rotary positions, whose keys can be moved)
    also every later run of at least ``min_chunk`` tokens that ``context`` continues with,
    found greedily left to right (llama-server's cache reuse). The context's last token is
    always read again: its logits choose the next token.

    A moved chunk keeps the keys and values it was computed with, after tokens that the new
    context may no longer have before it (the start of a slid window, an author's note that
    moved): the model's attention then sees those tokens' trace. That is what llama.cpp's
    context shift does; the tests check it writes the story a full re-read writes.
    """
    limit = len(context) - 1
    common = 0
    bound = min(len(cached), limit)
    while common < bound and cached[common] == context[common]:
        common += 1
    moves: list[tuple[int, int, int]] = []
    if shift:
        at_cache = at_context = common
        while at_cache < len(cached) and at_context < limit:
            length = 0
            while (
                at_cache + length < len(cached)
                and at_context + length < limit
                and cached[at_cache + length] == context[at_context + length]
            ):
                length += 1
            if length >= min_chunk:
                moves.append((at_cache, at_context, length))
                at_cache += length
                at_context += length
            else:
                at_cache += 1
    return ReusePlan(common, tuple(moves))


class BackendError(TaleforgeError, RuntimeError):
    """llama.cpp failed while decoding."""


class _Native:
    """The llama.cpp objects of an engine, freed once: by ``close()`` or at interpreter exit
    (freeing them during interpreter teardown, or under a running decode, aborts)."""

    def __init__(self) -> None:
        self.objects: list[Any] = []  # model, context, batch: freed in reverse order
        self.thread: threading.Thread | None = None

    def free(self) -> None:
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        while self.objects:
            self.objects.pop().close()


@dataclass(eq=False)
class Sequence:
    """One decoding step of one story, as the engine sees it.

    ``on_token`` and ``should_stop`` run in the engine thread, between forward passes: a
    thread per story woken for every token would compete with llama.cpp's threads for the
    cores while they compute (and llama.cpp's threads wait for each other at every layer).
    """

    slot: int
    context: list[int]
    chooser: TokenChooser
    max_new_tokens: int
    eos_ids: frozenset[int]
    on_token: Callable[[int], None]
    should_stop: Callable[[], bool]
    #: The new token ids, in order.
    tokens: list[int] = field(default_factory=list)
    #: Receives END when the sequence is finished, or the exception that ended it.
    out: queue.Queue[Any] = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    pending: list[int] = field(default_factory=list)


class LlamaEngine:
    """A llama.cpp model and context that decodes up to ``slots`` sequences together.

    Args:
        path: The GGUF file.
        slots: Sequences decoded together (KV-cache sequences).
        context_per_slot: Tokens of context each sequence may hold.
        threads: CPU threads for llama.cpp.
        batch_tokens: Most tokens in one forward pass (long contexts are split).
        context_shift: Move cached chunks to new positions where the model allows it
            (:func:`reuse_plan`); False: reuse the common prefix only.
    """

    def __init__(
        self,
        path: Path,
        *,
        slots: int,
        context_per_slot: int,
        threads: int,
        batch_tokens: int = 512,
        context_shift: bool = True,
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals

        # llama-cpp-python maps llama.cpp's warnings to ERROR; failures reach us as return
        # codes, so its log is shown only when taleforge's is at DEBUG.
        logging.getLogger("llama-cpp-python").setLevel(
            logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL
        )
        llama_cpp.llama_backend_init()
        self._native = _Native()
        self._free_native = weakref.finalize(self, self._native.free)
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        try:
            # verbose=True: llama.cpp logs go through the logger above; False would
            # redirect the process's stdout and stderr while other threads write to them.
            self._model = _internals.LlamaModel(
                path_model=str(path), params=model_params, verbose=True
            )
        except ValueError as exc:
            raise ModelLoadError(
                f"llama.cpp cannot load {path} ({exc}); the file is damaged or from another "
                "llama.cpp version: delete it and run `taleforge export --format gguf --force`"
            ) from None
        self._native.objects.append(self._model)
        self.slots = slots
        self.context_per_slot = context_per_slot
        self.batch_tokens = batch_tokens
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = slots * context_per_slot
        params.n_batch = batch_tokens
        params.n_ubatch = batch_tokens
        params.n_seq_max = slots
        params.n_threads = threads
        params.n_threads_batch = threads
        # A KV buffer per slot, as llama-server has by default: a story's attention and a
        # KV shift then span its own cells only, not every idle slot's cached context. Such
        # a batch is computed in one ubatch only when its sequences come in slot order (see
        # _step); out of order, llama.cpp split it per sequence and 8 streams wrote 56-81
        # tokens/s through the server. In order, against one buffer for all: 8 streams 0.90x
        # llama-server's tokens/s instead of 0.81x, 1 stream 0.93x instead of 0.89x (one
        # interleaved run each). Each story holds at most context_per_slot tokens (the
        # generator slides its window), which is each buffer's size.
        params.kv_unified = False
        params.no_perf = True
        try:
            self._context = _internals.LlamaContext(model=self._model, params=params, verbose=True)
        except ValueError as exc:
            raise BackendError(f"llama.cpp cannot create a context: {exc}") from None
        self._native.objects.append(self._context)
        self._batch = _internals.LlamaBatch(n_tokens=batch_tokens, embd=0, n_seq_max=1)
        self._native.objects.append(self._batch)
        self.n_vocab = int(self._model.n_vocab())
        memory = llama_cpp.llama_get_memory(self._context.ctx)
        #: Cached keys can move to new positions (rotary models; GPT-2's learned positions
        #: are part of every key and cannot).
        self.can_shift = bool(
            context_shift
            and llama_cpp.llama_model_rope_type(self._model.model) != llama_cpp.LLAMA_ROPE_TYPE_NONE
            and llama_cpp.llama_memory_can_shift(memory)
        )
        #: Context tokens read from the cache instead of computed, since the start.
        self.reused_tokens = 0
        self._cached: list[list[int]] = [[] for _ in range(slots)]
        self._incoming: list[Sequence] = []
        self._active: list[Sequence] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- the consumer side --------------------------------------------------------------------

    def submit(self, sequence: Sequence) -> None:
        """Queue a sequence; its tokens arrive on ``sequence.out``."""
        if len(sequence.context) >= self.context_per_slot:
            raise BackendError(
                f"context of {len(sequence.context)} tokens does not fit the "
                f"{self.context_per_slot}-token window of a llama.cpp slot"
            )
        with self._cond:
            if self._closed:
                raise BackendError("the llama.cpp engine was closed")
            self._incoming.append(sequence)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="taleforge-llama", daemon=True
                )
                self._native.thread = self._thread
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        """Free the context and the model once no sequence runs (later submits fail)."""
        with self._cond:
            self._closed = True
        self._free_native()

    # -- the engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._admit()
                if not self._active:
                    self._thread = None
                    return
            try:
                self._step()
            except BaseException as exc:  # handed to every consumer, never lost in the thread
                for sequence in self._active:
                    self._forget(sequence.slot)
                    sequence.out.put(exc)
                self._active = []

    def _admit(self) -> None:
        """Drop cancelled sequences, start new ones (called under the condition's lock)."""

        for sequence in [s for s in self._active if s.cancelled.is_set()]:
            self._finish(sequence)
        for sequence in self._incoming:
            for old in [s for s in self._active if s.slot == sequence.slot]:
                self._finish(old)  # its story moved on (cancelled, stopped)
            kept = self._reuse(sequence.slot, sequence.context)
            sequence.pending = list(sequence.context[kept:])
            self._active.append(sequence)
        self._incoming = []

    def reusable(self, slot: int, context: list[int]) -> int:
        """Tokens of ``context`` that ``slot``'s cache would serve (for choosing a slot)."""
        return reuse_plan(self._cached[slot], context, shift=self.can_shift).reused

    def _reuse(self, slot: int, context: list[int]) -> int:
        """Arrange ``slot``'s cache as the start of ``context`` (see :func:`reuse_plan`);
        returns how many of its tokens it holds."""
        import llama_cpp

        cached = self._cached[slot]
        plan = reuse_plan(cached, context, shift=self.can_shift)
        memory = llama_cpp.llama_get_memory(self._context.ctx)
        kept = plan.common
        for cached_at, context_at, length in plan.moves:
            # drop the cells between, then move the chunk down to where the context has it
            if not llama_cpp.llama_memory_seq_rm(memory, slot, kept, cached_at):
                break
            llama_cpp.llama_memory_seq_add(
                memory, slot, cached_at, cached_at + length, context_at - cached_at
            )
            kept = context_at + length
        if not llama_cpp.llama_memory_seq_rm(memory, slot, kept, -1):
            llama_cpp.llama_memory_seq_rm(memory, slot, -1, -1)
            kept = 0
        self._cached[slot] = list(context[:kept])
        self.reused_tokens += kept
        return kept

    def _finish(self, sequence: Sequence) -> None:
        sequence.out.put(END)
        self._active.remove(sequence)

    def _forget(self, slot: int) -> None:
        import llama_cpp

        memory = llama_cpp.llama_get_memory(self._context.ctx)
        llama_cpp.llama_memory_seq_rm(memory, slot, -1, -1)
        self._cached[slot] = []

    def _step(self) -> None:
        """One forward pass: a token of every decoding sequence, chunks of new contexts."""
        import llama_cpp
        import numpy as np
        import torch

        batch = self._batch.batch
        batch.n_tokens = 0
        wants_logits: list[Sequence] = []  # in batch order
        budget = self.batch_tokens
        # Decoding sequences first (one token each), so prompt processing never starves them;
        # in slot order, which lets llama.cpp compute the slots' KV buffers in one ubatch.
        ordered = sorted(self._active, key=lambda s: (len(s.pending) > 1, s.slot))
        for sequence in ordered:
            if budget == 0:
                break
            take = sequence.pending[:budget]
            cached = self._cached[sequence.slot]
            for offset, token in enumerate(take):
                at = batch.n_tokens
                batch.token[at] = token
                batch.pos[at] = len(cached) + offset
                batch.seq_id[at][0] = sequence.slot
                batch.n_seq_id[at] = 1
                batch.logits[at] = False
                batch.n_tokens += 1
            cached.extend(take)
            del sequence.pending[: len(take)]
            budget -= len(take)
            if not sequence.pending:
                batch.logits[batch.n_tokens - 1] = True
                wants_logits.append(sequence)
        status = llama_cpp.llama_decode(self._context.ctx, batch)
        if status != 0:
            raise BackendError(
                f"llama.cpp could not decode (status {status}); the story was stopped"
            )
        if not wants_logits:
            return
        # Every row of logits of this pass at once (llama_get_logits: the outputs in batch
        # order), copied in one go: a numpy view per row cost a new ctypes type each.
        rows = torch.from_numpy(
            np.ctypeslib.as_array(
                llama_cpp.llama_get_logits(self._context.ctx),
                shape=(len(wants_logits), self.n_vocab),
            ).copy()
        )
        for row, sequence in enumerate(wants_logits):
            if sequence.cancelled.is_set():
                continue  # dropped with END at the next step
            token = sequence.chooser.choose(rows[row])
            sequence.tokens.append(token)
            try:
                sequence.on_token(token)
                stop = sequence.should_stop()
            except BaseException as exc:  # the consumer's error ends its sequence only
                with self._cond:
                    self._active.remove(sequence)
                sequence.out.put(exc)
                continue
            if stop or token in sequence.eos_ids or len(sequence.tokens) >= sequence.max_new_tokens:
                with self._cond:
                    self._finish(sequence)
            else:
                sequence.pending = [token]

    # -- scoring (perplexity) ---------------------------------------------------------------

    def _read(self, chunk: list[int], start: int, logits: Callable[[int], bool]) -> None:
        """Decode ``chunk`` (positions from ``start``) into slot 0's sequence, keeping the
        logits of the positions ``logits`` names."""
        import llama_cpp

        batch = self._batch.batch
        batch.n_tokens = len(chunk)
        for offset, token in enumerate(chunk):
            batch.token[offset] = token
            batch.pos[offset] = start + offset
            batch.seq_id[offset][0] = 0
            batch.n_seq_id[offset] = 1
            batch.logits[offset] = logits(start + offset)
        if llama_cpp.llama_decode(self._context.ctx, batch) != 0:
            raise BackendError("llama.cpp could not read the text")

    def next_token_logprobs(self, tokens: list[int], top: int) -> list[tuple[int, float]]:
        """The ``top`` likeliest tokens after ``tokens`` (log-probabilities, before any
        sampler). Runs on slot 0 outside the engine thread: call it only while no story is
        written (the backend holds every place)."""
        import llama_cpp
        import numpy as np
        import torch

        from taleforge.generate.backends.base import top_logprobs

        if not tokens or len(tokens) > self.context_per_slot:
            raise BackendError(f"{len(tokens)} tokens: give 1 to {self.context_per_slot}")
        self._forget(0)
        try:
            last = len(tokens) - 1
            for start in range(0, len(tokens), self.batch_tokens):
                chunk = tokens[start : start + self.batch_tokens]
                self._read(chunk, start, lambda position: position == last)
            pointer = llama_cpp.llama_get_logits_ith(self._context.ctx, len(chunk) - 1)
            row = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()
        finally:
            self._forget(0)
        return top_logprobs(torch.from_numpy(row), top)

    def token_logprobs(self, tokens: list[int]) -> list[float]:
        """Log-probability of each token after the first given the ones before it.

        Runs on slot 0 outside the engine thread: call it only while no story is written.
        """
        import llama_cpp
        import numpy as np
        import torch

        if len(tokens) > self.context_per_slot:
            raise BackendError(f"{len(tokens)} tokens exceed the window {self.context_per_slot}")
        self._forget(0)
        scores: list[float] = []
        for start in range(0, len(tokens), self.batch_tokens):
            chunk = tokens[start : start + self.batch_tokens]
            self._read(chunk, start, lambda position: True)
            pointer = llama_cpp.llama_get_logits(self._context.ctx)
            rows = np.ctypeslib.as_array(pointer, shape=(len(chunk), self.n_vocab))
            targets = tokens[start + 1 : start + len(chunk) + 1]
            logprobs = torch.log_softmax(torch.from_numpy(rows[: len(targets)].copy()), -1)
            picked = logprobs.gather(1, torch.tensor(targets)[:, None])
            scores.extend(picked.flatten().tolist())
        self._forget(0)
        return scores
