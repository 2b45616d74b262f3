"""Blind pairwise comparison: pairing, shown order, judgement records and win rates (pure).

Two models' stories for the same prompt form a pair. Each pair is shown as story A and story
B in an order decided by a seed and the pair alone (:func:`shown_order`), so the order can be
reproduced from the seed that every judgement records. A judgement says A, B or tie; the
summary gives, per source (human raters together, each LLM judge apart) and model pair, the
wins, losses and ties, the win rate with ties counted as half, and its 95% **Wilson score**
interval (:func:`wilson_interval`). Ties make an outcome less variable than a coin flip, so
applied to the half-counted score the interval is slightly conservative, never too narrow.

The interactive session lives in :mod:`taleforge.evaluate.human`, the LLM judge in
:mod:`taleforge.evaluate.judge`; both write the records built here (:func:`judgement`).
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from taleforge.evaluate.errors import EvaluationError

#: The type of a pairwise judgement record; "ab" records of earlier versions count too.
PAIRWISE = "pairwise"
RECORD_TYPES = (PAIRWISE, "ab")
#: The source that pools every human rater; LLM judges are "judge:<model>", each apart.
HUMANS = "humans"
JUDGE_PREFIX = "judge:"

Story = dict[str, Any]


@dataclass(frozen=True)
class Pair:
    """Two models' stories for one prompt, in the order the models were first seen."""

    prompt: str
    first: Story
    second: Story

    @property
    def story_ids(self) -> frozenset[str]:
        """The pair's identity: its two story ids, whatever the order shown."""
        return frozenset((str(self.first["id"]), str(self.second["id"])))

    @property
    def models(self) -> tuple[str, str]:
        return (self.first["model"], self.second["model"])


def pairs(stories: Sequence[Story], models: Sequence[str] | None = None) -> list[Pair]:
    """Every pair of models' stories for the prompts both wrote for.

    Stories are matched by prompt text, so stories files of separate evaluations pair up.
    Where a model has several stories for one prompt, its first is used.

    Args:
        stories: Story records (``id``, ``model``, ``prompt``, ``text``), of one or more files.
        models: Compare only these models (default: every model present).

    Raises:
        EvaluationError: Fewer than two models, an unknown model, or no prompt in common.
    """
    present = list(dict.fromkeys(s["model"] for s in stories))
    wanted = list(dict.fromkeys(models)) if models else present
    unknown = [m for m in wanted if m not in present]
    if unknown:
        raise EvaluationError(
            f"no stories of model {', '.join(repr(m) for m in unknown)} here; there are: "
            f"{', '.join(present)}"
        )
    if len(wanted) < 2:
        raise EvaluationError(
            f"pairwise comparison needs stories of two models; there are {', '.join(wanted)} "
            "only: evaluate two models (--model A --model B) or pass two stories files"
        )
    by_prompt: dict[str, dict[str, Story]] = defaultdict(dict)
    for story in stories:
        if story["model"] in wanted:
            by_prompt[story["prompt"].strip()].setdefault(story["model"], story)
    found = [
        Pair(prompt, written[x], written[y])
        for prompt, written in by_prompt.items()
        for x, y in itertools.combinations(wanted, 2)
        if x in written and y in written
    ]
    if not found:
        raise EvaluationError(
            f"the models {', '.join(wanted)} have no prompt in common: compare the stories of "
            "evaluations run on the same prompts"
        )
    return found


def shown_order(pair: Pair, seed: int) -> tuple[Story, Story]:
    """The pair as shown, (story A, story B): a coin flip seeded by ``seed`` and the pair."""
    # A string seed is hashed with SHA-512, so the flip is the same on every machine.
    coin = random.Random(f"{seed}|{'|'.join(sorted(pair.story_ids))}").random()
    return (pair.second, pair.first) if coin < 0.5 else (pair.first, pair.second)


def session_order(found: Sequence[Pair], seed: int) -> list[Pair]:
    """The pairs in the order a session presents them (shuffled by ``seed``)."""
    shuffled = list(found)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def judged(records: Iterable[dict[str, Any]], rater: str) -> set[frozenset[str]]:
    """The pairs (as story-id sets) that ``rater`` has already judged."""
    return {
        frozenset(str(i) for i in r.get("story_ids", {}).values())
        for r in records
        if r.get("type") in RECORD_TYPES and r.get("rater") == rater
    }


def word_count(text: str) -> int:
    return len(text.split())


