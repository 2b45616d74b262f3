"""Blind human ratings of generated stories, stored append-only, aggregated with intervals.

Two ways to rate the stories of an evaluation run (its ``stories.jsonl``):

* scores: one story at a time, 1-5 for coherence, creativity, relevance and fluency;
* A/B: two stories for the same prompt from two models, in random order, "which is better?".

The model is never shown. Each answer is appended at once as one JSON line to the ratings
file (under a file lock, flushed and fsynced), so quitting or a crash loses nothing and
several raters can share one file. ``summarize`` gives per-model means with Student-t 95%
intervals, and A/B win rates (ties count half) with bootstrap 95% intervals.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from taleforge.evaluate.errors import EvaluationError
from taleforge.evaluate.metrics import bootstrap_ci, mean_ci

log = logging.getLogger(__name__)

CRITERIA: tuple[str, ...] = ("coherence", "creativity", "relevance", "fluency")
CRITERIA_HELP = {
    "coherence": "does it hold together?",
    "creativity": "is it original, surprising?",
    "relevance": "does it answer the prompt?",
    "fluency": "is the language natural?",
}

Ask = Callable[[str], str]
Say = Callable[[str], None]


class _Quit(Exception):
    """The rater asked to stop (q, or end of input)."""


def load_stories(path: str | Path) -> list[dict[str, Any]]:
    """Read the stories an evaluation wrote (``stories.jsonl``).

    Raises:
        EvaluationError: The file is missing, unreadable or holds no stories.
    """
    file = Path(path)
    if file.is_dir():
        file = file / "stories.jsonl"
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvaluationError(
            f"cannot read stories from {file}: {exc.strerror or exc}. Run `taleforge evaluate` "
            "first, or pass --stories runs/evaluate/<name>/stories.jsonl"
        ) from None
    stories = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            story = json.loads(line)
        except ValueError:
            raise EvaluationError(
                f"{file}:{number}: not a JSON line; re-run the evaluation"
            ) from None
        if not {"id", "model", "prompt", "text"} <= set(story):
            raise EvaluationError(f"{file}:{number}: a story needs id, model, prompt and text")
        stories.append(story)
    if not stories:
        raise EvaluationError(f"{file} holds no stories: run `taleforge evaluate` first")
    return stories


def append_rating(path: str | Path, record: dict[str, Any]) -> None:
    """Append one rating as a JSON line, atomically with respect to other raters."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with FileLock(str(file) + ".lock", timeout=30), file.open("a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def read_ratings(path: str | Path) -> list[dict[str, Any]]:
    """All ratings in a file (none if it does not exist); unreadable lines are skipped."""
    file = Path(path)
    if not file.is_file():
        return []
    ratings = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ratings.append(json.loads(line))
        except ValueError:
            log.warning("%s:%d: skipped an unreadable line", file, number)
    return ratings


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _answer(ask: Ask, question: str, valid: Sequence[str]) -> str:
    """Ask until the answer is one of ``valid`` (case-insensitive); q or end of input quits."""
    while True:
        try:
            answer = ask(question).strip().lower()
        except EOFError:
            raise _Quit from None
        if answer in ("q", "quit"):
            raise _Quit
        if answer in valid:
            return answer


def _show(say: Say, heading: str, story: dict[str, Any]) -> None:
    say(f"\n{heading}\n{story['text'].strip()}\n")


def score_session(
    stories: Sequence[dict[str, Any]],
    rater: str,
    ratings_path: str | Path,
    *,
    ask: Ask = input,
    say: Say = print,
    limit: int | None = None,
    rng: random.Random | None = None,
) -> int:
    """Rate stories 1-5 on each criterion, blind, in random order; returns how many were saved.

    Stories this rater has already scored are not shown again.
    """
    done = {
        r.get("story_id")
        for r in read_ratings(ratings_path)
        if r.get("type") == "score" and r.get("rater") == rater
    }
    todo = [s for s in stories if s["id"] not in done]
    (rng or random.Random()).shuffle(todo)
    todo = todo[:limit] if limit else todo
    if not todo:
        say(f"{rater} has rated every story here ({len(stories)}).")
        return 0
    say(
        f"{len(todo)} stories to rate, model hidden. For each: 1 (poor) to 5 (excellent); "
        "s skips a story, q quits (what is rated is saved)."
    )
    saved = 0
    try:
        for number, story in enumerate(todo, start=1):
            say(f"\n=== Story {number} of {len(todo)} ===\nPrompt: {story['prompt']}")
            _show(say, "--- Story ---", story)
            scores: dict[str, int] = {}
            for criterion in CRITERIA:
                answer = _answer(
                    ask,
                    f"{criterion} ({CRITERIA_HELP[criterion]}) 1-5: ",
                    ("1", "2", "3", "4", "5", "s"),
                )
                if answer == "s":
                    break
                scores[criterion] = int(answer)
            if len(scores) < len(CRITERIA):
                say("skipped")
                continue
            append_rating(
                ratings_path,
                {
                    "type": "score",
                    "rater": rater,
                    "story_id": story["id"],
                    "run": story.get("run"),
                    "model": story["model"],
                    "prompt_id": story.get("prompt_id"),
                    "scores": scores,
                    "time": _now(),
                },
            )
            saved += 1
    except _Quit:
        say("stopped.")
    say(f"saved {saved} rating(s) to {ratings_path}")
    return saved


