"""Every reader, on small datasets written here: the records a user gets from each format."""

import json
from pathlib import Path

import pytest

from taleforge.config import DataConfig
from taleforge.data import ReadResult, Record, detect_format, read_dataset
from taleforge.data.clean import clean_records
from taleforge.data.records import DataError


def read(path: Path, **options) -> ReadResult:
    return read_dataset(DataConfig(input=str(path), **options))


def fields(records: list[Record]) -> list[tuple[str, str | None, str | None, str | None, str]]:
    """What a user sees of each record: text, prompt, genre, title and where it came from."""
    return [(r.text, r.prompt, r.genre, r.title, r.source) for r in records]


DOOR = "The keeper found a door in the sand, opened it, and the sea came in."
BAKERY = "The last robot on Earth baked bread for a town that had forgotten how to eat."
HARBOUR = "They met at the harbour at dawn, and she laughed when the wind stole his hat."


# -- CSV / TSV --------------------------------------------------------------------------------


def test_csv_reads_the_columns_it_is_told_to(tmp_path):
    # "text" holds a one-line summary here: the configured column wins over the guess.
    path = tmp_path / "library.csv"
    path.write_text(
        "text,heading,seed,tale,kind\n"
        f'a summary,The Door,A door at the bottom of the sea,"{DOOR}",fantasy\n'
        f'another summary,Bakery,The last robot opens a bakery,"{BAKERY}",sci-fi\n'
    )
    result = read(
        path, text_column="tale", prompt_column="seed", genre_column="kind", title_column="heading"
    )
    assert result.format == "csv"
    assert result.files == [path]
    assert fields(result.records) == [
        (DOOR, "A door at the bottom of the sea", "fantasy", "The Door", "library.csv:line 2"),
        (BAKERY, "The last robot opens a bakery", "sci-fi", "Bakery", "library.csv:line 3"),
    ]
    assert [r.genre_source for r in result.records] == ["column", "column"]
    # Column names are matched without regard to case.
    same = read(
        path, text_column="TALE", prompt_column="Seed", genre_column="KIND", title_column="Heading"
    )
    assert same.records == result.records


def test_csv_columns_are_guessed_from_their_names(tmp_path):
    path = tmp_path / "stories.csv"
    path.write_text(
        "Author,Title,Writing_Prompt,Story,Genre\n"
        f'Ann,The Door,A door at the bottom of the sea,"{DOOR}",Fantasy\n'
        f'Bo,Harbour,Two strangers meet at dawn,"{HARBOUR}",romance\n'
    )
    assert fields(read(path).records) == [
        (DOOR, "A door at the bottom of the sea", "Fantasy", "The Door", "stories.csv:line 2"),
        (HARBOUR, "Two strangers meet at dawn", "romance", "Harbour", "stories.csv:line 3"),
    ]


def test_csv_quoted_fields_keep_line_breaks_commas_and_quotes(tmp_path):
    path = tmp_path / "stories.csv"
    path.write_text(
        "title,prompt,story\n"
        '"The Door","A door in the sea","She found the door.\n\nShe opened it, and the sea '
        'came in."\n'
        'Bakery,A robot bakes,"The robot said ""good morning"" to nobody, and baked."\n'
    )
    records = read(path).records
    assert [r.text for r in records] == [
        "She found the door.\n\nShe opened it, and the sea came in.",
        'The robot said "good morning" to nobody, and baked.',
    ]
    assert [r.title for r in records] == ["The Door", "Bakery"]
    assert records[0].source.startswith("stories.csv:line ")
    assert records[1].source == "stories.csv:line 5"