def judgement(
    rater: str, story_a: Story, story_b: Story, choice: str, seed: int, time: str, **extra: Any
) -> dict[str, Any]:
    """The record of one judgement of story A against story B.

    Args:
        choice: "A", "B" or "tie".
        seed: The seed that decided the order shown.
        extra: More fields (an LLM judge's answers in both orders).
    """
    if choice not in ("A", "B", "tie"):
        raise ValueError(f"choice must be A, B or tie, not {choice!r}")
    shown = {"A": story_a, "B": story_b}
    return {
        "type": PAIRWISE,
        "rater": rater,
        "prompt_id": story_a.get("prompt_id"),
        "runs": {side: story.get("run") for side, story in shown.items()},
        "story_ids": {side: story["id"] for side, story in shown.items()},
        "models": {side: story["model"] for side, story in shown.items()},
        "words": {side: word_count(story["text"]) for side, story in shown.items()},
        "seed": seed,
        "choice": choice,
        "winner": None if choice == "tie" else shown[choice]["model"],
        **extra,
        "time": time,
    }


def wilson_interval(score: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``score / n`` (``score`` may count ties as half).

    Raises:
        ValueError: ``n`` is not positive or ``score`` is outside ``[0, n]``.
    """
    from statistics import NormalDist

    if n <= 0 or not 0 <= score <= n:
        raise ValueError(f"need 0 <= score <= n and n > 0, got score={score}, n={n}")
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    share = score / n
    denominator = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def source_of(rater: str) -> str:
    """Whose judgements these are: an LLM judge ("judge:<model>") or the human raters."""
    return rater if rater.startswith(JUDGE_PREFIX) else HUMANS


@dataclass(frozen=True)
class PairwiseResult:
    """Judgements of ``model`` against ``other`` by one source."""

    source: str
    model: str
    other: str
    wins: int
    losses: int
    ties: int
    #: Share won by ``model``, ties counted as half, with its 95% Wilson score interval.
    win_rate: float
    low: float
    high: float
    #: LLM judge answers that were not A, B or tie (each read as tie).
    unparsed: int = 0
    #: LLM judgements whose two orders disagreed (recorded as ties).
    disagreements: int = 0
    #: Decisive judgements between stories of different lengths, and how many the longer won.
    decided_by_length: int = 0
    longer_won: int = 0

    @property
    def judgements(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def longer_share(self) -> float | None:
        """Share of the wins that went to the longer story (None without such wins)."""
        return self.longer_won / self.decided_by_length if self.decided_by_length else None

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "judgements": self.judgements,
            "longer_share": self.longer_share,
            "interval": "wilson",
        }


def summarize(records: Iterable[dict[str, Any]]) -> tuple[PairwiseResult, ...]:
    """Per source and model pair (models in name order): wins, losses, ties and win rate."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        models = record.get("models") or {}
        if record.get("type") not in RECORD_TYPES or len(set(models.values())) != 2:
            continue
        model, other = sorted(models.values())
        groups[(source_of(str(record.get("rater"))), model, other)].append(record)
    return tuple(_result(key, group) for key, group in sorted(groups.items()))


def _result(key: tuple[str, str, str], group: list[dict[str, Any]]) -> PairwiseResult:
    source, model, other = key
    wins = sum(1 for r in group if r.get("winner") == model)
    losses = sum(1 for r in group if r.get("winner") == other)
    ties = len(group) - wins - losses
    low, high = wilson_interval(wins + ties / 2, len(group))
    decided = longer = 0
    for record in group:
        sides = record["models"]
        words = {sides[side]: n for side, n in (record.get("words") or {}).items() if side in sides}
        winner = record.get("winner")
        if winner in words and len(set(words.values())) == 2:
            decided += 1
            longer += words[winner] == max(words.values())
    orders = [r.get("orders") or [] for r in group]
    return PairwiseResult(
        source=source,
        model=model,
        other=other,
        wins=wins,
        losses=losses,
        ties=ties,
        win_rate=(wins + ties / 2) / len(group),
        low=low,
        high=high,
        unparsed=sum(1 for answers in orders for o in answers if o.get("verdict") is None),
        disagreements=sum(1 for r in group if r.get("agreed") is False),
        decided_by_length=decided,
        longer_won=longer,
    )


def format_results(results: Sequence[PairwiseResult]) -> str:
    """A plain-text table of pairwise results, one block per source."""
    if not results:
        return "no pairwise judgements yet: compare stories with `taleforge rate --pairwise`"
    lines = ["pairwise: win rate of the model named first [95% Wilson interval], ties count half"]
    for source, block in itertools.groupby(results, key=lambda r: r.source):
        lines.append(source)
        for r in block:
            line = (
                f"  {r.model} vs {r.other}: {r.win_rate:.0%} [{r.low:.0%}, {r.high:.0%}] "
                f"({r.wins} wins, {r.losses} losses, {r.ties} ties; {r.judgements} judgements)"
            )
            if r.longer_share is not None:
                line += f"; the longer story won {r.longer_won} of {r.decided_by_length} wins"
            if source != HUMANS:
                line += (
                    f"; the two orders disagreed on {r.disagreements}; "
                    f"{r.unparsed} answers unparsed"
                )
            lines.append(line)
    return "\n".join(lines)
