"""The error the evaluation step raises for input a user can fix."""

from __future__ import annotations

from taleforge.errors import TaleforgeError


class EvaluationError(TaleforgeError, ValueError):
    """Bad evaluation input (no prompts, no references, an unusable split, ...); the message
    says what to change. No report is written when it is raised."""
