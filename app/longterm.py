"""Long-term memory in Postgres: idempotent writes, scoped reads and deletes.

Every query names the tenant and the user, so no call here can reach
another scope's rows. Search lives in ``retrieval``; this module owns the
writes and the lookups by id.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, literal, select, text, tuple_
from sqlalchemy import insert as plain_insert
from sqlalchemy.dialects.postgresql import insert

from app import history
from app.db.models import DeletedSession, EmbeddingSpace, Memory
from app.errors import ConfigurationError, EmbeddingModelMismatchError
from app.history import HISTORY_TABLE, Cause, Change

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from app.shortterm import StoredTurn

# Fixed namespace: a turn's memory id is derived from its scope and turn id,
# so every retry of the same turn writes the same row.
# The session id a tombstone uses when the whole user was erased; never a valid session id.
WHOLE_USER = "*"

_TURN_NAMESPACE = uuid.UUID("5b1f7d1e-8c43-4d5e-9a39-2f0a4e6c8b11")

_MEMORY_TABLE = Memory.__table__  # type: ignore[attr-defined]
_TOMBSTONE_TABLE = DeletedSession.__table__  # type: ignore[attr-defined]
_SPACE_TABLE = EmbeddingSpace.__table__  # type: ignore[attr-defined]


def turn_memory_id(tenant_id: str, user_id: str, session_id: str, turn_id: str) -> uuid.UUID:
    """Return the id of the memory a turn becomes; the same inputs give the same id."""
    return uuid.uuid5(_TURN_NAMESPACE, f"{tenant_id}|{user_id}|{session_id}|{turn_id}")


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredMemory:
    """A memory row without its vector."""

    id: uuid.UUID
    user_id: str
    session_id: str | None
    kind: str
    role: str | None
    content: str
    turn_id: str | None
    occurred_at: datetime
    created_at: datetime
    metadata: dict[str, Any]
    embedding_model: str
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    supersedes: uuid.UUID | None = None
    superseded_by: uuid.UUID | None = None
    pinned: bool = False
    source_turn_ids: list[str] | None = None
    updated_at: datetime | None = None


MEMORY_COLUMNS = [_MEMORY_TABLE.c[name] for name in StoredMemory.__dataclass_fields__]


@dataclass(frozen=True, slots=True)
class SessionStats:
    session_id: str
    stored_turns: int
    last_occurred_at: datetime


class LongTermStore:
    """Reads and writes the ``memories`` table."""

    def __init__(self, engine: AsyncEngine, text_search_config: str = "english") -> None:
        self._engine = engine
        self._text_search_config = text_search_config

    async def check_text_search_config(self) -> None:
        """Raise when Postgres has no text search configuration of the configured name."""
        async with self._engine.connect() as connection:
            found = await connection.scalar(
                text("SELECT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = :name)"),
                {"name": self._text_search_config},
            )
        if not found:
            raise ConfigurationError(
                f"Postgres has no text search configuration {self._text_search_config!r}; "
                "set MEMORY_TEXT_SEARCH_CONFIG to a name in the cfgname column of pg_ts_config"
            )

    async def check_embedding_space(self, model: str, dimension: int) -> None:
        """Record the model on first use; raise when the stored vectors came from another."""
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(_SPACE_TABLE)
                .values(id=1, model=model, dimension=dimension)
                .on_conflict_do_nothing()
            )
            row = (
                await connection.execute(select(_SPACE_TABLE.c.model, _SPACE_TABLE.c.dimension))
            ).one()

        if row.dimension != dimension:
            raise EmbeddingModelMismatchError(
                f"the database contains {row.dimension}-dimension vectors from model "
                f"{row.model!r}, but EMBEDDINGS_MODEL={model!r} makes {dimension}-dimension "
                "vectors; configure the original model or use a new database"
            )
        if row.model != model:
            raise EmbeddingModelMismatchError(
                f"the database contains vectors from model {row.model!r}, but EMBEDDINGS_MODEL="
                f"{model!r}; vectors of different models cannot be compared, so configure "
                "the original model or use a new database"
            )

    async def insert_turns(
        self,
        turns: Sequence[StoredTurn],
        vectors: Sequence[list[float]],
        model: str,
        accepted_ms: Sequence[int] | None = None,
    ) -> int:
        """Insert one memory per turn, skipping turns stored before; return how many were new.

        With ``accepted_ms`` (when each turn was accepted), turns of a session
        deleted after that time are skipped. The check holds the same lock as
        ``delete_session``, so a deletion cannot slip in between check and insert.
        """
        rows = [
            {
                "id": turn_memory_id(turn.tenant_id, turn.user_id, turn.session_id, turn.turn_id),
                "tenant_id": turn.tenant_id,
                "user_id": turn.user_id,
                "session_id": turn.session_id,
                "kind": "turn",
                "role": turn.role,
                "content": turn.content,
                "content_hash": content_hash(turn.content),
                "turn_id": turn.turn_id,
                "embedding": vector,
                "embedding_model": model,
                "metadata": turn.metadata,
                "occurred_at": turn.occurred_at,
                "search_config": self._text_search_config,
            }
            for turn, vector in zip(turns, vectors, strict=True)
        ]
        async with self._engine.begin() as connection:
            if accepted_ms is not None:
                live = await self._live_turns(connection, turns, accepted_ms)
                rows = [row for row, keep in zip(rows, live, strict=True) if keep]
            if not rows:
                return 0
            inserted = (await connection.execute(_insert_with_history(rows))).all()
        return len(inserted)

    async def _live_turns(
        self, connection: AsyncConnection, turns: Sequence[StoredTurn], accepted_ms: Sequence[int]
    ) -> list[bool]:
        for tenant_id, user_id in sorted({(turn.tenant_id, turn.user_id) for turn in turns}):
            await _lock_user(connection, tenant_id, user_id)
        scopes = {(turn.tenant_id, turn.user_id, turn.session_id) for turn in turns}
        deleted = await _deletion_times(connection, scopes)
        return [
            deleted.get((turn.tenant_id, turn.user_id, turn.session_id), -1) < accepted
            for turn, accepted in zip(turns, accepted_ms, strict=True)
        ]

    async def get(self, tenant_id: str, user_id: str, memory_id: uuid.UUID) -> StoredMemory | None:
        statement = select(*MEMORY_COLUMNS).where(
            _MEMORY_TABLE.c.tenant_id == tenant_id,
            _MEMORY_TABLE.c.user_id == user_id,
            _MEMORY_TABLE.c.id == memory_id,
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(statement)).mappings().one_or_none()
        return None if row is None else StoredMemory(**row)

    async def delete(
        self,
        tenant_id: str,
        user_id: str,
        memory_id: uuid.UUID,
        *,
        cause: Cause = "api",
        actor: str | None = None,
        purge_history: bool = False,
    ) -> bool:
        """Delete one memory and record it; return whether it existed.

        The history entry keeps the deleted text, unless ``purge_history``
        removes the memory's earlier history and records the deletion without text.
        """
        statement = (
            delete(_MEMORY_TABLE)
            .where(
                _MEMORY_TABLE.c.tenant_id == tenant_id,
                _MEMORY_TABLE.c.user_id == user_id,
                _MEMORY_TABLE.c.id == memory_id,
            )
            .returning(_MEMORY_TABLE.c.session_id, _MEMORY_TABLE.c.content)
        )
        async with self._engine.begin() as connection:
            row = (await connection.execute(statement)).one_or_none()
            if row is None and purge_history:
                # Deleted earlier with its history kept: remove that history now.
                return await _purge_history(connection, tenant_id, user_id, memory_id)
            if row is None:
                return False
            if purge_history:
                await connection.execute(
                    delete(HISTORY_TABLE).where(
                        HISTORY_TABLE.c.tenant_id == tenant_id,
                        HISTORY_TABLE.c.user_id == user_id,
                        HISTORY_TABLE.c.memory_id == memory_id,
                    )
                )
            change = Change(
                memory_id=memory_id,
                tenant_id=tenant_id,
                user_id=user_id,
                session_id=row.session_id,
                event="delete",
                cause=cause,
                actor=actor,
                old_content=None if purge_history else row.content,
                changes={"history_purged": True} if purge_history else {},
            )
            await history.record(connection, [change])
        return True

    async def delete_session(
        self, tenant_id: str, user_id: str, session_id: str, deleted_ms: int
    ) -> int:
        """Delete a session's memories and record the deletion time; return rows deleted.

        The record makes the worker drop events of this session that were
        accepted before ``deleted_ms`` but not promoted yet. ``WHOLE_USER``
        as the session id deletes every session of the user.
        """
        tombstone = insert(_TOMBSTONE_TABLE).values(
            tenant_id=tenant_id, user_id=user_id, session_id=session_id, deleted_ms=deleted_ms
        )
        tombstone = tombstone.on_conflict_do_update(
            index_elements=["tenant_id", "user_id", "session_id"],
            set_={"deleted_ms": func.greatest(_TOMBSTONE_TABLE.c.deleted_ms, deleted_ms)},
        )
        statement = delete(_MEMORY_TABLE).where(
            _MEMORY_TABLE.c.tenant_id == tenant_id, _MEMORY_TABLE.c.user_id == user_id
        )
        # The history of those memories goes too, text included.
        history_statement = delete(HISTORY_TABLE).where(
            HISTORY_TABLE.c.tenant_id == tenant_id, HISTORY_TABLE.c.user_id == user_id
        )
        if session_id != WHOLE_USER:
            statement = statement.where(_MEMORY_TABLE.c.session_id == session_id)
            history_statement = history_statement.where(HISTORY_TABLE.c.session_id == session_id)
        async with self._engine.begin() as connection:
            await _lock_user(connection, tenant_id, user_id)
            await connection.execute(tombstone)
            result = await connection.execute(statement)
            await connection.execute(history_statement)
        return int(result.rowcount)

    async def erase_user(self, tenant_id: str, user_id: str, deleted_ms: int) -> int:
        """Delete every memory of a user and record the erasure; return rows deleted.

        Like ``delete_session``, the record makes the worker drop the user's
        events that were accepted before ``deleted_ms``.
        """
        return await self.delete_session(tenant_id, user_id, WHOLE_USER, deleted_ms)

    async def purge_expired(self, now: datetime) -> int:
        """Delete memories whose ``expires_at`` has passed; return how many."""
        statement = delete(_MEMORY_TABLE).where(
            _MEMORY_TABLE.c.expires_at.is_not(None), _MEMORY_TABLE.c.expires_at <= now
        )
        async with self._engine.begin() as connection:
            return await _delete_with_history(connection, statement)

    async def purge_created_before(
        self,
        cutoff: datetime,
        *,
        tenant_id: str | None = None,
        exclude_tenants: Sequence[str] = (),
    ) -> int:
        """Delete memories stored before ``cutoff`` for one tenant, or all but the excluded."""
        statement = delete(_MEMORY_TABLE).where(_MEMORY_TABLE.c.created_at < cutoff)
        if tenant_id is not None:
            statement = statement.where(_MEMORY_TABLE.c.tenant_id == tenant_id)
        if exclude_tenants:
            statement = statement.where(_MEMORY_TABLE.c.tenant_id.not_in(list(exclude_tenants)))
        async with self._engine.begin() as connection:
            return await _delete_with_history(connection, statement)

    async def all_memories(self, tenant_id: str, user_id: str) -> list[StoredMemory]:
        """Return every memory of a user, oldest first, without vectors."""
        statement = (
            select(*MEMORY_COLUMNS)
            .where(_MEMORY_TABLE.c.tenant_id == tenant_id, _MEMORY_TABLE.c.user_id == user_id)
            .order_by(_MEMORY_TABLE.c.occurred_at, _MEMORY_TABLE.c.id)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).mappings().all()
        return [StoredMemory(**row) for row in rows]

    async def deletion_times(
        self, scopes: set[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], int]:
        """Return the deletion time (ms) of each (tenant, user, session) that was deleted."""
        if not scopes:
            return {}
        async with self._engine.connect() as connection:
            return await _deletion_times(connection, scopes)

    async def session_stats(self, tenant_id: str, user_id: str) -> list[SessionStats]:
        """Return each session of the user with its count of stored turns."""
        statement = (
            select(
                _MEMORY_TABLE.c.session_id,
                func.count().label("stored"),
                func.max(_MEMORY_TABLE.c.occurred_at).label("last"),
            )
            .where(
                _MEMORY_TABLE.c.tenant_id == tenant_id,
                _MEMORY_TABLE.c.user_id == user_id,
                _MEMORY_TABLE.c.kind == "turn",
                _MEMORY_TABLE.c.session_id.is_not(None),
            )
            .group_by(_MEMORY_TABLE.c.session_id)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [SessionStats(row.session_id, int(row.stored), row.last) for row in rows]

    async def count(self, tenant_id: str | None = None) -> int:
        statement = select(func.count()).select_from(_MEMORY_TABLE)
        if tenant_id is not None:
            statement = statement.where(_MEMORY_TABLE.c.tenant_id == tenant_id)
        async with self._engine.connect() as connection:
            return int((await connection.execute(statement)).scalar_one())

    async def ping(self) -> bool:
        async with self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return True


def _insert_with_history(rows: list[dict[str, Any]]) -> Any:
    """Insert memories, skipping ids that exist, and record a ``create`` for each new one.

    One statement does both, and it returns one row per memory inserted.
    """
    inserted = (
        insert(_MEMORY_TABLE)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(
            _MEMORY_TABLE.c.id,
            _MEMORY_TABLE.c.tenant_id,
            _MEMORY_TABLE.c.user_id,
            _MEMORY_TABLE.c.session_id,
            _MEMORY_TABLE.c.content,
        )
        .cte("inserted")
    )
    source = select(
        inserted.c.id,
        inserted.c.tenant_id,
        inserted.c.user_id,
        inserted.c.session_id,
        literal("create"),
        literal("promotion"),
        inserted.c.content,
    )
    columns = ["memory_id", "tenant_id", "user_id", "session_id", "event", "cause", "new_content"]
    return (
        plain_insert(HISTORY_TABLE)
        .from_select(columns, source)
        .returning(HISTORY_TABLE.c.memory_id)
        .add_cte(inserted)
    )


async def _purge_history(
    connection: AsyncConnection, tenant_id: str, user_id: str, memory_id: uuid.UUID
) -> bool:
    """Delete the history of a memory that no longer exists; return whether it had any."""
    result = await connection.execute(
        delete(HISTORY_TABLE).where(
            HISTORY_TABLE.c.tenant_id == tenant_id,
            HISTORY_TABLE.c.user_id == user_id,
            HISTORY_TABLE.c.memory_id == memory_id,
        )
    )
    return bool(result.rowcount)


async def _delete_with_history(connection: AsyncConnection, statement: Any) -> int:
    """Run a DELETE on memories and remove the history of the deleted rows; return the count."""
    deleted = (await connection.execute(statement.returning(_MEMORY_TABLE.c.id))).scalars().all()
    if deleted:
        await connection.execute(
            delete(HISTORY_TABLE).where(HISTORY_TABLE.c.memory_id.in_(list(deleted)))
        )
    return len(deleted)


async def lock_user(connection: AsyncConnection, tenant_id: str, user_id: str) -> None:
    """Take the transaction-scoped lock that every write of one user's rows holds."""
    await _lock_user(connection, tenant_id, user_id)


