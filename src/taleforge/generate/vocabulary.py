"""The samplers' text settings in a model's token ids: DRY's sequence breakers and word bias.

A sampler sees token ids; a writer names strings ("\\n", "suddenly"). The generator resolves
the strings once per request with the model's tokenizer into a :class:`SamplerTokens`, which
every backend hands to :mod:`taleforge.generate.samplers` unchanged, so both backends penalise
the same tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taleforge.config import SamplingParams
from taleforge.errors import ConfigError

#: A DRY restart sequence as llama.cpp stores it: the tokens after the head token
#: (empty when the head token alone contains the breaker).
Tail = tuple[int, ...]
#: llama.cpp keeps at most this many tokens after a breaker's head token.
MAX_TAIL_TOKENS = 20


@dataclass(frozen=True)
class SamplerTokens:
    """What the samplers need from the tokenizer, for one request.

    Attributes:
        bias: Token id -> logit bias: ``logit_bias`` plus the resolved ``word_bias`` (biases
            of the same token add up).
        sequence_breakers: DRY's restart sequences, head token -> tails (see
            :meth:`SamplerVocabulary.sequence_breakers`).
    """

    bias: Mapping[int, float] = field(default_factory=dict)
    sequence_breakers: Mapping[int, tuple[Tail, ...]] = field(default_factory=dict)


class SamplerVocabulary:
    """A tokenizer's vocabulary as the samplers need it; what it computes is kept.

    Args:
        tokenizer: The model's (Hugging Face) tokenizer; None for a remote model whose
            tokenizer is not available here (word bias and DRY then cannot be resolved).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        self._texts: list[str] | None = None
        self._breakers: dict[tuple[str, ...], dict[int, tuple[Tail, ...]]] = {}

    @property
    def size(self) -> int | None:
        """Token ids run from 0 to ``size - 1`` (None without a tokenizer)."""
        return None if self.tokenizer is None else len(self.tokenizer)

    def sampler_tokens(self, params: SamplingParams) -> SamplerTokens:
        """Resolve ``params``' strings into token ids.

        Raises:
            ConfigError: A ``logit_bias`` token id outside the vocabulary, or a setting that
                needs the tokenizer where there is none; the message says what to change.
        """
        breakers: Mapping[int, tuple[Tail, ...]] = {}
        if params.dry_multiplier > 0 and params.dry_penalty_last_n != 0:
            breakers = self.sequence_breakers(params.dry_sequence_breakers)
        return SamplerTokens(bias=self.bias(params), sequence_breakers=breakers)

    def bias(self, params: SamplingParams) -> dict[int, float]:
        """Token id -> logit bias: ``logit_bias`` plus ``word_bias`` resolved (biases of one
        token add up).

        Raises:
            ConfigError: As :meth:`sampler_tokens`.
        """
        bias = dict(params.logit_bias)
        if bias and self.size is not None:
            outside = sorted(token for token in bias if token >= self.size)
            if outside:
                raise ConfigError(
                    f"logit_bias: token id {outside[0]} is not in this model's vocabulary "
                    f"(ids 0 to {self.size - 1}): use the model's own token ids, or word_bias "
                    "to bias a word"
                )
        for word, value in params.word_bias.items():
            for token in self.word_tokens(word):
                bias[token] = bias.get(token, 0.0) + value
        return bias

    def word_tokens(self, word: str) -> set[int]:
        """The first token of ``word`` and of ``" " + word``: word bias biases these.

        A word the tokenizer splits is biased by its first piece, which other words may
        share (``" sudden"`` for ``"suddenly"``); the case is the writer's (``"Suddenly"``
        is another token).
        """
        tokenizer = self._need_tokenizer("word_bias")
        word = word.strip()
        firsts = set()
        for text in (word, " " + word):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids:
                firsts.add(int(ids[0]))
        return firsts

    def sequence_breakers(self, breakers: tuple[str, ...]) -> dict[int, tuple[Tail, ...]]:
        """DRY's restart sequences for these breakers, as llama.cpp builds them
        (``get_overlapping_token_sequences`` in ``llama-sampling.cpp``, from KoboldCpp).

        A token whose text contains a breaker is a head with an empty tail: it ends any
        repetition, and is never penalised itself. A token whose text ends with the start of
        a breaker is a head whose tail is the tokenization of the breaker's rest (at most
        20 tokens): it ends a repetition only when that tail follows it.
        """
        with self._lock:
            known = self._breakers.get(breakers)
        if known is not None:
            return known
        tokenizer = self._need_tokenizer("dry_sequence_breakers")
        texts = self.token_texts()
        table: dict[int, list[Tail]] = {}
        for breaker in breakers:
            for token, text in enumerate(texts):
                if breaker[0] not in text:  # most tokens: neither contain nor start it
                    continue
                for tail in _overlaps(text, breaker, tokenizer):
                    tails = table.setdefault(token, [])
                    if tail not in tails:
                        tails.append(tail)
        result = {token: tuple(tails) for token, tails in table.items()}
        with self._lock:
            self._breakers[breakers] = result
        return result

    def token_texts(self) -> list[str]:
        """Every token's text, by id (special tokens as written)."""
        with self._lock:
            texts = self._texts
        if texts is None:
            tokenizer = self._need_tokenizer("dry_sequence_breakers")
            ids = [[token] for token in range(len(tokenizer))]
            decoded = tokenizer.batch_decode(
                ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            texts = [str(text) for text in decoded]
            with self._lock:
                self._texts = texts
        return texts

    def _need_tokenizer(self, setting: str) -> Any:
        if self.tokenizer is None:
            raise ConfigError(
                f"{setting} needs the model's tokenizer, which is not available here: set "
                "model.spec to the remote model's local name or directory, or leave it out"
            )
        return self.tokenizer


def _overlaps(text: str, breaker: str, tokenizer: Any) -> list[Tail]:
    """The tails that make ``text`` (one token's) the head of ``breaker``: ``[()]`` when the
    text contains it, the tokenized rest for each place where the text ends with a start of
    it, else none."""
    if breaker in text:
        return [()]
    tails: list[Tail] = []
    at = text.find(breaker[0])
    while at != -1:
        overlap = len(text) - at
        if overlap < len(breaker) and breaker.startswith(text[at:]):
            rest = tokenizer(breaker[overlap:], add_special_tokens=False)["input_ids"]
            tail = tuple(int(t) for t in rest[:MAX_TAIL_TOKENS])
            if tail not in tails:
                tails.append(tail)
        at = text.find(breaker[0], at + 1)
    return tails