def test_messy_csv_is_read_and_cleaned(tmp_path):
    # A spreadsheet export: BOM, CRLF line ends, spaces around header names, HTML in the
    # text, and a row whose text is empty.
    path = tmp_path / "messy.csv"
    path.write_bytes(
        b"\xef\xbb\xbf Title , Story ,Genre \r\n"
        b'"Night Shift","<p>The nurse heard a <b>whisper</b> &amp; froze.</p>",horror\r\n'
        b"Blank,,comedy\r\n"
        b'"Harbour","They met at the harbour at dawn.\r\nShe laughed.",romance\r\n'
    )
    result = read(path)
    assert result.encoding == "utf-8-sig"
    assert [(r.title, r.genre, r.source) for r in result.records] == [
        ("Night Shift", "horror", "messy.csv:line 2"),
        (None, None, "messy.csv:line 3"),
        ("Harbour", "romance", "messy.csv:line 5"),
    ]
    assert result.records[0].text == "<p>The nurse heard a <b>whisper</b> &amp; froze.</p>"
    assert result.records[1].text == ""
    # Configured names match the header whatever its spacing and case.
    assert read(path, text_column="story", genre_column="GENRE").records == result.records

    kept, report = clean_records(result.records, DataConfig(min_words=0, dedup_near=False))
    assert [r.text for r in kept] == [
        "The nurse heard a whisper & froze.",
        "They met at the harbour at dawn.\nShe laughed.",
    ]
    assert dict(report.removed) == {"empty": 1}
    assert report.examples["empty"] == "messy.csv:line 3"


def test_tsv_is_split_on_tabs_only(tmp_path):
    path = tmp_path / "stories.tsv"
    path.write_text(
        "prompt\ttext\tgenre\n"
        "A door in the sea\tShe opened the door, slowly; the sea came in.\tfantasy\n"
        "A robot bakes\tThe robot, alone, baked bread | and sang.\tsci-fi\n"
    )
    result = read(path)
    assert result.format == "tsv"
    assert fields(result.records) == [
        (
            "She opened the door, slowly; the sea came in.",
            "A door in the sea",
            "fantasy",
            None,
            "stories.tsv:line 2",
        ),
        (
            "The robot, alone, baked bread | and sang.",
            "A robot bakes",
            "sci-fi",
            None,
            "stories.tsv:line 3",
        ),
    ]


def test_csv_delimiter_is_detected(tmp_path):
    # Spreadsheets in many locales write ';'-separated "CSV".
    path = tmp_path / "stories.csv"
    path.write_text(f"text;genre\n{DOOR};fantasy\n{HARBOUR};romance\n")
    result = read(path)
    assert result.format == "csv"
    assert [(r.text, r.genre) for r in result.records] == [
        (DOOR, "fantasy"),
        (HARBOUR, "romance"),
    ]


# -- encodings --------------------------------------------------------------------------------


def test_utf8_bom_is_not_part_of_the_text(tmp_path):
    path = tmp_path / "stories.txt"
    path.write_bytes("\ufeffÉmilie opened the door.\nZoë baked the bread.\n".encode())
    result = read(path)
    assert result.encoding == "utf-8-sig"
    assert [r.text for r in result.records] == [
        "Émilie opened the door.",
        "Zoë baked the bread.",
    ]


def test_utf8_bom_with_declared_utf8_encoding(tmp_path):
    path = tmp_path / "stories.csv"
    path.write_bytes(f'\ufefftext,genre\n"{DOOR}",fantasy\n'.encode())
    records = read(path, encoding="utf-8").records
    assert [(r.text, r.genre) for r in records] == [(DOOR, "fantasy")]


ENGLISH_WITH_ACCENTS = (
    "The café on the corner was full that morning. A naïve young woman walked in, ordered tea "
    "and smiled at the waiter. She dreamed of faraway journeys, of forests and castles where "
    "dragons slept under the snow, and of her fiancé, who had gone to sea."
)
MULTILINGUAL = [
    "Le café du coin était plein. Une jeune fille naïve entra, commanda un thé et sourit.",
    "Il était une fois un dragon qui vivait sous la forêt, près d'un château oublié.",
    "Señor García visited the piñata shop in São Paulo, where Zoë and Chloé were waiting.",
    "Der Bäcker öffnete früh die Tür, und die Kinder liefen über die Straße zur Schule.",
]


