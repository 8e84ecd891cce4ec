"""Semantic search over one user's long-term memory with pgvector.

An HNSW index serves most queries. A filtered approximate scan can stop
before it finds ``limit`` matching rows, so a search that comes back short
is repeated as an exact scan over the user's rows: on pgvector 0.8 and
newer the index scan is iterative and rarely needs that second query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import and_, func, or_, select, text

from app.db.models import Memory

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Select
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

_TABLE = Memory.__table__  # type: ignore[attr-defined]
_ITERATIVE_SCAN_VERSION = (0, 8)


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """The user to search and the conditions their memories must meet."""

    tenant_id: str
    user_id: str
    session_id: str | None = None
    after: datetime | None = None
    before: datetime | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    id: UUID
    content: str
    role: str | None
    kind: str
    session_id: str | None
    turn_id: str | None
    occurred_at: datetime
    metadata: dict[str, Any]
    score: float


def _conditions(filters: SearchFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [
        _TABLE.c.tenant_id == filters.tenant_id,
        _TABLE.c.user_id == filters.user_id,
        or_(_TABLE.c.expires_at.is_(None), _TABLE.c.expires_at > func.now()),
    ]
    if filters.session_id is not None:
        conditions.append(_TABLE.c.session_id == filters.session_id)
    if filters.after is not None:
        conditions.append(_TABLE.c.occurred_at > filters.after)
    if filters.before is not None:
        conditions.append(_TABLE.c.occurred_at < filters.before)
    return conditions


_COLUMNS = (
    _TABLE.c.id,
    _TABLE.c.content,
    _TABLE.c.role,
    _TABLE.c.kind,
    _TABLE.c.session_id,
    _TABLE.c.turn_id,
    _TABLE.c.occurred_at,
    _TABLE.c.metadata,
)


def _to_hit(row: Any) -> Hit:
    return Hit(
        id=row.id,
        content=row.content,
        role=row.role,
        kind=row.kind,
        session_id=row.session_id,
        turn_id=row.turn_id,
        occurred_at=row.occurred_at,
        metadata=row.metadata,
        score=float(row.score),
    )


def parse_version(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


class SemanticSearch:
    """Nearest memories to a query vector by cosine distance."""

    def __init__(self, engine: AsyncEngine, ef_search: int) -> None:
        self._engine = engine
        self._ef_search = ef_search
        self._iterative_scan: bool | None = None

    async def search(self, filters: SearchFilters, vector: list[float], limit: int) -> list[Hit]:
        """Return up to ``limit`` hits, best first."""
        async with self._engine.begin() as connection:
            await self._tune(connection, limit)
            hits = await self._approximate(connection, filters, vector, limit)
            if len(hits) < limit:
                hits = await self._exact(connection, filters, vector, limit)
        return hits

    async def _tune(self, connection: AsyncConnection, limit: int) -> None:
        if self._iterative_scan is None:
            version = (
                await connection.execute(
                    text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                )
            ).scalar_one()
            self._iterative_scan = parse_version(version) >= _ITERATIVE_SCAN_VERSION
        ef_search = str(max(self._ef_search, limit))
        await connection.execute(
            text("SELECT set_config('hnsw.ef_search', :value, true)"), {"value": ef_search}
        )
        if self._iterative_scan:
            await connection.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))

    async def _approximate(
        self, connection: AsyncConnection, filters: SearchFilters, vector: list[float], limit: int
    ) -> list[Hit]:
        distance = _TABLE.c.embedding.cosine_distance(vector)
        statement: Select[Any] = (
            select(*_COLUMNS, (1 - distance).label("score"))
            .where(and_(*_conditions(filters)))
            .order_by(distance)
            .limit(limit)
        )
        return [_to_hit(row) for row in (await connection.execute(statement)).all()]

    async def _exact(
        self, connection: AsyncConnection, filters: SearchFilters, vector: list[float], limit: int
    ) -> list[Hit]:
        # A materialized CTE keeps the planner from using the HNSW index, so every
        # matching row is scored.
        scoped = (
            select(*_COLUMNS, _TABLE.c.embedding)
            .where(and_(*_conditions(filters)))
            .cte("scoped")
            .prefix_with("MATERIALIZED")
        )
        distance = scoped.c.embedding.cosine_distance(vector)
        statement: Select[Any] = (
            select(*(scoped.c[column.name] for column in _COLUMNS), (1 - distance).label("score"))
            .order_by(distance)
            .limit(limit)
        )
        return [_to_hit(row) for row in (await connection.execute(statement)).all()]
