"""The evaluation report: JSON, Markdown, plots and stories, written atomically; MLflow.

A report directory holds::

    report.json          every number, the settings, the dataset fingerprint
    report.md            tables side by side, plots, sample stories, how to reproduce
    stories.jsonl        the stories at the base sampling parameters (seed and params each);
                         what ``taleforge rate`` shows
    sweep_stories.jsonl  the stories of the other sweep points (when sweeping)
    metrics.png lengths.png perplexity.png sweep.png
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taleforge.config import TaleforgeConfig
from taleforge.evaluate.errors import EvaluationError
from taleforge.evaluate.plots import plot_lengths, plot_metrics, plot_perplexity, plot_sweep
from taleforge.files import replace_dir
from taleforge.tracking import flatten, make_tracker

if TYPE_CHECKING:
    from taleforge.evaluate.dataset import EvalData
    from taleforge.evaluate.run import ModelEvaluation

REPORT_FILE = "report.json"

#: (key, label, better: "up"/"down"/"", format) of the rows of the comparison table.
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("perplexity.per_word", "perplexity per word", "down", "{:.2f}"),
    ("perplexity.per_token", "perplexity per token", "down", "{:.2f}"),
    ("perplexity.tokens", "tokens scored", "", "{:d}"),
    ("reference_ranking", "prompt ranking, dataset stories (chance {chance})", "up", "{:.2f}"),
    ("distinct_1", "distinct-1", "up", "{:.3f}"),
    ("distinct_2", "distinct-2", "up", "{:.3f}"),
    ("distinct_3", "distinct-3", "up", "{:.3f}"),
    ("self_bleu", "self-BLEU", "down", "{:.2f}"),
    ("seq_rep_4", "seq-rep-4", "down", "{:.3f}"),
    ("repeated_lines", "repeated lines", "down", "{:.3f}"),
    ("bleu", "BLEU vs reference", "up", "{:.2f}"),
    ("chrf", "chrF vs reference", "up", "{:.2f}"),
    ("prompt_ranking", "prompt ranking, generated stories (chance {chance})", "up", "{:.2f}"),
    ("tfidf_similarity", "TF-IDF similarity to prompt", "up", "{:.3f}"),
    ("tfidf_similarity_other_prompts", "… to other prompts (chance)", "", "{:.3f}"),
    ("genre_adherence", "genre adherence", "up", "{:.2f}"),
    ("cliche_score", "cliché score (per 1,000 words)", "down", "{:.2f}"),
    ("words_mean", "words per story, mean", "", "{:.1f}"),
    ("words_q1", "words per story, lower quartile", "", "{:.1f}"),
    ("words_median", "words per story, median", "", "{:.1f}"),
    ("words_q3", "words per story, upper quartile", "", "{:.1f}"),
    ("empty_stories", "empty stories (no words)", "down", "{:d}"),
    ("empty_share", "share of empty stories", "down", "{:.2f}"),
    ("lowercase_start_share", "share starting with a lower-case word", "down", "{:.2f}"),
    ("ended_share", "share that ended on their own", "", "{:.2f}"),
    ("tokens_per_second", "tokens per second", "", "{:.1f}"),
)


def output_dir(config: TaleforgeConfig) -> Path:
    ev = config.evaluate
    return Path(ev.output_dir) if ev.output_dir else Path("runs") / "evaluate" / ev.name


def check_output_dir(directory: Path) -> None:
    """Refuse to replace a file, or a non-empty directory that is not a report.

    Raises:
        EvaluationError: ``directory`` cannot hold a report.
    """
    if directory.exists() and not directory.is_dir():
        raise EvaluationError(
            f"--evaluate.output-dir '{directory}' is a file; it is left untouched: give a "
            "directory for the report"
        )
    if directory.is_dir() and any(directory.iterdir()) and not (directory / REPORT_FILE).exists():
        raise EvaluationError(
            f"'{directory}' exists and is not an evaluation report; it is left untouched: "
            "choose another --evaluate.output-dir or --evaluate.name"
        )


def _model_entry(evaluation: ModelEvaluation) -> dict[str, Any]:
    runs = []
    for run in evaluation.runs:
        runs.append(
            {
                "point": run.point.label,
                "changes": dict(run.point.changes),
                "params": run.point.params.model_dump(mode="json"),
                "metrics": run.metrics,
            }
        )
    return {
        "label": evaluation.label,
        "spec": evaluation.spec,
        "kind": evaluation.kind,
        "perplexity": evaluation.perplexity.to_dict() if evaluation.perplexity else None,
        "reference_ranking": evaluation.reference_ranking,
        "generation": runs[0]["metrics"] if runs else None,
        "runs": runs,
        "seconds": evaluation.seconds,
    }


def build_report(
    config: TaleforgeConfig,
    data: EvalData,
    evaluations: list[ModelEvaluation],
    extras: dict[str, Any],
    *,
    command: str | None,
    seconds: float,
) -> dict[str, Any]:
    """Everything the evaluation measured, as JSON-ready data."""
    from taleforge import __version__
    from taleforge.evaluate.dataset import base_seed

    return {
        "name": config.evaluate.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "taleforge_version": __version__,
        "command": command,
        "seconds": round(seconds, 1),
        "dataset": {
            "source": data.source,
            "prepared": str(data.directory) if data.directory else None,
            "fingerprint": data.fingerprint,
            "split": data.split,
            "texts": len(data.records),
            "skipped_without_text": data.skipped,
            "prompts": len(data.prompts),
            "prompt_source": data.prompt_source,
        },
        "settings": {
            "evaluate": config.evaluate.model_dump(mode="json"),
            "sampling": {**config.sampling.model_dump(mode="json"), "seed": base_seed(config)},
            "generate": config.generate.model_dump(mode="json"),
        },
        "metric_groups": extras["groups"],
        "genre_classifier": extras["classifier"],
        "notes": [
            "Prompt-story similarity is TF-IDF cosine (scikit-learn, English stop words "
            "removed) fitted on the dataset's stories and prompts; no sentence-embedding model "
            "can be downloaded here.",
            "MAUVE is not computed (it needs a feature model that cannot be downloaded here).",
            "Diversity and repetition are measured on lower-cased words, punctuation dropped.",
            "Cliché score: occurrences per 1,000 generated words of word 3- to 5-grams whose "
            "add-one smoothed log-odds ratio (stories vs the dataset's human texts) exceeds "
            f"{config.evaluate.cliche_threshold} and that occur in at least 2 stories; a "
            "phrase inside a longer cliché with the same count is not counted again.",
        ],
        "models": [_model_entry(e) for e in evaluations],
    }


def _value(entry: dict[str, Any], key: str) -> Any:
    if key.startswith("perplexity."):
        ppl = entry.get("perplexity")
        return ppl.get(key.split(".", 1)[1]) if ppl else None
    if key == "reference_ranking":
        return entry.get("reference_ranking")
    return (entry.get("generation") or {}).get(key)


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)


def comparison_table(report: dict[str, Any]) -> str:
    """The models side by side, one metric per row (a Markdown table)."""
    models = report["models"]
    chance = f"{1 / report['settings']['evaluate']['ranking_prompts']:.2f}"
    header = "| metric | better | " + " | ".join(f"`{m['label']}`" for m in models) + " |"
    lines = [header, "|---|:-:|" + "---:|" * len(models)]
    for key, label, better, fmt in ROWS:
        values = [_value(m, key) for m in models]
        if all(v is None for v in values):
            continue
        arrow = {"up": "↑", "down": "↓"}.get(better, "")
        cells = " | ".join(_cell(v, fmt) for v in values)
        lines.append(f"| {label.format(chance=chance)} | {arrow} | {cells} |")
    return "\n".join(lines)


def sweep_table(report: dict[str, Any]) -> str:
    """Each model's metrics at each sweep point (a Markdown table)."""
    keys = (
        ("distinct_2", "distinct-2", "{:.3f}"),
        ("self_bleu", "self-BLEU", "{:.2f}"),
        ("seq_rep_4", "seq-rep-4", "{:.3f}"),
        ("prompt_ranking", "prompt ranking", "{:.2f}"),
        ("tfidf_similarity", "TF-IDF sim.", "{:.3f}"),
        ("genre_adherence", "genre adh.", "{:.2f}"),
        ("words_mean", "words", "{:.0f}"),
    )
    lines = [
        "| model | sampling | " + " | ".join(k[1] for k in keys) + " |",
        "|---|---|" + "---:|" * len(keys),
    ]
    for model in report["models"]:
        for run in model["runs"]:
            point = _point_label(run)
            lines.append(
                f"| `{model['label']}` | {point} | "
                + " | ".join(_cell(run["metrics"].get(k), f) for k, _, f in keys)
                + " |"
            )
    return "\n".join(lines)


