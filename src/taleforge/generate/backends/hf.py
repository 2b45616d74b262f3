"""The reference backend: transformers ``generate`` on the loaded PyTorch model."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from taleforge.generate import decoding
from taleforge.generate.backends.base import (
    Backend,
    DecodeStep,
    OnToken,
    Places,
    ShouldStop,
    top_logprobs,
    wait_for,
)
from taleforge.generate.sampling import logits_processors
from taleforge.models import LoadedModel


class TransformersBackend(Backend):
    """Any model transformers loads; decodes one story at a time per model.

    Seeding uses the process-wide torch generator, so one model decodes one sequence at a
    time (the model's lock); the story's seed is set when it starts.
    """

    name = "transformers"

    def __init__(self, model: LoadedModel) -> None:
        if model.model is None:
            raise ValueError(f"'{model.spec}' was loaded without its PyTorch weights")
        self.model = model
        self.context_length = model.context_length
        eos = model.model.generation_config.eos_token_id
        if eos is None:
            eos = model.tokenizer.eos_token_id
        self.eos_token_ids = frozenset(eos if isinstance(eos, list) else [eos]) - {None}
        self._places = Places(1)

    @contextmanager
    def reserve(self, cancel: threading.Event, hint: Sequence[int] = ()) -> Iterator[Any]:
        # first come, first served among this backend's stories; then the model's own lock
        place = self._places.take(cancel)
        if place is None:
            yield None
            return
        try:
            if not wait_for(self.model.lock, cancel):
                yield None
                return
            try:
                yield self.model.lock
            finally:
                self.model.lock.release()
        finally:
            self._places.give(place)

    def new_rng(self, seed: int) -> Any:
        import torch

        torch.manual_seed(seed)
        return None

    def next_token_logprobs(self, context: Sequence[int], top: int) -> list[tuple[int, float]]:
        import torch

        with self.reserve(threading.Event()), torch.inference_mode():
            logits = self.model.model(input_ids=torch.tensor([list(context)])).logits[0, -1]
            return top_logprobs(logits.float(), top)

    def decode(
        self,
        slot: Any,
        step: DecodeStep,
        rng: Any,
        on_token: OnToken,
        should_stop: ShouldStop,
    ) -> list[int]:
        import torch
        from transformers import LogitsProcessorList

        config = decoding.generation_config(
            step.params,
            max_new_tokens=step.max_new_tokens,
            pad_token_id=step.pad_token_id,
            eos_token_id=list(step.eos_ids) or None,
        )
        # the processors llama.cpp's token chooser uses, so both backends sample alike;
        # XTC draws from torch's global generator, which new_rng seeded
        processors, warpers = logits_processors(
            step.params,
            context_tokens=len(step.context),
            min_new_tokens=step.min_new_tokens,
            eos_ids=step.eos_ids,
            sampler_tokens=step.sampler_tokens,
            earlier_tokens=step.earlier_tokens,
        )
        input_ids = torch.tensor([step.context])
        with torch.inference_mode():
            output = self.model.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                logits_processor=LogitsProcessorList([*processors, *warpers]),
                stopping_criteria=decoding.stopping_criteria(should_stop),
                streamer=decoding.TokenSink(on_token),
            )
        return [int(t) for t in output[0, len(step.context) :].tolist()]
