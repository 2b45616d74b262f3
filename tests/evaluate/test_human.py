"""Blind human rating: sessions driven by scripted answers, storage, aggregation, the CLI."""

import io
import json
import random
import sys

import pytest

from taleforge.cli import main
from taleforge.evaluate import EvaluationError
from taleforge.evaluate.human import (
    append_rating,
    format_summary,
    load_stories,
    pairwise_session,
    read_ratings,
    score_session,
    summarize,
)

STORIES = [
    {
        "id": f"{model}|base|p{n}|{n}",
        "model": model,
        "prompt_id": f"p{n}",
        "prompt": f"prompt {n}",
        "text": f"story {n} by {model}",
        "run": "eval",
    }
    for model in ("base-model", "tuned-model")
    for n in range(3)
]


def scripted(answers):
    """An ``input`` replacement answering from a list, then end of input."""
    queue = list(answers)
    questions = []

    def ask(question):
        questions.append(question)
        if not queue:
            raise EOFError
        return queue.pop(0)

    ask.questions = questions
    return ask


@pytest.fixture
def stories_file(tmp_path):
    path = tmp_path / "stories.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in STORIES))
    return path


def test_scores_are_saved_per_story_blind_and_not_asked_twice(tmp_path):
    ratings = tmp_path / "ratings.jsonl"
    shown = []
    # story 1: 5 4 3 2; story 2: a typo then 4 4 4 4; story 3 skipped; then end of input
    ask = scripted(["5", "4", "3", "2", "9", "4", "4", "4", "4", "s"])
    saved = score_session(
        STORIES[:3], "ann", ratings, ask=ask, say=shown.append, rng=random.Random(0)
    )
    assert saved == 2
    records = read_ratings(ratings)
    assert [r["scores"] for r in records] == [
        {"coherence": 5, "creativity": 4, "relevance": 3, "fluency": 2},
        {"coherence": 4, "creativity": 4, "relevance": 4, "fluency": 4},
    ]
    assert all(r["rater"] == "ann" and r["type"] == "score" for r in records)
    screen = "\n".join(shown)
    assert "story 0 by base-model" in screen or "story 1 by base-model" in screen
    assert "model: " not in screen.lower() and "|base|" not in screen  # blind
    # the next session shows only the story not yet rated
    shown.clear()
    again = score_session(STORIES[:3], "ann", ratings, ask=scripted(["q"]), say=shown.append)
    assert again == 0 and "1 stories to rate" in "\n".join(shown)


def test_summary_has_means_with_t_intervals_and_win_rates_with_wilson_intervals(tmp_path):
    ratings = tmp_path / "ratings.jsonl"
    for value in (1, 2, 3, 4, 5):
        append_rating(
            ratings,
            {
                "type": "score",
                "rater": "ann",
                "model": "m",
                "story_id": str(value),
                "scores": {"coherence": value},
            },
        )
    for winner in ("x", "x", "x", None):
        append_rating(
            ratings,
            {"type": "ab", "rater": "bob", "models": {"A": "x", "B": "y"}, "winner": winner},
        )
    with ratings.open("a") as handle:
        handle.write('{"type": "score", "rater": "cut off mid-')  # a crash mid-line
    summary = summarize(read_ratings(ratings))
    coherence = summary.scores["m"]["coherence"]
    assert coherence.mean == 3 and coherence.n == 5
    assert (coherence.low, coherence.high) == pytest.approx((1.0367, 4.9633), abs=1e-4)
    [preference] = summary.preferences
    assert (preference.model, preference.wins, preference.losses, preference.ties) == (
        "x",
        3,
        0,
        1,
    )
    assert preference.win_rate == pytest.approx(3.5 / 4)
    assert (preference.low, preference.high) == pytest.approx((0.3958, 0.9868), abs=1e-4)
    text = format_summary(summary)
    assert "3.00 [1.04, 4.96] (5)" in text and "x vs y: 88%" in text


def test_missing_or_empty_stories_say_how_to_get_them(tmp_path):
    with pytest.raises(EvaluationError, match="taleforge evaluate"):
        load_stories(tmp_path / "nothing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(EvaluationError, match="no stories"):
        load_stories(tmp_path / "empty.jsonl")
    with pytest.raises(EvaluationError, match="two models"):
        pairwise_session(STORIES[:3], "ann", tmp_path / "r.jsonl", ask=scripted([]), say=print)


def test_rate_command_reads_answers_from_stdin(tmp_path, stories_file, monkeypatch, capsys):
    ratings = tmp_path / "ratings.jsonl"
    monkeypatch.setattr(sys, "stdin", io.StringIO("carol\n3\n3\n4\n5\nq\n"))
    code = main(["rate", "--stories", str(stories_file), "--ratings", str(ratings), "--limit", "2"])
    assert code == 0
    [record] = read_ratings(ratings)
    assert record["rater"] == "carol" and record["scores"]["fluency"] == 5

    monkeypatch.setattr(sys, "stdin", io.StringIO("b\n"))
    args = ["rate", "--stories", str(stories_file), "--ratings", str(ratings), "--rater", "dan"]
    assert main([*args, "--ab", "base-model", "tuned-model", "--limit", "1"]) == 0
    assert read_ratings(ratings)[-1]["choice"] == "B"

    capsys.readouterr()
    assert main(["rate", "--summary", "--ratings", str(ratings)]) == 0
    out = capsys.readouterr().out
    assert "raters: carol, dan" in out and "base-model vs tuned-model: " in out
    assert main(["rate", "--summary", "--json", "--ratings", str(ratings)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["raters"] == ["carol", "dan"]
    [scores] = summary["scores"].values()  # carol's one rating: no interval, strict JSON
    assert scores["fluency"] == {"mean": 5.0, "low": None, "high": None, "n": 1}

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["rate", "--stories", str(stories_file), "--ratings", str(ratings)]) == 2
    assert "--rater NAME" in capsys.readouterr().err