def test_latin1_file_is_detected(tmp_path):
    english = tmp_path / "english.csv"
    english.write_bytes(f'title,text\nCafé,"{ENGLISH_WITH_ACCENTS}"\n'.encode("latin-1"))
    records = read(english).records
    assert [(r.title, r.text) for r in records] == [("Café", ENGLISH_WITH_ACCENTS)]

    mixed = tmp_path / "mixed.txt"
    mixed.write_bytes("\n".join(MULTILINGUAL).encode("latin-1") + b"\n")
    assert [r.text for r in read(mixed).records] == MULTILINGUAL


def test_declared_encoding_is_used(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f'title,text\nCafé,"{ENGLISH_WITH_ACCENTS}"\n'.encode("latin-1"))
    result = read(latin, encoding="latin-1")
    assert result.encoding == "latin-1"
    assert [(r.title, r.text) for r in result.records] == [("Café", ENGLISH_WITH_ACCENTS)]

    windows = tmp_path / "windows.txt"
    story = "\u201cWho is there?\u201d asked the keeper \u2014 the caf\u00e9 was empty."
    windows.write_bytes(story.encode("cp1252") + b"\n")
    assert [r.text for r in read(windows, encoding="cp1252").records] == [story]


# -- plain text -------------------------------------------------------------------------------

LINE_STORIES = [
    "The dragon slept beneath the castle while the wizard read his spells by candlelight, "
    "and neither of them heard the thief climbing the tower.",
    "A robot on the space station counted the stars every night and sent the number to the "
    "planet below, which never answered.",
    "The detective found a single wet footprint by the window of the locked room and knew at "
    "once who had lied to her.",
    "Nobody went into the basement after the whispers started, not even the old cat who "
    "feared nothing.",
]

PARAGRAPH_STORIES = [
    "The dragon slept beneath the castle\nwhile the wizard read his spells\nby candlelight.",
    "A robot on the space station\ncounted the stars every night\nand sent the number home.",
    "The detective found a footprint\nby the window of the locked room\nand knew who had lied.",
]


def test_one_story_per_line(tmp_path):
    path = tmp_path / "stories.txt"
    path.write_text("\n".join(LINE_STORIES) + "\n")
    result = read(path)
    assert result.format == "txt"
    assert fields(result.records) == [
        (story, None, None, None, f"stories.txt:story {i}")
        for i, story in enumerate(LINE_STORIES, start=1)
    ]


def test_stories_separated_by_blank_lines(tmp_path):
    path = tmp_path / "stories.txt"
    # One "blank" line holds spaces: it still separates.
    path.write_text("\n\n".join(PARAGRAPH_STORIES[:2]) + "\n   \n" + PARAGRAPH_STORIES[2] + "\n")
    assert [(r.text, r.source) for r in read(path).records] == [
        (PARAGRAPH_STORIES[0], "stories.txt:story 1"),
        (PARAGRAPH_STORIES[1], "stories.txt:story 2"),
        (PARAGRAPH_STORIES[2], "stories.txt:story 3"),
    ]


def test_stories_separated_by_blank_lines_with_windows_line_ends(tmp_path):
    path = tmp_path / "stories.txt"
    path.write_bytes("\r\n\r\n".join(PARAGRAPH_STORIES).replace("\n", "\r\n").encode() + b"\r\n")
    texts = [r.text.replace("\r\n", "\n") for r in read(path).records]
    assert texts == PARAGRAPH_STORIES


def test_stories_separated_by_endoftext(tmp_path):
    # <|endoftext|> wins over blank lines: a story may have several paragraphs.
    two_paragraphs = "The keeper lit the lamp.\n\nNo ship came that night."
    path = tmp_path / "stories.txt"
    path.write_text(
        f"{two_paragraphs}\n<|endoftext|>\n{LINE_STORIES[0]}<|endoftext|>{LINE_STORIES[1]}\n"
        "<|endoftext|>\n"
    )
    assert [(r.text, r.source) for r in read(path).records] == [
        (two_paragraphs, "stories.txt:story 1"),
        (LINE_STORIES[0], "stories.txt:story 2"),
        (LINE_STORIES[1], "stories.txt:story 3"),
    ]


