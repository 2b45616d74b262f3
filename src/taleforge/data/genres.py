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
from taleforge.genres import GENRE_ALIASES, GENRE_KEYWORDS, GENRES, split_leading_tag

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
    def train(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        seed: int = 0,
        *,
        large: bool = False,
        cross_validate: bool = True,
    ) -> GenreClassifier:
        """Fit TF-IDF + logistic regression; ``large``: unigrams over a capped vocabulary
        with balanced class weights (thousands of long texts of unequal classes)."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.pipeline import make_pipeline

        def build() -> Any:
            if large:
                return make_pipeline(
                    TfidfVectorizer(
                        sublinear_tf=True, min_df=2, max_features=50_000, stop_words="english"
                    ),
                    LogisticRegression(
                        C=10.0, max_iter=3000, class_weight="balanced", random_state=seed
                    ),
                )
            return make_pipeline(
                TfidfVectorizer(
                    ngram_range=(1, 2), sublinear_tf=True, min_df=1, stop_words="english"
                ),
                LogisticRegression(C=20.0, max_iter=2000, random_state=seed),
            )

        folds = min(5, min(Counter(labels).values())) if cross_validate else 0
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


#: Where a prepared dataset keeps the classifier fitted to it (for genre adherence later).
CLASSIFIER_FILE = "genre-classifier.joblib"


def save_classifier(classifier: GenreClassifier, directory: Path) -> Path:
    import joblib

    path = directory / CLASSIFIER_FILE
    joblib.dump(classifier, path)
    return path


def load_classifier(directory: Path | None) -> GenreClassifier:
    """The classifier a prepared dataset was tagged with, else the sample-trained one."""
    if directory is not None and (directory / CLASSIFIER_FILE).is_file():
        import joblib

        classifier: GenreClassifier = joblib.load(directory / CLASSIFIER_FILE)
        return classifier
    return default_classifier()


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


#: The label the dataset classifier uses for "none of the genres".
NO_GENRE = "none"
#: Keyword hits per 1,000 words from which an unlabelled story seeds its top genre.
SEED_DENSITY = 3.0
#: Most training texts per class of the dataset classifier.
CLASS_CAP = 1000


def classifier_text(record: Record, max_words: int = 600) -> str:
    """What a classifier reads of a record: prompt, title and the opening words."""
    head = " ".join(record.text.split()[:max_words])
    return f"{record.title or ''}. {record.prompt or ''} {head}"


def keyword_seed(text: str, allowed: Sequence[str]) -> str | None:
    """The genre whose keywords are densest in ``text``, when dense enough to trust and
    one of ``allowed``."""
    import re

    words = re.findall(r"[a-z]+", text.lower())
    counts = Counter(words)
    density = {
        genre: 1000
        * sum(counts[k] + counts[k + "s"] for k in keywords if " " not in k)
        / max(len(words), 1)
        for genre, keywords in GENRE_KEYWORDS.items()
    }
    best = max(density, key=lambda g: density[g])
    return best if density[best] >= SEED_DENSITY and best in allowed else None


def dataset_classifier(
    labelled: Sequence[tuple[Record, str]],
    unlabelled: Sequence[Record],
    seed_genres: Sequence[str] = (),
    seed: int = 0,
) -> GenreClassifier:
    """A classifier fitted to a dataset's own style.

    Its training texts: the dataset's labelled records (``NO_GENRE`` for labels that mean
    none), the sample dataset, and unlabelled stories whose genre keywords are dense enough
    (self-training from the keyword lexicon) for ``seed_genres``, at most :data:`CLASS_CAP`
    per class.
    """
    import random

    by_label: dict[str, list[str]] = {}
    for record, label in labelled:
        by_label.setdefault(label, []).append(classifier_text(record))
    if SAMPLE_DATASET.is_file():
        with SAMPLE_DATASET.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                text = f"{row['title']}. {row['prompt']} {row['text']}"
                by_label.setdefault(row["genre"], []).append(text)
    for record in unlabelled if seed_genres else ():
        if (record.kind or "story") != "story":
            continue
        seeded = keyword_seed(record.text, seed_genres)
        if seeded:
            by_label.setdefault(seeded, []).append(classifier_text(record))
    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[str] = []
    for label in sorted(by_label):
        chosen = by_label[label]
        rng.shuffle(chosen)
        texts += chosen[:CLASS_CAP]
        labels += [label] * len(chosen[:CLASS_CAP])
    return GenreClassifier.train(texts, labels, seed, large=True, cross_validate=False)


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
    no_genre = {label.strip().lower() for label in config.no_genre_labels}
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
            elif label.strip().lower() in no_genre:
                result.append(record.with_(text=text.strip(), genre=None, genre_source="column"))
                continue
            else:
                sources["unknown_label"] += 1
        if genre is None and tag and config.genre_from in ("auto", "tag"):
            genre, source = tag, "tag"
        if genre is None and config.genre_from in ("auto", "classifier"):
            needs_classifier.append(len(result))
        result.append(record.with_(text=text.strip(), genre=genre, genre_source=source))
    classifier = None
    if needs_classifier and config.genre_classifier == "dataset":
        unlabelled = [result[i] for i in needs_classifier]
        labelled = [(r, r.genre or NO_GENRE) for r in result if r.genre_source == "column"]
        classifier = dataset_classifier(labelled, unlabelled, config.genre_seed_genres)
        texts = [classifier_text(r) for r in unlabelled]
        for index, scores in zip(needs_classifier, classifier.predict_proba(texts), strict=True):
            best = max(scores, key=lambda g: scores[g])
            confident = scores[best] >= config.genre_min_confidence and best != NO_GENRE
            result[index] = result[index].with_(
                genre=best if confident else None, genre_source="classifier"
            )
    elif needs_classifier:
        classifier = default_classifier()
        texts = [
            f"{result[i].title or ''}. {result[i].prompt or ''} {result[i].text}"
            for i in needs_classifier
        ]
        for index, genre in zip(needs_classifier, classifier.predict(texts), strict=True):
            result[index] = result[index].with_(genre=genre, genre_source="classifier")
    sources.update(r.genre_source for r in result)
    return result, sources, classifier


def check_genres(records: Sequence[Record], check_file: str) -> dict[str, Any]:
    """Agreement of the records' genres with hand-checked ones.

    ``check_file`` holds one JSON object per line: ``line`` (the record's line in the JSONL
    input), ``genre`` (a genre, or ``none``) and optionally ``confidence`` (sure/unsure).

    Returns:
        Accuracy overall, on the ``sure`` ones, by where the genre came from, and the
        confusions (checked -> given) with their counts.
    """
    import json

    path = Path(check_file)
    try:
        checks = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]
    except (OSError, ValueError) as exc:
        raise DataError(
            f"--data.genre-check {check_file}: cannot read it ({exc}); give a JSONL file of "
            '{"line": N, "genre": "..."} objects'
        ) from None
    by_line: dict[int, Record] = {}
    for record in records:
        _, _, where = record.source.rpartition(":line ")
        if where.isdigit():
            by_line[int(where)] = record
    rows = []
    for check in checks:
        checked = by_line.get(int(check["line"]))
        if checked is None:
            continue  # dropped by cleaning
        given = checked.genre or NO_GENRE
        rows.append((check["genre"], given, check.get("confidence", "sure"), checked.genre_source))
    if not rows:
        raise DataError(f"--data.genre-check {check_file}: no checked line is in this dataset")

    def accuracy(selected: list[tuple[str, str, str, str]]) -> float | None:
        return (
            round(sum(a == b for a, b, _, _ in selected) / len(selected), 4) if selected else None
        )

    by_source = {
        source: accuracy([r for r in rows if r[3] == source]) for source in {r[3] for r in rows}
    }
    confusions = Counter(f"{a} -> {b}" for a, b, _, _ in rows if a != b)
    return {
        "file": check_file,
        "checked": len(rows),
        "accuracy": accuracy(rows),
        "accuracy_sure": accuracy([r for r in rows if r[2] == "sure"]),
        "sure": sum(r[2] == "sure" for r in rows),
        "by_source": by_source,
        "counts_by_source": dict(Counter(r[3] for r in rows)),
        "confusions": dict(confusions.most_common()),
    }
