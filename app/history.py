"""The change history of memories: what changed, from what to what, why and when.

Every write path records its changes in the same transaction as the change
itself, so the history never misses a committed change and never shows one
that was rolled back. Erasing a user or deleting a session removes the
history of those memories too, text included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from sqlalchemy import insert, select

from app.db.models import MemoryHistory

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

HISTORY_TABLE = MemoryHistory.__table__  # type: ignore[attr-defined]

HistoryEvent = Literal["create", "update", "supersede", "delete"]
Cause = Literal["promotion", "extraction", "summary", "user", "api"]
"""Why a memory changed: promotion of a turn, a fact extraction run, a session
summary, or a call to the API by the user themselves (``user``) or by a service
token (``api``)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One change to record."""

    memory_id: UUID
    tenant_id: str
    user_id: str
    session_id: str | None
    event: HistoryEvent
    cause: Cause
    old_content: str | None = None
    new_content: str | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    actor: str | None = None
    run_id: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            "memory_id": self.memory_id,
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "event": self.event,
            "cause": self.cause,
            "actor": self.actor,
            "run_id": self.run_id,
            "old_content": self.old_content,
            "new_content": self.new_content,
            "changes": self.changes,
        }


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A recorded change, as the history endpoint returns it."""

    id: int
    memory_id: UUID
    event: str
    cause: str
    actor: str | None
    run_id: str | None
    old_content: str | None
    new_content: str | None
    changes: dict[str, Any]
    occurred_at: datetime


async def record(connection: AsyncConnection, changes: Sequence[Change]) -> None:
    """Insert the changes in the caller's transaction."""
    if changes:
        await connection.execute(insert(HISTORY_TABLE), [change.row() for change in changes])


async def read_user(engine: AsyncEngine, tenant_id: str, user_id: str) -> list[HistoryEntry]:
    """Return every recorded change of the user's memories, oldest first."""
    columns = [HISTORY_TABLE.c[name] for name in HistoryEntry.__dataclass_fields__]
    statement = (
        select(*columns)
        .where(HISTORY_TABLE.c.tenant_id == tenant_id, HISTORY_TABLE.c.user_id == user_id)
        .order_by(HISTORY_TABLE.c.id)
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).mappings().all()
    return [HistoryEntry(**row) for row in rows]


async def read(
    engine: AsyncEngine, tenant_id: str, user_id: str, memory_id: UUID
) -> list[HistoryEntry]:
    """Return the recorded changes of one memory of the user, oldest first."""
    columns = [HISTORY_TABLE.c[name] for name in HistoryEntry.__dataclass_fields__]
    statement = (
        select(*columns)
        .where(
            HISTORY_TABLE.c.tenant_id == tenant_id,
            HISTORY_TABLE.c.user_id == user_id,
            HISTORY_TABLE.c.memory_id == memory_id,
        )
        .order_by(HISTORY_TABLE.c.id)
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).mappings().all()
    return [HistoryEntry(**row) for row in rows]
