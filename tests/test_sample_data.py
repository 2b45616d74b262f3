"""The shipped sample dataset is what its README promises."""

import csv
import re
from collections import Counter
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "stories.csv"


def rows():
    with SAMPLE.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_sizes_genres_and_kinds():
    data = rows()
    assert len(data) >= 150
    stories = [r for r in data if r["kind"] == "story"]
    per_genre = Counter(r["genre"] for r in stories)
    assert len(per_genre) >= 6 and min(per_genre.values()) >= 18
    assert sum(r["kind"] == "poem" for r in data) >= 15
    assert sum(r["kind"] == "dialogue" for r in data) >= 15
    for story in stories:
        assert 120 <= len(story["text"].split()) <= 400, story["id"]


def test_every_piece_has_a_title_a_prompt_and_a_unique_id():
    data = rows()
    assert len({r["id"] for r in data}) == len(data)
    assert len({r["title"] for r in data}) == len(data)
    for row in data:
        assert row["title"].strip() and row["prompt"].strip() and "\n" not in row["prompt"]
        assert not row["prompt"].startswith("[WP]")


def test_dialogues_are_speaker_turns():
    for row in rows():
        if row["kind"] == "dialogue":
            lines = [line for line in row["text"].splitlines() if line.strip()]
            assert all(re.match(r"^[A-Z][A-Z .'-]*: ", line) for line in lines), row["id"]
