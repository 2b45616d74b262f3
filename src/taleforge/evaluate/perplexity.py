"""Perplexity with a strided sliding window, and the token scoring it is built on.

The method is Hugging Face's "perplexity of fixed-length models": a window of ``window``
tokens moves over each text by ``stride`` tokens; each window scores only the tokens the
previous window did not (so every token is scored once) and uses the tokens before them as
context. With ``stride < window`` every scored token after the first window sees at least
``window - stride`` tokens of context.

Texts are scored as *context + text*: the context (a prompt, formatted the way the model is
used) is read but not scored, like the ``-100`` labels of a prepared dataset. Each model
tokenizes the texts itself, because vocabularies differ (the base model has no ``[WP]``
token); perplexity per token therefore depends on the tokenizer, and perplexity per *word*,
``exp(total loss / words)``, is the number to compare across models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenSequence:
    """Token ids and their labels: the id itself where it is scored, ``-100`` where not."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @classmethod
    def from_parts(cls, context_ids: Sequence[int], text_ids: Sequence[int]) -> TokenSequence:
        return cls(
            tuple(context_ids) + tuple(text_ids),
            (IGNORE_INDEX,) * len(context_ids) + tuple(text_ids),
        )


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of a set of texts under one model."""

    context: str
    window: int
    stride: int
    texts: int
    #: Tokens scored (context tokens and each text's first token without context excluded).
    tokens: int
    #: Whitespace-separated words of the scored texts.
    words: int
    #: Total negative log-likelihood of the scored tokens, in nats.
    nll: float
    #: Perplexity of each window, in order (texts one after the other).
    window_perplexities: tuple[float, ...] = field(default=(), repr=False)
    #: Perplexity per token of each text.
    text_perplexities: tuple[float, ...] = field(default=(), repr=False)

    @property
    def per_token(self) -> float:
        return _exp(self.nll / self.tokens) if self.tokens else math.nan

    @property
    def per_word(self) -> float:
        return _exp(self.nll / self.words) if self.words else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "context": self.context,
            "window": self.window,
            "stride": self.stride,
            "texts": self.texts,
            "tokens": self.tokens,
            "words": self.words,
            "nll": self.nll,
            "per_token": self.per_token,
            "per_word": self.per_word,
            "window_perplexities": list(self.window_perplexities),
            "text_perplexities": list(self.text_perplexities),
        }


def _exp(value: float) -> float:
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def window_spans(length: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows over a sequence: ``(begin, end, scored_from)`` each.

    Tokens ``scored_from .. end-1`` are scored in the window ``begin .. end-1``.

    Raises:
        ValueError: ``stride`` is larger than ``window`` (tokens would be skipped) or < 1.
    """
    if stride < 1 or window < 2 or stride > window:
        raise ValueError(f"need 1 <= stride <= window and window >= 2 (got {stride}, {window})")
    spans: list[tuple[int, int, int]] = []
    previous_end = 0
    for begin in range(0, length, stride):
        end = min(begin + window, length)
        spans.append((begin, end, previous_end))
        previous_end = end
        if end == length:
            break
    return spans