def ab_pairs(
    stories: Sequence[dict[str, Any]], models: tuple[str, str] | None = None
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs of stories for the same prompt from two models (default: the first two seen).

    Raises:
        EvaluationError: Fewer than two models, or an unknown model name.
    """
    present = list(dict.fromkeys(s["model"] for s in stories))
    if models is None:
        if len(present) < 2:
            raise EvaluationError(
                "A/B rating needs stories of two models; this run has "
                f"{', '.join(present)} only: evaluate two models (--model A --model B)"
            )
        models = (present[0], present[1])
    for model in models:
        if model not in present:
            raise EvaluationError(f"no stories of model '{model}' here; there are: {present}")
    by_prompt: dict[Any, dict[str, dict[str, Any]]] = defaultdict(dict)
    for story in stories:
        key = story.get("prompt_id", story["prompt"])
        by_prompt[key].setdefault(story["model"], story)
    return [(p[models[0]], p[models[1]]) for p in by_prompt.values() if all(m in p for m in models)]


def ab_session(
    stories: Sequence[dict[str, Any]],
    rater: str,
    ratings_path: str | Path,
    *,
    models: tuple[str, str] | None = None,
    ask: Ask = input,
    say: Say = print,
    limit: int | None = None,
    rng: random.Random | None = None,
) -> int:
    """Blind A/B preference between two models' stories for the same prompts.

    The order within each pair is random and recorded with the answer, never shown.
    Returns how many answers were saved.
    """
    rng = rng or random.Random()
    done = {
        frozenset(r.get("story_ids", {}).values())
        for r in read_ratings(ratings_path)
        if r.get("type") == "ab" and r.get("rater") == rater
    }
    pairs = [p for p in ab_pairs(stories, models) if frozenset(s["id"] for s in p) not in done]
    rng.shuffle(pairs)
    pairs = pairs[:limit] if limit else pairs
    if not pairs:
        say(f"{rater} has compared every pair here.")
        return 0
    say(
        f"{len(pairs)} pairs to compare; which story is better? a, b or t (tie); "
        "s skips, q quits (what is answered is saved)."
    )
    saved = 0
    try:
        for number, pair in enumerate(pairs, start=1):
            first, second = (pair[1], pair[0]) if rng.random() < 0.5 else pair
            say(f"\n=== Pair {number} of {len(pairs)} ===\nPrompt: {first['prompt']}")
            _show(say, "--- Story A ---", first)
            _show(say, "--- Story B ---", second)
            answer = _answer(ask, "better: a, b or t (tie)? ", ("a", "b", "t", "s"))
            if answer == "s":
                say("skipped")
                continue
            winner = {"a": first["model"], "b": second["model"], "t": None}[answer]
            append_rating(
                ratings_path,
                {
                    "type": "ab",
                    "rater": rater,
                    "run": first.get("run"),
                    "prompt_id": first.get("prompt_id"),
                    "story_ids": {"A": first["id"], "B": second["id"]},
                    "models": {"A": first["model"], "B": second["model"]},
                    "choice": {"a": "A", "b": "B", "t": "tie"}[answer],
                    "winner": winner,
                    "time": _now(),
                },
            )
            saved += 1
    except _Quit:
        say("stopped.")
    say(f"saved {saved} answer(s) to {ratings_path}")
    return saved


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% confidence interval over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Preference:
    """A/B results of ``model`` against ``other``: wins, losses, ties and the win rate."""

    model: str
    other: str
    wins: int
    losses: int
    ties: int
    #: Win rate of ``model`` (ties count half) with its bootstrap 95% interval.
    rate: Interval


@dataclass(frozen=True)
class RatingSummary:
    """Aggregated ratings: per model and criterion, and per pair of models."""

    scores: dict[str, dict[str, Interval]] = field(default_factory=dict)
    preferences: tuple[Preference, ...] = ()
    raters: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (an interval of a single rating has null bounds)."""

        def interval(i: Interval) -> dict[str, Any]:
            return {k: v if math.isfinite(v) else None for k, v in vars(i).items()}

        return {
            "raters": list(self.raters),
            "scores": {
                model: {c: interval(i) for c, i in by.items()} for model, by in self.scores.items()
            },
            "preferences": [{**vars(p), "rate": interval(p.rate)} for p in self.preferences],
        }


def summarize(ratings: Sequence[dict[str, Any]]) -> RatingSummary:
    """Means with Student-t 95% intervals; A/B win rates with bootstrap 95% intervals."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    outcomes: dict[tuple[str, str], list[float]] = defaultdict(list)
    raters = set()
    for rating in ratings:
        raters.add(str(rating.get("rater")))
        if rating.get("type") == "score":
            for criterion, value in rating.get("scores", {}).items():
                values[rating["model"]][criterion].append(float(value))
        elif rating.get("type") == "ab":
            model_a, model_b = sorted(rating["models"].values())
            winner = rating.get("winner")
            outcomes[(model_a, model_b)].append(
                0.5 if winner is None else 1.0 if winner == model_a else 0.0
            )
    scores = {
        model: {c: Interval(*mean_ci(v), len(v)) for c, v in by.items() if v}
        for model, by in sorted(values.items())
    }
    preferences = tuple(
        Preference(
            model=a,
            other=b,
            wins=sum(1 for o in results if o == 1.0),
            losses=sum(1 for o in results if o == 0.0),
            ties=sum(1 for o in results if o == 0.5),
            rate=Interval(*bootstrap_ci(results), len(results)),
        )
        for (a, b), results in sorted(outcomes.items())
    )
    return RatingSummary(scores, preferences, tuple(sorted(raters)))


#: The criterion of the web app's 1-5 star ratings (one overall judgement per story).
OVERALL = "overall"


def from_library(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Star ratings from the web app's story library as score records (criterion "overall").

    Args:
        rows: :meth:`taleforge.store.Library.ratings` output.
    """
    return [
        {
            "type": "score",
            "source": "library",
            "model": row.get("model") or "unknown model",
            "rater": f"library:{row.get('rater')}",
            "story_id": row.get("story_id"),
            "scores": {OVERALL: int(row["score"])},
            "comment": row.get("comment", ""),
            "time": row.get("rated_at"),
        }
        for row in rows
    ]


def format_summary(summary: RatingSummary) -> str:
    """A plain-text report of a rating summary."""
    if not summary.scores and not summary.preferences:
        return "no ratings yet: rate stories with `taleforge rate --rater NAME`"
    lines = [f"raters: {', '.join(summary.raters)}"]
    if summary.scores:
        width = max(len(m) for m in summary.scores)
        criteria = CRITERIA
        if any(OVERALL in by for by in summary.scores.values()):
            criteria = (*CRITERIA, OVERALL)
        lines.append("\nscores 1-5: mean [95% CI] (n)")
        lines.append(f"{'model':<{width}}  " + "  ".join(f"{c:<22}" for c in criteria))
        for model, by in summary.scores.items():
            cells = []
            for criterion in criteria:
                i = by.get(criterion)
                if i is None:
                    cells.append("-")
                elif i.n < 2:
                    cells.append(f"{i.mean:.2f} [one rating] (1)")
                else:
                    cells.append(f"{i.mean:.2f} [{i.low:.2f}, {i.high:.2f}] ({i.n})")
            lines.append(f"{model:<{width}}  " + "  ".join(f"{c:<22}" for c in cells))
    if summary.preferences:
        lines.append("\nA/B preference: win rate [95% CI], ties count half")
        for p in summary.preferences:
            lines.append(
                f"{p.model} vs {p.other}: {p.rate.mean:.0%} [{p.rate.low:.0%}, "
                f"{p.rate.high:.0%}] for {p.model} ({p.wins} wins, {p.losses} losses, "
                f"{p.ties} ties)"
            )
    return "\n".join(lines)
