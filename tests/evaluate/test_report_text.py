"""What the report says about the genre classifier that judged adherence."""

import json
from pathlib import Path

from taleforge.evaluate.report import render_markdown

#: A committed report of the corpus evaluation: a real report's shape.
CORPUS_REPORT = Path(__file__).resolve().parents[2] / "docs/evaluation/corpus/report.json"


def _with_classifier(classifier: dict) -> dict:
    report = json.loads(CORPUS_REPORT.read_text("utf-8"))
    report["genre_classifier"] = classifier
    return report


def test_a_dataset_classifier_is_described_by_its_hand_check_not_a_nan_accuracy():
    report = _with_classifier(
        {
            "cv_accuracy": float("nan"),
            "trained_on": 3468,
            "on_references": None,
            "hand_check": {"checked": 150, "accuracy": 0.7333, "file": "genre-check.jsonl"},
        }
    )
    text = render_markdown(report, [])
    line = next(x for x in text.splitlines() if x.startswith("Genre classifier"))
    assert "nan" not in line and "sample texts" not in line, line
    assert "3468 texts" in line and "73 % of 150 hand-checked" in line, line


def test_a_classifier_without_a_hand_check_says_so():
    report = _with_classifier(
        {"cv_accuracy": float("nan"), "trained_on": 3468, "on_references": None}
    )
    line = next(x for x in render_markdown(report, []).splitlines() if "Genre classifier" in x)
    assert "nan" not in line and "not hand-checked" in line, line


def test_the_sample_classifier_keeps_its_cross_validated_accuracy():
    report = _with_classifier({"cv_accuracy": 0.53, "trained_on": 172, "on_references": 0.4})
    line = next(x for x in render_markdown(report, []).splitlines() if "Genre classifier" in x)
    assert "0.53 cross-validated accuracy on 172 labelled sample texts" in line, line