def cliche_lines(report: dict[str, Any]) -> list[str]:
    """Each model's most frequent clichés (Markdown lines; none without the cliche group)."""
    models = [m for m in report["models"] if (m.get("generation") or {}).get("cliches")]
    if not models:
        return []
    lines = ["## Clichés", "", "Phrases the stories use far more often than the human texts:", ""]
    for model in models:
        found = model["generation"]
        lines += [
            f"`{model['label']}`: {found['cliche_phrases']} clichés, "
            f"{found['cliche_score']:.2f} per 1,000 words.",
            "",
            "| phrase | count | stories | in the human texts | log-odds |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {c['phrase']} | {c['count']} | {c['stories']} | {c['reference']} | "
            f"{c['log_odds']:.1f} |"
            for c in found["cliches"]
        ]
        lines.append("")
    return lines


def _point_label(run: dict[str, Any]) -> str:
    if run["changes"]:
        return " ".join(f"{k}={v}" for k, v in run["changes"].items())
    params = run["params"]
    return f"base (temperature={params['temperature']}, top_p={params['top_p']})"


def sample_stories(
    evaluations: list[ModelEvaluation], data: EvalData, count: int = 2
) -> list[dict[str, Any]]:
    """The base-point stories of the first ``count`` prompts, per model."""
    samples = []
    for index, item in enumerate(data.prompts[:count]):
        stories = {}
        for evaluation in evaluations:
            run = evaluation.generation
            if run is None:
                continue
            story = next(
                (s for s, o in zip(run.stories, run.owners, strict=True) if o == index), None
            )
            if story is not None:
                stories[evaluation.label] = {"seed": story.seed, "text": story.generated_text}
        samples.append({"prompt": item.prompt, "genre": item.genre, "stories": stories})
    return samples


