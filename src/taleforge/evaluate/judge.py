"""An LLM judge of story pairs, through any OpenAI-compatible server (vLLM, TGI, llama.cpp's
server, OpenAI, another taleforge server).

Each pair is put to the judge twice with a fixed rubric, once as (A, B) and once swapped, and
counts as a win only when both orders name the same story; otherwise it is a tie, so a judge
that always answers "A" wins nothing for either model. An answer is read by its first A, B or
tie token; anything else reads as a tie and is counted as unparsed. Each pair's verdict is one
record in the ratings file, rater ``judge:<model>``, with both answers and both stories' word
counts, so the summary can report position disagreements and the share of wins that went to
the longer story (a judge's length bias).

Why the official ``openai`` client: it is what these servers test against, and it brings
timeouts, retries with backoff and typed errors for 401 and 404.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taleforge.evaluate import pairwise
from taleforge.evaluate.errors import EvaluationError
from taleforge.evaluate.human import append_rating, read_ratings

if TYPE_CHECKING:
    from openai import OpenAI

log = logging.getLogger(__name__)

#: Bumped whenever the rubric's wording changes (recorded with every verdict).
RUBRIC_VERSION = 1
SYSTEM_PROMPT = "You are a careful, impartial judge of short fiction."
RUBRIC = """Here is a writing prompt and two stories written for it.

Writing prompt: {prompt}

Story A:
{story_a}

Story B:
{story_b}

