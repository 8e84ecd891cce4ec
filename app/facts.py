"""Facts, summaries and user edits in long-term memory, each change with its history.

A fact is one statement about the user (``fact``), a preference
(``preference``) or something that happened (``event``). Facts are never
overwritten by extraction: a fact that changes is superseded, so the old
row keeps its text, gets a ``valid_to`` and points to its successor, and the
new row points back. Every write takes the user's lock and checks for exact
and near duplicates among the current facts, and a unique index on the
current facts' content hash holds even if two writers get past the lock.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from app import history
from app.errors import ConflictError
from app.history import Change
from app.longterm import _MEMORY_TABLE, MEMORY_COLUMNS, StoredMemory, content_hash, lock_user

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from app.history import Cause

FACT_KINDS = ("fact", "preference", "event")
FactKind = Literal["fact", "preference", "event"]


@dataclass(frozen=True, slots=True)
class NewFact:
    """A fact to store, with the turns it came from and, for an update, the fact it replaces."""

    kind: str
    content: str
    vector: list[float]
    valid_from: datetime
    session_id: str | None
    source_turn_ids: list[str] = field(default_factory=list)
    supersedes: uuid.UUID | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    pinned: bool = False


@dataclass(frozen=True, slots=True)
class FactOutcome:
    """The result of storing one new fact: its ``id``, or the ``duplicate_of`` it repeats."""

    id: uuid.UUID | None
    duplicate_of: uuid.UUID | None = None
    superseded: uuid.UUID | None = None
    skipped_reason: str | None = None


@dataclass(frozen=True, slots=True)
class SimilarFact:
    id: uuid.UUID
    kind: str
    content: str
    similarity: float
    valid_from: datetime | None


@dataclass(frozen=True, slots=True)
class PendingTurn:
    """A promoted turn whose facts were not extracted yet."""

    id: uuid.UUID
    turn_id: str
    role: str
    content: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class SummaryRecord:
    id: uuid.UUID
    content: str
    last_turn_id: str
    first_occurred_at: datetime
    last_occurred_at: datetime


# Sentence-closing marks that do not change a fact: Latin, CJK full-width, and the ellipsis.
_CLOSING_MARKS = ".!?\u3002\uff01\uff1f\u2026 "


_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


def is_near_duplicate(candidate: SimilarFact, content: str, threshold: float) -> bool:
    """Return whether ``candidate``, similar in meaning, repeats ``content``.

    Embeddings barely tell numbers apart ("Owes Sam 20 euros" and "Owes Sam 30
    euros" score above 0.95 with all-MiniLM-L6-v2), so both texts must also
    hold the same numbers.
    """
    return candidate.similarity >= threshold and sorted(_NUMBER.findall(candidate.content)) == (
        sorted(_NUMBER.findall(content))
    )


def _normalised_hash(content: str) -> str:
    """Hash of a fact's text for exact repeats: case, whitespace and closing marks folded."""
    folded = " ".join(content.casefold().split()).rstrip(_CLOSING_MARKS)
    return content_hash(folded)


class FactStore:
    """Writes and reads facts, summaries and edits of one user at a time."""

    def __init__(self, engine: AsyncEngine, text_search_config: str = "english") -> None:
        self._engine = engine
        self._text_search_config = text_search_config

    # Facts

    async def similar_current(
        self,
        tenant_id: str,
        user_id: str,
        vector: list[float],
        limit: int,
        min_similarity: float,
    ) -> list[SimilarFact]:
        """Return the user's current facts nearest to ``vector``, most similar first."""
        async with self._engine.connect() as connection:
            return await _similar_current(
                connection, tenant_id, user_id, vector, limit, min_similarity
            )

    async def write_facts(
        self,
        tenant_id: str,
        user_id: str,
        facts: Sequence[NewFact],
        *,
        model: str,
        cause: Cause,
        duplicate_similarity: float,
        run_id: str | None = None,
        actor: str | None = None,
        require_sources: bool = False,
    ) -> list[FactOutcome]:
        """Store facts under the user's lock; skip duplicates and record every change.

        With ``require_sources``, a fact whose source turns no longer exist (their
        session was deleted or the user erased meanwhile) is skipped, so facts never
        bring deleted conversations back.
        """
        outcomes: list[FactOutcome] = []
        async with self._engine.begin() as connection:
            await lock_user(connection, tenant_id, user_id)
            for fact in facts:
                outcomes.append(
                    await self._write_fact(
                        connection,
                        tenant_id,
                        user_id,
                        fact,
                        model=model,
                        cause=cause,
                        duplicate_similarity=duplicate_similarity,
                        run_id=run_id,
                        actor=actor,
                        require_sources=require_sources,
                    )
                )
        return outcomes

    async def _write_fact(
        self,
        connection: AsyncConnection,
        tenant_id: str,
        user_id: str,
        fact: NewFact,
        *,
        model: str,
        cause: Cause,
        duplicate_similarity: float,
        run_id: str | None,
        actor: str | None,
        require_sources: bool,
    ) -> FactOutcome:
        if require_sources and not await _sources_exist(connection, tenant_id, user_id, fact):
            return FactOutcome(id=None, skipped_reason="source turns deleted")
        digest = _normalised_hash(fact.content)
        existing = await connection.scalar(
            select(_MEMORY_TABLE.c.id).where(
                _MEMORY_TABLE.c.tenant_id == tenant_id,
                _MEMORY_TABLE.c.user_id == user_id,
                _MEMORY_TABLE.c.kind.in_(FACT_KINDS),
                _MEMORY_TABLE.c.valid_to.is_(None),
                _MEMORY_TABLE.c.content_hash == digest,
            )
        )
        if existing is not None:
            return FactOutcome(id=None, duplicate_of=existing)
        nearest = await _similar_current(
            connection, tenant_id, user_id, fact.vector, 5, duplicate_similarity
        )
        for candidate in nearest:
            if is_near_duplicate(candidate, fact.content, duplicate_similarity):
                return FactOutcome(id=None, duplicate_of=candidate.id)

        target = None
        if fact.supersedes is not None:
            target = (
                await connection.execute(
                    select(
                        _MEMORY_TABLE.c.id,
                        _MEMORY_TABLE.c.content,
                        _MEMORY_TABLE.c.session_id,
                        func.coalesce(
                            _MEMORY_TABLE.c.valid_from, _MEMORY_TABLE.c.occurred_at
                        ).label("held_from"),
                    )
                    .where(
                        _MEMORY_TABLE.c.tenant_id == tenant_id,
                        _MEMORY_TABLE.c.user_id == user_id,
                        _MEMORY_TABLE.c.id == fact.supersedes,
                        _MEMORY_TABLE.c.kind.in_(FACT_KINDS),
                        _MEMORY_TABLE.c.valid_to.is_(None),
                    )
                    .with_for_update()
                )
            ).one_or_none()

        new_id = uuid.uuid4()
        row = {
            "id": new_id,
            "tenant_id": tenant_id,
            "user_id": user_id,
            "session_id": fact.session_id,
            "kind": fact.kind,
            "role": None,
            "content": fact.content,
            "content_hash": digest,
            "turn_id": None,
            "embedding": fact.vector,
            "embedding_model": model,
            "metadata": fact.metadata,
            "occurred_at": fact.valid_from,
            "valid_from": fact.valid_from,
            "supersedes": target.id if target is not None else None,
            "pinned": fact.pinned,
            "source_turn_ids": fact.source_turn_ids,
            "search_config": self._text_search_config,
        }
        inserted = await connection.scalar(
            insert(_MEMORY_TABLE).values(row).on_conflict_do_nothing().returning(_MEMORY_TABLE.c.id)
        )
        if inserted is None:
            # Another writer stored the same text between the check and the insert.
            return FactOutcome(id=None, skipped_reason="stored concurrently")

        changes: list[Change] = []
        if target is not None:
            valid_to = max(target.held_from, fact.valid_from)
            await connection.execute(
                update(_MEMORY_TABLE)
                .where(_MEMORY_TABLE.c.id == target.id)
                .values(valid_to=valid_to, superseded_by=new_id, updated_at=func.now())
            )
            changes.append(
                Change(
                    memory_id=target.id,
                    tenant_id=tenant_id,
                    user_id=user_id,
                    session_id=target.session_id,
                    event="supersede",
                    cause=cause,
                    actor=actor,
                    run_id=run_id,
                    old_content=target.content,
                    new_content=fact.content,
                    changes={"valid_to": valid_to.isoformat(), "superseded_by": str(new_id)},
                )
            )
        changes.append(
            Change(
                memory_id=new_id,
                tenant_id=tenant_id,
                user_id=user_id,
                session_id=fact.session_id,
                event="create",
                cause=cause,
                actor=actor,
                run_id=run_id,
                new_content=fact.content,
                changes=_creation_details(fact, target.id if target is not None else None),
            )
        )
        await history.record(connection, changes)
        return FactOutcome(id=new_id, superseded=target.id if target is not None else None)

    # Edits through the API

    async def edit(
        self,
        tenant_id: str,
        user_id: str,
        memory_id: uuid.UUID,
        *,
        content: str | None,
        vector: list[float] | None,
        pinned: bool | None,
        metadata: dict[str, Any] | None,
        cause: Cause,
        actor: str | None,
    ) -> StoredMemory | None:
        """Change a memory's text, pin or metadata and record the change; None if not found."""
        async with self._engine.begin() as connection:
            await lock_user(connection, tenant_id, user_id)
            current = (
                (
                    await connection.execute(
                        select(*MEMORY_COLUMNS)
                        .where(
                            _MEMORY_TABLE.c.tenant_id == tenant_id,
                            _MEMORY_TABLE.c.user_id == user_id,
                            _MEMORY_TABLE.c.id == memory_id,
                        )
                        .with_for_update()
                    )
                )
                .mappings()
                .one_or_none()
            )
            if current is None:
                return None
            values: dict[str, Any] = {}
            details: dict[str, Any] = {}
            if content is not None and content != current["content"]:
                digest = _normalised_hash(content)
                if current["kind"] in FACT_KINDS:
                    await _check_no_current_repeat(
                        connection, tenant_id, user_id, memory_id, digest
                    )
                values.update(content=content, content_hash=digest)
                values["embedding"] = vector
            if pinned is not None and pinned != current["pinned"]:
                values["pinned"] = pinned
                details["pinned"] = {"old": current["pinned"], "new": pinned}
            if metadata is not None and metadata != current["metadata"]:
                values["metadata"] = metadata
                details["metadata"] = {"old": current["metadata"], "new": metadata}
            if values:
                values["updated_at"] = func.now()
                await connection.execute(
                    update(_MEMORY_TABLE).where(_MEMORY_TABLE.c.id == memory_id).values(values)
                )
                changed_text = "content" in values
                await history.record(
                    connection,
                    [
                        Change(
                            memory_id=memory_id,
                            tenant_id=tenant_id,
                            user_id=user_id,
                            session_id=current["session_id"],
                            event="update",
                            cause=cause,
                            actor=actor,
                            old_content=current["content"] if changed_text else None,
                            new_content=content if changed_text else None,
                            changes=details,
                        )
                    ],
                )
            row = (
                (
                    await connection.execute(
                        select(*MEMORY_COLUMNS).where(_MEMORY_TABLE.c.id == memory_id)
                    )
                )
                .mappings()
                .one()
            )
        return StoredMemory(**row)

    async def pinned(self, tenant_id: str, user_id: str) -> list[StoredMemory]:
        """Return the user's pinned memories that are current, oldest first."""
        statement = (
            select(*MEMORY_COLUMNS)
            .where(
                _MEMORY_TABLE.c.tenant_id == tenant_id,
                _MEMORY_TABLE.c.user_id == user_id,
                _MEMORY_TABLE.c.pinned,
                _MEMORY_TABLE.c.valid_to.is_(None),
                (_MEMORY_TABLE.c.expires_at.is_(None)) | (_MEMORY_TABLE.c.expires_at > func.now()),
            )
            .order_by(_MEMORY_TABLE.c.occurred_at, _MEMORY_TABLE.c.id)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).mappings().all()
        return [StoredMemory(**row) for row in rows]

    async def list_memories(
        self,
        tenant_id: str,
        user_id: str,
        *,
        kinds: Sequence[str] | None,
        include_superseded: bool,
        pinned: bool | None,
        limit: int,
        offset: int,
    ) -> list[StoredMemory]:
        """Return one page of the user's memories, newest first."""
        conditions = [_MEMORY_TABLE.c.tenant_id == tenant_id, _MEMORY_TABLE.c.user_id == user_id]
        if kinds:
            conditions.append(_MEMORY_TABLE.c.kind.in_(list(kinds)))
        if not include_superseded:
            conditions.append(_MEMORY_TABLE.c.valid_to.is_(None))
        if pinned is not None:
            conditions.append(_MEMORY_TABLE.c.pinned.is_(pinned))
        statement = (
            select(*MEMORY_COLUMNS)
            .where(and_(*conditions))
            .order_by(_MEMORY_TABLE.c.occurred_at.desc(), _MEMORY_TABLE.c.id)
            .limit(limit)
            .offset(offset)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).mappings().all()
        return [StoredMemory(**row) for row in rows]

    # Extraction state

    async def pending_turns(
        self, tenant_id: str, user_id: str, session_id: str, limit: int
    ) -> list[PendingTurn]:
        """Return the session's oldest turns whose facts were not extracted yet."""
        return await self._session_turns(
            tenant_id, user_id, session_id, [_MEMORY_TABLE.c.extraction.is_(None)], limit
        )

    async def mark_extracted(
        self, tenant_id: str, user_id: str, memory_ids: Sequence[uuid.UUID], status: str
    ) -> None:
        """Mark turns as read by extraction (``done``) or given up on (``skipped``)."""
        if not memory_ids:
            return
        async with self._engine.begin() as connection:
            await connection.execute(
                update(_MEMORY_TABLE)
                .where(
                    _MEMORY_TABLE.c.tenant_id == tenant_id,
                    _MEMORY_TABLE.c.user_id == user_id,
                    _MEMORY_TABLE.c.id.in_(list(memory_ids)),
                )
                .values(extraction=status)
            )

    # Summaries

    async def current_summary(
        self, tenant_id: str, user_id: str, session_id: str
    ) -> SummaryRecord | None:
        """Return the session's current rolling summary, if it has one."""
        statement = select(
            _MEMORY_TABLE.c.id, _MEMORY_TABLE.c.content, _MEMORY_TABLE.c.metadata
        ).where(
            _MEMORY_TABLE.c.tenant_id == tenant_id,
            _MEMORY_TABLE.c.user_id == user_id,
            _MEMORY_TABLE.c.session_id == session_id,
            _MEMORY_TABLE.c.kind == "summary",
            _MEMORY_TABLE.c.valid_to.is_(None),
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(statement.limit(1))).one_or_none()
        if row is None:
            return None
        covers = row.metadata.get("covers", {})
        return SummaryRecord(
            id=row.id,
            content=row.content,
            last_turn_id=str(covers.get("last_turn_id", "")),
            first_occurred_at=datetime.fromisoformat(covers["from"]),
            last_occurred_at=datetime.fromisoformat(covers["to"]),
        )

    async def turns_after(
        self, tenant_id: str, user_id: str, session_id: str, after: datetime | None
    ) -> list[PendingTurn]:
        """Return the session's stored turns that occurred after ``after``, oldest first."""
        conditions = [] if after is None else [_MEMORY_TABLE.c.occurred_at > after]
        return await self._session_turns(tenant_id, user_id, session_id, conditions, None)

    async def _session_turns(
        self,
        tenant_id: str,
        user_id: str,
        session_id: str,
        conditions: list[Any],
        limit: int | None,
    ) -> list[PendingTurn]:
        statement = (
            select(
                _MEMORY_TABLE.c.id,
                _MEMORY_TABLE.c.turn_id,
                _MEMORY_TABLE.c.role,
                _MEMORY_TABLE.c.content,
                _MEMORY_TABLE.c.occurred_at,
            )
            .where(
                _MEMORY_TABLE.c.tenant_id == tenant_id,
                _MEMORY_TABLE.c.user_id == user_id,
                _MEMORY_TABLE.c.session_id == session_id,
                _MEMORY_TABLE.c.kind == "turn",
                *conditions,
            )
            .order_by(_MEMORY_TABLE.c.occurred_at, _MEMORY_TABLE.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [
            PendingTurn(row.id, row.turn_id, row.role, row.content, row.occurred_at) for row in rows
        ]

    async def write_summary(
        self,
        tenant_id: str,
        user_id: str,
        session_id: str,
        content: str,
        vector: list[float],
        covered: Sequence[PendingTurn],
        *,
        previous: uuid.UUID | None,
        model: str,
        run_id: str,
    ) -> uuid.UUID | None:
        """Store a new rolling summary that supersedes ``previous``; None if the session is gone."""
        first, last = covered[0], covered[-1]
        summary_id = uuid.uuid4()
        covers = {
            "first_turn_id": first.turn_id,
            "last_turn_id": last.turn_id,
            "from": first.occurred_at.isoformat(),
            "to": last.occurred_at.isoformat(),
            "turns": len(covered),
        }
        async with self._engine.begin() as connection:
            await lock_user(connection, tenant_id, user_id)
            still_there = await connection.scalar(
                select(func.count()).where(
                    _MEMORY_TABLE.c.tenant_id == tenant_id,
                    _MEMORY_TABLE.c.user_id == user_id,
                    _MEMORY_TABLE.c.id == last.id,
                )
            )
            if not still_there:
                return None
            changes: list[Change] = []
            old = None
            if previous is not None:
                old = (
                    await connection.execute(
                        update(_MEMORY_TABLE)
                        .where(
                            _MEMORY_TABLE.c.id == previous,
                            _MEMORY_TABLE.c.tenant_id == tenant_id,
                            _MEMORY_TABLE.c.user_id == user_id,
                            _MEMORY_TABLE.c.valid_to.is_(None),
                        )
                        .values(
                            valid_to=last.occurred_at,
                            superseded_by=summary_id,
                            updated_at=func.now(),
                        )
                        .returning(_MEMORY_TABLE.c.content)
                    )
                ).one_or_none()
                if old is None:
                    # Another run replaced the summary meanwhile; this one is out of date.
                    return None
                changes.append(
                    Change(
                        memory_id=previous,
                        tenant_id=tenant_id,
                        user_id=user_id,
                        session_id=session_id,
                        event="supersede",
                        cause="summary",
                        run_id=run_id,
                        old_content=old.content,
                        new_content=content,
                        changes={
                            "valid_to": last.occurred_at.isoformat(),
                            "superseded_by": str(summary_id),
                        },
                    )
                )
            await connection.execute(
                insert(_MEMORY_TABLE).values(
                    id=summary_id,
                    tenant_id=tenant_id,
                    user_id=user_id,
                    session_id=session_id,
                    kind="summary",
                    role=None,
                    content=content,
                    content_hash=content_hash(content),
                    turn_id=None,
                    embedding=vector,
                    embedding_model=model,
                    metadata={"covers": covers},
                    occurred_at=last.occurred_at,
                    valid_from=first.occurred_at,
                    supersedes=previous,
                    source_turn_ids=[turn.turn_id for turn in covered],
                    search_config=self._text_search_config,
                )
            )
            changes.append(
                Change(
                    memory_id=summary_id,
                    tenant_id=tenant_id,
                    user_id=user_id,
                    session_id=session_id,
                    event="create",
                    cause="summary",
                    run_id=run_id,
                    new_content=content,
                    changes={"covers": covers, "supersedes": str(previous) if previous else None},
                )
            )
            await history.record(connection, changes)
        return summary_id


def _creation_details(fact: NewFact, superseded: uuid.UUID | None) -> dict[str, Any]:
    details: dict[str, Any] = {
        "kind": fact.kind,
        "valid_from": fact.valid_from.astimezone(UTC).isoformat(),
        "source_turn_ids": fact.source_turn_ids,
    }
    if superseded is not None:
        details["supersedes"] = str(superseded)
    if fact.pinned:
        details["pinned"] = True
    return details


async def _check_no_current_repeat(
    connection: AsyncConnection, tenant_id: str, user_id: str, memory_id: uuid.UUID, digest: str
) -> None:
    """Raise ConflictError when another current fact of the user, of any kind, has this text."""
    other = await connection.scalar(
        select(_MEMORY_TABLE.c.id).where(
            _MEMORY_TABLE.c.tenant_id == tenant_id,
            _MEMORY_TABLE.c.user_id == user_id,
            _MEMORY_TABLE.c.kind.in_(FACT_KINDS),
            _MEMORY_TABLE.c.valid_to.is_(None),
            _MEMORY_TABLE.c.content_hash == digest,
            _MEMORY_TABLE.c.id != memory_id,
        )
    )
    if other is not None:
        raise ConflictError(
            "content",
            f"the user's current memory {other} already says this; delete one of the two "
            "instead of making them equal",
        )


async def _sources_exist(
    connection: AsyncConnection, tenant_id: str, user_id: str, fact: NewFact
) -> bool:
    if not fact.source_turn_ids:
        return True
    found = await connection.scalar(
        select(func.count()).where(
            _MEMORY_TABLE.c.tenant_id == tenant_id,
            _MEMORY_TABLE.c.user_id == user_id,
            _MEMORY_TABLE.c.session_id == fact.session_id,
            _MEMORY_TABLE.c.kind == "turn",
            _MEMORY_TABLE.c.turn_id.in_(fact.source_turn_ids),
        )
    )
    return bool(found)


async def _similar_current(
    connection: AsyncConnection,
    tenant_id: str,
    user_id: str,
    vector: list[float],
    limit: int,
    min_similarity: float,
) -> list[SimilarFact]:
    # An exact scan over the user's current facts: they are few next to their turns.
    rows = (
        await connection.execute(
            text(
                """
                WITH facts AS MATERIALIZED (
                    SELECT id, kind, content, valid_from, embedding FROM memories
                    WHERE tenant_id = :tenant_id AND user_id = :user_id
                      AND kind IN ('fact', 'preference', 'event') AND valid_to IS NULL
                )
                SELECT id, kind, content, valid_from,
                       1 - (embedding <=> CAST(:vector AS vector)) AS similarity
                FROM facts ORDER BY similarity DESC, id LIMIT :limit
                """
            ),
            {
                "tenant_id": tenant_id,
                "user_id": user_id,
                "vector": json.dumps(vector),
                "limit": limit,
            },
        )
    ).all()
    return [
        SimilarFact(row.id, row.kind, row.content, float(row.similarity), row.valid_from)
        for row in rows
        if float(row.similarity) >= min_similarity
    ]
