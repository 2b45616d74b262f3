"""Does a story fit its prompt and its genre?

* Prompt ranking (Fan et al., 2018, "Hierarchical Neural Story Generation"): a story is
  scored under the model with its true prompt and with ``k - 1`` other prompts; the test is
  passed when the true prompt gives the lowest loss. Chance is ``1 / k``.
* TF-IDF cosine similarity between prompt and story (no sentence-embedding model can be
  downloaded here; TF-IDF is model-independent, so it compares models fairly). The same
  similarity to *other* prompts is reported as the chance level.
* Genre adherence: the share of stories written for genre G that the data step's genre
  classifier labels G.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from taleforge.evaluate.metrics import sample_others


def ranking_candidates(count: int, k: int, seed: int) -> list[list[int]]:
    """For each of ``count`` items: its own index first, then ``k - 1`` other random indices.

    Items get fewer candidates when there are fewer than ``k`` items.
    """
    rng = random.Random(seed)
    return [[index, *sample_others(count, index, k - 1, rng)] for index in range(count)]


def ranking_accuracy(losses: Sequence[Sequence[float]]) -> float:
    """Share of items whose first loss (the true prompt's) is strictly the lowest.

    Args:
        losses: Per item, the story's loss given each candidate prompt, the true one first.
    """
    if not losses:
        raise ValueError("no items to rank")
    passed = sum(1 for row in losses if all(row[0] < other for other in row[1:]))
    return passed / len(losses)


@dataclass
class TfidfSimilarity:
    """Cosine similarity of TF-IDF vectors (words, English stop words removed)."""

    vectorizer: Any

    @classmethod
    def fit(cls, corpus: Sequence[str]) -> TfidfSimilarity:
        from sklearn.feature_extraction.text import TfidfVectorizer

        return cls(TfidfVectorizer(stop_words="english").fit(list(corpus)))

    def pairwise(self, left: Sequence[str], right: Sequence[str]) -> list[float]:
        """Similarity of ``left[i]`` and ``right[i]`` for each ``i``."""
        a = self.vectorizer.transform(list(left))
        b = self.vectorizer.transform(list(right))
        # rows are L2-normalized, so the dot product is the cosine
        return [float(v) for v in a.multiply(b).sum(axis=1).A1]

    def mismatched(
        self, prompts: Sequence[str], stories: Sequence[str], owners: Sequence[int]
    ) -> list[float]:
        """Per story, its mean similarity to the prompts it was *not* written for.

        Args:
            prompts: The distinct prompts.
            stories: The stories.
            owners: For each story, the index of its own prompt in ``prompts``.
        """
        if len(prompts) < 2:
            return []
        matrix = (
            self.vectorizer.transform(list(stories)) @ self.vectorizer.transform(list(prompts)).T
        ).toarray()
        n = len(prompts)
        return [
            float((matrix[i].sum() - matrix[i, owner]) / (n - 1)) for i, owner in enumerate(owners)
        ]


def genre_adherence(
    predict: Callable[[list[str]], list[str]],
    texts: Sequence[str],
    genres: Sequence[str | None],
    known: Sequence[str],
) -> tuple[float | None, int]:
    """Share of texts whose predicted genre is the one they were written for.

    Texts without a genre, or with one the classifier does not know, are left out.

    Returns:
        The share (None when no text counts) and how many texts counted.
    """
    chosen = [(t, g) for t, g in zip(texts, genres, strict=True) if g and g in known]
    if not chosen:
        return None, 0
    predicted = predict([t for t, _ in chosen])
    hits = sum(1 for (_, genre), label in zip(chosen, predicted, strict=True) if genre == label)
    return hits / len(chosen), len(chosen)
