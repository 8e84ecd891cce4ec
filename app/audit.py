"""The audit log: who did what to which objects, when and from where.

Entries hold ids and action names, never memory content or queries. The
table rejects updates and deletes (a trigger), so entries are append-only.

Writes use group commit: entries recorded while an insert is running are
written together by the next one, in one statement and one transaction.
``record`` still returns only after its own entry is committed, so every
request that got a response is in the log. Under load, many requests share
one commit instead of each waiting for its own.

While Postgres is unavailable, entries stay queued in the process and are
retried with exponential back-off, and ``record`` returns without waiting.
So accepting turns, which needs only Redis, goes on during a Postgres
outage.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from app.db.models import AuditEntry
from app.logging import get_logger
from app.worker import TRANSIENT_ERRORS

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.auth import Principal

_TABLE = AuditEntry.__table__  # type: ignore[attr-defined]
# Maximum entries per insert statement; the rest wait for the next one.
MAX_ENTRIES_PER_INSERT = 500
# Entries kept while Postgres is unavailable; past this the oldest are dropped.
MAX_DEFERRED_ENTRIES = 100_000
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0

log = get_logger("audit")


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


def _release(
    batch: list[tuple[dict[str, Any], asyncio.Future[None]]], error: Exception | None = None
) -> None:
    """Let the callers waiting for ``batch`` go on, with ``error`` raised when given."""
    for _, written in batch:
        if written.done():
            continue
        if error is None:
            written.set_result(None)
        else:
            written.set_exception(error)


class AuditLog:
    """Writes and reads audit entries."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._deferring = False
        """True while Postgres is unavailable and queued entries wait for a retry."""

    @property
    def deferred_entries(self) -> int:
        """Entries waiting in this process for Postgres to come back."""
        return len(self._queue) if self._deferring else 0

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
        """Write one entry; return once it is committed, or queued while Postgres is down.

        Raises the insert's error when it fails for another reason than an outage.
        """
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
        if self._deferring:
            # NOTE: queued entries live only in this process; a stop before Postgres
            # returns loses them (the turns themselves are safe in Redis).
            return
        await written

    async def _write_queued(self) -> None:
        """Insert queued entries, a batch at a time, until the queue is empty."""
        delay = RETRY_INITIAL_S
        while self._queue:
            batch = self._queue[:MAX_ENTRIES_PER_INSERT]
            try:
                await self._insert([entry for entry, _ in batch])
            except TRANSIENT_ERRORS as error:
                self._deferring = True
                self._drop_oldest()
                _release(self._queue)
                log.warning(
                    "audit.write_deferred",
                    queued_entries=len(self._queue),
                    error=f"{type(error).__name__}: {error}",
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except Exception as error:  # noqa: BLE001  (handed to every waiting caller)
                del self._queue[: len(batch)]
                _release(batch, error)
                continue
            del self._queue[: len(batch)]
            _release(batch)
            if self._deferring:
                self._deferring = False
                log.info("audit.write_resumed", queued_entries=len(self._queue))
            delay = RETRY_INITIAL_S

    async def _insert(self, entries: list[dict[str, Any]]) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(insert(_TABLE), entries)

    def _drop_oldest(self) -> None:
        excess = len(self._queue) - MAX_DEFERRED_ENTRIES
        if excess > 0:
            del self._queue[:excess]
            log.error("audit.entries_dropped", dropped=excess, kept=MAX_DEFERRED_ENTRIES)

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