Which story is better? Judge which one better answers the prompt, is coherent, is vivid, is \
original and ends well. Do not prefer a story for its length or for its position.
Answer with exactly one word: A, B or tie."""
#: Tokens the judge may answer with: the verdict is one word.
ANSWER_TOKENS = 8
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 120.0
RETRIES = 2

_SWAPPED = {"A": "B", "B": "A", "tie": "tie"}


def parse_verdict(answer: str) -> str | None:
    """The first A, B or tie in a judge's answer ("A", "B", "tie"); None when there is none.

    A and B count only as capitals standing alone, so the article "a" is not a verdict.
    """
    for word in re.findall(r"[A-Za-z]+", answer):
        if word in ("A", "B"):
            return word
        if word.lower() == "tie":
            return "tie"
    return None


def combine(first: str | None, second: str | None) -> tuple[str, bool]:
    """The pair's verdict from both orders, in the first order's terms, and whether they agreed.

    Args:
        first: The verdict with the stories as (A, B); None when unparsed (read as tie).
        second: The verdict with them swapped, (B, A).
    """
    one = first or "tie"
    other = _SWAPPED[second or "tie"]
    return (one, True) if one == other else ("tie", False)


class Judge:
    """A model on an OpenAI-compatible server, asked which of two stories is better."""

    def __init__(self, client: OpenAI, url: str, model: str) -> None:
        self.client = client
        self.url = url
        self.model = model

    @property
    def rater(self) -> str:
        return f"{pairwise.JUDGE_PREFIX}{self.model}"

    @classmethod
    def connect(cls, url: str, model: str | None = None, api_key: str | None = None) -> Judge:
        """Check that the server answers and serves ``model`` (default: the first it lists).

        Args:
            api_key: The server's key (default: ``$OPENAI_API_KEY``; none for a server
                started without one).

        Raises:
            EvaluationError: The server cannot be reached, refuses the key, is not an
                OpenAI-compatible API, or does not serve ``model``.
        """
        import os

        import openai

        client = openai.OpenAI(
            base_url=url,
            # Servers started without a key (vLLM's default) accept any; the client insists.
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "no-key",
            timeout=openai.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            max_retries=RETRIES,
        )
        try:
            names = [entry.id for entry in client.with_options(max_retries=0).models.list()]
        except openai.NotFoundError:
            raise EvaluationError(
                f"{url}/models is not found: --judge-url must be the base URL of an "
                "OpenAI-compatible API, usually ending in /v1 (http://127.0.0.1:8000/v1)"
            ) from None
        except openai.APIError as exc:
            raise judge_error(exc, url) from None
        if model is None:
            if not names:
                raise EvaluationError(f"the judge server at {url} lists no model")
            model = names[0]
            log.info(
                "judge: %s (the first model %s lists; --judge-model picks another)", model, url
            )
        elif model not in names:
            raise EvaluationError(
                f"the judge server at {url} does not serve '{model}': pass --judge-model with "
                f"one of: {', '.join(names) or '(none listed)'}"
            )
        return cls(client, url, model)

    def answer(self, prompt: str, story_a: str, story_b: str) -> str:
        """The judge's raw answer for story A against story B (greedy, a few tokens).

        Raises:
            EvaluationError: The server failed or refused the request.
        """
        import openai

        rubric = RUBRIC.format(
            prompt=prompt.strip(), story_a=story_a.strip(), story_b=story_b.strip()
        )
        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": rubric.rstrip()},
                ],
                temperature=0.0,
                max_tokens=ANSWER_TOKENS,
            )
        except openai.APIError as exc:
            raise judge_error(exc, self.url, self.model) from None
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""


def judge_error(exc: Exception, url: str, model: str | None = None) -> EvaluationError:
    """Our error, saying what to change, for an error of the OpenAI client."""
    import openai

    from taleforge.generate.remote import server_message

    if isinstance(exc, openai.APIConnectionError):  # also APITimeoutError
        reason = str(exc.__cause__ or exc).splitlines()[0][:200]
        return EvaluationError(
            f"cannot reach the judge server at {url} ({reason}): check that it is running and "
            "that --judge-url is its API's base URL, e.g. http://127.0.0.1:8000/v1"
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return EvaluationError(
            f"the judge server at {url} refused the key ({exc.status_code}): pass --judge-key "
            "or set $OPENAI_API_KEY to a key it accepts"
        )
    if isinstance(exc, openai.APIStatusError):
        message = server_message(exc)
        if exc.status_code == 404 and model is not None:
            return EvaluationError(
                f"the judge server at {url} does not serve '{model}' ({message[:300]}): pass "
                "--judge-model with one it lists at /v1/models"
            )
        return EvaluationError(f"the judge server at {url} answered {exc.status_code}: {message}")
    return EvaluationError(f"the judge server at {url} failed: {exc}")


def judge_pairs(
    stories: Sequence[dict[str, Any]],
    judge: Judge,
    ratings_path: str | Path,
    *,
    models: Sequence[str] | None = None,
    seed: int | None = None,
    limit: int | None = None,
) -> int:
    """Ask the judge about every pair not yet judged by it, in both orders; save each verdict.

    Args:
        seed: Decides which order is asked first (recorded; drawn when None).
        limit: Judge at most this many pairs.

    Returns:
        How many verdicts were saved.

    Raises:
        EvaluationError: No pairs to compare, or the server failed (verdicts so far are kept).
    """
    seed = secrets.randbelow(2**31) if seed is None else seed
    done = pairwise.judged(read_ratings(ratings_path), judge.rater)
    todo = [p for p in pairwise.pairs(stories, models) if p.story_ids not in done]
    todo = pairwise.session_order(todo, seed)
    todo = todo[:limit] if limit else todo
    log.info("%s: %d pairs to judge, each in both orders", judge.rater, len(todo))
    for number, pair in enumerate(todo, start=1):
        story_a, story_b = pairwise.shown_order(pair, seed)
        orders = []
        for first, second in ((story_a, story_b), (story_b, story_a)):
            answer = judge.answer(pair.prompt, first["text"], second["text"])
            verdict = parse_verdict(answer)
            orders.append(
                {"A": first["model"], "B": second["model"], "answer": answer, "verdict": verdict}
            )
        choice, agreed = combine(orders[0]["verdict"], orders[1]["verdict"])
        record = pairwise.judgement(
            judge.rater,
            story_a,
            story_b,
            choice,
            seed,
            datetime.now(UTC).isoformat(timespec="seconds"),
            orders=orders,
            agreed=agreed,
            rubric=RUBRIC_VERSION,
        )
        append_rating(ratings_path, record)
        winner = record["winner"] or "tie"
        log.info("pair %d of %d: %s vs %s -> %s", number, len(todo), *pair.models, winner)
    return len(todo)
