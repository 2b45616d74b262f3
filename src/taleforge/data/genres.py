"""Genres for records: from a column, a leading ``[TAG]``, or a trained classifier.

The classifier is TF-IDF over words and word pairs with a logistic regression, trained on
taleforge's own sample dataset (a second on a laptop). It is the classifier the evaluation
step uses for genre adherence, and it reports its own cross-validated accuracy.
"""

from __future__ import annotations

import csv
import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taleforge.config import DataConfig
from taleforge.data.records import DataError, Record
from taleforge.genres import GENRE_ALIASES, GENRES, split_leading_tag

SAMPLE_DATASET = Path(__file__).resolve().parents[3] / "data" / "sample" / "stories.csv"


@dataclass(frozen=True)
class GenreClassifier:
    """A text classifier over the genre tag set."""

    pipeline: Any
    genres: tuple[str, ...]
    #: Mean accuracy of 5-fold cross-validation on the training data.
    cv_accuracy: float
    trained_on: int

    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[str], seed: int = 0) -> GenreClassifier:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.pipeline import make_pipeline

        def build() -> Any:
            return make_pipeline(
                TfidfVectorizer(
                    ngram_range=(1, 2), sublinear_tf=True, min_df=1, stop_words="english"
                ),
                LogisticRegression(C=20.0, max_iter=2000, random_state=seed),
            )

        folds = min(5, min(Counter(labels).values()))
        accuracy = float("nan")
        if folds >= 2:
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            accuracy = float(
                cross_val_score(build(), list(texts), list(labels), cv=splitter).mean()
            )
        pipeline = build().fit(list(texts), list(labels))
        return cls(pipeline, tuple(pipeline.classes_), round(accuracy, 4), len(texts))

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [str(label) for label in self.pipeline.predict(list(texts))]

    def predict_proba(self, texts: Sequence[str]) -> list[dict[str, float]]:
        probabilities = self.pipeline.predict_proba(list(texts))
        return [dict(zip(self.genres, map(float, row), strict=True)) for row in probabilities]


@functools.cache
def default_classifier(dataset: Path = SAMPLE_DATASET) -> GenreClassifier:
    """The classifier trained on the sample dataset (stories, poems and dialogues)."""
    if not dataset.is_file():
        raise DataError(
            f"the genre classifier trains on {dataset}, which is missing: restore "
            "data/sample/stories.csv or set --data.genre-from column/tag/none"
        )
    with dataset.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    texts = [f"{row['title']}. {row['prompt']} {row['text']}" for row in rows]
    return GenreClassifier.train(texts, [row["genre"] for row in rows])


def known_genres(config: DataConfig) -> set[str]:
    return set(GENRES) | {g.strip().lower() for g in config.extra_genres}


def normalize_label(label: str, known: set[str]) -> str | None:
    key = label.strip().lower().strip("[]")
    key = GENRE_ALIASES.get(key, key)
    return key if key in known else None


def assign_genres(
    records: list[Record], config: DataConfig
) -> tuple[list[Record], Counter[str], GenreClassifier | None]:
    """Give every record a genre and record where it came from.

    Leading genre tags are always removed from the text (the template adds its own).

    Returns:
        The records, a count of genre sources (column, tag, classifier, none, unknown_label),
        and the classifier if it was used.
    """
    known = known_genres(config)
    sources: Counter[str] = Counter()
    result: list[Record] = []
    needs_classifier: list[int] = []
    for record in records:
        tag, text = split_leading_tag(record.text)
        tag = normalize_label(tag, known) if tag else None
        label = record.genre
        genre: str | None = None
        source = "none"
        if config.genre_from in ("auto", "column") and label:
            genre = normalize_label(label, known)
            if genre:
                source = "column"
            else:
                sources["unknown_label"] += 1
        if genre is None and tag and config.genre_from in ("auto", "tag"):
            genre, source = tag, "tag"
        if genre is None and config.genre_from in ("auto", "classifier"):
            needs_classifier.append(len(result))
        result.append(record.with_(text=text.strip(), genre=genre, genre_source=source))
    classifier = None
    if needs_classifier:
        classifier = default_classifier()
        texts = [
            f"{result[i].title or ''}. {result[i].prompt or ''} {result[i].text}"
            for i in needs_classifier
        ]
        for index, genre in zip(needs_classifier, classifier.predict(texts), strict=True):
            result[index] = result[index].with_(genre=genre, genre_source="classifier")
    sources.update(r.genre_source for r in result)
    return result, sources, classifier