def classifier_line(classifier: dict[str, Any]) -> str:
    """How good the genre classifier that judged adherence is: the sample one by its
    cross-validated accuracy, one fitted to the dataset by its hand check."""
    on_refs = classifier.get("on_references")
    accuracy = classifier.get("cv_accuracy")
    if accuracy is not None and not math.isnan(accuracy):
        quality = (
            f"the sample one: {accuracy:.2f} cross-validated accuracy on "
            f"{classifier['trained_on']} labelled sample texts"
        )
    else:
        check = classifier.get("hand_check")
        quality = (
            f"fitted by the data step to this dataset ({classifier['trained_on']} texts); "
            + (
                f"it agrees with {round(100 * check['accuracy'])} % of {check['checked']} "
                f"hand-checked labels (`{check['file']}`)"
                if check
                else "not hand-checked (give the data step --data.genre-check FILE)"
            )
        )
    refs = f"; {on_refs:.2f} on this split's reference stories" if on_refs is not None else ""
    return f"Genre classifier (TF-IDF + logistic regression), {quality}{refs}."


def render_markdown(report: dict[str, Any], plots: list[str]) -> str:
    """The human-readable report."""
    data = report["dataset"]
    ev = report["settings"]["evaluate"]
    sampling = report["settings"]["sampling"]
    lines = [
        f"# Evaluation: {', '.join(m['label'] for m in report['models'])}",
        "",
        f"*{report['created']} · taleforge {report['taleforge_version']} · "
        f"{report['seconds']:.0f} s*",
        "",
    ]
    if report.get("command"):
        lines += ["Reproduce with:", "", "```sh", report["command"], "```", ""]
    if data["prepared"]:
        scored = (
            f"Dataset `{data['source']}` (prepared `{data['prepared']}`, fingerprint "
            f"`{data['fingerprint'][:12]}`): {data['texts']} texts of the {data['split']} "
            "split scored"
        )
    else:
        skipped = data.get("skipped_without_text") or 0
        scored = (
            f"File `{data['source']}` (fingerprint `{data['fingerprint'][:12]}`): all "
            f"{data['texts']} records scored as written (no cleaning, no split"
            + (f"; {skipped} without text skipped" if skipped else "")
            + ")"
        )
    lines += [
        f"{scored}; {data['prompts']} prompts from the {data['prompt_source']}, "
        f"{sampling['num_stories']} story each per model, {sampling['max_new_tokens']} new "
        f"tokens, "
        f"temperature {sampling['temperature']}, top-p {sampling['top_p']}, top-k "
        f"{sampling['top_k']}, repetition penalty {sampling['repetition_penalty']}, seeds "
        f"from {sampling['seed']}. Perplexity: window {ev['window']}, stride {ev['stride']}, "
        f"context `{ev['context']}`.",
        "",
        "## Results",
        "",
        comparison_table(report),
        "",
    ]
    classifier = report.get("genre_classifier")
    if classifier:
        lines += [classifier_line(classifier), ""]
    lines += cliche_lines(report)
    if any(len(m["runs"]) > 1 for m in report["models"]):
        lines += ["## Decoding sweep", "", sweep_table(report), ""]
    lines += [f"![{p}]({p})" for p in plots] + [""]
    if report.get("samples"):
        lines += ["## Sample stories", ""]
        for sample in report["samples"]:
            genre = f" ({sample['genre']})" if sample["genre"] else ""
            lines += [f"**Prompt{genre}:** {sample['prompt']}", ""]
            for label, story in sample["stories"].items():
                text = story["text"].strip().replace("\n\n", "\n").replace("\n", " / ")
                lines += [f"- `{label}` (seed {story['seed']}): {text}", ""]
    lines += ["## Notes", ""] + [f"- {note}" for note in report["notes"]] + [""]
    return "\n".join(lines)


