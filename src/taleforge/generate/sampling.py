"""Choosing the next token from logits, the same way on every backend.

transformers' ``generate`` applies its logits processors in a fixed order (repetition
penalty, no-repeat n-grams, minimum length, then temperature, top-k, top-p, min-p, typical-p)
and samples with ``torch.multinomial``. Backends that compute logits themselves (llama.cpp)
choose tokens here, with the same processors in the same order, so every sampling control
means the same thing on every backend: only the logits differ (by the export's quantization).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taleforge.config import SamplingParams


def logits_processors(
    params: SamplingParams,
    *,
    context_tokens: int,
    min_new_tokens: int,
    eos_ids: Sequence[int],
) -> tuple[Any, Any]:
    """The processors ``generate`` would build for these parameters, in its order, as two
    lists: those that need the whole vocabulary (penalties, bans) and the sampling warpers
    (temperature, top-k, top-p, min-p, typical-p; empty when greedy).

    Args:
        params: Our sampling parameters.
        context_tokens: Tokens in the context the new tokens follow.
        min_new_tokens: New tokens before end-of-sequence is allowed.
        eos_ids: End-of-sequence token ids.
    """
    from transformers import (
        LogitsProcessorList,
        MinNewTokensLengthLogitsProcessor,
        MinPLogitsWarper,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    processors: list[Any] = []
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size))
    if min_new_tokens > 0 and eos_ids:
        processors.append(
            MinNewTokensLengthLogitsProcessor(context_tokens, min_new_tokens, list(eos_ids))
        )
    warpers: list[Any] = []
    if not params.greedy:
        if params.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            warpers.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(params.top_p))
        if params.min_p:
            warpers.append(MinPLogitsWarper(params.min_p))
        if params.typical_p < 1.0:
            warpers.append(TypicalLogitsWarper(params.typical_p))
    return LogitsProcessorList(processors), LogitsProcessorList(warpers)


class TokenChooser:
    """Picks the next tokens of one decoding step from logits (a row per step).

    Args:
        params: Sampling parameters.
        context: The token ids the step starts from (repetition penalty and n-gram bans
            look at them, as in ``generate``).
        min_new_tokens: New tokens before end-of-sequence is allowed in this step.
        eos_ids: End-of-sequence ids.
        rng: A seeded ``torch.Generator`` (one per story, so concurrent stories do not
            disturb each other's randomness).
    """

    def __init__(
        self,
        params: SamplingParams,
        context: Sequence[int],
        *,
        min_new_tokens: int,
        eos_ids: Sequence[int],
        rng: Any,
    ) -> None:
        self.greedy = params.greedy
        self.tokens = list(context)
        self.rng = rng
        self.processors, warpers = logits_processors(
            params, context_tokens=len(context), min_new_tokens=min_new_tokens, eos_ids=eos_ids
        )
        self.temperature = params.temperature
        self.top_k = params.top_k
        # After top-k every other token is -inf (probability 0), so the warpers that follow
        # give the same distribution on the k candidates alone: sorting 50 values instead of
        # a 49,152-token vocabulary is what keeps sampling well under a millisecond.
        self.candidate_warpers = type(warpers)(warpers[2 if params.temperature != 1.0 else 1 :])
        self.warpers = warpers

    def choose(self, logits: Any) -> int:
        """The next token for a 1-D float32 tensor of logits; remembered for later steps."""
        import torch

        scores = logits.reshape(1, -1)
        if self.processors:
            input_ids = torch.tensor([self.tokens], dtype=torch.long)
            scores = self.processors(input_ids, scores)
        if self.greedy:
            token = int(torch.argmax(scores, dim=-1))
        elif self.top_k and self.top_k < scores.shape[-1]:
            if self.temperature != 1.0:
                scores = scores / self.temperature
            values, indices = torch.topk(scores, self.top_k, dim=-1)
            if self.candidate_warpers:
                input_ids = torch.tensor([self.tokens], dtype=torch.long)
                values = self.candidate_warpers(input_ids, values)
            probs = torch.softmax(values, dim=-1)
            pick = int(torch.multinomial(probs, num_samples=1, generator=self.rng))
            token = int(indices[0, pick])
        else:
            input_ids = torch.tensor([self.tokens], dtype=torch.long)
            probs = torch.softmax(self.warpers(input_ids, scores), dim=-1)
            token = int(torch.multinomial(probs, num_samples=1, generator=self.rng))
        self.tokens.append(token)
        return token