async def _lock_user(connection: AsyncConnection, tenant_id: str, user_id: str) -> None:
    """Take a transaction-scoped lock on one user's long-term rows."""
    await connection.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"{tenant_id}|{user_id}"},
    )


async def _deletion_times(
    connection: AsyncConnection, scopes: set[tuple[str, str, str]]
) -> dict[tuple[str, str, str], int]:
    """Return, per (tenant, user, session), the latest deletion of the session or the user."""
    columns = (
        _TOMBSTONE_TABLE.c.tenant_id,
        _TOMBSTONE_TABLE.c.user_id,
        _TOMBSTONE_TABLE.c.session_id,
    )
    lookup = scopes | {(tenant, user, WHOLE_USER) for tenant, user, _ in scopes}
    statement = select(*columns, _TOMBSTONE_TABLE.c.deleted_ms).where(
        tuple_(*columns).in_(list(lookup))
    )
    rows = (await connection.execute(statement)).all()
    found = {(row[0], row[1], row[2]): int(row[3]) for row in rows}

    times: dict[tuple[str, str, str], int] = {}
    for scope in scopes:
        tenant, user, _ = scope
        latest = max(found.get(scope, -1), found.get((tenant, user, WHOLE_USER), -1))
        if latest >= 0:
            times[scope] = latest
    return times
