"""Search one user's long-term memory: by meaning, by words, or both fused.

One SQL statement gathers the candidates of both rankings:

- **vector**: nearest memories by cosine distance. Users with few memories
  get an exact scan, and larger ones go through the HNSW index. A filtered
  approximate scan can stop before it finds enough matching rows. So when
  the index candidates come back short of what the user has, the statement
  runs again with an exact scan. On pgvector 0.8 and newer the index scan
  is iterative and rarely needs that second run.
- **text**: memories that share a word with the query, scored like BM25 with
  binary term frequency: the sum of each matched term's inverse document
  frequency among the user's memories. Postgres's own ``ts_rank`` has no
  document frequency, so a common word such as a speaker's name would
  outweigh a rare one.

``retrieval.ranking`` turns the candidates into the final order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pgvector.sqlalchemy import Vector
from sqlalchemy import text

if TYPE_CHECKING:
    from sqlalchemy import TextualSelect
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from retrieval.ranking import Explanation

Mode = Literal["semantic", "keyword", "hybrid"]
MODES: tuple[Mode, ...] = ("semantic", "keyword", "hybrid")
_ITERATIVE_SCAN_VERSION = (0, 8)


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """The user to search and the conditions their memories must meet."""

    tenant_id: str
    user_id: str
    session_id: str | None = None
    after: datetime | None = None
    before: datetime | None = None
    kind: str | None = None
    role: str | None = None
    metadata: dict[str, Any] | None = None
    as_of: datetime | None = None
    """Memory as it stood then: what held at that time, superseded since or not."""
    include_superseded: bool = False
    hide_extracted_turns: bool = False
    """Leave out turns whose facts were extracted (the ``extract`` strategy)."""


@dataclass(slots=True)
class Candidate:
    """A memory found by one ranking or both, with what each ranking measured."""

    id: UUID
    content: str
    role: str | None
    kind: str
    session_id: str | None
    turn_id: str | None
    occurred_at: datetime
    metadata: dict[str, Any]
    embedding: list[float] | None = field(default=None, repr=False)
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    pinned: bool = False
    similarity: float | None = None
    vector_rank: int | None = None
    text_score: float | None = None
    text_rank: int | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """A memory in the final order of a search, with its score and why it got it."""

    id: UUID
    content: str
    role: str | None
    kind: str
    session_id: str | None
    turn_id: str | None
    occurred_at: datetime
    metadata: dict[str, Any]
    score: float
    explanation: Explanation | None = None
    embedding: list[float] | None = field(default=None, repr=False)
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    pinned: bool = False


def parse_version(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _filter_sql(filters: SearchFilters, alias: str) -> tuple[str, dict[str, Any]]:
    """Return the WHERE conditions on ``alias`` and their parameters."""
    conditions = [
        f"{alias}.tenant_id = :tenant_id",
        f"{alias}.user_id = :user_id",
        f"({alias}.expires_at IS NULL OR {alias}.expires_at > now())",
    ]
    params: dict[str, Any] = {"tenant_id": filters.tenant_id, "user_id": filters.user_id}
    optional = {
        "session_id": (filters.session_id, f"{alias}.session_id = :session_id"),
        "after": (filters.after, f"{alias}.occurred_at > :after"),
        "before": (filters.before, f"{alias}.occurred_at < :before"),
        "kind": (filters.kind, f"{alias}.kind = :kind"),
        "role": (filters.role, f"{alias}.role = :role"),
    }
    for name, (value, condition) in optional.items():
        if value is not None:
            conditions.append(condition)
            params[name] = value
    if filters.metadata:
        conditions.append(f"{alias}.metadata @> CAST(:metadata AS jsonb)")
        params["metadata"] = json.dumps(filters.metadata)
    if filters.as_of is not None:
        conditions.append(
            f"coalesce({alias}.valid_from, {alias}.occurred_at) <= :as_of "
            f"AND ({alias}.valid_to IS NULL OR {alias}.valid_to > :as_of)"
        )
        params["as_of"] = filters.as_of
    elif not filters.include_superseded:
        conditions.append(f"{alias}.valid_to IS NULL")
    if filters.hide_extracted_turns:
        conditions.append(f"({alias}.kind <> 'turn' OR {alias}.extraction IS DISTINCT FROM 'done')")
    return " AND ".join(conditions), params


def _vector_cte(where: str, exact: bool) -> str:
    if exact:
        # A materialized CTE keeps the planner from using the HNSW index, so every
        # matching row is scored.
        return f"""
        scoped AS MATERIALIZED (SELECT m.id, m.embedding FROM memories m WHERE {where}),
        vector_hits AS (
            SELECT id, embedding <=> CAST(:vector AS vector) AS distance FROM scoped
            ORDER BY distance, id LIMIT :candidates
        ),"""
    # Users with few memories get an exact scan, which is fast at that size and
    # never comes back short. Postgres evaluates the row-count conditions once
    # (as one-time filters), so only one of the two branches reads any rows.
    return f"""
        scoped AS MATERIALIZED (
            SELECT m.id, m.embedding FROM memories m
            WHERE {where} AND (SELECT rows FROM total) <= :exact_max_rows
        ),
        exact_hits AS (
            SELECT id, embedding <=> CAST(:vector AS vector) AS distance FROM scoped
            ORDER BY distance, id LIMIT :candidates
        ),
        index_hits AS (
            SELECT m.id, m.embedding <=> CAST(:vector AS vector) AS distance FROM memories m
            WHERE {where} AND (SELECT rows FROM total) > :exact_max_rows
            ORDER BY distance LIMIT :candidates
        ),
        vector_hits AS (SELECT * FROM exact_hits UNION ALL SELECT * FROM index_hits),"""


def _text_cte(where: str) -> str:
    # Terms are the query's lexemes in the configured language, plus its words
    # as written (the `simple` configuration) unless the language drops them as
    # stop words. So a stemmed word and an exact name both match.
    return f"""
        terms AS (
            SELECT DISTINCT plainto_tsquery('simple', lexeme) AS term
            FROM unnest(tsvector_to_array(to_tsvector(CAST(:config AS regconfig), :query)))
                AS lexeme
            UNION
            SELECT plainto_tsquery('simple', word)
            FROM unnest(tsvector_to_array(to_tsvector('simple'::regconfig, :query))) AS word
            WHERE to_tsvector(CAST(:config AS regconfig), word) <> ''::tsvector
        ),
        matches AS (
            SELECT m.id, t.term FROM terms t JOIN memories m ON m.search_tsv @@ t.term
            WHERE numnode(t.term) > 0 AND {where}
        ),
        text_hits AS (
            SELECT x.id,
                   sum(ln(1 + (total.rows - x.documents + 0.5) / (x.documents + 0.5))) AS score
            FROM (
                -- A window count gives each match its term's document frequency in one
                -- sort. A join with a grouped CTE let the planner, which expects one row
                -- from these CTEs, regroup all matches once per match.
                SELECT id, count(*) OVER (PARTITION BY term) AS documents FROM matches
            ) x CROSS JOIN total
            GROUP BY x.id ORDER BY score DESC, x.id LIMIT :candidates
        ),"""


def _statement(mode: Mode, where: str, exact: bool, embeddings: bool) -> str:
    use_vector = mode in ("semantic", "hybrid")
    use_text = mode in ("keyword", "hybrid")
    parts = [f"WITH total AS (SELECT count(*) AS rows FROM memories m WHERE {where}),"]
    if use_vector:
        parts.append(_vector_cte(where, exact))
    if use_text:
        parts.append(_text_cte(where))
    sources = []
    if use_vector:
        sources.append("SELECT id FROM vector_hits")
    if use_text:
        sources.append("SELECT id FROM text_hits")
    parts.append(f"candidates AS ({' UNION '.join(sources)})")
    vector_columns = "v.distance" if use_vector else "NULL::float8 AS distance"
    text_columns = "t.score AS text_score" if use_text else "NULL::float8 AS text_score"
    joins = ""
    if use_vector:
        joins += " LEFT JOIN vector_hits v ON v.id = c.id"
    if use_text:
        joins += " LEFT JOIN text_hits t ON t.id = c.id"
    vector_count = "(SELECT count(*) FROM vector_hits)" if use_vector else "0"
    embedding_column = "m.embedding" if embeddings else "NULL::vector AS embedding"
    parts.append(f"""
        SELECT m.id, m.content, m.role, m.kind, m.session_id, m.turn_id, m.occurred_at,
               m.metadata, m.valid_from, m.valid_to, m.pinned,
               {embedding_column}, {vector_columns}, {text_columns},
               (SELECT rows FROM total) AS total_rows, {vector_count} AS vector_rows
        FROM candidates c JOIN memories m ON m.id = c.id{joins}""")
    return "\n".join(parts)


def _typed(mode: Mode, where: str, *, exact: bool, embeddings: bool) -> TextualSelect:
    """Build the statement, with the vector column read through pgvector's type."""
    return text(_statement(mode, where, exact, embeddings)).columns(embedding=Vector())


