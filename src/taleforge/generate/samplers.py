"""Samplers for fiction that transformers lacks: logit bias, presence and frequency penalties,
DRY and XTC, each a transformers ``LogitsProcessor``.

One implementation serves both backends: :func:`taleforge.generate.sampling.logits_processors`
builds them, the transformers backend hands that list to ``generate`` and llama.cpp's
:class:`~taleforge.generate.sampling.TokenChooser` calls it. The order is llama.cpp's (logit
bias first, then penalties, then DRY) with transformers' warpers, and XTC last, after the
truncation samplers, as text-generation-webui's default sampler priority puts it::

    logit bias -> repetition penalty -> presence/frequency -> DRY -> no-repeat n-grams
    -> minimum length -> temperature -> top-k -> top-p -> min-p -> typical-p -> XTC

(llama.cpp runs XTC before temperature; here it sees the temperature-scaled
probabilities, as in text-generation-webui.) Every processor returns a new tensor and leaves
its input alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

#: log(largest float32): llama.cpp caps DRY's exponent so that base^exponent stays finite.
_FLOAT32_MAX_LOG = 88.7228391


class LogitBias(LogitsProcessor):
    """Add a fixed bias to the logits of some tokens (OpenAI's ``logit_bias``).

    Args:
        bias: Token id -> value added to its logit (-100 bans, 100 all but forces).
    """

    def __init__(self, bias: Mapping[int, float]) -> None:
        self.ids = torch.tensor(list(bias), dtype=torch.long)
        self.values = torch.tensor(list(bias.values()), dtype=torch.float32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        biased = scores.clone()
        biased[:, self.ids] += self.values.to(scores.dtype)
        return biased


class MinNewTokens(LogitsProcessor):
    """No end of sequence before ``min_new_tokens`` new tokens: transformers'
    ``MinNewTokensLengthLogitsProcessor``, without the comparison of the whole vocabulary
    with the end ids that it makes at every token (0.3 ms of a 13 ms token on llama.cpp).

    Args:
        context_tokens: Tokens before the new ones.
        min_new_tokens: New tokens before an end is allowed.
        eos_ids: End-of-sequence ids.
    """

    def __init__(self, context_tokens: int, min_new_tokens: int, eos_ids: Sequence[int]) -> None:
        self.context_tokens = context_tokens
        self.min_new_tokens = min_new_tokens
        self.eos_ids = torch.tensor(list(eos_ids), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        if input_ids.shape[-1] - self.context_tokens >= self.min_new_tokens:
            return scores.clone()
        return scores.index_fill(1, self.eos_ids.to(scores.device), -math.inf)


class PresenceFrequencyPenalty(LogitsProcessor):
    """OpenAI's presence and frequency penalties:
    ``logit[j] -= frequency * count[j] + presence * (count[j] > 0)``.

    ``count[j]`` is how often the story has generated token ``j`` so far, as OpenAI defines
    it ("how often the token was sampled prior to the current position", in its API
    reference's parameter details) and vLLM implements it: the prompt, and in continue mode
    the writer's own opening, do not count. (llama.cpp's ``llama_sampler_penalties`` counts
    the last ``penalty_last_n`` tokens, prompt included; text-generation-webui counts the
    last ``repetition_penalty_range``.) A story longer than the context window counts its
    tokens that left the window too.

    Args:
        presence: Subtracted once from every generated token's logit (-2 to 2).
        frequency: Subtracted per occurrence (-2 to 2).
        context_tokens: The tokens at the start of ``input_ids`` that were given, not
            generated in this call.
        earlier_tokens: Tokens the story generated before this call (earlier windows).
    """

    def __init__(
        self,
        presence: float,
        frequency: float,
        *,
        context_tokens: int,
        earlier_tokens: Sequence[int] = (),
    ) -> None:
        self.presence = presence
        self.frequency = frequency
        self.context_tokens = context_tokens
        self.earlier = torch.tensor(list(earlier_tokens), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        penalties = torch.zeros_like(scores)
        for row, new_tokens in enumerate(input_ids[:, self.context_tokens :]):
            generated = torch.cat([self.earlier.to(new_tokens.device), new_tokens])
            if generated.numel() == 0:
                continue
            tokens, counts = torch.unique(generated, return_counts=True)
            penalties[row, tokens] = self.frequency * counts.to(scores.dtype) + self.presence
        return scores - penalties


class DRY(LogitsProcessor):
    """DRY, "Don't Repeat Yourself" (p-e-w): penalise the token that would extend a passage
    the context already contains.

    When the last ``n`` tokens also appear earlier, followed by token ``t``, and
    ``n >= allowed_length``, then ``logit[t] -= multiplier * base ** (n - allowed_length)``
    (the longest such ``n`` for each ``t``). A sequence breaker stops the match: a
    repetition is only counted after the last breaker in the context, and a token that is a
    breaker by itself is never penalised. This is llama.cpp's ``llama_sampler_dry``
    (``src/llama-sampling.cpp``, ported from KoboldCpp PR 982 by pi6am), which gives the same
    penalties as text-generation-webui's ``DRYLogitsProcessor`` (``modules/sampler_hijack.py``)
    for breakers of one token, and also handles breakers a token only starts; the exponent is
    capped, as there, so that the penalty stays finite in float32 (it bans the token).

    Args:
        multiplier: Penalty for a repetition of ``allowed_length`` tokens (> 0).
        base: Growth per extra repeated token (>= 1).
        allowed_length: Longest repetition that goes unpenalised.
        penalty_last_n: Tokens searched, from the end; -1 = the whole context (llama.cpp's
            ``dry_penalty_last_n``).
        sequence_breakers: Restart sequences, head token -> tails
            (:meth:`taleforge.generate.vocabulary.SamplerVocabulary.sequence_breakers`).
    """

    def __init__(
        self,
        multiplier: float,
        base: float,
        allowed_length: int,
        penalty_last_n: int,
        sequence_breakers: Mapping[int, Sequence[tuple[int, ...]]],
    ) -> None:
        self.multiplier = multiplier
        self.base = base
        self.allowed_length = allowed_length
        self.penalty_last_n = penalty_last_n
        self.sequence_breakers = sequence_breakers
        self.single_token_breakers = {t for t, tails in sequence_breakers.items() if () in tails}
        self.max_exponent = int(_FLOAT32_MAX_LOG / math.log(base)) if base > 1.000001 else 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        penalised = scores.clone()
        for row, tokens in enumerate(input_ids.tolist()):
            penalties = self.penalties(tokens)
            if penalties:
                ids = torch.tensor(list(penalties), dtype=torch.long)
                values = torch.tensor(list(penalties.values()), dtype=torch.float64)
                penalised[row, ids] -= values.to(scores.dtype)
        return penalised

    def penalties(self, tokens: Sequence[int]) -> dict[int, float]:
        """Token id -> penalty after the context ``tokens``."""
        if self.penalty_last_n > 0:
            tokens = tokens[-self.penalty_last_n :]
        size = len(tokens)
        if size <= self.allowed_length:
            return {}
        limit = self.repeat_limit(tokens)
        if limit < self.allowed_length:
            return {}
        last = tokens[-1]
        longest: dict[int, int] = {}
        # each earlier place the last token appears: how far back the match reaches
        for end in range(size - 1):
            if tokens[end] != last:
                continue
            length = 1
            while (
                length < limit
                and end - length >= 0
                and tokens[end - length] == tokens[size - 1 - length]
            ):
                length += 1
            if length >= self.allowed_length:
                following = tokens[end + 1]
                longest[following] = max(length, longest.get(following, 0))
        return {
            token: self.penalty(length)
            for token, length in longest.items()
            if token not in self.single_token_breakers
        }

    def repeat_limit(self, tokens: Sequence[int]) -> int:
        """How many of the last tokens a repetition may span: those after the last complete
        sequence breaker (all of them when there is none)."""
        size = len(tokens)
        for back in range(size):  # ``back`` tokens follow the candidate head
            head = size - 1 - back
            tails = self.sequence_breakers.get(tokens[head])
            if not tails:
                continue
            longest = -1
            for tail in tails:
                if longest < len(tail) <= back and all(
                    tokens[head + 1 + k] == tail_token for k, tail_token in enumerate(tail)
                ):
                    longest = len(tail)
            if longest >= 0:
                return back - longest
        return size

    def penalty(self, length: int) -> float:
        """The penalty for extending a repetition of ``length`` tokens."""
        exponent = length - self.allowed_length
        if self.max_exponent > 0:
            exponent = min(exponent, self.max_exponent)
        return self.multiplier * self.base**exponent


class ExcludeTopChoices(LogitsProcessor):
    """XTC, Exclude Top Choices (p-e-w): with probability ``probability``, remove every token
    at least ``threshold`` probable except the least probable of them, so that the model
    takes a less obvious path that is still a good one; nothing changes when fewer than two
    tokens reach the threshold.

    As text-generation-webui's ``XTCLogitsWarper`` and llama.cpp's ``llama_sampler_xtc``, but
    without text-generation-webui's exception for newline and end-of-text (llama.cpp and
    KoboldCpp have none). The draw uses the story's generator, so a seed gives the same story.

    Args:
        threshold: Probability from which a token is a top choice (at most 0.5).
        probability: Chance that the step excludes the top choices.
        rng: The story's ``torch.Generator``; None = torch's global one, which the
            transformers backend seeds for each story.
    """

    def __init__(self, threshold: float, probability: float, rng: Any = None) -> None:
        self.threshold = threshold
        self.probability = probability
        self.rng = rng

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        # draw first: a step that does not exclude needs no sort (as text-generation-webui)
        if float(torch.rand((), generator=self.rng)) >= self.probability:
            return scores
        ordered, order = torch.sort(scores, descending=True, dim=-1)
        probs = torch.softmax(ordered, dim=-1)
        # a token goes when the next likelier-to-unlikelier one still reaches the threshold:
        # all top choices but the last
        remove = torch.zeros_like(probs, dtype=torch.bool)
        remove[..., :-1] = probs[..., 1:] >= self.threshold
        return scores.masked_fill(remove.scatter(-1, order, remove), -math.inf)
