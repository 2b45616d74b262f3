"""The LLM judge: reading verdicts, both orders, length bias; against a real taleforge server
(a tiny model with a chat template standing in for the judge: its answers are noise)."""

import json
import socket
from pathlib import Path

import pytest

from reliability.rel_helpers import serve_process  # the real server, on a free port
from taleforge.cli import main
from taleforge.evaluate.human import read_ratings
from taleforge.evaluate.judge import Judge, combine, judge_pairs, parse_verdict
from taleforge.evaluate.pairwise import summarize

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def story(model, n, text):
    return {"id": f"{model}|{n}", "model": model, "prompt": f"prompt {n}", "text": text}


#: Three prompts; "long" writes the longer story each time.
STORIES = [
    story(model, n, f"Story {n}. " + "The dragon slept. " * (8 if model == "long" else 2))
    for model in ("short", "long")
    for n in range(3)
]


def test_a_verdict_is_the_first_a_b_or_tie():
    assert parse_verdict("A") == "A"
    assert parse_verdict(" **B**.") == "B"
    assert parse_verdict("Tie: both are weak") == "tie"
    assert parse_verdict("Story B is better than story A") == "B"
    assert parse_verdict("a story about A") == "A"  # the article "a" is not a verdict
    assert parse_verdict("the dragon slept") is None
    assert parse_verdict("") is None


def test_a_win_needs_both_orders_to_agree():
    assert combine("A", "B") == ("A", True)  # the same story both times
    assert combine("B", "A") == ("B", True)
    assert combine("tie", "tie") == ("tie", True)
    assert combine("A", "A") == ("tie", False)  # position bias: no win
    assert combine("A", None) == ("tie", False)  # unparsed reads as tie
    assert combine(None, None) == ("tie", True)


class ScriptedJudge(Judge):
    """A judge whose answers are a function of the two stories (no server)."""

    def __init__(self, name, pick):
        super().__init__(client=None, url="http://nowhere/v1", model=name)
        self.pick = pick
        self.asked = []

    def answer(self, prompt, story_a, story_b):
        self.asked.append((prompt, story_a, story_b))
        return self.pick(story_a, story_b)


def test_both_orders_are_asked_and_the_length_bias_shows(tmp_path):
    ratings = tmp_path / "ratings.jsonl"
    longer = ScriptedJudge("longer", lambda a, b: "A" if len(a) > len(b) else "B")
    assert judge_pairs(STORIES, longer, ratings, seed=4) == 3
    assert len(longer.asked) == 6
    for (prompt, a, b), (_, a2, b2) in zip(longer.asked[::2], longer.asked[1::2], strict=True):
        assert (a2, b2) == (b, a) and prompt.startswith("prompt ")
    [result] = summarize(read_ratings(ratings))
    assert (result.source, result.model, result.wins, result.judgements) == (
        "judge:longer",
        "long",
        3,
        3,
    )
    assert result.longer_share == 1.0 and result.disagreements == 0
    assert judge_pairs(STORIES, longer, ratings) == 0  # resumed: nothing left to judge

    first = ScriptedJudge("first", lambda a, b: "A")  # always the story shown first
    assert judge_pairs(STORIES, first, ratings) == 3
    by_first = [r for r in summarize(read_ratings(ratings)) if r.source == first.rater]
    assert [(r.ties, r.disagreements, r.unparsed) for r in by_first] == [(3, 3, 0)]


@pytest.fixture(scope="module")
def judge_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 with a chat template and a window wide enough for the rubric."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("tiny-judge")
    torch.manual_seed(2)
    config = GPT2Config.from_pretrained(tiny_model_dir, n_positions=2048)
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def judge_url(judge_model: Path, tmp_path_factory: pytest.TempPathFactory):
    database = tmp_path_factory.mktemp("judge-db") / "taleforge.db"
    with serve_process(judge_model, f"sqlite:///{database}") as (_, url):
        yield f"{url}/v1"


def test_a_taleforge_server_judges_every_pair_in_both_orders(
    judge_url, judge_model, tmp_path, capsys
):
    stories = tmp_path / "stories.jsonl"
    stories.write_text("".join(json.dumps(s) + "\n" for s in STORIES))
    ratings = tmp_path / "ratings.jsonl"
    command = ["rate", "--pairwise", "--stories", str(stories), "--ratings", str(ratings)]
    assert main([*command, "--judge-url", judge_url, "--judge-model", str(judge_model)]) == 0
    out = capsys.readouterr().out
    rater = f"judge:{judge_model}"
    assert rater in out and "short vs long" not in out and "long vs short:" in out
    assert "3 judgements" in out and "answers unparsed" in out
    records = read_ratings(ratings)
    assert len(records) == 3 and len(ratings.read_text().splitlines()) == 3
    for record in records:
        assert record["rater"] == rater and record["choice"] in ("A", "B", "tie")
        first, second = record["orders"]
        assert (first["A"], first["B"]) == (second["B"], second["A"])  # both orders asked
        assert all(isinstance(order["answer"], str) for order in record["orders"])
        assert sorted(record["words"].values()) == [8, 26]

    # again (the default model, the first the server lists): every pair is judged already
    assert main([*command, "--judge-url", judge_url]) == 0
    assert len(read_ratings(ratings)) == 3
    assert main(["rate", "--pairwise", "--summary", "--ratings", str(ratings)]) == 0
    assert "3 judgements" in capsys.readouterr().out


def test_a_wrong_model_or_no_server_is_a_clear_error_at_start(judge_url, tmp_path, capsys):
    stories = tmp_path / "stories.jsonl"
    stories.write_text("".join(json.dumps(s) + "\n" for s in STORIES))
    ratings = tmp_path / "ratings.jsonl"
    command = ["rate", "--pairwise", "--stories", str(stories), "--ratings", str(ratings)]
    assert main([*command, "--judge-url", judge_url, "--judge-model", "gpt-9"]) == 2
    err = capsys.readouterr().err
    assert "does not serve 'gpt-9'" in err and "--judge-model" in err and "Traceback" not in err

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main([*command, "--judge-url", f"http://127.0.0.1:{port}/v1"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the judge server" in err and "Traceback" not in err
    assert main([*command, "--judge-url", judge_url.removesuffix("/v1")]) == 2
    assert "/v1" in capsys.readouterr().err
    assert not ratings.exists()
