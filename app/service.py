"""Memory operations behind the v1 API: one method per endpoint.

Methods take the caller's tenant and a validated request, enforce the
limits that come from settings, and raise ``app.errors`` exceptions that the
API turns into problem responses.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio.to_thread

from app import schemas
from app.errors import InvalidInputError, NotFoundError, PayloadTooLargeError
from app.logging import get_logger
from app.metrics import SEARCH_SECONDS
from app.shortterm import StoredTurn, decode_cursor, encode_cursor
from retrieval.context import ContextAssembler
from retrieval.ranking import RankingOptions, rank
from retrieval.search import Hit, SearchFilters

if TYPE_CHECKING:
    from collections.abc import Sequence

    from app.runtime import Runtime

log = get_logger("service")


class MemoryService:
    """Short-term windows, long-term memories, search and context for one tenant at a time."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._limits = runtime.settings.memory
        self._assembler = ContextAssembler(
            counter=runtime.counter,
            render_memories=self.render_memories,
            window_share=self._limits.context_window_share,
            min_similarity=self._limits.context_min_similarity,
        )

    # Sessions and turns

    async def append_turns(
        self, tenant_id: str, session_id: str, request: schemas.AppendTurnsRequest
    ) -> schemas.AppendTurnsResponse:
        """Store a batch in the session window and queue each new turn for promotion."""
        self._check_batch(request.turns)
        now = datetime.now(UTC)
        turns = [
            StoredTurn(
                tenant_id=tenant_id,
                user_id=request.user_id,
                session_id=session_id,
                turn_id=turn.turn_id or uuid.uuid4().hex,
                role=turn.role,
                content=turn.content,
                occurred_at=turn.occurred_at or now,
                metadata=turn.metadata,
            )
            for turn in request.turns
        ]
        results = await self._runtime.short_term.append(
            tenant_id, request.user_id, session_id, turns
        )
        accepted = [
            schemas.AcceptedTurn(turn_id=result.turn_id, duplicate=result.event_id is None)
            for result in results
        ]
        log.info(
            "turns.accepted",
            tenant_id=tenant_id,
            user_id=request.user_id,
            session_id=session_id,
            accepted=sum(not turn.duplicate for turn in accepted),
            duplicates=sum(turn.duplicate for turn in accepted),
        )
        return schemas.AppendTurnsResponse(
            user_id=request.user_id, session_id=session_id, turns=accepted
        )

    async def list_turns(
        self, tenant_id: str, user_id: str, session_id: str, limit: int | None, cursor: str | None
    ) -> schemas.TurnPage:
        """Return one page of the session window, oldest first."""
        page_size = self._page_size(limit)
        if cursor is not None:
            _check_cursor(cursor)
        if not await self._runtime.short_term.exists(tenant_id, user_id, session_id):
            raise NotFoundError("session window", session_id)
        page = await self._runtime.short_term.window(
            tenant_id, user_id, session_id, limit=page_size, cursor=cursor
        )
        return schemas.TurnPage(
            user_id=user_id,
            session_id=session_id,
            turns=[_turn_out(turn) for turn in page.turns],
            next_cursor=page.next_cursor,
        )

    async def delete_session(self, tenant_id: str, user_id: str, session_id: str) -> None:
        """Delete a session's window and long-term memories, and drop its pending events."""
        deleted_ms = await self._runtime.short_term.server_time_ms()
        rows = await self._runtime.long_term.delete_session(
            tenant_id, user_id, session_id, deleted_ms
        )
        had_window = await self._runtime.short_term.delete_session(tenant_id, user_id, session_id)
        log.info(
            "session.deleted",
            tenant_id=tenant_id,
            user_id=user_id,
            session_id=session_id,
            memories_deleted=rows,
            window_deleted=had_window,
        )
        if rows == 0 and not had_window:
            raise NotFoundError("session", session_id)

    async def list_sessions(
        self, tenant_id: str, user_id: str, limit: int | None, cursor: str | None
    ) -> schemas.SessionList:
        """Return the user's sessions, live windows and promoted ones, most recent first."""
        page_size = self._page_size(limit)
        offset = _check_cursor(cursor) if cursor is not None else 0
        windows = await self._runtime.short_term.sessions(tenant_id, user_id)
        stored = await self._runtime.long_term.session_stats(tenant_id, user_id)

        merged: dict[str, schemas.SessionSummary] = {
            stats.session_id: schemas.SessionSummary(
                session_id=stats.session_id,
                window_turns=0,
                stored_turns=stats.stored_turns,
                last_activity_at=stats.last_occurred_at,
                active=False,
            )
            for stats in stored
        }
        for window in windows:
            summary = merged.get(window.session_id)
            merged[window.session_id] = schemas.SessionSummary(
                session_id=window.session_id,
                window_turns=window.turn_count,
                stored_turns=summary.stored_turns if summary else 0,
                last_activity_at=window.last_activity_at,
                active=True,
            )

        ordered = sorted(
            merged.values(),
            key=lambda item: item.last_activity_at or datetime.min.replace(tzinfo=UTC),
            reverse=True,
        )
        page = ordered[offset : offset + page_size]
        has_more = offset + page_size < len(ordered)
        return schemas.SessionList(
            user_id=user_id,
            sessions=page,
            next_cursor=encode_cursor(offset + page_size) if has_more else None,
        )

    # Long-term memory

    async def search(
        self, tenant_id: str, request: schemas.SearchRequest
    ) -> schemas.SearchResponse:
        """Return the user's memories nearest in meaning to the query."""
        limit = request.limit or self._limits.search_default_limit
        if limit > self._limits.search_max_limit:
            raise InvalidInputError(
                "limit",
                f"limit is {limit}; the maximum is {self._limits.search_max_limit} "
                "(MEMORY_SEARCH_MAX_LIMIT)",
            )
        _check_time_range(request.after, request.before)
        filters = SearchFilters(
            tenant_id=tenant_id,
            user_id=request.user_id,
            session_id=request.session_id,
            after=request.after,
            before=request.before,
            kind=request.kind,
            role=request.role,
            metadata=request.metadata,
        )
        options = RankingOptions(
            mode=request.mode or self._limits.search_default_mode,
            limit=limit,
            rrf_k=self._limits.search_rrf_k,
            half_life_days=request.recency_half_life_days,
            recency_weight=request.recency_weight,
            mmr_lambda=None if request.diversity is None else 1.0 - request.diversity,
        )
        timings: dict[str, float] = {}
        hits = await self._search(
            filters, request.query, options, timings, with_embeddings=options.mmr_lambda is not None
        )
        return schemas.SearchResponse(
            hits=[_hit_out(hit) for hit in hits],
            mode=options.mode,
            timings=schemas.SearchTimings(**timings),
        )

    async def get_memory(
        self, tenant_id: str, user_id: str, memory_id: uuid.UUID
    ) -> schemas.MemoryOut:
        memory = await self._runtime.long_term.get(tenant_id, user_id, memory_id)
        if memory is None:
            raise NotFoundError("memory", str(memory_id))
        return schemas.MemoryOut(
            id=memory.id,
            user_id=memory.user_id,
            session_id=memory.session_id,
            kind=memory.kind,
            role=memory.role,
            content=memory.content,
            turn_id=memory.turn_id,
            occurred_at=memory.occurred_at,
            created_at=memory.created_at,
            metadata=memory.metadata,
            embedding_model=memory.embedding_model,
        )

    async def delete_memory(self, tenant_id: str, user_id: str, memory_id: uuid.UUID) -> None:
        if not await self._runtime.long_term.delete(tenant_id, user_id, memory_id):
            raise NotFoundError("memory", str(memory_id))
        log.info("memory.deleted", tenant_id=tenant_id, user_id=user_id, memory_id=str(memory_id))

    # Context

    async def context(
        self, tenant_id: str, request: schemas.ContextRequest
    ) -> schemas.ContextResponse:
        """Build prompt-ready messages: relevant memories, then the recent window."""
        budget = request.token_budget or self._limits.context_default_tokens
        if budget > self._limits.context_max_tokens:
            raise InvalidInputError(
                "token_budget",
                f"token_budget is {budget}; the maximum is {self._limits.context_max_tokens} "
                "(MEMORY_CONTEXT_MAX_TOKENS)",
            )

        window: list[StoredTurn] = []
        if request.session_id is not None:
            window = await self._runtime.short_term.recent(
                tenant_id, request.user_id, request.session_id, self._limits.window_max_turns
            )
        query = request.query or _last_user_text(window)

        hits: list[Hit] = []
        if query and query.strip() and self._limits.context_memory_limit > 0:
            filters = SearchFilters(tenant_id=tenant_id, user_id=request.user_id)
            options = RankingOptions(
                mode=self._limits.search_default_mode,
                limit=self._limits.context_memory_limit,
                rrf_k=self._limits.search_rrf_k,
            )
            hits = await self._search(filters, query, options, with_embeddings=True)

        assembled = self._assembler.assemble(window, hits, budget)
        return schemas.ContextResponse(
            messages=[
                schemas.ChatMessage(role=message.role, content=message.content)
                for message in assembled.messages
            ],
            memories=[_hit_out(hit) for hit in assembled.memories],
            token_count=assembled.token_count,
            token_budget=budget,
        )

    def render_memories(self, hits: Sequence[Hit]) -> str:
        """Render the system message that lists long-term memories."""
        line = self._runtime.prompts["context_memory_line"]
        lines = [
            line.render(
                date=hit.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                role=hit.role or hit.kind,
                content=hit.content,
            )
            for hit in hits
        ]
        return self._runtime.prompts["context_memories"].render(memories="\n".join(lines))

    # Helpers

    async def _search(
        self,
        filters: SearchFilters,
        query: str,
        options: RankingOptions,
        timings: dict[str, float] | None = None,
        *,
        with_embeddings: bool = False,
    ) -> list[Hit]:
        """Embed the query, gather candidates and rank them; fill ``timings`` in ms if given."""
        started = time.perf_counter()
        vector = None
        if options.mode != "keyword":
            embedder = self._runtime.embedder
            vector = (await anyio.to_thread.run_sync(embedder.embed, [query]))[0]
        embedded = time.perf_counter()
        count = max(self._limits.search_candidates, options.limit)
        # Vectors are read only where they are compared: diversity and context deduplication.
        candidates = await self._runtime.search.candidates(
            filters, options.mode, query, vector, count, embeddings=with_embeddings
        )
        queried = time.perf_counter()
        order = rank(candidates, options)
        SEARCH_SECONDS.labels(mode=options.mode).observe(time.perf_counter() - started)
        if timings is not None:
            timings["embedding_ms"] = round((embedded - started) * 1000, 2)
            timings["database_ms"] = round((queried - embedded) * 1000, 2)
            timings["ranking_ms"] = round((time.perf_counter() - queried) * 1000, 2)
        return [
            Hit(
                id=ranked.candidate.id,
                content=ranked.candidate.content,
                role=ranked.candidate.role,
                kind=ranked.candidate.kind,
                session_id=ranked.candidate.session_id,
                turn_id=ranked.candidate.turn_id,
                occurred_at=ranked.candidate.occurred_at,
                metadata=ranked.candidate.metadata,
                score=ranked.explanation.score,
                explanation=ranked.explanation,
                embedding=ranked.candidate.embedding,
            )
            for ranked in order
        ]

    def _page_size(self, limit: int | None) -> int:
        size = limit or self._limits.page_default_items
        if size > self._limits.page_max_items:
            raise InvalidInputError(
                "limit",
                f"limit is {size}; the maximum is {self._limits.page_max_items} "
                "(MEMORY_PAGE_MAX_ITEMS)",
            )
        return size

    def _check_batch(self, turns: Sequence[schemas.TurnIn]) -> None:
        limits = self._limits
        if len(turns) > limits.max_batch_turns:
            raise PayloadTooLargeError(
                "turns",
                f"the batch has {len(turns)} turns; the limit is {limits.max_batch_turns} "
                "(MEMORY_MAX_BATCH_TURNS), so split it into smaller batches",
            )
        for index, turn in enumerate(turns):
            size = len(turn.content.encode("utf-8"))
            if size > limits.max_content_bytes:
                raise PayloadTooLargeError(
                    f"turns.{index}.content",
                    f"content is {size} bytes; the limit is {limits.max_content_bytes} bytes "
                    "(MEMORY_MAX_CONTENT_BYTES), so split the text into several turns",
                )
            depth = json_depth(turn.metadata)
            if depth > limits.max_metadata_depth:
                raise InvalidInputError(
                    f"turns.{index}.metadata",
                    f"metadata is nested {depth} levels deep; the limit is "
                    f"{limits.max_metadata_depth} (MEMORY_MAX_METADATA_DEPTH), so flatten it",
                )
            metadata_size = len(json.dumps(turn.metadata, ensure_ascii=False).encode("utf-8"))
            if metadata_size > limits.max_metadata_bytes:
                raise PayloadTooLargeError(
                    f"turns.{index}.metadata",
                    f"metadata is {metadata_size} bytes of JSON; the limit is "
                    f"{limits.max_metadata_bytes} bytes (MEMORY_MAX_METADATA_BYTES)",
                )