@pytest.mark.parametrize(
    ("content", "txt_split", "expected"),
    [
        # Blank-line separated on auto; forced to one story per line.
        ("\n\n".join(PARAGRAPH_STORIES), "line", "\n".join(PARAGRAPH_STORIES).split("\n")),
        # One story per line on auto; forced to blank-line blocks: all one story.
        ("\n".join(LINE_STORIES), "blank", ["\n".join(LINE_STORIES)]),
        # <|endoftext|> on auto; forced to blank lines: the marker stays in the text.
        ("First.<|endoftext|>Second.\n\nThird.", "blank", ["First.<|endoftext|>Second.", "Third."]),
        # One story per line on auto; forced to <|endoftext|>: no marker, one story.
        ("\n".join(LINE_STORIES[:2]), "eot", ["\n".join(LINE_STORIES[:2])]),
    ],
    ids=["blank-as-line", "line-as-blank", "eot-as-blank", "line-as-eot"],
)
def test_txt_split_overrides_auto(tmp_path, content, txt_split, expected):
    path = tmp_path / "stories.txt"
    path.write_text(content + "\n")
    assert [r.text for r in read(path).records] != expected
    assert [r.text for r in read(path, txt_split=txt_split).records] == expected


def test_one_story_per_line_keeps_unicode_separators_inside_a_line(tmp_path):
    stories = [
        "The keeper lit the lamp.\u2028No ship came that night.",
        "The robot baked bread.\x0cThe town ate it all.",
        LINE_STORIES[2],
    ]
    path = tmp_path / "stories.txt"
    path.write_text("\n".join(stories) + "\n")
    assert [r.text for r in read(path).records] == stories


# -- JSON / JSONL -----------------------------------------------------------------------------


def test_jsonl_objects_one_per_line(tmp_path):
    path = tmp_path / "stories.jsonl"
    rows = [
        {"prompt": "A door in the sea", "story": DOOR, "genre": "fantasy", "title": "The Door"},
        {"prompt": "A robot bakes", "story": BAKERY, "genre": ["sci-fi", "comedy"]},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = read(path)
    assert result.format == "jsonl"
    assert fields(result.records) == [
        (DOOR, "A door in the sea", "fantasy", "The Door", "stories.jsonl:line 1"),
        (BAKERY, "A robot bakes", "sci-fi", None, "stories.jsonl:line 2"),
    ]


def test_jsonl_sources_are_file_lines_even_after_blank_lines(tmp_path):
    path = tmp_path / "stories.jsonl"
    path.write_text(json.dumps({"text": DOOR}) + "\n\n" + json.dumps({"text": BAKERY}) + "\n")
    sources = [r.source for r in read(path).records]
    assert sources == ["stories.jsonl:line 1", "stories.jsonl:line 3"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            [{"text": DOOR, "genre": "fantasy"}, {"text": HARBOUR, "prompt": "Two meet"}],
            [
                (DOOR, None, "fantasy", None, "stories.json:item 1"),
                (HARBOUR, "Two meet", None, None, "stories.json:item 2"),
            ],
        ),
        (
            {"version": 2, "data": [{"content": DOOR, "name": "The Door"}]},
            [(DOOR, None, None, "The Door", "stories.json:item 1")],
        ),
        (
            [DOOR, BAKERY],
            [
                (DOOR, None, None, None, "stories.json:item 1"),
                (BAKERY, None, None, None, "stories.json:item 2"),
            ],
        ),
    ],
    ids=["list-of-objects", "data-key", "list-of-strings"],
)
def test_json_file(tmp_path, data, expected):
    path = tmp_path / "stories.json"
    path.write_text(json.dumps(data, indent=2))
    result = read(path)
    assert result.format == "json"
    assert fields(result.records) == expected


# -- WritingPrompts ---------------------------------------------------------------------------

WP_SOURCES = [
    "[WP] You wake up one morning to find a door in your chest .",
    "[EU] Harry Potter opens a bakery in Hogsmeade .",
    "[ WP ] The moon is late tonight .",
]
WP_TARGETS = [
    "I do n't know how long I slept . <newline> <newline> Then I opened the door , and the "
    "sea came in .",
    "The bread was `` magic '' , he said . <newline> Nobody believed him .",
    "It was late . <newline> <newline> Very late , and the tides did n't know what to do .",
]