def _story_lines(evaluations: list[ModelEvaluation], data: EvalData, run: str) -> list[str]:
    lines = []
    for evaluation in evaluations:
        for generation in evaluation.runs:
            if (generation.point.label == "base") != (run == "base"):
                continue
            for index, (story, owner) in enumerate(
                zip(generation.stories, generation.owners, strict=True)
            ):
                item = data.prompts[owner]
                record = story.to_dict()
                record.pop("token_ids", None)
                record.update(
                    id=f"{evaluation.label}|{generation.point.label}|{item.id}|{story.seed}",
                    model=evaluation.label,
                    spec=evaluation.spec,
                    point=generation.point.label,
                    prompt_id=item.id,
                    index=index,
                    text=story.generated_text,
                )
                lines.append(json.dumps(record, ensure_ascii=False))
    return lines


def write_report(
    directory: Path,
    config: TaleforgeConfig,
    data: EvalData,
    evaluations: list[ModelEvaluation],
    extras: dict[str, Any],
    *,
    command: str | None,
    seconds: float,
) -> dict[str, Any]:
    """Write the report directory atomically (see the module docstring); return the report."""
    report = build_report(config, data, evaluations, extras, command=command, seconds=seconds)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    try:
        for story_run, name in (("base", "stories.jsonl"), ("sweep", "sweep_stories.jsonl")):
            lines = _story_lines(evaluations, data, story_run)
            if lines:
                (staging / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        plots = [
            path.name
            for path in (
                plot_metrics(report, staging / "metrics.png"),
                plot_perplexity(report, staging / "perplexity.png"),
                plot_lengths(report, staging / "lengths.png"),
                plot_sweep(report, staging / "sweep.png"),
            )
            if path is not None
        ]
        report["plots"] = plots
        report["samples"] = sample_stories(evaluations, data)
        (staging / REPORT_FILE).write_text(
            json.dumps(report, indent=2, ensure_ascii=False, default=_json_default),
            encoding="utf-8",
        )
        (staging / "report.md").write_text(render_markdown(report, plots), encoding="utf-8")
        replace_dir(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _metric_name(text: str) -> str:
    return re.sub(r"[^\w.\-/ :]", "_", text)


def log_to_mlflow(config: TaleforgeConfig, report: dict[str, Any], directory: Path) -> str | None:
    """Log the report's numbers and files to MLflow when tracking is on; the run id."""
    ev = config.evaluate
    tracker = make_tracker(ev.tracking, ev.tracking_uri, ev.experiment)
    run_id = tracker.start(f"evaluate-{ev.name}")
    try:
        tracker.log_params(
            {k: v for k, v in flatten(report["settings"]).items() if not k.startswith("generate.")}
        )
        tracker.log_params({"models": ", ".join(m["label"] for m in report["models"])})
        values: dict[str, float] = {}
        for model in report["models"]:
            prefix = _metric_name(model["label"])
            if model["perplexity"]:
                values[f"{prefix}.perplexity_per_word"] = model["perplexity"]["per_word"]
                values[f"{prefix}.perplexity_per_token"] = model["perplexity"]["per_token"]
            if model["reference_ranking"] is not None:
                values[f"{prefix}.prompt_ranking_references"] = model["reference_ranking"]
            for run in model["runs"]:
                point = "" if run["point"] == "base" else f".{_metric_name(run['point'])}"
                for key, value in run["metrics"].items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        values[f"{prefix}{point}.{key}"] = value
        tracker.log_metrics(values, step=0)
        tracker.log_artifact(directory, "evaluation")
    except BaseException:
        tracker.end(status="FAILED")
        raise
    tracker.end()
    return run_id
