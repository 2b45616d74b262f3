"""Blind human ratings of generated stories, stored append-only, aggregated with intervals.

Two ways to rate the stories of an evaluation run (its ``stories.jsonl``):

* scores: one story at a time, 1-5 for coherence, creativity, relevance and fluency;
* pairwise: two stories for the same prompt from two models, as A and B in a seeded,
  recorded order: "A, B or tie?" (pairing, order and win rates: :mod:`.pairwise`).

The model is never shown. Each answer is appended at once as one JSON line to the ratings
file (under a file lock, flushed and fsynced), so quitting or a crash loses nothing and
several raters can share one file. ``summarize`` gives per-model means with Student-t 95%
intervals, and pairwise win rates (ties count half) with Wilson score 95% intervals.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import secrets
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from taleforge.evaluate import pairwise
from taleforge.evaluate.errors import EvaluationError
from taleforge.evaluate.metrics import mean_ci
from taleforge.evaluate.pairwise import PairwiseResult

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


def load_story_files(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The stories of one or more stories files, each story once (by id).

    Raises:
        EvaluationError: A file is missing, unreadable or holds no stories.
    """
    stories: dict[str, dict[str, Any]] = {}
    for path in paths:
        for story in load_stories(path):
            stories.setdefault(str(story["id"]), story)
    return list(stories.values())


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


def pairwise_session(
    stories: Sequence[dict[str, Any]],
    rater: str,
    ratings_path: str | Path,
    *,
    models: Sequence[str] | None = None,
    seed: int | None = None,
    ask: Ask = input,
    say: Say = print,
    limit: int | None = None,
) -> int:
    """Blind pairwise comparison of models' stories for the same prompts.

    Each pair is shown as story A and story B in an order decided by ``seed`` (drawn when
    None) and recorded with the answer; the models are never shown. Pairs this rater has
    judged already are skipped. Returns how many judgements were saved.
    """
    seed = secrets.randbelow(2**31) if seed is None else seed
    done = pairwise.judged(read_ratings(ratings_path), rater)
    todo = [p for p in pairwise.pairs(stories, models) if p.story_ids not in done]
    todo = pairwise.session_order(todo, seed)
    todo = todo[:limit] if limit else todo
    if not todo:
        say(f"{rater} has compared every pair here.")
        return 0
    say(
        f"{len(todo)} pairs to compare (order seed {seed}); which story is better? a, b or "
        "t (tie); s skips, q quits (what is answered is saved)."
    )
    saved = 0
    try:
        for number, pair in enumerate(todo, start=1):
            story_a, story_b = pairwise.shown_order(pair, seed)
            say(f"\n=== Pair {number} of {len(todo)} ===\nPrompt: {pair.prompt}")
            _show(say, "--- Story A ---", story_a)
            _show(say, "--- Story B ---", story_b)
            answer = _answer(ask, "A, B or tie (t)? ", ("a", "b", "t", "tie", "s"))
            if answer == "s":
                say("skipped")
                continue
            choice = {"a": "A", "b": "B"}.get(answer, "tie")
            record = pairwise.judgement(rater, story_a, story_b, choice, seed, _now())
            append_rating(ratings_path, record)
            saved += 1
    except _Quit:
        say("stopped.")
    say(f"saved {saved} judgement(s) to {ratings_path}")
    return saved


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% confidence interval over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class RatingSummary:
    """Aggregated ratings: per model and criterion, and per pair of models."""

    scores: dict[str, dict[str, Interval]] = field(default_factory=dict)
    preferences: tuple[PairwiseResult, ...] = ()
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
            "preferences": [p.to_dict() for p in self.preferences],
        }


def summarize(ratings: Sequence[dict[str, Any]]) -> RatingSummary:
    """Means with Student-t 95% intervals; pairwise win rates with Wilson 95% intervals."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    raters = set()
    for rating in ratings:
        raters.add(str(rating.get("rater")))
        if rating.get("type") == "score":
            for criterion, value in rating.get("scores", {}).items():
                values[rating["model"]][criterion].append(float(value))
    scores = {
        model: {c: Interval(*mean_ci(v), len(v)) for c, v in by.items() if v}
        for model, by in sorted(values.items())
    }
    return RatingSummary(scores, pairwise.summarize(ratings), tuple(sorted(raters)))


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
        lines.append("\n" + pairwise.format_results(summary.preferences))
    return "\n".join(lines)
