"""Add full-text search over memory content, and an index for metadata filters.

Each row keeps the text search configuration it was indexed with, so a
change of ``MEMORY_TEXT_SEARCH_CONFIG`` applies to new memories without
rewriting old ones. The generated vector holds the configured language's
stemmed lexemes plus the ``simple`` configuration's unstemmed words, so names,
numbers and words of other languages still match exactly.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "memories",
        sa.Column(
            "search_config",
            postgresql.REGCONFIG(),
            nullable=False,
            server_default=sa.text("'english'::regconfig"),
        ),
    )
    op.add_column(
        "memories",
        sa.Column(
            "search_tsv",
            postgresql.TSVECTOR(),
            sa.Computed(
                "to_tsvector(search_config, content) || to_tsvector('simple'::regconfig, content)",
                persisted=True,
            ),
        ),
    )
    op.create_index("memories_search_tsv", "memories", ["search_tsv"], postgresql_using="gin")
    # Serves metadata filters, which test JSONB containment (@>).
    op.create_index(
        "memories_metadata",
        "memories",
        ["metadata"],
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    )


def downgrade() -> None:
    op.drop_index("memories_metadata", table_name="memories")
    op.drop_index("memories_search_tsv", table_name="memories")
    op.drop_column("memories", "search_tsv")
    op.drop_column("memories", "search_config")
