"""Cliché score: how often a model reaches for phrases that people use far less often.

A phrase is a word 3- to 5-gram (lower-cased words, punctuation dropped: the words of
:func:`taleforge.evaluate.metrics.words`). For each phrase of the generated stories, its
count there (``c``, out of ``N`` n-grams of its length) and in the human reference texts
(``r``, out of ``M``) give an add-one smoothed log-odds ratio::

    log((c + 1) / (N - c + 1)) - log((r + 1) / (M - r + 1))

A phrase whose ratio is above the threshold and that appears in at least two different
stories is a cliché (one story repeating itself is repetition, which seq-rep-4 measures).
A cliché inside a longer cliché with the same count never occurs outside it and is not
counted again ("once upon a" inside "once upon a time"). The score is the clichés'
occurrences per 1,000 generated words.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from taleforge.evaluate.metrics import ngrams, words

ORDERS: tuple[int, ...] = (3, 4, 5)

Phrase = tuple[str, ...]


@dataclass(frozen=True)
class Cliche:
    """One over-used phrase."""

    phrase: str
    #: Occurrences in the generated stories.
    count: int
    #: Generated stories it occurs in.
    stories: int
    #: Occurrences in the reference texts.
    reference: int
    log_odds: float


@dataclass(frozen=True)
class ClicheResult:
    """The clichés of a set of stories, most frequent first."""

    #: Cliché occurrences per 1,000 generated words (0.0 for no words).
    score: float
    words: int
    cliches: tuple[Cliche, ...]

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        return {
            "cliche_score": self.score,
            "cliche_phrases": len(self.cliches),
            "cliches": [asdict(c) for c in self.cliches[:top]],
        }


def log_odds_ratio(count: int, total: int, reference: int, reference_total: int) -> float:
    """Add-one smoothed log-odds of a phrase in generated text over reference text."""
    generated_odds = (count + 1) / (max(total - count, 0) + 1)
    reference_odds = (reference + 1) / (max(reference_total - reference, 0) + 1)
    return math.log(generated_odds / reference_odds)


def count_phrases(
    texts: Iterable[str], wanted: set[Phrase] | None = None, orders: Sequence[int] = ORDERS
) -> tuple[Counter[Phrase], Counter[int]]:
    """Phrase counts (only ``wanted`` ones when given) and n-grams per order of the texts.

    Restricting the count to the generated stories' phrases keeps a reference of millions of
    words from filling memory with phrases no model wrote.
    """
    counts: Counter[Phrase] = Counter()
    totals: Counter[int] = Counter()
    for text in texts:
        tokens = words(text)
        for n in orders:
            grams = ngrams(tokens, n)
            totals[n] += len(grams)
            counts.update(grams if wanted is None else (g for g in grams if g in wanted))
    return counts, totals


def find_cliches(
    generated: Sequence[str],
    reference: Iterable[str],
    *,
    threshold: float = 1.5,
    min_stories: int = 2,
    orders: Sequence[int] = ORDERS,
) -> ClicheResult:
    """The phrases ``generated`` over-uses relative to ``reference`` (see the module doc).

    Args:
        generated: The stories a model wrote.
        reference: Human texts (read once; may be a generator).
        threshold: Smallest log-odds ratio of a cliché (1.5: about 4.5 times the odds).
        min_stories: Fewest different stories a cliché occurs in.
        orders: Phrase lengths in words.
    """
    counts: Counter[Phrase] = Counter()
    stories: Counter[Phrase] = Counter()
    totals: Counter[int] = Counter()
    word_count = 0
    for text in generated:
        tokens = words(text)
        word_count += len(tokens)
        for n in orders:
            grams = ngrams(tokens, n)
            totals[n] += len(grams)
            counts.update(grams)
            stories.update(set(grams))
    candidates = {p for p, n in stories.items() if n >= min_stories}
    reference_counts, reference_totals = count_phrases(reference, candidates, orders)
    found = {}
    for phrase in candidates:
        n = len(phrase)
        ratio = log_odds_ratio(
            counts[phrase], totals[n], reference_counts[phrase], reference_totals[n]
        )
        if ratio > threshold:
            found[phrase] = Cliche(
                " ".join(phrase), counts[phrase], stories[phrase], reference_counts[phrase], ratio
            )
    inside = _inside_longer(found)
    kept = sorted(
        (c for p, c in found.items() if p not in inside),
        key=lambda c: (-c.count, -c.log_odds, c.phrase),
    )
    occurrences = sum(c.count for c in kept)
    score = 1000 * occurrences / word_count if word_count else 0.0
    return ClicheResult(score, word_count, tuple(kept))


def _inside_longer(found: dict[Phrase, Cliche]) -> set[Phrase]:
    """The clichés that a longer cliché with the same count contains."""
    inside = set()
    for phrase, cliche in found.items():
        for n in range(1, len(phrase)):
            for start in range(len(phrase) - n + 1):
                part = phrase[start : start + n]
                if part in found and found[part].count == cliche.count:
                    inside.add(part)
    return inside
