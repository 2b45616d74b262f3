"""``GET /metrics``: the server's counters in the Prometheus text format.

Every app owns its own ``CollectorRegistry``, so several servers in one process (tests, a
benchmark) count separately. The cache and the rate limiter increment these counters; the
route only renders them.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

#: The route; answered without log-in, like ``/health`` (counts only, no user data).
METRICS_PATH = "/metrics"


class ServerMetrics:
    """The counters of one server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.cache_hits = Counter(
            "taleforge_cache_hits",
            "Seeded requests answered from the generation cache, by the layer that had them.",
            ["layer"],
            registry=self.registry,
        )
        self.cache_misses = Counter(
            "taleforge_cache_misses",
            "Seeded requests the generation cache did not have (the model wrote them).",
            registry=self.registry,
        )
        self.cache_entries = Gauge(
            "taleforge_cache_memory_entries",
            "Generations held in this process's in-memory cache.",
            registry=self.registry,
        )
        self.generations = Counter(
            "taleforge_generations",
            "Generations run by a model (cache hits are not counted), by model.",
            ["model"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "taleforge_rate_limited_requests",
            "Requests refused by a rate limit, by what was limited (generate, login).",
            ["scope"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """All counters in the Prometheus text exposition format."""
        return generate_latest(self.registry)


def add_metrics_route(app: FastAPI, metrics: ServerMetrics) -> None:
    """Serve ``metrics`` at ``GET /metrics`` (add it before the UI is mounted at ``/``)."""

    @app.get(METRICS_PATH, tags=["service"], response_class=Response, response_model=None)
    def prometheus_metrics() -> Response:
        """Cache hits and misses, generations and rate-limited requests (Prometheus format)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
