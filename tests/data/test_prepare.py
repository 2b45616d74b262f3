"""prepare() end to end: outputs, manifest, data card, caching, genres, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taleforge.config import DataConfig
from taleforge.data import load_prepared, prepare
from taleforge.data.genres import default_classifier

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "stories.csv"


@pytest.fixture(scope="module")
def prepared(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "sample"
    return prepare(
        DataConfig(input=str(SAMPLE), output=str(out), block_size=64), str(tiny_model_dir)
    )


def test_sample_dataset_is_prepared_with_every_artifact(prepared):
    directory = prepared.directory
    for name in (
        "dataset",
        "records",
        "tokenizer",
        "card.md",
        "card.json",
        "lengths.png",
        "taleforge-data.json",
    ):
        assert (directory / name).exists(), name
    assert (directory / "lengths.png").read_bytes()[:4] == b"\x89PNG"
    dataset = prepared.load_dataset()
    assert set(dataset) == {"train", "validation", "test"}
    assert all(len(row) == 64 for row in dataset["train"]["input_ids"][:20])
    manifest = prepared.manifest
    assert manifest["counts"] == {"read": 172, "kept": 172}
    assert manifest["genres"]["sources"] == {"column": 172}
    assert manifest["template"]["name"] == "writing_prompt"
    assert set(manifest["template"]["genre_tags"]) == {
        "fantasy",
        "sci-fi",
        "horror",
        "adventure",
        "mystery",
        "romance",
        "comedy",
    }
    assert manifest["examples"][0].startswith("[")


def test_tokenizer_carries_the_template_tokens(prepared):
    tokenizer = prepared.load_tokenizer()
    for token in prepared.manifest["template"]["special_tokens"]:
        assert tokenizer.tokenize(token) == [token]
    assert "[WP]" in prepared.manifest["template"]["special_tokens"]


def test_records_keep_prompts_and_genres_per_split(prepared):
    records = prepared.load_records()
    tokens = prepared.manifest["tokens"]
    for split in ("train", "validation", "test"):
        assert len(records[split]) == tokens[split]["texts"]
    row = records["test"][0]
    assert row["prompt"] and row["genre"] and row["formatted"].endswith(row["text"])
    assert row["formatted"].startswith(f"[{row['genre'].upper()}] [WP] ")


def test_card_tells_the_story_of_the_data(prepared):
    card = (prepared.directory / "card.md").read_text()
    for part in (
        "## Cleaning",
        "## Genres",
        "## Splits and tokens",
        "lengths.png",
        "writing_prompt",
    ):
        assert part in card
    as_json = json.loads((prepared.directory / "card.json").read_text())
    assert as_json["fingerprint"] == prepared.fingerprint


def test_same_input_and_options_are_instant(prepared, tiny_model_dir):
    config = DataConfig(input=str(SAMPLE), output=str(prepared.directory), block_size=64)
    stamp = (prepared.directory / "dataset").stat().st_mtime_ns
    again = prepare(config, str(tiny_model_dir))
    assert again.cached and again.fingerprint == prepared.fingerprint
    assert (prepared.directory / "dataset").stat().st_mtime_ns == stamp
    assert load_prepared(prepared.directory).fingerprint == prepared.fingerprint


def test_changed_options_or_input_rebuild(tiny_model_dir, tmp_path):
    source = tmp_path / "stories.txt"
    story = "The keeper of the lighthouse counted ships every night until the sea went quiet"
    source.write_text("\n".join(f"{story} number {i} and then the dawn came." for i in range(30)))
    out = tmp_path / "out"
    base = dict(input=str(source), output=str(out), min_words=5, dedup_near=False)
    first = prepare(DataConfig(**base), str(tiny_model_dir))
    bigger = prepare(DataConfig(**base, block_size=32), str(tiny_model_dir))
    assert not bigger.cached and bigger.fingerprint != first.fingerprint
    source.write_text(
        source.read_text() + "\nOne more story about the keeper and the sea "
        "and the ships that never came back to the harbour."
    )
    grown = prepare(DataConfig(**base, block_size=32), str(tiny_model_dir))
    assert not grown.cached and grown.manifest["counts"]["read"] == 31
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging left"


def test_untagged_text_gets_classifier_genres(tiny_model_dir, tmp_path):
    source = tmp_path / "stories.txt"
    source.write_text(
        "The wizard raised his staff and the dragon bowed before the castle gates of the "
        "old kingdom, where magic still burned in every enchanted window.\n"
        "[HORROR] The whisper came from the basement again, and the ghost of the old house "
        "waited in the dark for someone foolish enough to open the door.\n"
    )
    result = prepare(
        DataConfig(
            input=str(source),
            output=str(tmp_path / "o"),
            min_words=5,
            validation_fraction=0,
            test_fraction=0,
        ),
        str(tiny_model_dir),
    )
    records = result.load_records()["train"]
    by_source = {r["genre_source"]: r for r in records}
    assert by_source["tag"]["genre"] == "horror"
    assert not by_source["tag"]["text"].startswith("[HORROR]")
    assert by_source["classifier"]["genre"] == "fantasy"
    classifier = result.manifest["genres"]["classifier"]
    assert classifier["trained_on"] == 172 and 0.3 < classifier["cv_accuracy"] <= 1.0


def test_classifier_is_far_better_than_chance():
    classifier = default_classifier()
    assert classifier.cv_accuracy > 2 / len(classifier.genres)
    assert classifier.predict(
        [
            "A starship crew found an alien signal near the moon of a "
            "distant planet, and the robot pilot plotted a course."
        ]
    ) == ["sci-fi"]


def test_cli_prepare_prints_the_output_directory(tiny_model_dir, tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "taleforge",
            "prepare",
            "--input",
            str(SAMPLE),
            "--output",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--data.packing",
            "pad",
            "--data.template",
            "genre_tagged",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(out)
    assert "172 of 172 records kept" in run.stderr
    manifest = json.loads((out / "taleforge-data.json").read_text())
    assert manifest["tokenizer"]["packing"] == "pad"
    assert manifest["template"]["name"] == "genre_tagged"
    assert "[WP]" not in manifest["template"]["special_tokens"]
