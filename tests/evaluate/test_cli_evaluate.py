"""``taleforge evaluate`` as a user types it: the table on stdout, errors without tracebacks."""

import json
import logging

from taleforge.cli import main


def test_evaluate_on_a_prompt_file_with_a_sweep(
    tiny_model_dir, eval_data, tmp_path, capsys, caplog
):
    caplog.set_level(logging.INFO, logger="taleforge")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("A dragon opens a bakery.\n\nThe moon goes missing.\nA robot paints.\n")
    output = tmp_path / "report"
    code = main(
        [
            "evaluate",
            "--model", str(tiny_model_dir),
            "--evaluate.data", str(eval_data),
            "--evaluate.prompts", str(prompts),
            "--evaluate.metrics", "diversity",
            "--evaluate.metrics", "repetition",
            "--evaluate.output-dir", str(output),
            "--no-evaluate.tracking",
            "--max-new-tokens", "12",
            "--seed", "5",
            "--sweep", "top_k=5,20", "temperature=1.0",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("| metric | better |")
    assert "| distinct-2 | ↑ |" in captured.out and "perplexity" not in captured.out
    assert f"report: {output / 'report.md'}" in caplog.text
    report = json.loads((output / "report.json").read_text())
    assert report["dataset"]["prompt_source"] == str(prompts)
    assert report["command"].startswith("taleforge evaluate --model")
    [model] = report["models"]
    assert [r["point"] for r in model["runs"]] == [
        "base",
        "top_k=5 temperature=1.0",
        "top_k=20 temperature=1.0",
    ]
    stories = [json.loads(line) for line in (output / "stories.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in stories] == [
        "A dragon opens a bakery.",
        "The moon goes missing.",
        "A robot paints.",
    ]
    assert [s["seed"] for s in stories] == [5, 6, 7]


def test_evaluate_errors_are_one_line_with_the_fix(tiny_model_dir, eval_data, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    common = ["evaluate", "--model", str(tiny_model_dir), "--evaluate.data", str(eval_data)]
    common += ["--evaluate.output-dir", str(tmp_path / "out"), "--no-evaluate.tracking"]

    assert main([*common, "--evaluate.prompts", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("taleforge: error: prompt file") and "Traceback" not in err

    assert main([*common, "--sweep", "temprature=1.0"]) == 2
    assert "did you mean 'temperature'" in capsys.readouterr().err

    assert main([*common, "--evaluate.window", "64", "--evaluate.stride", "128"]) == 2
    assert "lower --evaluate.stride" in capsys.readouterr().err

    assert main([*common, "--evaluate.metrics", "bleu"]) == 2
    assert "evaluate.metrics" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
