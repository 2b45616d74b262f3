"""``evaluate`` end to end on two tiny GPT-2s: the report a user gets, and bad input."""

import json
import math
import shutil

import pytest

from taleforge import StoryGenerator, load_model
from taleforge.errors import ModelLoadError, ModelNotFoundError
from taleforge.evaluate import EvaluationError, evaluate

ROWS = (
    "perplexity per word",
    "prompt ranking, dataset stories (chance 0.33)",
    "distinct-2",
    "self-BLEU",
    "seq-rep-4",
    "BLEU vs",
    "chrF",
    "prompt ranking, generated stories",
    "TF-IDF",
    "genre adherence",
    "cliché score (per 1,000 words)",
    "words per story",
    "share of empty stories",
    "share starting with a lower-case word",
    "share that ended on their own",
)


@pytest.fixture(scope="module")
def report(tiny_model_dir, other_model_dir, eval_data, eval_config, tmp_path_factory):
    """One evaluation of two models with a two-point sweep, tracked in a fresh MLflow store."""
    root = tmp_path_factory.mktemp("evaluation")
    config = eval_config(
        tiny_model_dir,
        eval_data,
        root / "report",
        sweep=("temperature=0.8,1.5",),
        tracking=True,
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
    )
    return evaluate(config, [str(tiny_model_dir), str(other_model_dir)], command="taleforge x")


def test_the_report_directory_has_json_markdown_plots_and_stories(report):
    files = {p.name for p in report.directory.iterdir()}
    assert {"report.json", "report.md", "stories.jsonl", "sweep_stories.jsonl"} <= files
    for plot in ("metrics.png", "perplexity.png", "lengths.png", "sweep.png"):
        assert (report.directory / plot).read_bytes()[:4] == b"\x89PNG"
        assert (report.directory / plot).stat().st_size < 150_000
    assert not [p for p in report.directory.parent.iterdir() if p.name.startswith(".")]
    saved = json.loads((report.directory / "report.json").read_text())
    assert saved["command"] == "taleforge x"
    assert saved["dataset"]["split"] == "test" and saved["dataset"]["prompts"] == 4
    assert "TF-IDF" in " ".join(saved["notes"]) and "MAUVE" in " ".join(saved["notes"])
    assert 0 < saved["genre_classifier"]["cv_accuracy"] <= 1


def test_models_are_side_by_side_with_every_metric(report):
    labels = [m.label for m in report.models]
    assert len(labels) == 2 and labels[0] != labels[1]
    markdown = (report.directory / "report.md").read_text()
    table_header = next(line for line in markdown.splitlines() if line.startswith("| metric"))
    assert all(f"`{label}`" in table_header for label in labels)
    for row in ROWS:
        assert f"| {row}" in markdown
    for evaluation in report.models:
        ppl = evaluation.perplexity
        assert ppl.texts == 19 and ppl.tokens > 1000 and ppl.words > 1000
        assert ppl.per_word == pytest.approx(math.exp(ppl.nll / ppl.words))
        metrics = evaluation.generation.metrics
        assert metrics["stories"] == 4
        for key in ("distinct_1", "distinct_2", "seq_rep_4", "bleu", "chrf", "tfidf_similarity"):
            assert metrics[key] is not None and metrics[key] >= 0
        assert metrics["genre_stories"] == 4 and 0 <= metrics["genre_adherence"] <= 1
        assert metrics["words_q1"] <= metrics["words_median"] <= metrics["words_q3"]
        for key in ("empty_share", "lowercase_start_share", "ended_share"):
            assert 0 <= metrics[key] <= 1
        assert sum(metrics["finish_reasons"].values()) == 4
        assert metrics["cliche_score"] >= 0 and len(metrics["cliches"]) <= 20
        assert evaluation.reference_ranking is not None


def test_stories_record_seed_and_params_and_can_be_written_again(report, tiny_model_dir):
    stories = [
        json.loads(line) for line in (report.directory / "stories.jsonl").read_text().splitlines()
    ]
    assert len(stories) == 8  # 4 prompts x 2 models
    first = stories[0]
    assert first["seed"] == 0 and first["params"]["max_new_tokens"] == 16
    assert sorted(s["seed"] for s in stories) == [0, 0, 1, 1, 2, 2, 3, 3]  # paired
    again = StoryGenerator(load_model(str(tiny_model_dir))).generate(
        first["prompt"], genre=first["genre"], **first["params"]
    )
    assert again.stories[0].generated_text == first["text"]


def test_the_sweep_evaluates_each_point(report):
    for evaluation in report.models:
        assert [r.point.label for r in evaluation.runs] == ["base", "temperature=1.5"]
        assert evaluation.runs[1].stories[0].params.temperature == 1.5
    assert "## Decoding sweep" in (report.directory / "report.md").read_text()


def test_the_report_is_logged_to_mlflow(report):
    from mlflow.tracking import MlflowClient

    assert report.mlflow_run_id
    client = MlflowClient(tracking_uri=report.report["settings"]["evaluate"]["tracking_uri"])
    run = client.get_run(report.mlflow_run_id)
    label = report.models[0].label
    assert run.data.metrics[f"{label}.perplexity_per_word"] == pytest.approx(
        report.models[0].perplexity.per_word
    )
    assert f"{label}.temperature_1.5.distinct_2" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(report.mlflow_run_id, "evaluation")}
    assert "evaluation/report.md" in artifacts


def test_an_empty_prompt_file_is_refused_before_any_work(make_eval_config, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n  \n")
    with pytest.raises(EvaluationError, match="is empty: put one prompt per line"):
        evaluate(make_eval_config(prompts=str(prompts)))
    assert not (tmp_path / "report").exists()


def test_bleu_without_references_says_what_to_change(make_eval_config, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("A dragon opens a bakery.\nThe moon goes missing.\n")
    with pytest.raises(EvaluationError, match="drop 'references' from --evaluate.metrics"):
        evaluate(make_eval_config(prompts=str(prompts), metrics=("references", "diversity")))
    assert not (tmp_path / "report").exists()


def test_a_model_that_fails_to_load_leaves_no_partial_report(
    make_eval_config, tiny_model_dir, tmp_path
):
    config = make_eval_config(metrics=("perplexity",))
    older = evaluate(config)
    before = (older.directory / "report.json").read_text()

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelLoadError, match="broken"):
        evaluate(config, [str(tiny_model_dir), str(broken)])
    assert (older.directory / "report.json").read_text() == before  # the old report stays
    assert not [p for p in older.directory.parent.iterdir() if p.name.startswith(".")]

    with pytest.raises(ModelNotFoundError, match="not found"):
        evaluate(config, ["./no/such/model"])


def test_an_unrelated_output_directory_is_left_alone(make_eval_config, tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "notes.txt").write_text("mine")
    with pytest.raises(EvaluationError, match="not an evaluation report"):
        evaluate(make_eval_config(metrics=("perplexity",)))
    assert (tmp_path / "report" / "notes.txt").read_text() == "mine"
