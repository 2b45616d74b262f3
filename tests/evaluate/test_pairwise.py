"""Blind pairwise comparison: pairing, the seeded order, win rates with Wilson intervals, the
session driven by scripted answers, and `taleforge rate --pairwise` fed on stdin."""

import io
import json
import sys

import pytest

from taleforge.cli import main
from taleforge.evaluate import EvaluationError
from taleforge.evaluate.human import load_story_files, pairwise_session, read_ratings
from taleforge.evaluate.pairwise import (
    format_results,
    judgement,
    pairs,
    session_order,
    shown_order,
    summarize,
    wilson_interval,
)


def story(model, n, text=None, run="eval"):
    return {
        "id": f"{model}|base|p{n}|{n}",
        "model": model,
        "prompt_id": f"p{n}",
        "prompt": f"prompt {n}",
        "text": text or f"story {n} by {model}",
        "run": run,
    }


def scripted(answers):
    """An ``input`` replacement answering from a list, then end of input."""
    queue = list(answers)

    def ask(question):
        if not queue:
            raise EOFError
        return queue.pop(0)

    return ask


def test_every_model_pair_for_each_prompt_they_share():
    stories = [story(m, n) for m in ("base", "old", "new") for n in range(3)]
    stories.append(story("new", 9))  # a prompt only one model wrote for: no pair
    found = pairs(stories)
    assert len(found) == 3 * 3  # 3 prompts x (base-old, base-new, old-new)
    assert {p.models for p in found} == {("base", "old"), ("base", "new"), ("old", "new")}
    assert all(p.first["prompt"] == p.second["prompt"] == p.prompt for p in found)
    only = pairs(stories, ["new", "base"])
    assert {p.models for p in only} == {("new", "base")} and len(only) == 3

    with pytest.raises(EvaluationError, match="two models"):
        pairs([story("base", 0)])
    with pytest.raises(EvaluationError, match="no stories of model 'gpt-9'"):
        pairs(stories, ["base", "gpt-9"])
    with pytest.raises(EvaluationError, match="no prompt in common"):
        pairs([story("base", 0), story("new", 1)])


