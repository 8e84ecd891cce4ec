"""Tables of long-term memory.

The ``embedding`` column has no dimension here, because the migration
creates it as ``vector(N)`` for the configured model. ``embedding_space``
records which model and dimension the stored vectors belong to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pgvector.sqlalchemy import Vector
from sqlalchemy import BigInteger, Boolean, Column, Computed, DateTime, Text, Uuid, false, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REGCONFIG, TSVECTOR
from sqlmodel import Field, SQLModel


class Memory(SQLModel, table=True):
    """One long-term memory: a promoted turn, and later facts and summaries."""

    __tablename__ = "memories"

    id: UUID = Field(primary_key=True)
    tenant_id: str = Field(sa_type=Text, nullable=False)
    user_id: str = Field(sa_type=Text, nullable=False)
    agent_id: str | None = Field(default=None, sa_type=Text)
    session_id: str | None = Field(default=None, sa_type=Text)
    kind: str = Field(sa_type=Text, nullable=False)
    role: str | None = Field(default=None, sa_type=Text)
    content: str = Field(sa_type=Text, nullable=False)
    content_hash: str = Field(sa_type=Text, nullable=False)
    turn_id: str | None = Field(default=None, sa_type=Text)
    embedding: list[float] = Field(sa_column=Column(Vector(), nullable=False))
    embedding_model: str = Field(sa_type=Text, nullable=False)
    metadata_: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column("metadata", JSONB, nullable=False, server_default="{}"),
    )
    occurred_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    search_config: str = Field(
        default="english",
        sa_column=Column(REGCONFIG, nullable=False, server_default="english"),
    )
    search_tsv: Any = Field(
        default=None,
        sa_column=Column(
            TSVECTOR,
            Computed(
                "to_tsvector(search_config, content) || to_tsvector('simple'::regconfig, content)",
                persisted=True,
            ),
        ),
    )
    # When a fact holds from and until; a fact with a ``valid_to`` was superseded.
    valid_from: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    valid_to: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    supersedes: UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    superseded_by: UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    pinned: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    source_turn_ids: list[str] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(Text), nullable=False, server_default="{}"),
    )
    # Fact extraction of a turn: NULL while pending, then ``done`` or ``skipped``.
    extraction: str | None = Field(default=None, sa_type=Text)
    updated_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class MemoryHistory(SQLModel, table=True):
    """One change to one memory: its old and new text, what changed and why."""

    __tablename__ = "memory_history"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    memory_id: UUID = Field(sa_column=Column(Uuid, nullable=False))
    tenant_id: str = Field(sa_type=Text, nullable=False)
    user_id: str = Field(sa_type=Text, nullable=False)
    session_id: str | None = Field(default=None, sa_type=Text)
    event: str = Field(sa_type=Text, nullable=False)
    cause: str = Field(sa_type=Text, nullable=False)
    actor: str | None = Field(default=None, sa_type=Text)
    run_id: str | None = Field(default=None, sa_type=Text)
    old_content: str | None = Field(default=None, sa_type=Text)
    new_content: str | None = Field(default=None, sa_type=Text)
    changes: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}")
    )
    occurred_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )


class EmbeddingSpace(SQLModel, table=True):
    """The model and dimension of every vector in ``memories``; one row."""

    __tablename__ = "embedding_space"

    id: int = Field(default=1, primary_key=True)
    model: str = Field(sa_type=Text, nullable=False)
    dimension: int = Field(nullable=False)
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )


class DeletedSession(SQLModel, table=True):
    """A session deleted by a user; promotion skips events accepted before ``deleted_ms``."""

    __tablename__ = "deleted_sessions"

    tenant_id: str = Field(sa_type=Text, primary_key=True)
    user_id: str = Field(sa_type=Text, primary_key=True)
    session_id: str = Field(sa_type=Text, primary_key=True)
    deleted_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class AuditEntry(SQLModel, table=True):
    """One action of one caller; never the content of a memory."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    occurred_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    tenant_id: str = Field(sa_type=Text, nullable=False)
    subject: str = Field(sa_type=Text, nullable=False)
    token_id: str | None = Field(default=None, sa_type=Text)
    action: str = Field(sa_type=Text, nullable=False)
    user_id: str | None = Field(default=None, sa_type=Text)
    object_ids: list[str] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False, server_default="[]")
    )
    client_address: str | None = Field(default=None, sa_type=Text)
    request_id: str | None = Field(default=None, sa_type=Text)
