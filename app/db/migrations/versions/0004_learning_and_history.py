"""Add facts that change over time, pinning, extraction state and the history of every memory.

Only additions: new nullable columns, new indexes, a new table and a wider
kind check. Code of the previous revision keeps working against this schema,
so a rolling deploy can run old and new processes side by side.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_KINDS_BEFORE = "kind IN ('turn', 'fact', 'summary')"
_KINDS_AFTER = "kind IN ('turn', 'fact', 'preference', 'event', 'summary')"


def upgrade() -> None:
    op.add_column("memories", sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True))
    op.add_column("memories", sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True))
    op.add_column("memories", sa.Column("supersedes", sa.Uuid(), nullable=True))
    op.add_column("memories", sa.Column("superseded_by", sa.Uuid(), nullable=True))
    op.add_column(
        "memories",
        sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "memories",
        sa.Column(
            "source_turn_ids",
            postgresql.ARRAY(sa.Text()),
            nullable=False,
            server_default=sa.text("'{}'::text[]"),
        ),
    )
    op.add_column("memories", sa.Column("extraction", sa.Text(), nullable=True))
    op.add_column("memories", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))

    op.drop_constraint("memories_kind_valid", "memories", type_="check")
    op.create_check_constraint("memories_kind_valid", "memories", _KINDS_AFTER)
    op.create_check_constraint(
        "memories_extraction_valid",
        "memories",
        "extraction IS NULL OR extraction IN ('done', 'skipped')",
    )
    # One current copy of a fact per user; this holds even when two workers race.
    op.create_index(
        "memories_current_fact_unique",
        "memories",
        ["tenant_id", "user_id", "kind", "content_hash"],
        unique=True,
        postgresql_where=sa.text("kind IN ('fact', 'preference', 'event') AND valid_to IS NULL"),
    )
    # Turns still waiting for fact extraction, per session.
    op.create_index(
        "memories_extraction_pending",
        "memories",
        ["tenant_id", "user_id", "session_id", "occurred_at"],
        postgresql_where=sa.text("kind = 'turn' AND extraction IS NULL"),
    )
    op.create_index(
        "memories_pinned",
        "memories",
        ["tenant_id", "user_id"],
        postgresql_where=sa.text("pinned"),
    )

    op.create_table(
        "memory_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("memory_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=True),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("run_id", sa.Text(), nullable=True),
        sa.Column("old_content", sa.Text(), nullable=True),
        sa.Column("new_content", sa.Text(), nullable=True),
        sa.Column(
            "changes", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column(
            "occurred_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "event IN ('create', 'update', 'supersede', 'delete')", name="memory_history_event"
        ),
    )
    op.create_index(
        "memory_history_memory", "memory_history", ["tenant_id", "user_id", "memory_id", "id"]
    )
    op.create_index(
        "memory_history_session", "memory_history", ["tenant_id", "user_id", "session_id"]
    )


def downgrade() -> None:
    op.drop_table("memory_history")
    op.drop_index("memories_pinned", table_name="memories")
    op.drop_index("memories_extraction_pending", table_name="memories")
    op.drop_index("memories_current_fact_unique", table_name="memories")
    op.drop_constraint("memories_extraction_valid", "memories", type_="check")
    op.execute("DELETE FROM memories WHERE kind IN ('preference', 'event')")
    op.drop_constraint("memories_kind_valid", "memories", type_="check")
    op.create_check_constraint("memories_kind_valid", "memories", _KINDS_BEFORE)
    for column in (
        "updated_at",
        "extraction",
        "source_turn_ids",
        "pinned",
        "superseded_by",
        "supersedes",
        "valid_to",
        "valid_from",
    ):
        op.drop_column("memories", column)