def _as_list(vector: Any) -> list[float] | None:
    """A vector as a list of floats; pgvector returns a list or a NumPy array by version."""
    if vector is None or isinstance(vector, list):
        return vector
    values: list[float] = vector.tolist()
    return values


def _rank(candidates: list[Candidate]) -> None:
    """Number each ranking's candidates, best first, ties broken by id."""
    by_vector = sorted(
        (c for c in candidates if c.similarity is not None),
        key=lambda c: (-(c.similarity or 0.0), str(c.id)),
    )
    for position, candidate in enumerate(by_vector, start=1):
        candidate.vector_rank = position
    # Equal text scores are common (the same words matched), so meaning breaks the tie.
    by_text = sorted(
        (c for c in candidates if c.text_score is not None),
        key=lambda c: (-(c.text_score or 0.0), -(c.similarity or -1.0), str(c.id)),
    )
    for position, candidate in enumerate(by_text, start=1):
        candidate.text_rank = position


class MemorySearch:
    """Finds candidate memories for a query by vector distance, shared words, or both."""

    def __init__(
        self,
        engine: AsyncEngine,
        ef_search: int,
        text_search_config: str,
        exact_max_rows: int = 10_000,
    ) -> None:
        self._engine = engine
        self._ef_search = ef_search
        self._config = text_search_config
        self._exact_max_rows = exact_max_rows
        self._iterative_scan: bool | None = None

    async def candidates(
        self,
        filters: SearchFilters,
        mode: Mode,
        query: str,
        vector: list[float] | None,
        count: int,
        *,
        embeddings: bool = False,
    ) -> list[Candidate]:
        """Return up to ``count`` candidates from each ranking the mode uses, ranked.

        ``embeddings`` also reads each candidate's vector, for diversity and deduplication.
        """
        where, params = _filter_sql(filters, "m")
        params.update(
            {
                "query": query,
                "config": self._config,
                "candidates": count,
                "exact_max_rows": self._exact_max_rows,
            }
        )
        if vector is not None:
            params["vector"] = json.dumps(vector)
        async with self._engine.begin() as connection:
            if mode != "keyword":
                await self._tune(connection, count)
            statement = _typed(mode, where, exact=False, embeddings=embeddings)
            rows = (await connection.execute(statement, params)).all()
            # No rows at all can mean the index scan found none of this user's rows,
            # so that case is checked exactly too (it is cheap for a user with none).
            short = not rows or rows[0].vector_rows < min(count, rows[0].total_rows)
            if mode != "keyword" and short:
                statement = _typed(mode, where, exact=True, embeddings=embeddings)
                rows = (await connection.execute(statement, params)).all()
        candidates = [
            Candidate(
                id=row.id,
                content=row.content,
                role=row.role,
                kind=row.kind,
                session_id=row.session_id,
                turn_id=row.turn_id,
                occurred_at=row.occurred_at,
                metadata=row.metadata,
                embedding=_as_list(row.embedding),
                valid_from=row.valid_from,
                valid_to=row.valid_to,
                pinned=row.pinned,
                similarity=None if row.distance is None else 1.0 - float(row.distance),
                text_score=None if row.text_score is None else float(row.text_score),
            )
            for row in rows
        ]
        _rank(candidates)
        return candidates

    async def _tune(self, connection: AsyncConnection, count: int) -> None:
        if self._iterative_scan is None:
            version = (
                await connection.execute(
                    text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                )
            ).scalar_one()
            self._iterative_scan = parse_version(version) >= _ITERATIVE_SCAN_VERSION
        ef_search = str(max(self._ef_search, count))
        await connection.execute(
            text("SELECT set_config('hnsw.ef_search', :value, true)"), {"value": ef_search}
        )
        if self._iterative_scan:
            await connection.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