def score_sequences(
    model: Any,
    sequences: Sequence[TokenSequence],
    *,
    pad_id: int = 0,
    batch_tokens: int = 2048,
    progress: str | None = None,
) -> list[tuple[float, int]]:
    """Sum of negative log-likelihoods (nats) and count of the labelled tokens of each sequence.

    Position ``i``'s label is predicted from positions ``< i`` (so position 0 is never scored).
    Sequences are batched (right-padded, longest first) up to ``batch_tokens`` per batch.

    Args:
        model: A causal LM (``transformers`` ``PreTrainedModel``).
        sequences: What to score.
        pad_id: Token id used for padding (masked out).
        batch_tokens: Most tokens (rows x longest row) per forward pass.
        progress: Progress bar description; None for no bar.
    """
    import torch
    import torch.nn.functional as F

    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].input_ids))
    batches: list[list[int]] = []
    for index in order:
        longest = len(sequences[batches[-1][0]].input_ids) if batches else 0
        if batches and (len(batches[-1]) + 1) * longest <= batch_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    results: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
    bar = tqdm(
        total=sum(len(s.input_ids) for s in sequences),
        desc=progress,
        unit="tok",
        disable=progress is None,
        mininterval=1.0,
    )
    with bar, torch.inference_mode():
        for batch in batches:
            width = max(len(sequences[i].input_ids) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):
                sequence = sequences[index]
                n = len(sequence.input_ids)
                ids[row, :n] = torch.tensor(sequence.input_ids)
                labels[row, :n] = torch.tensor(sequence.labels)
                mask[row, :n] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            targets = labels[:, 1:]
            losses = F.cross_entropy(
                logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
            )
            sums = losses.sum(dim=1).tolist()
            counts = (targets != IGNORE_INDEX).sum(dim=1).tolist()
            for row, index in enumerate(batch):
                results[index] = (float(sums[row]), int(counts[row]))
            bar.update(sum(len(sequences[i].input_ids) for i in batch))
    return results


def sliding_window_nll(
    model: Any,
    sequences: Sequence[TokenSequence],
    *,
    window: int,
    stride: int,
    pad_id: int = 0,
    batch_tokens: int = 2048,
    progress: str | None = None,
) -> list[list[tuple[float, int]]]:
    """Per sequence, the ``(nll, tokens)`` of each window (see the module docstring)."""
    pieces: list[TokenSequence] = []
    owners: list[int] = []
    for number, sequence in enumerate(sequences):
        for begin, end, scored_from in window_spans(len(sequence.input_ids), window, stride):
            labels = [
                label if position >= scored_from else IGNORE_INDEX
                for position, label in enumerate(sequence.labels[begin:end], start=begin)
            ]
            pieces.append(TokenSequence(sequence.input_ids[begin:end], tuple(labels)))
            owners.append(number)
    scores = score_sequences(
        model, pieces, pad_id=pad_id, batch_tokens=batch_tokens, progress=progress
    )
    per_sequence: list[list[tuple[float, int]]] = [[] for _ in sequences]
    for owner, score in zip(owners, scores, strict=True):
        per_sequence[owner].append(score)
    return per_sequence


def perplexity(
    model: Any,
    sequences: Sequence[TokenSequence],
    word_counts: Sequence[int],
    *,
    window: int,
    stride: int,
    context: str = "",
    pad_id: int = 0,
    batch_tokens: int = 2048,
    progress: str | None = None,
) -> PerplexityResult:
    """Perplexity per token and per word of tokenized texts (see the module docstring).

    Args:
        model: A causal LM.
        sequences: The texts, tokenized with their (unscored) context.
        word_counts: Words of each scored text.
        window: Tokens the model sees at once (at most its context length).
        stride: Tokens the window moves by; smaller = more context per token, slower.
        context: A note of what the context was, kept in the result.
        pad_id: The padding token id.
        batch_tokens: Most tokens per forward pass.
        progress: Progress bar description; None for no bar.
    """
    windows = sliding_window_nll(
        model,
        sequences,
        window=window,
        stride=stride,
        pad_id=pad_id,
        batch_tokens=batch_tokens,
        progress=progress,
    )
    flat = [score for text_windows in windows for score in text_windows]
    nll = sum(s for s, _ in flat)
    tokens = sum(n for _, n in flat)
    return PerplexityResult(
        context=context,
        window=window,
        stride=stride,
        texts=len(sequences),
        tokens=tokens,
        words=sum(word_counts),
        nll=nll,
        window_perplexities=tuple(_exp(s / n) for s, n in flat if n),
        text_perplexities=tuple(
            _exp(sum(s for s, _ in w) / n) for w in windows if (n := sum(c for _, c in w))
        ),
    )