def json_depth(value: object) -> int:
    """Return how deeply objects and lists nest in a JSON value; a scalar is depth 0."""
    if isinstance(value, dict):
        return 1 + max((json_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(item) for item in value), default=0)
    return 0


def _check_cursor(cursor: str) -> int:
    try:
        return decode_cursor(cursor)
    except ValueError as error:
        raise InvalidInputError(
            "cursor", "cursor is invalid; pass the next_cursor of the previous page unchanged"
        ) from error


def _check_time_range(after: datetime | None, before: datetime | None) -> None:
    if after is not None and before is not None and after >= before:
        raise InvalidInputError("after", "after must be earlier than before")


def _last_user_text(window: Sequence[StoredTurn]) -> str | None:
    for turn in reversed(window):
        if turn.role == "user":
            return turn.content
    return None


def _turn_out(turn: StoredTurn) -> schemas.TurnOut:
    return schemas.TurnOut(
        turn_id=turn.turn_id,
        role=turn.role,
        content=turn.content,
        occurred_at=turn.occurred_at,
        metadata=turn.metadata,
    )


def _hit_out(hit: Hit) -> schemas.SearchHit:
    return schemas.SearchHit(
        id=hit.id,
        content=hit.content,
        role=hit.role,
        kind=hit.kind,
        session_id=hit.session_id,
        turn_id=hit.turn_id,
        occurred_at=hit.occurred_at,
        metadata=hit.metadata,
        score=hit.score,
        explanation=(
            schemas.ScoreExplanation.model_validate(asdict(hit.explanation))
            if hit.explanation is not None
            else None
        ),
    )
