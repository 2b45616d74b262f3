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
    if classifier:
        parts.append(
            f"\nThe classifier (TF-IDF + logistic regression, trained on {classifier['trained_on']}"
            f" labelled sample pieces) has a cross-validated accuracy of "
            f"{classifier['cv_accuracy']:.0%}: treat its labels as a rough guide."
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
    return "\n\n".join(parts) + "\n"
