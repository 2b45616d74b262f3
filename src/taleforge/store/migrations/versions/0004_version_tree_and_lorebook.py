"""Versions form a tree (each has a parent), a story has a head version and a lorebook.

Existing rows: each story's versions become a chain (every version's parent is the one
before it), the head is the newest version, and the lorebook is empty (``{}``: the library
reads absent fields as Lorebook's own defaults).

The columns are added and dropped in place (``recreate="never"``): on SQLite, copying
``stories`` to a new table drops the old one, and with foreign keys on, dropping it deletes
every version and rating of every story (ON DELETE CASCADE).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stories", recreate="never") as batch:
        batch.add_column(sa.Column("head", sa.Integer, nullable=True))
        batch.add_column(sa.Column("lorebook", sa.JSON, nullable=False, server_default="{}"))
    with op.batch_alter_table("story_versions", recreate="never") as batch:
        batch.add_column(sa.Column("parent", sa.Integer, nullable=True))
    # Linear history becomes a chain: each version grew from the one numbered just before it.
    op.execute(
        "UPDATE story_versions SET parent = (SELECT max(earlier.number) FROM story_versions "
        "AS earlier WHERE earlier.story_id = story_versions.story_id "
        "AND earlier.number < story_versions.number)"
    )
    op.execute(
        "UPDATE stories SET head = (SELECT max(v.number) FROM story_versions AS v "
        "WHERE v.story_id = stories.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("story_versions", recreate="never") as batch:
        batch.drop_column("parent")
    with op.batch_alter_table("stories", recreate="never") as batch:
        batch.drop_column("lorebook")
        batch.drop_column("head")
