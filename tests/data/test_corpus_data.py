"""Reading a compressed corpus of works cut into parts, and the chat training template."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from taleforge.config import DataConfig
from taleforge.data.genres import check_genres
from taleforge.data.prepare import training_selection
from taleforge.data.readers import number_parts, read_dataset
from taleforge.data.records import DataError, Record
from taleforge.data.templates import (
    SHORT_STORY_WORDS,
    dialogue_lines,
    premise_of,
    render,
    sentences,
    truncate_words,
)
from taleforge.data.tokenize import assign_splits
from taleforge.generate.prompts import instruction

STORY = (
    "The lighthouse keeper woke before dawn. The sea had gone quiet in a way he did not like. "
    "He climbed the stairs to the lamp and watched the water. Far out, a door stood in the "
    "sea, open, and the keeper knew the door was waiting for the keeper."
)


def fake_chat(messages):
    return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


ROWS = [
    {
        "source": "novel-a",
        "kind": "story",
        "genre": None,
        "prompt": None,
        "text": f"Part one. {STORY}",
    },
    {
        "source": "novel-a",
        "kind": "story",
        "genre": None,
        "prompt": None,
        "text": f"Part two. {STORY}",
    },
    {
        "source": "novel-a",
        "kind": "story",
        "genre": None,
        "prompt": None,
        "text": f"Part three. {STORY}",
    },
    {
        "source": "poems",
        "kind": "poem",
        "genre": "lyric",
        "prompt": None,
        "text": "Roses fade\nand so do we",
    },
]


@pytest.mark.parametrize("name", ["stories.jsonl.gz", "stories.jsonl"])
def test_a_gzipped_jsonl_reads_like_the_plain_file_with_kind_and_parts(tmp_path, name):
    path = write_jsonl(tmp_path / name, ROWS)
    read = read_dataset(DataConfig(input=str(path)))
    assert read.format == "jsonl"
    assert [r.text for r in read.records] == [row["text"] for row in ROWS]
    assert [r.kind for r in read.records] == ["story", "story", "story", "poem"]
    assert [(r.part, r.ends) for r in read.records] == [
        (0, False),
        (1, False),
        (2, True),
        (0, True),
    ]


def test_csv_and_txt_read_through_gzip(tmp_path):
    csv_path = tmp_path / "stories.csv.gz"
    with gzip.open(csv_path, "wt", encoding="utf-8") as handle:
        handle.write(f'title,text\nThe keeper,"{STORY}"\n')
    txt_path = tmp_path / "stories.txt.gz"
    with gzip.open(txt_path, "wt", encoding="utf-8") as handle:
        handle.write(f"{STORY}\n\n{STORY.upper()}\n")
    assert read_dataset(DataConfig(input=str(csv_path))).records[0].title == "The keeper"
    assert len(read_dataset(DataConfig(input=str(txt_path), txt_split="blank")).records) == 2


def test_a_damaged_gzip_file_is_a_clear_error(tmp_path):
    whole = gzip.compress(("\n".join(json.dumps(r) for r in ROWS * 50)).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="not a complete gzip file"):
        read_dataset(DataConfig(input=str(path)))


def test_a_long_run_of_one_source_is_a_collection_not_one_work():
    records = [Record(text=f"piece {i}", group="posts.csv") for i in range(5)]
    numbered = number_parts(records, max_parts=3)
    assert [(r.part, r.ends) for r in numbered] == [(0, True)] * 5
    numbered = number_parts(records, max_parts=10)
    assert [r.part for r in numbered] == [0, 1, 2, 3, 4] and numbered[-1].ends


def test_the_parts_of_a_work_share_its_split():
    config = DataConfig(test_fraction=0.3, validation_fraction=0.3)
    works = []
    for w in range(30):
        works += number_parts(
            [Record(text=f"work {w} part {p} " * 5, group=f"w{w}") for p in range(3)], 10
        )
    splits = assign_splits(works, config)
    for rows in splits.values():
        groups = {r.group for r in rows}
        assert all(sum(r.group == g for r in rows) == 3 for g in groups)
    assert all(splits[name] for name in splits)


def test_the_chat_template_asks_the_way_the_studio_asks():
    record = Record(text=STORY, genre="fantasy", title="The Door in the Sea", kind="story")
    rendered = render(record, "chat", True, fake_chat)
    request = instruction("story", "The Door in the Sea", "fantasy", length="short")
    assert f"<user>{request}</user>" in rendered.prefix
    assert rendered.story == STORY and rendered.ends
    # a long opening part is asked for as a long story and has no end
    opening = record.with_(ends=False)
    assert "Write a long fantasy story" in render(opening, "chat", True, fake_chat).prefix
    assert not render(opening, "chat", True, fake_chat).ends
    # a later part is the story so far, with no request: what continue mode sees
    later = record.with_(part=2)
    assert render(later, "chat", True, fake_chat).prefix == ""


def test_a_whole_story_longer_than_short_is_asked_for_as_long():
    words = " ".join(["word"] * (SHORT_STORY_WORDS + 1)) + "."
    record = Record(text=words, genre="fantasy", kind="story")
    assert "Write a long fantasy story" in render(record, "chat", True, fake_chat).prefix
    assert render(record, "chat", True, fake_chat).ends


def test_train_repeat_weights_whole_short_pieces_and_kinds():
    short = Record(text=STORY, kind="story")
    cut = Record(text=" ".join([STORY] * 20), kind="story")  # cut below: not whole
    scene = Record(text="A: Hello there, friend.\nB: Hello.", kind="dialogue", part=0, ends=False)
    poem = Record(text="Roses fade\nand so do we", kind="poem")
    config = DataConfig(train_truncate_words=100, train_repeat={"short": 3, "dialogue": 2})
    selected = training_selection([short, cut, scene, poem], config)
    texts = [r.text for r in selected]
    assert texts.count(STORY) == 3
    assert texts.count(poem.text) == 3  # a whole short poem counts as short
    assert texts.count(scene.text) == 2
    assert sum(r.kind == "story" and not r.ends for r in selected) == 1
    with pytest.raises(ValueError, match="train_repeat"):
        DataConfig(train_repeat={"novel": 2})


def test_poems_and_dialogue_are_asked_for_in_their_form():
    poem = Record(text="Roses fade\nand so do we\nwhen summer ends\nby the sea", kind="poem")
    assert "<user>Write a poem about:" in render(poem, "chat", False, fake_chat).prefix
    scene = Record(
        text="ROMEO:\nBut soft, what light\nthrough yonder window?\n\nJULIET:\nAy me.",
        kind="dialogue",
    )
    rendered = render(scene, "chat", False, fake_chat)
    assert "one line per turn in the form NAME: words" in rendered.prefix
    assert "ROMEO and JULIET" in rendered.prefix
    assert rendered.story.split("\n") == [
        "ROMEO: But soft, what light through yonder window?",
        "JULIET: Ay me.",
    ]


def test_the_premise_is_never_the_first_sentence():
    record = Record(text=STORY)
    premise = premise_of(record)
    assert premise in sentences(STORY)[1:]
    assert "keeper" in premise.lower() or "door" in premise.lower() or "sea" in premise.lower()
    assert premise_of(record.with_(title="The Door")) == "The Door"
    assert premise_of(record.with_(prompt="A door in the sea.")) == "A door in the sea."


def test_dialogue_lines_join_each_speech():
    assert dialogue_lines("First Citizen:\nBefore we proceed\nany further.\n\nAll:\nSpeak.") == (
        "First Citizen: Before we proceed any further.\nAll: Speak."
    )


def test_truncation_cuts_after_a_paragraph_or_sentence():
    text = "One two three.\n\nFour five six seven.\n\nEight nine."
    assert truncate_words(text, 100) == text
    assert truncate_words(text, 8) == "One two three.\n\nFour five six seven."
    assert truncate_words("A b c. D e f. G h i.", 6) == "A b c. D e f."


def test_genre_check_reports_agreement_by_source(tmp_path):
    records = [
        Record(text="x", genre="horror", genre_source="column", source="s.jsonl:line 1"),
        Record(text="y", genre="sci-fi", genre_source="classifier", source="s.jsonl:line 2"),
        Record(text="z", genre=None, genre_source="classifier", source="s.jsonl:line 3"),
    ]
    check = tmp_path / "check.jsonl"
    check.write_text(
        '{"line": 1, "genre": "horror"}\n{"line": 2, "genre": "adventure", "confidence": '
        '"unsure"}\n{"line": 3, "genre": "none"}\n'
    )
    result = check_genres(records, str(check))
    assert result["accuracy"] == pytest.approx(2 / 3, abs=1e-3)
    assert result["accuracy_sure"] == 1.0
    assert result["by_source"] == {"column": 1.0, "classifier": 0.5}
    assert result["confusions"] == {"adventure -> sci-fi": 1}
