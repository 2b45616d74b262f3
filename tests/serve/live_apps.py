"""The app each running live server (``conftest.live_server``) serves, by its URL: a test
may look inside its own server (its model registry, its backend)."""

from __future__ import annotations

from typing import Any

APPS: dict[str, Any] = {}
