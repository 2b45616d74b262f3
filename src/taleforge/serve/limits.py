"""Limits that keep a shared server up: request rates and request body sizes.

Rates are counted by the ``limits`` library in a moving window, in memory or in Redis (when
``serve.redis_url`` is set, several server processes share the counts):

* generation (``serve.rate_limit_generate``): per account and per IP address;
* log-in attempts (``serve.rate_limit_login``): per IP address and per user name.

A refused request raises :class:`RateLimited`; the API answers it with 429 and a
``Retry-After`` header, the studio with a message. Request bodies over ``serve.max_body_bytes``
are refused with 413 by :class:`BodyLimit` before the app reads them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from taleforge.errors import TaleforgeError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from taleforge.config import TaleforgeConfig
    from taleforge.serve.metrics import ServerMetrics

log = logging.getLogger(__name__)

#: What each scope counts per identity, as shown in messages.
_WHO = {"ip": "IP address", "account": "account", "user": "user name"}


class RateLimited(TaleforgeError):
    """Too many requests of one kind from one account, address or user name."""

    def __init__(self, message: str, retry_after: int, scope: str) -> None:
        super().__init__(message)
        self.retry_after, self.scope = retry_after, scope


class Limiter:
    """Moving-window rate limits per scope (``generate``, ``login``) and identity."""

    def __init__(
        self,
        rules: Mapping[str, str],
        *,
        storage_uri: str | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        """Args:
        rules: Scope name → limits text such as ``"30/minute"`` or ``"5/second;100/hour"``.
        storage_uri: A ``redis://`` URL to share counts between processes; None = memory.
        metrics: Counts refused requests when given.
        """
        self.rules: dict[str, list[RateLimitItem]] = {
            scope: parse_many(text) for scope, text in rules.items()
        }
        self.storage_uri = storage_uri
        storage = storage_from_string(storage_uri) if storage_uri else MemoryStorage()
        self._strategy = MovingWindowRateLimiter(storage)
        self._fallback: MovingWindowRateLimiter | None = None
        self._warned_at = 0.0
        self.metrics = metrics

    @classmethod
    def from_config(cls, config: TaleforgeConfig, metrics: ServerMetrics | None = None) -> Limiter:
        serve = config.serve
        return cls(
            {"generate": serve.rate_limit_generate, "login": serve.rate_limit_login},
            storage_uri=redis_url(config),
            metrics=metrics,
        )

    def hit(self, scope: str, ip: str | None, name: str | int | None = None) -> None:
        """Count one request of ``scope`` from ``ip`` and ``name`` (account id or user name).

        Raises:
            RateLimited: One of the identities is over its limit (nothing is counted then).
        """
        kind = "user" if scope == "login" else "account"
        identities = [("ip", ip), (kind, None if name is None else str(name).strip().lower())]
        keys = [(scope, who, value) for who, value in identities if value]
        if not keys:
            return
        try:
            self._check_and_count(self._strategy, scope, keys)
        except RateLimited:
            raise
        except Exception as exc:  # Redis unreachable: keep limiting, per process, in memory
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("rate limits: %s unusable (%s); counting in memory", self, exc)
            self._fallback = self._fallback or MovingWindowRateLimiter(MemoryStorage())
            self._check_and_count(self._fallback, scope, keys)

    def _check_and_count(
        self, strategy: MovingWindowRateLimiter, scope: str, keys: list[tuple[str, str, str]]
    ) -> None:
        limits = self.rules.get(scope, [])
        for limit in limits:
            for key in keys:
                if not strategy.test(limit, *key):
                    reset = strategy.get_window_stats(limit, *key).reset_time
                    retry_after = max(1, math.ceil(reset - time.time()))
                    if self.metrics is not None:
                        self.metrics.rate_limited.labels(scope).inc()
                    raise RateLimited(
                        _message(scope, key[1], limit, retry_after), retry_after, scope
                    )
        for limit in limits:
            for key in keys:
                strategy.hit(limit, *key)

    def __repr__(self) -> str:
        where = "redis" if self.storage_uri else "memory"
        return f"Limiter({where}, {', '.join(f'{s}={r}' for s, r in self.rules.items())})"


def _message(scope: str, who: str, limit: RateLimitItem, retry_after: int) -> str:
    what = "log-in attempts" if scope == "login" else "generations"
    return (
        f"too many {what}: this server allows {limit} per {_WHO.get(who, who)}; "
        f"try again in {retry_after} s (the limit is --serve.rate-limit-{scope})"
    )


def redis_url(config: TaleforgeConfig) -> str | None:
    """``serve.redis_url`` or ``$TALEFORGE_REDIS_URL`` (None: everything stays in process)."""
    import os

    return config.serve.redis_url or os.environ.get("TALEFORGE_REDIS_URL") or None


# -- identities ----------------------------------------------------------------------------


def request_identity(request: Any) -> tuple[str | None, str | None]:
    """(IP address, account id) of a FastAPI request or a Gradio ``gr.Request``.

    The account is what the auth layer put on ``request.state.account``; the Gradio user
    name stands in for it under Gradio's own auth.
    """
    if request is None:
        return None, None
    client = getattr(request, "client", None)
    ip = getattr(client, "host", None)
    state = getattr(request, "state", None)
    account = getattr(state, "account", None) if state is not None else None
    account_id = getattr(account, "id", None)
    if account_id is None:
        account_id = getattr(request, "username", None)
    return ip, None if account_id is None else str(account_id)


def limit_generation(request: Request) -> None:
    """FastAPI dependency: count a generation request against its account and IP address.

    Raises:
        RateLimited: Answered 429 by the handler :func:`install` adds.
    """
    limiter = getattr(getattr(request.app.state, "ctx", None), "limiter", None)
    if limiter is not None:
        limiter.hit("generate", *request_identity(request))


# -- wiring --------------------------------------------------------------------------------


def _error_body(message: str, kind: str) -> bytes:
    """The API's error JSON (see ``serve.api.APIError``)."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def install(app: FastAPI, config: TaleforgeConfig) -> None:
    """Add the body size limit and the 429 answer of :class:`RateLimited` to ``app``."""
    from fastapi.responses import Response

    app.add_middleware(BodyLimit, max_bytes=config.serve.max_body_bytes)

    @app.exception_handler(RateLimited)
    async def _rate_limited(request: Request, exc: RateLimited) -> Response:
        return Response(
            _error_body(str(exc), "rate_limit_error"),
            status_code=429,
            media_type="application/json",
            headers={"Retry-After": str(exc.retry_after)},
        )


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: a request body over ``max_bytes`` gets 413, never the app.

    A declared ``Content-Length`` over the limit is refused before a byte is read; a chunked
    body (no length) is counted as it arrives and refused once it passes the limit, whatever
    the app then answers (its answer to the interrupted read is dropped).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        too_large = response_started = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if too_large and not response_started:
                return
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not response_started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        message = (
            f"the request body is over this server's limit of {self.max_bytes:,} bytes: send "
            "a shorter text (or start the server with a larger --serve.max-body-bytes)"
        )
        body = _error_body(message, "invalid_request_error")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
