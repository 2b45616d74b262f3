"""Pure text metrics: diversity, repetition, overlap with references, lengths, intervals.

Word-level metrics split a text into lower-cased words (letters, digits and inner
apostrophes; punctuation is dropped), so they do not depend on any model's tokenizer and
compare across models. BLEU and chrF are sacrebleu's, with its default settings.
"""

from __future__ import annotations

import math
import random
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence

_WORD_RE = re.compile(r"\w+(?:'\w+)*")


def words(text: str) -> list[str]:
    """Lower-cased words of a text, without punctuation."""
    return _WORD_RE.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of a token sequence, in order (none when it is shorter than n)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct-n (Li et al., 2016): unique n-grams / all n-grams over all texts.

    Returns 0.0 when the texts hold no n-gram at all.
    """
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        counts.update(ngrams(words(text), n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def seq_rep_n(text: str, n: int = 4) -> float:
    """seq-rep-n (Welleck et al., 2019): share of a text's n-grams that repeat an earlier one.

    ``1 - unique n-grams / n-grams``; 0.0 for a text shorter than n words.
    """
    grams = ngrams(words(text), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def repeated_lines(text: str) -> tuple[int, int]:
    """``(repeated, total)`` non-empty lines, a line counting as repeated when the same line
    (case and surrounding spaces ignored) appeared earlier in the text."""
    seen: set[str] = set()
    repeated = total = 0
    for line in text.splitlines():
        key = line.strip().lower()
        if not key:
            continue
        total += 1
        if key in seen:
            repeated += 1
        seen.add(key)
    return repeated, total


def repeated_line_rate(texts: Iterable[str]) -> float:
    """Repeated non-empty lines / all non-empty lines, pooled over the texts."""
    repeated = total = 0
    for text in texts:
        r, t = repeated_lines(text)
        repeated += r
        total += t
    return repeated / total if total else 0.0


def self_bleu(texts: Sequence[str]) -> float:
    """Self-BLEU (Zhu et al., 2018): mean sentence BLEU of each text against all the others.

    High values mean the texts resemble each other (low diversity). Needs two texts or more.
    """
    from sacrebleu.metrics import BLEU

    if len(texts) < 2:
        raise ValueError("self-BLEU needs at least two texts")
    bleu = BLEU(effective_order=True)
    scores = [
        bleu.sentence_score(text, [other for j, other in enumerate(texts) if j != i]).score
        for i, text in enumerate(texts)
    ]
    return statistics.fmean(scores)


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, 0-100) of texts against one reference each."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu, 0-100) of texts against one reference each."""
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def length_stats(values: Sequence[float]) -> dict[str, float]:
    """Mean, median, quartiles (q1, q3), min and max (all 0.0 for no values).

    Quartiles interpolate between the values like numpy's default (``inclusive``).
    """
    if not values:
        return dict.fromkeys(("mean", "median", "q1", "q3", "min", "max"), 0.0)
    if len(values) > 1:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {
        "mean": statistics.fmean(values),
        "median": float(statistics.median(values)),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def starts_lowercase(text: str) -> bool:
    """Whether a text's first word begins with a lower-case letter (leading quotes and
    punctuation skipped): a story that opens mid-sentence, like "is an ancient stone…"."""
    first = _WORD_RE.search(text)
    return first is not None and first.group()[0].islower()


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval ``(mean, low, high)``.

    With one value the interval is unbounded (``-inf, inf``): one rating says nothing about
    the spread.
    """
    from scipy import stats

    if not values:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, -math.inf, math.inf
    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return mean, mean - half, mean + half


def bootstrap_ci(
    values: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval ``(mean, low, high)``."""
    import numpy as np

    if not values:
        raise ValueError("no values")
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = rng.choice(data, size=(resamples, len(data)), replace=True).mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(data.mean()), float(low), float(high)


def sample_others(count: int, index: int, k: int, rng: random.Random) -> list[int]:
    """``k`` distinct indices in ``range(count)`` other than ``index`` (fewer if too few)."""
    others = [i for i in range(count) if i != index]
    return rng.sample(others, min(k, len(others)))
