"""Create the memories table with its vector, scoping and idempotency indexes.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    attributes = context.config.attributes
    dimension = int(attributes["embedding_dimension"])
    hnsw_m = int(attributes.get("hnsw_m", 16))
    hnsw_ef_construction = int(attributes.get("hnsw_ef_construction", 64))

    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "memories",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("agent_id", sa.Text(), nullable=True),
        sa.Column("session_id", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("turn_id", sa.Text(), nullable=True),
        sa.Column("embedding", Vector(dimension), nullable=False),
        sa.Column("embedding_model", sa.Text(), nullable=False),
        sa.Column(
            "metadata", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('turn', 'fact', 'summary')", name="memories_kind_valid"),
        sa.CheckConstraint(
            "role IS NULL OR role IN ('user', 'assistant', 'system', 'tool')",
            name="memories_role_valid",
        ),
    )
    op.create_index(
        "memories_scope_time", "memories", ["tenant_id", "user_id", sa.text("occurred_at DESC")]
    )
    op.create_index("memories_scope_session", "memories", ["tenant_id", "user_id", "session_id"])
    op.create_index(
        "memories_turn_unique",
        "memories",
        ["tenant_id", "user_id", "session_id", "turn_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'turn'"),
    )
    op.execute(
        "CREATE INDEX memories_embedding_hnsw ON memories "
        f"USING hnsw (embedding vector_cosine_ops) "
        f"WITH (m = {hnsw_m}, ef_construction = {hnsw_ef_construction})"
    )

    op.create_table(
        "embedding_space",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("id = 1", name="embedding_space_single_row"),
    )
    op.create_table(
        "deleted_sessions",
        sa.Column("tenant_id", sa.Text(), primary_key=True),
        sa.Column("user_id", sa.Text(), primary_key=True),
        sa.Column("session_id", sa.Text(), primary_key=True),
        sa.Column("deleted_ms", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deleted_sessions")
    op.drop_table("embedding_space")
    op.drop_table("memories")