@pytest.fixture
def writingprompts(tmp_path) -> Path:
    """The released layout: line N of *.wp_source is the prompt of line N of *.wp_target."""
    directory = tmp_path / "writingPrompts"
    directory.mkdir()
    (directory / "train.wp_source").write_text("\n".join(WP_SOURCES) + "\n")
    (directory / "train.wp_target").write_text("\n".join(WP_TARGETS) + "\n")
    (directory / "valid.wp_source").write_text("[WP] A lighthouse keeper finds a key .\n")
    (directory / "valid.wp_target").write_text("The key was warm . <newline> It hummed .\n")
    return directory


TRAIN_RECORDS = [
    (
        WP_TARGETS[0],
        "You wake up one morning to find a door in your chest .",
        None,
        None,
        "train.wp_target:line 1",
    ),
    (
        WP_TARGETS[1],
        "Harry Potter opens a bakery in Hogsmeade .",
        None,
        None,
        "train.wp_target:line 2",
    ),
    (WP_TARGETS[2], "The moon is late tonight .", None, None, "train.wp_target:line 3"),
]


def test_writingprompts_directory_reads_every_pair(writingprompts):
    result = read(writingprompts)
    assert result.format == "writingprompts"
    assert [f.name for f in result.files] == [
        "train.wp_source",
        "train.wp_target",
        "valid.wp_source",
        "valid.wp_target",
    ]
    assert fields(result.records) == [
        *TRAIN_RECORDS,
        (
            "The key was warm . <newline> It hummed .",
            "A lighthouse keeper finds a key .",
            None,
            None,
            "valid.wp_target:line 1",
        ),
    ]


@pytest.mark.parametrize("suffix", [".wp_source", ".wp_target"])
def test_writingprompts_either_file_reads_its_pair(writingprompts, suffix):
    result = read(writingprompts / f"train{suffix}")
    assert result.format == "writingprompts"
    assert [f.name for f in result.files] == ["train.wp_source", "train.wp_target"]
    assert fields(result.records) == TRAIN_RECORDS


def test_writingprompts_with_mismatched_line_counts(writingprompts):
    with (writingprompts / "valid.wp_target").open("a") as handle:
        handle.write("A story without a prompt .\n")
    with pytest.raises(DataError) as caught:
        read(writingprompts)
    message = str(caught.value)
    assert "valid.wp_source has 1 lines" in message
    assert "valid.wp_target has 2" in message
    assert "line-aligned" in message


# -- a folder of stories ----------------------------------------------------------------------


def test_folder_of_stories(tmp_path):
    root = tmp_path / "stories"
    files = {
        "a-letter-home.md": "Dear mother, the sea is calm and I am well.\n",
        "drafts/harbour.txt": HARBOUR + "\n",
        "drafts/old/first_try.txt": "The first draft of the harbour story.\n",
        "fantasy/dragon.md": "# The Sleeping Dragon\n\nThe dragon slept beneath the castle.\n",
        "fantasy/wizard_tale.txt": "The wizard read his spells by candlelight.\n",
        "scifi/robot-bakery.txt": BAKERY + "\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "fantasy" / "cover.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    result = read(root)
    assert result.format == "folder"
    assert result.files == [root / name for name in files]
    assert [(r.text, r.genre, r.title, r.source) for r in result.records] == [
        ("Dear mother, the sea is calm and I am well.", None, "a letter home", "a-letter-home.md"),
        (HARBOUR, None, "harbour", "drafts/harbour.txt"),
        ("The first draft of the harbour story.", None, "first try", "drafts/old/first_try.txt"),
        (
            "The dragon slept beneath the castle.",
            "fantasy",
            "The Sleeping Dragon",
            "fantasy/dragon.md",
        ),
        (
            "The wizard read his spells by candlelight.",
            "fantasy",
            "wizard tale",
            "fantasy/wizard_tale.txt",
        ),
        (BAKERY, "sci-fi", "robot bakery", "scifi/robot-bakery.txt"),
    ]
    assert [r.genre_source for r in result.records][-3:] == ["column"] * 3


def test_folder_genre_accepts_extra_genres(tmp_path):
    (tmp_path / "western").mkdir()
    (tmp_path / "western" / "showdown.txt").write_text("The stranger rode into town at noon.\n")
    assert read(tmp_path).records[0].genre is None
    assert read(tmp_path, extra_genres=("western",)).records[0].genre == "western"


# -- Hugging Face datasets saved to disk ------------------------------------------------------


def test_saved_dataset_dict(tmp_path):
    import datasets

    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {
                    "prompt": ["A door in the sea", "A robot bakes"],
                    "story": [DOOR, BAKERY],
                    "genre": ["fantasy", "sci-fi"],
                    "title": ["The Door", None],
                }
            ),
            "test": datasets.Dataset.from_dict(
                {
                    "prompt": ["Two meet"],
                    "story": [HARBOUR],
                    "genre": ["romance"],
                    "title": ["Harbour"],
                }
            ),
        }
    ).save_to_disk(str(tmp_path / "saved"))
    result = read(tmp_path / "saved")
    assert result.format == "hf"
    assert [(r.text, r.prompt, r.genre, r.title) for r in result.records] == [
        (DOOR, "A door in the sea", "fantasy", "The Door"),
        (BAKERY, "A robot bakes", "sci-fi", None),
        (HARBOUR, "Two meet", "romance", "Harbour"),
    ]
    assert all(r.source.startswith("saved:") and " row " in r.source for r in result.records)


