"""Alembic environment: migrations run on the connection taleforge hands over."""

from __future__ import annotations

from alembic import context

from taleforge.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - taleforge always passes one
    raise RuntimeError("run migrations through taleforge.store.Database.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things: copy-and-move tables instead
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
