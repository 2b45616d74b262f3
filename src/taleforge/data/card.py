"""The data card: what went in, what each rule removed, what came out (Markdown, JSON, PNG)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CARD_JSON = "card.json"
CARD_MD = "card.md"
LENGTHS_PNG = "lengths.png"


def plot_lengths(
    word_counts: dict[str, list[int]], token_counts: dict[str, list[int]], path: Path
) -> None:
    """Histograms of story length in words and in tokens, one colour per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, counts, unit in ((axes[0], word_counts, "words"), (axes[1], token_counts, "tokens")):
        for split, values in counts.items():
            if values:
                axis.hist(values, bins=30, alpha=0.6, label=f"{split} ({len(values)})")
        axis.set_xlabel(f"length ({unit})")
        axis.set_ylabel("texts")
        axis.set_title(f"Story length in {unit}")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_card(
    directory: Path,
    card: dict[str, Any],
    word_counts: dict[str, list[int]],
    token_counts: dict[str, list[int]],
) -> None:
    (directory / CARD_JSON).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    plot_lengths(word_counts, token_counts, directory / LENGTHS_PNG)
    (directory / CARD_MD).write_text(render_markdown(card), encoding="utf-8")


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


#: A file beside a dataset that says where its texts come from and under which licences.
SOURCES_FILE = "SOURCES.md"


def sources_section(dataset: str) -> str:
    """The dataset's SOURCES.md (sources, commits, licences), when one sits beside it."""
    path = Path(dataset)
    sources = (path if path.is_dir() else path.parent) / SOURCES_FILE
    if dataset.startswith("hf:") or not sources.is_file():
        return ""
    text = sources.read_text(encoding="utf-8").strip()
    # its own headings one level down, under ours
    text = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
    return f"## Sources and licences\n\nFrom `{sources}`:\n\n{text}"


def render_markdown(card: dict[str, Any]) -> str:
    source = card["source"]
    parts = [
        f"# Data card: {source['input']}",
        f"Format **{source['format']}**"
        + (f", encoding {source['encoding']}" if source.get("encoding") else "")
        + f"; fingerprint `{card['fingerprint'][:16]}`.",
        "## Counts",
        _table(
            [("read", card["counts"]["read"]), ("kept", card["counts"]["kept"])], ("", "records")
        ),
        "## Cleaning",
        "Texts changed by each fixer, and records removed by each filter:",
        _table(
            [(k, v) for k, v in card["cleaning"]["changed"].items()] or [("(none)", 0)],
            ("fixer", "texts changed"),
        ),
        "",
        _table(
            [
                (k, v, card["cleaning"]["examples"].get(k, ""))
                for k, v in card["cleaning"]["removed"].items()
            ]
            or [("(none)", 0, "")],
            ("filter", "removed", "first example"),
        ),
        "## Genres",
        _table(sorted(card["genres"]["counts"].items()), ("genre", "records")),
        "",
        "Where genres came from: "
        + ", ".join(f"{k} {v}" for k, v in sorted(card["genres"]["sources"].items())),
    ]
    classifier = card["genres"].get("classifier")
    if classifier and classifier["cv_accuracy"] == classifier["cv_accuracy"]:  # not NaN
        parts.append(
            f"\nThe classifier (TF-IDF + logistic regression, trained on {classifier['trained_on']}"
            f" labelled sample pieces) has a cross-validated accuracy of "
            f"{classifier['cv_accuracy']:.0%}: treat its labels as a rough guide."
        )
    elif classifier:
        parts.append(
            f"\nThe classifier (TF-IDF + logistic regression) was fitted to this dataset: "
            f"{classifier['trained_on']} texts of its labelled records, the sample dataset and "
            "keyword-seeded stories."
        )
    check = card["genres"].get("check")
    if check:
        confusions = ", ".join(f"{k} ({v})" for k, v in list(check["confusions"].items())[:8])
        parts.append(
            f"\n**Hand check** ({check['file']}): the genres given agree with "
            f"{check['checked']} hand-checked records in {check['accuracy']:.0%} of cases "
            f"({check['accuracy_sure']:.0%} of the {check['sure']} the checker was sure of); "
            "by where the genre came from: "
            + ", ".join(
                f"{source} {value:.0%} of {check['counts_by_source'][source]}"
                for source, value in sorted(check["by_source"].items())
            )
            + f". Most common confusions (checked -> given): {confusions}."
        )
    tokens = card["tokens"]
    parts += [
        "## Splits and tokens",
        f"Template **{card['template']['name']}**, tokenizer `{card['tokenizer']['spec']}`, "
        f"{card['tokenizer']['packing']} "
        + (
            f"into blocks of {card['tokenizer']['block_size']} tokens."
            if card["tokenizer"]["packing"] == "pack"
            else f"to {card['tokenizer']['max_length']} tokens (padding with EOS)."
        ),
        _table(
            [
                (s, v["texts"], v["tokens"], v["rows"], v["truncated_texts"])
                for s, v in tokens.items()
            ],
            ("split", "texts", "tokens", "rows", "truncated"),
        ),
        f"\n![length histogram]({LENGTHS_PNG})",
        "## Examples",
    ]
    for example in card["examples"]:
        parts.append("```text\n" + example + "\n```")
    sources = sources_section(source["input"])
    if sources:
        parts.append(sources)
    return "\n\n".join(parts) + "\n"