def test_saved_dataset_dict_sources_tell_splits_apart(tmp_path):
    import datasets

    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": [DOOR]}),
            "test": datasets.Dataset.from_dict({"text": [HARBOUR]}),
        }
    ).save_to_disk(str(tmp_path / "saved"))
    sources = [r.source for r in read(tmp_path / "saved").records]
    assert len(set(sources)) == 2
    assert "train" in sources[0] and "test" in sources[1]


def test_saved_dataset(tmp_path):
    import datasets

    datasets.Dataset.from_dict(
        {"text": [DOOR, HARBOUR], "tags": [["fantasy"], []], "headline": ["The Door", ""]}
    ).save_to_disk(str(tmp_path / "saved"))
    result = read(tmp_path / "saved")
    assert result.format == "hf"
    assert fields(result.records) == [
        (DOOR, None, "fantasy", "The Door", "saved:row 1"),
        (HARBOUR, None, None, None, "saved:row 2"),
    ]


# -- format detection -------------------------------------------------------------------------


def test_detect_format(tmp_path, writingprompts):
    import datasets

    def write(name: str, content: str = "A story.\n") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        return path

    datasets.Dataset.from_dict({"text": ["a"]}).save_to_disk(str(tmp_path / "hf-dataset"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(
        str(tmp_path / "hf-dict")
    )
    write("folder/fantasy/dragon.md")
    specs = {
        str(write("stories.csv", "text\nA story.\n")): "csv",
        str(write("STORIES.CSV", "text\nA story.\n")): "csv",
        str(write("stories.tsv", "text\tgenre\n")): "tsv",
        str(write("stories.tab", "text\tgenre\n")): "tsv",
        str(write("stories.jsonl", '{"text": "a"}\n')): "jsonl",
        str(write("stories.ndjson", '{"text": "a"}\n')): "jsonl",
        str(write("stories.json", '[{"text": "a"}]')): "json",
        str(write("stories.txt")): "txt",
        str(write("stories.text")): "txt",
        str(write("story.md")): "txt",
        str(write("no-suffix-objects", '  {"text": "a"}\n')): "jsonl",
        str(write("no-suffix-prose")): "txt",
        str(writingprompts): "writingprompts",
        str(writingprompts / "train.wp_source"): "writingprompts",
        str(writingprompts / "train.wp_target"): "writingprompts",
        str(tmp_path / "folder"): "folder",
        str(tmp_path / "hf-dataset"): "hf",
        str(tmp_path / "hf-dict"): "hf",
        "hf:roneneldan/TinyStories": "hf",
    }
    assert {spec: detect_format(spec) for spec in specs} == specs
