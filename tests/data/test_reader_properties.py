"""Property-based tests of the data readers (hypothesis): whatever bytes a file holds, a reader
returns records or raises a DataError that names the file, never anything else; and stories
written in each format come back as they were written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taleforge.config import load_config
from taleforge.data.readers import read_dataset
from taleforge.errors import TaleforgeError

#: Derandomized: the same examples on every run, so CI fails only on a real regression.
SETTINGS = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SUFFIXES = [".txt", ".csv", ".tsv", ".jsonl", ".json"]

#: Story text a writer could type: letters, digits, punctuation, inner spaces and line breaks.
story = (
    st.text(
        alphabet=st.characters(
            whitelist_categories=("L", "N", "P", "Zs"), blacklist_characters="\u2028\u2029\x85"
        ),
        min_size=1,
        max_size=200,
    )
    .map(lambda s: " ".join(s.split()))
    .filter(bool)
)


#: The same in printable ASCII, which every common encoding can write.
ascii_story = (
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1)
    .map(lambda s: " ".join(s.split()))
    .filter(bool)
)


def config_for(path: Path):
    return load_config(None, {"data.input": str(path)}).data


@SETTINGS
@given(data=st.binary(max_size=2000), suffix=st.sampled_from(SUFFIXES))
def test_any_bytes_give_records_or_a_clear_data_error(tmp_path: Path, data: bytes, suffix: str):
    path = tmp_path / f"input{suffix}"
    path.write_bytes(data)
    try:
        result = read_dataset(config_for(path))
    except TaleforgeError as exc:
        assert str(exc).strip(), "an error must say something"
        return
    for record in result.records:
        assert isinstance(record.text, str)


@SETTINGS
@given(stories=st.lists(story, min_size=1, max_size=12))
def test_jsonl_stories_come_back_as_written(tmp_path: Path, stories: list[str]):
    path = tmp_path / "stories.jsonl"
    path.write_text("".join(json.dumps({"text": s}) + "\n" for s in stories), encoding="utf-8")
    result = read_dataset(config_for(path))
    assert [r.text for r in result.records] == stories


@SETTINGS
@given(rows=st.lists(st.tuples(story, story), min_size=1, max_size=12))
def test_csv_prompts_and_stories_come_back_as_written(tmp_path: Path, rows: list[tuple[str, str]]):
    path = tmp_path / "stories.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "story"])
        writer.writerows(rows)
    result = read_dataset(config_for(path))
    assert [(r.prompt, r.text) for r in result.records] == rows


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "cp1252"])
@SETTINGS
@given(stories=st.lists(ascii_story, min_size=1, max_size=8))
def test_one_story_per_line_in_any_common_encoding(
    tmp_path: Path, encoding: str, stories: list[str]
):
    path = tmp_path / f"stories-{encoding}.txt"
    path.write_bytes("\n".join(stories).encode(encoding))
    overrides = {"data.input": str(path), "data.txt_split": "line"}
    result = read_dataset(load_config(None, overrides).data)
    assert [r.text for r in result.records] == stories
