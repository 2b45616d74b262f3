"""The hostile corpus through the command line: every input file, model name and prompt gets
a story, a dataset or one clear ``taleforge: error:`` line with exit code 2, never a traceback.

The CLI's ``main()`` runs in-process (one interpreter for ~250 commands); NUL is dropped from
arguments as the operating system would (argv cannot carry it), undecodable bytes arrive as
lone surrogates exactly as Python passes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rel_corpus import CORPUS, as_text

from taleforge.cli import main

#: The reader each file is offered to, in turn (``--format auto`` picks by extension).
EXTENSIONS = ("csv", "txt", "jsonl", "json", "tsv")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main([arg.replace("\x00", "") for arg in args])
    except SystemExit as exit_:  # argparse refusing an argument
        code = exit_.code if isinstance(exit_.code, int) else 2
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def clear_error(code: int, err: str) -> bool:
    # One message (it may quote the input, line breaks and all), no traceback.
    return code == 2 and "\ntaleforge: error: " in "\n" + err and "Traceback" not in err


def test_prepare_turns_every_hostile_file_into_a_dataset_or_one_clear_error(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    failures = []
    for number, (name, raw) in enumerate(CORPUS):
        source = tmp_path / f"input{number}.{EXTENSIONS[number % len(EXTENSIONS)]}"
        source.write_bytes(raw)
        output = tmp_path / f"out{number}"
        args = ["prepare", "--input", str(source), "--output", str(output)]
        try:
            code, _, err = run_cli([*args, "--model", str(tiny_model_dir), "-q"], capsys)
        except Exception as exc:
            failures.append(f"[{name}] {source.name}: {type(exc).__name__}: {exc}"[:300])
            continue
        if code == 0:
            if not (output / "card.md").is_file():
                failures.append(f"[{name}]: exit 0 without a dataset card")
        elif not clear_error(code, err) or "Traceback" in err:
            failures.append(f"[{name}] {source.name}: exit {code}: {err[-300:]}")
        elif output.exists() and any(output.iterdir()):
            failures.append(f"[{name}]: an error left a half-written output")
    assert not failures, "\n".join(failures)


def test_hostile_model_names_are_refused_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    failures = []
    names = [as_text(raw) for _, raw in CORPUS if 0 < len(raw) <= 300]
    for model in names:
        for command in (["generate", "a prompt"], ["prepare", "--input", str(tmp_path / "x.txt")]):
            extra = ["--max-new-tokens", "2"] if command[0] == "generate" else ["--output", "o"]
            try:
                code, out, err = run_cli([*command, "--model", model, *extra], capsys)
            except Exception as exc:
                failures.append(f"{command[0]} --model {model[:40]!r}: {type(exc).__name__}: {exc}")
                continue
            if not clear_error(code, err) or out:
                failures.append(f"{command[0]} --model {model[:40]!r}: exit {code}: {err[-200:]}")
    assert not failures, "\n".join(failures[:40])
    assert not Path("/tmp/taleforge-pwned").exists()


def test_hostile_prompts_get_a_story_or_a_clear_error(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
):
    failures = []
    for name, raw in CORPUS:
        prompt = as_text(raw)[:5000]
        args = ["generate", prompt, "--model", str(tiny_model_dir), "--backend", "transformers",
                "--max-new-tokens", "2", "--seed", "1", "-q"]  # fmt: skip
        try:
            code, _, err = run_cli(args, capsys)
        except Exception as exc:
            failures.append(f"[{name}]: {type(exc).__name__}: {exc}"[:300])
            continue
        if code != 0 and not clear_error(code, err):
            failures.append(f"[{name}]: exit {code}: {err[-300:]}")
        if "Traceback" in err:
            failures.append(f"[{name}]: a traceback")
    assert not failures, "\n".join(failures)
