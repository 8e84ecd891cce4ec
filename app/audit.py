"""The audit log: who did what to which objects, when and from where.

Entries hold ids and action names, never memory content or queries. The
table rejects updates and deletes (a trigger), so entries are append-only.

Writes use group commit: entries recorded while an insert is running are
written together by the next one, in one statement and one transaction.
``record`` still returns only after its own entry is committed, so every
request that got a response is in the log. Under load, many requests share
one commit instead of each waiting for its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from app.db.models import AuditEntry

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.auth import Principal

_TABLE = AuditEntry.__table__  # type: ignore[attr-defined]
# Maximum entries per insert statement; the rest wait for the next one.
MAX_ENTRIES_PER_INSERT = 500


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    occurred_at: datetime
    tenant_id: str
    subject: str
    token_id: str | None
    action: str
    user_id: str | None
    object_ids: list[str]
    client_address: str | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    tenant_id: str
    user_id: str | None = None
    action: str | None = None
    subject: str | None = None
    after: datetime | None = None
    before: datetime | None = None
    limit: int = 100
    before_id: int | None = None


class AuditLog:
    """Writes and reads audit entries."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(
        self,
        principal: Principal,
        action: str,
        *,
        user_id: str | None,
        object_ids: list[str] | None = None,
        client_address: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Write one entry; return once it is committed, raise if its insert failed."""
        entry = {
            "tenant_id": principal.tenant_id,
            "subject": principal.subject,
            "token_id": principal.token_id,
            "action": action,
            "user_id": user_id,
            "object_ids": object_ids or [],
            "client_address": client_address,
            "request_id": request_id,
        }
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        self._queue.append((entry, written))
        if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
            self._writer = loop.create_task(self._write_queued(), name="audit-writer")
        await written

    async def _write_queued(self) -> None:
        """Insert queued entries, a batch at a time, until the queue is empty."""
        while self._queue:
            batch = self._queue[:MAX_ENTRIES_PER_INSERT]
            del self._queue[:MAX_ENTRIES_PER_INSERT]
            try:
                async with self._engine.begin() as connection:
                    await connection.execute(insert(_TABLE), [entry for entry, _ in batch])
            except Exception as error:  # noqa: BLE001  (handed to every waiting caller)
                for _, written in batch:
                    if not written.done():
                        written.set_exception(error)
                continue
            for _, written in batch:
                if not written.done():
                    written.set_result(None)

    async def find(self, query: AuditQuery) -> list[AuditRecord]:
        """Return entries of one tenant, newest first, matching every filter given."""
        conditions: list[Any] = [_TABLE.c.tenant_id == query.tenant_id]
        for column, value in (
            (_TABLE.c.user_id, query.user_id),
            (_TABLE.c.action, query.action),
            (_TABLE.c.subject, query.subject),
        ):
            if value is not None:
                conditions.append(column == value)
        if query.after is not None:
            conditions.append(_TABLE.c.occurred_at > query.after)
        if query.before is not None:
            conditions.append(_TABLE.c.occurred_at < query.before)
        if query.before_id is not None:
            conditions.append(_TABLE.c.id < query.before_id)
        statement = (
            select(_TABLE).where(*conditions).order_by(_TABLE.c.id.desc()).limit(query.limit)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).mappings().all()
        return [AuditRecord(**row) for row in rows]
