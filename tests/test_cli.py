"""The ``taleforge`` command as a user runs it: a real process, stdout vs stderr."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def taleforge(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "taleforge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_generate_prints_only_the_story_on_stdout(tiny_model_dir: Path):
    run = taleforge(
        "generate",
        "The dragon slept",
        "--model",
        str(tiny_model_dir),
        "--seed",
        "7",
        "--max-new-tokens",
        "20",
        "--min-new-tokens",
        "20",
        "--genre",
        "none",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("The dragon slept")
    assert "loading" in run.stderr and "seed 7" in run.stderr and "tokens/s" in run.stderr
    assert "loading" not in run.stdout and "seed" not in run.stdout


def test_generate_json_records_everything(tiny_model_dir: Path):
    run = taleforge(
        "generate",
        "a haunted ship",
        "--model",
        str(tiny_model_dir),
        "--json",
        "--seed",
        "3",
        "--top-k",
        "20",
        "--num-stories",
        "2",
        "--max-new-tokens",
        "8",
        "--stop",
        "###",
        "--stop",
        "THE END",
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    first, second = result["stories"]
    assert (first["seed"], second["seed"]) == (3, 4)
    assert first["genre"] == "horror" and first["genre_source"] == "auto"
    assert first["params"]["top_k"] == 20 and first["params"]["stop"] == ["###", "THE END"]
    assert first["model"] == str(tiny_model_dir)
    assert first["generated_tokens"] <= 8 and first["finish_reason"] in ("length", "eos")


def test_same_seed_same_story_across_processes(tiny_model_dir: Path):
    args = (
        "generate",
        "The keeper lit the lamp",
        "--model",
        str(tiny_model_dir),
        "--seed",
        "11",
        "--max-new-tokens",
        "15",
    )
    assert taleforge(*args).stdout == taleforge(*args).stdout


def test_preset_and_dotted_override(tiny_model_dir: Path):
    run = taleforge(
        "config",
        "--config",
        "creative",
        "--set",
        "sampling.top_k=7",
        "--set",
        f"model.spec={tiny_model_dir}",
    )
    assert run.returncode == 0, run.stderr
    config = json.loads(run.stdout)
    assert config["sampling"]["temperature"] == 1.1  # from configs/creative.toml
    assert config["sampling"]["top_k"] == 7
    assert config["model"]["spec"] == str(tiny_model_dir)


def test_sampler_settings_written_as_json_on_the_command_line():
    run = taleforge(
        "config",
        "--set",
        'sampling.word_bias={"suddenly": -5}',
        "--set",
        'sampling.dry_sequence_breakers=["*", ":"]',
        "--set",
        "sampling.xtc_probability=0.5",
    )
    assert run.returncode == 0, run.stderr
    sampling = json.loads(run.stdout)["sampling"]
    assert sampling["word_bias"] == {"suddenly": -5.0}
    assert sampling["dry_sequence_breakers"] == ["*", ":"]
    assert sampling["xtc_probability"] == 0.5 and sampling["logit_bias"] == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--temperature", "9"), "sampling.temperature.*less than or equal to 5.*--temperature"),
        (("--top-p", "abc"), "sampling.top_p.*valid number"),
        (("--model", "no/such/model/dir"), "model 'no/such/model/dir' not found"),
        (("--model", "gpt2-medium"), "not in the Hugging Face cache.*HF_HOME"),
        (("--genre", "western"), "unknown genre 'western'"),
        (("--config", "nope"), "config preset 'nope' not found"),
        (("--xtc-threshold", "0.7"), "sampling.xtc_threshold.*less than or equal to 0.5"),
        (("--word-bias", "suddenly=-5"), "sampling.word_bias.*not a JSON object.*--word-bias"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args, message):
    run = taleforge("generate", "a story", *args)
    assert run.returncode == 2
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    import re

    assert re.search(message, run.stderr, re.S), run.stderr


def test_help_explains_every_sampling_flag():
    run = taleforge("generate", "--help")
    for flag in (
        "--temperature",
        "--top-k",
        "--top-p",
        "--typical-p",
        "--min-p",
        "--repetition-penalty",
        "--no-repeat-ngram-size",
        "--presence-penalty",
        "--frequency-penalty",
        "--dry-multiplier",
        "--dry-base",
        "--dry-allowed-length",
        "--dry-penalty-last-n",
        "--dry-sequence-breakers",
        "--xtc-threshold",
        "--xtc-probability",
        "--logit-bias",
        "--word-bias",
        "--max-new-tokens",
        "--min-new-tokens",
        "--stop",
        "--num-stories",
        "--seed",
        "--model",
        "--genre",
        "--mode",
        "--json",
        "--memory",
        "--authors-note",
    ):
        assert flag in run.stdout


def test_models_lists_the_embedded_model():
    run = taleforge("models", "--json")
    assert run.returncode == 0, run.stderr
    entries = json.loads(run.stdout)
    assert entries[0]["spec"] == "smollm2-135m" and entries[0]["size_bytes"] > 0
    story = next(e for e in entries if e["spec"] == "taleforge-stories")
    assert story["kind"] == "adapter" and 1_000_000 < story["size_bytes"] < 25 * 2**20
    table = taleforge("models")
    assert "smollm2-135m" in table.stdout and "MB" in table.stdout
    assert "taleforge-stories" in table.stdout
