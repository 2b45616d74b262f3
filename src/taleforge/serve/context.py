"""What every route and UI handler of one server shares: models, database, cache, limits."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from taleforge.config import TaleforgeConfig
from taleforge.serve.cache import GenerationCache
from taleforge.serve.exports import ExportFolder
from taleforge.serve.limits import Limiter
from taleforge.serve.metrics import ServerMetrics
from taleforge.serve.registry import ModelRegistry
from taleforge.store import Accounts, Database, Library

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class AppContext:
    """The server's shared parts; ``create_app`` builds one and puts it on ``app.state.ctx``."""

    config: TaleforgeConfig
    registry: ModelRegistry
    db: Database
    accounts: Accounts
    library: Library
    #: The studio's exported files (private, deleted after serve.export_max_age_seconds).
    exports: ExportFolder
    #: Seeded generations answered again without the model (serve.cache).
    cache: GenerationCache | None = None
    #: Rate limits on generation and log-in (serve.limits).
    limiter: Limiter | None = None
    #: The counters ``GET /metrics`` shows (serve.metrics).
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def accounts_required(self) -> bool:
        """Accounts are on when asked for, and always when others can reach the server."""
        serve = self.config.serve
        return serve.accounts or serve.host not in LOCAL_HOSTS

    @classmethod
    def build(cls, config: TaleforgeConfig, registry: ModelRegistry | None = None) -> AppContext:
        """Open (and migrate) the database and wire the parts together."""
        db = Database(config.serve.database_url)
        db.migrate()
        log.info("database: %r", db)
        registry = registry or ModelRegistry(config)
        metrics = ServerMetrics()
        registry.cache = GenerationCache.from_config(config, db, metrics)
        return cls(
            config=config,
            registry=registry,
            db=db,
            accounts=Accounts(db),
            library=Library(db, undo_seconds=config.serve.undo_seconds),
            exports=ExportFolder.create(config.serve.export_max_age_seconds),
            cache=registry.cache,
            limiter=Limiter.from_config(config, metrics),
            metrics=metrics,
        )
