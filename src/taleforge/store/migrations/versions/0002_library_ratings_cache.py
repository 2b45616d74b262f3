"""Story library: deletion with an undo window, ratings, the generation cache.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("stories") as batch:
        batch.add_column(sa.Column("deleted_at", TIME, nullable=True))
    op.create_index("ix_stories_user_updated", "stories", ["user_id", "updated_at"])
    op.create_table(
        "ratings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("story_id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ratings"),
        sa.ForeignKeyConstraint(
            ["story_id"], ["stories.id"], name="fk_ratings_story_id_stories", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_ratings_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("story_id", "user_id", name="uq_ratings_story_id_user_id"),
        sa.CheckConstraint("score >= 1 AND score <= 5", name="ck_ratings_score_1_to_5"),
    )
    op.create_table(
        "generation_cache",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("last_used_at", TIME, nullable=False),
        sa.Column("hits", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_generation_cache"),
    )


def downgrade() -> None:
    op.drop_table("generation_cache")
    op.drop_table("ratings")
    op.drop_index("ix_stories_user_updated", "stories")
    # In place: a batch copy of stories on SQLite drops the old table, which with foreign keys
    # on deletes every story's versions (ON DELETE CASCADE).
    with op.batch_alter_table("stories", recreate="never") as batch:
        batch.drop_column("deleted_at")
