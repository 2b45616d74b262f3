"""``taleforge evaluate --data FILE``: any file of stories scored as written, every record."""

import gzip
import json
import logging

import pytest

from taleforge.cli import main
from taleforge.config import TaleforgeConfig
from taleforge.data import DataError, detect_format
from taleforge.evaluate import EvaluationError
from taleforge.evaluate.dataset import load_data
from taleforge.evaluate.perplexity import TokenSequence, perplexity

# Curly quotes, an apostrophe and a dash that the data step's cleaning would straighten.
STORIES = [
    "\u201cWho is there?\u201d asked the keeper. Nobody answered \u2014 the lamp went out.",
    "She didn\u2019t look back; the sea took the boat, and the boat took the night.",
    "The dragon slept beneath the castle while the wizard read his spells by candlelight.",
]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def _config(data, **evaluate) -> TaleforgeConfig:
    return TaleforgeConfig.model_validate(
        {"evaluate": {"data": str(data), "tracking": False, **evaluate}}
    )


def test_every_record_is_scored_as_written_and_perplexity_is_that_texts(
    tiny_model_dir, tiny_model, tmp_path, capsys, caplog
):
    caplog.set_level(logging.INFO, logger="taleforge")
    stories = _write_jsonl(tmp_path / "stories.jsonl", [{"text": s} for s in STORIES])
    output = tmp_path / "report"
    code = main(
        [
            "evaluate", "--model", str(tiny_model_dir), "--data", str(stories),
            "--evaluate.output-dir", str(output), "--no-evaluate.tracking",
            "--evaluate.window", "32", "--evaluate.stride", "16",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| perplexity per word | ↓ |" in captured.out
    assert "only perplexity is measured" in caplog.text  # the file has no prompts
    report = json.loads((output / "report.json").read_text())
    assert report["dataset"]["texts"] == 3 and report["dataset"]["prepared"] is None
    assert "all 3 records scored as written" in (output / "report.md").read_text()

    # the same texts scored directly, character for character
    tokenizer = tiny_model.tokenizer
    direct = perplexity(
        tiny_model.model,
        [
            TokenSequence.from_parts([], tokenizer(s, add_special_tokens=False)["input_ids"])
            for s in STORIES
        ],
        [len(s.split()) for s in STORIES],
        window=32,
        stride=16,
        context="model",
        pad_id=0,
    )
    [model] = report["models"]
    assert model["perplexity"]["words"] == direct.words == 42  # the dash counts as a word
    assert model["perplexity"]["tokens"] == direct.tokens
    assert model["perplexity"]["per_word"] == pytest.approx(direct.per_word, rel=1e-5)


@pytest.mark.parametrize("name", ["stories.jsonl", "stories.csv", "stories.jsonl.gz"])
def test_the_file_text_reaches_the_scorer_unchanged(tmp_path, name):
    rows = [
        {"prompt": "The keeper hears a knock.", "genre": "horror", "text": STORIES[0]},
        {"prompt": "", "genre": "", "text": STORIES[1]},
        {"prompt": "", "genre": "", "text": "   "},  # no text: skipped and counted
        {"prompt": "A dragon dreams.", "genre": "", "text": STORIES[2]},
    ]
    path = tmp_path / name
    if name.endswith(".csv"):
        quoted = ['"' + '","'.join(r[k].replace('"', '""') for k in r) + '"' for r in rows]
        path.write_text("prompt,genre,text\n" + "\n".join(quoted) + "\n", "utf-8")
    else:
        _write_jsonl(tmp_path / "stories.jsonl", rows)
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress((tmp_path / "stories.jsonl").read_bytes()))
        assert detect_format(str(path)) == "jsonl"
    data = load_data(_config(path))
    assert [r["text"] for r in data.records] == STORIES
    assert data.skipped == 1 and data.split == "all" and data.directory is None
    assert [(p.prompt, p.genre, p.reference) for p in data.prompts] == [
        ("The keeper hears a knock.", "horror", STORIES[0]),
        ("A dragon dreams.", None, STORIES[2]),
    ]
    assert data.human == tuple(STORIES)


def test_bad_files_say_what_to_change(tmp_path):
    with pytest.raises(EvaluationError, match="not found: give a file of stories"):
        load_data(_config(tmp_path / "nope.jsonl"))

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(EvaluationError, match="is empty: give a file with one story"):
        load_data(_config(empty))

    other = _write_jsonl(tmp_path / "other.jsonl", [{"words": "a b c", "id": 1}])
    with pytest.raises(DataError, match="--data.text-column"):
        load_data(_config(other))

    blank = _write_jsonl(tmp_path / "blank.jsonl", [{"text": " "}, {"text": ""}])
    with pytest.raises(EvaluationError, match="holds no story text .* --data.text-column"):
        load_data(_config(blank))

    stories = _write_jsonl(tmp_path / "stories.jsonl", [{"text": s} for s in STORIES])
    with pytest.raises(EvaluationError, match="no prompts to write for"):
        load_data(_config(stories, metrics=("diversity",)))
