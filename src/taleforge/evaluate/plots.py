"""Report plots (matplotlib, Agg backend): each returns its path, or None when it has no data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Metrics drawn as bars, all on a 0-1 scale (BLEU and chrF divided by 100).
_BARS: tuple[tuple[str, str, float], ...] = (
    ("distinct_2", "distinct-2 ↑", 1.0),
    ("self_bleu", "self-BLEU ↓", 100.0),
    ("seq_rep_4", "seq-rep-4 ↓", 1.0),
    ("repeated_lines", "repeated lines ↓", 1.0),
    ("bleu", "BLEU ↑", 100.0),
    ("chrf", "chrF ↑", 100.0),
    ("prompt_ranking", "prompt rank ↑", 1.0),
    ("tfidf_similarity", "TF-IDF sim. ↑", 1.0),
    ("genre_adherence", "genre adh. ↑", 1.0),
)
_DPI = 80


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI)
    _pyplot().close(figure)
    return path


def plot_metrics(report: dict[str, Any], path: Path) -> Path | None:
    """Grouped bars: one group per metric, one bar per model."""
    models = [m for m in report["models"] if m.get("generation")]
    bars = [
        (key, label, scale)
        for key, label, scale in _BARS
        if any(m["generation"].get(key) is not None for m in models)
    ]
    if not models or not bars:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / len(models)
    for number, model in enumerate(models):
        values = [(model["generation"].get(key) or 0.0) / scale for key, _, scale in bars]
        positions = [i + (number - (len(models) - 1) / 2) * width for i in range(len(bars))]
        axis.bar(positions, values, width, label=model["label"])
    axis.set_xticks(range(len(bars)), [label for _, label, _ in bars], rotation=25, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("score (0-1)")
    axis.set_title("Generation metrics (BLEU, chrF, self-BLEU / 100)")
    axis.legend(fontsize="small")
    return _save(figure, path)


def plot_perplexity(report: dict[str, Any], path: Path) -> Path | None:
    """Perplexity per word (bars) and per token of each window, in order (lines)."""
    models = [m for m in report["models"] if m.get("perplexity")]
    if not models:
        return None
    plt = _pyplot()
    figure, (bars, curves) = plt.subplots(1, 2, figsize=(9, 3.4), width_ratios=(1, 2.4))
    labels = [m["label"] for m in models]
    bars.bar(
        range(len(models)),
        [m["perplexity"]["per_word"] for m in models],
        color=[f"C{i}" for i in range(len(models))],
    )
    bars.set_xticks(range(len(models)), labels, rotation=15, ha="right", fontsize="small")
    bars.set_title("per word ↓")
    for model in models:
        windows = model["perplexity"]["window_perplexities"]
        curves.plot(range(1, len(windows) + 1), windows, marker=".", label=model["label"])
    curves.set_yscale("log")
    curves.xaxis.get_major_locator().set_params(integer=True)
    curves.set_xlabel("window (texts in order)")
    curves.set_ylabel("perplexity per token")
    curves.set_title("per window")
    curves.legend(fontsize="small")
    return _save(figure, path)


def plot_lengths(report: dict[str, Any], path: Path) -> Path | None:
    """Histograms of words per generated story, one per model."""
    models = [m for m in report["models"] if (m.get("generation") or {}).get("word_counts")]
    if not models:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.2))
    counts = [m["generation"]["word_counts"] for m in models]
    axis.hist(counts, bins=12, label=[m["label"] for m in models])
    axis.set_xlabel("words per story")
    axis.set_ylabel("stories")
    axis.set_title("Story lengths")
    axis.legend(fontsize="small")
    return _save(figure, path)


def plot_sweep(report: dict[str, Any], path: Path) -> Path | None:
    """The decoding trade-off: diversity against repetition, prompt relevance and genre."""
    models = [m for m in report["models"] if len(m.get("runs", ())) > 1]
    panels = [
        (key, title)
        for key, title in (
            ("seq_rep_4", "seq-rep-4 (repetition) ↓"),
            ("tfidf_similarity", "TF-IDF similarity to prompt ↑"),
            ("genre_adherence", "genre adherence ↑"),
        )
        if any(r["metrics"].get(key) is not None for m in models for r in m["runs"])
    ]
    if not models or not panels:
        return None
    keys = list(dict.fromkeys(k for m in models for r in m["runs"] for k in r["changes"]))
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.4), squeeze=False)
    for axis, (key, title) in zip(axes[0], panels, strict=True):
        for number, model in enumerate(models):
            points = [
                (r["metrics"].get("distinct_2"), r["metrics"].get(key), _short(r, keys))
                for r in model["runs"]
                if r["metrics"].get("distinct_2") is not None and r["metrics"].get(key) is not None
            ]
            points.sort()
            if not points:
                continue
            xs, ys, _ = zip(*points, strict=True)
            axis.plot(xs, ys, marker="o", linestyle=":", color=f"C{number}", label=model["label"])
            for x, y, name in points:
                axis.annotate(
                    name, (x, y), fontsize="x-small", xytext=(3, 3), textcoords="offset points"
                )
        axis.set_xlabel("distinct-2 (diversity) →")
        axis.set_title(title, fontsize="medium")
    axes[0][0].legend(fontsize="small")
    figure.suptitle("Decoding sweep")
    return _save(figure, path)


def _short(run: dict[str, Any], keys: Sequence[str] = ()) -> str:
    changes = run["changes"] or {k: run["params"][k] for k in keys if k in run["params"]}
    if not changes:
        return "base"
    return " ".join(f"{k.replace('temperature', 't')}={v}" for k, v in changes.items())
