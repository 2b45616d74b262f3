"""Tests that need a real component: skipped on a user's machine that lacks it, failed in CI.

CI (`CI=true`, see .ci/run) installs every component, so a missing one there is a failure,
never a silent skip. Importable from every test folder (``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(reason: str) -> NoReturn:
    """Skip with ``reason``; in CI, fail with it."""
    if in_ci():
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason)


def need_llama_cpp() -> None:
    """Return when llama-cpp-python works here; else skip (fail in CI: make setup builds it)."""
    from taleforge.generate.backends.llama import llama_cpp_missing

    reason = llama_cpp_missing()
    if reason is not None:
        need(f"{reason}: the llama.cpp backend is tested wherever it can run")
