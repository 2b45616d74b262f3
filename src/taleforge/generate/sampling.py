"""Choosing the next token from logits, the same way on every backend.

transformers' ``generate`` applies its logits processors in a fixed order (repetition
penalty, no-repeat n-grams, minimum length, then temperature, top-k, top-p, min-p, typical-p)
and samples with ``torch.multinomial``. :func:`logits_processors` builds that list, with the
samplers of :mod:`taleforge.generate.samplers` (logit bias, presence and frequency penalties,
DRY, XTC) in their places; the transformers backend gives it to ``generate`` and backends that
compute logits themselves (llama.cpp) choose tokens here with it, so every sampling control
means the same thing on every backend: only the logits differ (by the export's quantization).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taleforge.config import SamplingParams
from taleforge.generate.vocabulary import SamplerTokens


def logits_processors(
    params: SamplingParams,
    *,
    context_tokens: int,
    min_new_tokens: int,
    eos_ids: Sequence[int],
    sampler_tokens: SamplerTokens | None = None,
    earlier_tokens: Sequence[int] = (),
    rng: Any = None,
) -> tuple[Any, Any]:
    """The processors for these parameters, in ``generate``'s order with ours in their places
    (see :mod:`taleforge.generate.samplers`), as two lists: those that need the whole
    vocabulary (bias, penalties, DRY, bans) and the sampling warpers (temperature, top-k,
    top-p, min-p, typical-p, XTC; empty when greedy).

    Args:
        params: Our sampling parameters.
        context_tokens: Tokens in the context the new tokens follow.
        min_new_tokens: New tokens before end-of-sequence is allowed.
        eos_ids: End-of-sequence token ids.
        sampler_tokens: The request's logit biases and DRY sequence breakers in token ids
            (:meth:`~taleforge.generate.vocabulary.SamplerVocabulary.sampler_tokens`);
            default: ``params.logit_bias`` alone (word bias and breakers need the tokenizer).
        earlier_tokens: Tokens the story generated before this context's step (presence
            and frequency penalties count them).
        rng: The story's ``torch.Generator`` for XTC's draws (None: torch's global one).
    """
    from transformers import (
        LogitsProcessorList,
        MinPLogitsWarper,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    from taleforge.generate import samplers

    tokens = sampler_tokens or SamplerTokens(bias=dict(params.logit_bias))
    processors: list[Any] = []
    if tokens.bias:
        processors.append(samplers.LogitBias(tokens.bias))
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.presence_penalty or params.frequency_penalty:
        processors.append(
            samplers.PresenceFrequencyPenalty(
                params.presence_penalty,
                params.frequency_penalty,
                context_tokens=context_tokens,
                earlier_tokens=earlier_tokens,
            )
        )
    if params.dry_multiplier > 0 and params.dry_penalty_last_n != 0:
        processors.append(
            samplers.DRY(
                params.dry_multiplier,
                params.dry_base,
                params.dry_allowed_length,
                params.dry_penalty_last_n,
                tokens.sequence_breakers,
            )
        )
    if params.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size))
    if min_new_tokens > 0 and eos_ids:
        processors.append(samplers.MinNewTokens(context_tokens, min_new_tokens, eos_ids))
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
        if params.xtc_probability > 0:
            warpers.append(
                samplers.ExcludeTopChoices(params.xtc_threshold, params.xtc_probability, rng)
            )
    return LogitsProcessorList(processors), LogitsProcessorList(warpers)


class TokenChooser:
    """Picks the next tokens of one decoding step from logits (a row per step).

    Args:
        params: Sampling parameters.
        context: The token ids the step starts from (repetition penalty, DRY and n-gram
            bans look at them, as in ``generate``).
        min_new_tokens: New tokens before end-of-sequence is allowed in this step.
        eos_ids: End-of-sequence ids.
        rng: A seeded ``torch.Generator`` (one per story, so concurrent stories do not
            disturb each other's randomness); XTC draws from it too.
        sampler_tokens: Logit biases and DRY sequence breakers in token ids.
        earlier_tokens: Tokens the story generated before this step.
    """

    def __init__(
        self,
        params: SamplingParams,
        context: Sequence[int],
        *,
        min_new_tokens: int,
        eos_ids: Sequence[int],
        rng: Any,
        sampler_tokens: SamplerTokens | None = None,
        earlier_tokens: Sequence[int] = (),
    ) -> None:
        self.greedy = params.greedy
        self.tokens = list(context)
        self.rng = rng
        processors, warpers = logits_processors(
            params,
            context_tokens=len(context),
            min_new_tokens=min_new_tokens,
            eos_ids=eos_ids,
            sampler_tokens=sampler_tokens,
            earlier_tokens=earlier_tokens,
            rng=rng,
        )
        self.temperature = params.temperature
        self.top_k = params.top_k
        # After top-k every other token is -inf (probability 0), so the warpers that follow
        # (XTC included: its probabilities are the same) give the same distribution on the
        # k candidates alone: sorting 50 values instead of a 49,152-token vocabulary is what
        # keeps sampling well under a millisecond. Penalties and biases come before top-k and
        # still see the whole vocabulary.
        self.candidate_warpers = list(warpers[2 if params.temperature != 1.0 else 1 :])
        self.warpers = list(warpers)
        self.processors = list(processors)

    @property
    def tokens(self) -> list[int]:
        """The step's context and the tokens chosen since."""
        return list(self._ids[0, : self._length].tolist())

    @tokens.setter
    def tokens(self, tokens: Sequence[int]) -> None:
        import torch

        # The processors read them as a tensor at every token: kept as one (a view of a
        # buffer that doubles when full) rather than made from a list of the whole context.
        self._ids = torch.tensor([list(tokens)], dtype=torch.long)
        self._length = len(tokens)

    def _remember(self, token: int) -> None:
        import torch

        if self._length == self._ids.shape[1]:
            grown = torch.empty((1, max(16, 2 * self._length)), dtype=torch.long)
            grown[:, : self._length] = self._ids[:, : self._length]
            self._ids = grown
        self._ids[0, self._length] = token
        self._length += 1

    def choose(self, logits: Any) -> int:
        """The next token for a 1-D float32 tensor of logits; remembered for later steps."""
        import torch

        scores = logits.reshape(1, -1)
        input_ids = self._ids[:, : self._length]
        # each processor in turn, as LogitsProcessorList does (without inspecting every
        # processor's signature at every token, a tenth of sampling's time)
        for processor in self.processors:
            scores = processor(input_ids, scores)
        if self.greedy:
            # numpy's argmax: the same first largest index, 25x faster than torch's here
            token = int(scores.numpy().argmax())
        elif self.top_k and self.top_k < scores.shape[-1]:
            values, indices = torch.topk(scores, self.top_k, dim=-1)
            if self.temperature != 1.0:
                # the same quotients as dividing every logit first, on k of them
                values = values / self.temperature
            for warper in self.candidate_warpers:
                values = warper(input_ids, values)
            probs = torch.softmax(values, dim=-1)
            pick = int(torch.multinomial(probs, num_samples=1, generator=self.rng))
            token = int(indices[0, pick])
        else:
            for warper in self.warpers:
                scores = warper(input_ids, scores)
            probs = torch.softmax(scores, dim=-1)
            token = int(torch.multinomial(probs, num_samples=1, generator=self.rng))
        self._remember(token)
        return token