def test_stories_files_of_two_evaluations_pair_up_by_prompt(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(
        "".join(json.dumps(story(m, n)) + "\n" for m in ("base", "old") for n in (0, 1))
    )
    # the second evaluation ran base again (the same stories) and the new model
    second.write_text(
        "".join(json.dumps(story(m, n)) + "\n" for m in ("base", "new") for n in (1, 2))
    )
    stories = load_story_files([first, second])
    assert len(stories) == 7  # base's story for prompt 1 once
    assert sorted((p.prompt, p.models) for p in pairs(stories)) == [
        ("prompt 0", ("base", "old")),
        ("prompt 1", ("base", "new")),
        ("prompt 1", ("base", "old")),
        ("prompt 1", ("old", "new")),
        ("prompt 2", ("base", "new")),
    ]


def test_the_shown_order_is_a_seeded_coin_per_pair():
    found = pairs([story(m, n) for m in ("x", "y") for n in range(40)])
    orders = [shown_order(p, seed=1) for p in found]
    assert orders == [shown_order(p, seed=1) for p in found]  # reproducible from the seed
    firsts = [a["model"] for a, _ in orders]
    assert 10 < firsts.count("x") < 30  # both orders, about half each
    assert [a["model"] for a, _ in (shown_order(p, seed=2) for p in found)] != firsts
    assert session_order(found, 3) == session_order(found, 3) != found


def test_wilson_interval_of_known_proportions():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(7, 10) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(3, 0)


def test_summary_of_known_judgements():
    records = []
    # x against y: 6 wins, 2 losses, 2 ties -> (6 + 1) / 10 = 70%, Wilson [39.7%, 89.2%]
    for index, choice in enumerate(["x"] * 6 + ["y"] * 2 + [None] * 2):
        long_x = index < 3  # x's story is the longer one in the first three
        a = story("x", index, "word " * (30 if long_x else 10))
        b = story("y", index, "word " * 20)
        side = {"x": "A", "y": "B", None: "tie"}[choice]
        records.append(judgement("ann" if index % 2 else "bob", a, b, side, 1, "t"))
    # an A/B record of an earlier version counts too (ties half, no word counts)
    records.append({"type": "ab", "rater": "cy", "models": {"A": "z", "B": "x"}, "winner": "z"})
    records.append({"type": "score", "rater": "ann", "model": "x", "scores": {"fluency": 3}})
    judge = judgement("judge:m", story("x", 0), story("y", 0), "tie", 0, "t", agreed=False)
    judge["orders"] = [{"verdict": "A"}, {"verdict": None}]
    records.append(judge)

    humans, earlier, by_judge = summarize(records)
    assert (humans.source, humans.model, humans.other) == ("humans", "x", "y")
    assert (humans.wins, humans.losses, humans.ties, humans.judgements) == (6, 2, 2, 10)
    assert humans.win_rate == pytest.approx(0.7)
    assert (humans.low, humans.high) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    # decisive judgements of stories of different lengths: 8; the longer won 3 (x's long
    # stories) + 2 (y beat x's short stories) + 0 of x's short wins = 5
    assert (humans.decided_by_length, humans.longer_won) == (8, 5)
    assert (earlier.model, earlier.other, earlier.wins, earlier.losses) == ("x", "z", 0, 1)
    assert earlier.longer_share is None
    assert (by_judge.source, by_judge.ties, by_judge.unparsed, by_judge.disagreements) == (
        "judge:m",
        1,
        1,
        1,
    )
    text = format_results((humans, earlier, by_judge))
    assert "x vs y: 70% [40%, 89%] (6 wins, 2 losses, 2 ties; 10 judgements)" in text
    assert "the longer story won 5 of 8 wins" in text
    assert "the two orders disagreed on 1; 1 answers unparsed" in text
    assert "Wilson" in text and "no pairwise" in format_results(())


def test_session_is_blind_records_the_order_and_resumes(tmp_path):
    ratings = tmp_path / "ratings.jsonl"
    models = {"base-model": "one", "tuned-model": "two"}
    stories = [story(m, n, f"tale {n} by {models[m]}") for m in models for n in range(4)]
    shown = []
    # pair 1: a typo then a; pair 2: b; pair 3: tie; then end of input
    saved = pairwise_session(
        stories, "ann", ratings, seed=5, ask=scripted(["x", "a", "b", "t"]), say=shown.append
    )
    assert saved == 3
    screen = "\n".join(shown)
    assert "Story A" in screen and "Story B" in screen and "order seed 5" in screen
    assert "base-model" not in screen and "tuned-model" not in screen  # blind
    records = read_ratings(ratings)
    assert [r["choice"] for r in records] == ["A", "B", "tie"]
    for record in records:
        assert record["type"] == "pairwise" and record["rater"] == "ann" and record["seed"] == 5
        expected = record["models"][record["choice"]] if record["choice"] != "tie" else None
        assert record["winner"] == expected
        a, b = (next(s for s in stories if s["id"] == record["story_ids"][k]) for k in "AB")
        assert record["models"] == {"A": a["model"], "B": b["model"]}
        assert record["words"] == {"A": 4, "B": 4}
        # the recorded seed reproduces the order that was shown
        [pair] = [p for p in pairs(stories) if p.story_ids == {a["id"], b["id"]}]
        assert shown_order(pair, record["seed"]) == (a, b)

    # the next session shows only the pair not yet judged; another rater sees all four
    assert pairwise_session(stories, "ann", ratings, ask=scripted(["b"]), say=shown.append) == 1
    assert pairwise_session(stories, "ann", ratings, ask=scripted(["a"]), say=shown.append) == 0
    assert len(read_ratings(ratings)) == 4
    assert pairwise_session(stories, "bob", ratings, ask=scripted(["s", "q"]), say=print) == 0


def test_rate_pairwise_reads_answers_from_stdin(tmp_path, monkeypatch, capsys):
    first, second = tmp_path / "a" / "stories.jsonl", tmp_path / "b" / "stories.jsonl"
    for path, model in ((first, "base"), (second, "tuned")):
        path.parent.mkdir()
        path.write_text("".join(json.dumps(story(model, n)) + "\n" for n in range(3)))
    ratings = tmp_path / "ratings.jsonl"
    command = [
        "rate",
        "--pairwise",
        "--stories",
        str(first),
        str(second),
        "--ratings",
        str(ratings),
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("carol\na\nt\nq\n"))
    assert main([*command, "--seed", "11"]) == 0
    out = capsys.readouterr().out
    assert "Pair 1 of 3" in out and "A, B or tie (t)?" in out and "saved 2 judgement(s)" in out
    records = read_ratings(ratings)
    assert [(r["rater"], r["choice"], r["seed"]) for r in records] == [
        ("carol", "A", 11),
        ("carol", "tie", 11),
    ]

    monkeypatch.setattr(sys, "stdin", io.StringIO("b\n"))
    assert main([*command, "--rater", "carol"]) == 0  # resumes: the one pair left
    assert "Pair 1 of 1" in capsys.readouterr().out and len(read_ratings(ratings)) == 3

    assert main(["rate", "--pairwise", "--summary", "--ratings", str(ratings)]) == 0
    out = capsys.readouterr().out
    assert "base vs tuned:" in out and "3 judgements" in out and "Wilson" in out
    assert main(["rate", "--pairwise", "--summary", "--json", "--ratings", str(ratings)]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["judgements"] == 3 and result["interval"] == "wilson"
    assert result["wins"] + result["losses"] == 2 and result["ties"] == 1
    assert main(["rate", "--summary", "--ratings", str(ratings)]) == 0  # all ratings
    assert "raters: carol" in capsys.readouterr().out

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    alone = ["--stories", str(first), "--rater", "dan", "--ratings", str(ratings)]
    assert main(["rate", "--pairwise", *alone]) == 2
    assert "two models" in capsys.readouterr().err
