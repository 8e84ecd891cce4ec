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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import sqlalchemy.exc

from app import history, schemas
from app.errors import ConflictError, InvalidInputError, NotFoundError, PayloadTooLargeError
from app.facts import FACT_KINDS, NewFact
from app.logging import get_logger
from app.metrics import SEARCH_SECONDS
from app.shortterm import StoredTurn, decode_cursor, encode_cursor
from retrieval.context import ContextAssembler
from retrieval.ranking import RankingOptions, rank
from retrieval.search import Hit, SearchFilters

if TYPE_CHECKING:
    from collections.abc import Sequence

    from app.history import Cause
    from app.longterm import StoredMemory
    from app.runtime import Runtime

log = get_logger("service")

# Clock difference allowed between a client and the service for "not in the future".
FUTURE_SKEW = timedelta(minutes=5)


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
        await self._runtime.learning_queue.forget(tenant_id, user_id, session_id)
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
            as_of=request.as_of,
            include_superseded=request.include_superseded,
            hide_extracted_turns=request.kind is None and self._hides_turns(tenant_id),
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
        return memory_out(memory)

    async def delete_memory(
        self,
        tenant_id: str,
        user_id: str,
        memory_id: uuid.UUID,
        *,
        cause: Cause = "api",
        actor: str | None = None,
        purge_history: bool = False,
    ) -> None:
        deleted = await self._runtime.long_term.delete(
            tenant_id, user_id, memory_id, cause=cause, actor=actor, purge_history=purge_history
        )
        if not deleted:
            raise NotFoundError("memory", str(memory_id))
        log.info(
            "memory.deleted",
            tenant_id=tenant_id,
            user_id=user_id,
            memory_id=str(memory_id),
            history_purged=purge_history,
        )

    async def create_memory(
        self, tenant_id: str, request: schemas.MemoryCreate, *, cause: Cause, actor: str | None
    ) -> tuple[schemas.MemoryOut, bool]:
        """Store a fact written through the API; return it and whether it is new.

        A fact that repeats a current one (same text, or nearly the same
        meaning) is not stored again, and the existing fact is returned.
        """
        facts = self._runtime.facts
        self._check_metadata("metadata", request.metadata)
        now = datetime.now(UTC)
        if (
            request.kind != "event"
            and request.valid_from is not None
            and request.valid_from > now + FUTURE_SKEW
        ):
            raise InvalidInputError(
                "valid_from",
                f"valid_from is in the future; a {request.kind} holds from now at the latest, "
                "so leave it out or record a planned happening as kind event",
            )
        if request.supersedes is not None:
            target = await self._runtime.long_term.get(
                tenant_id, request.user_id, request.supersedes
            )
            if target is None or target.kind not in FACT_KINDS or target.valid_to is not None:
                raise InvalidInputError(
                    "supersedes",
                    "supersedes names no current fact of this user; pass the id of a fact, "
                    "preference or event of theirs that has no valid_to",
                )
        vector = await self._embed_for_request(request.content)
        fact = NewFact(
            kind=request.kind,
            content=request.content.strip(),
            vector=vector,
            valid_from=request.valid_from or now,
            session_id=request.session_id,
            supersedes=request.supersedes,
            metadata=request.metadata,
            pinned=request.pinned,
        )
        (outcome,) = await facts.write_facts(
            tenant_id,
            request.user_id,
            [fact],
            model=self._runtime.embedder.model_name,
            cause=cause,
            actor=actor,
            duplicate_similarity=self._runtime.settings.learning.duplicate_similarity,
        )
        memory_id = outcome.id or outcome.duplicate_of
        if memory_id is None:
            raise ConflictError(
                "content", "the same fact was stored by another request just now; read it instead"
            )
        log.info(
            "memory.created",
            tenant_id=tenant_id,
            user_id=request.user_id,
            memory_id=str(memory_id),
            duplicate=outcome.id is None,
            superseded=str(outcome.superseded) if outcome.superseded else None,
        )
        return await self.get_memory(tenant_id, request.user_id, memory_id), outcome.id is not None

    async def update_memory(
        self,
        tenant_id: str,
        memory_id: uuid.UUID,
        request: schemas.MemoryUpdate,
        *,
        cause: Cause,
        actor: str | None,
    ) -> schemas.MemoryOut:
        """Edit a memory's text (facts and summaries only), pin or metadata."""
        self._check_metadata("metadata", request.metadata)
        current = await self._runtime.long_term.get(tenant_id, request.user_id, memory_id)
        if current is None:
            raise NotFoundError("memory", str(memory_id))
        vector = None
        if request.content is not None:
            if current.kind == "turn":
                raise InvalidInputError(
                    "content",
                    "turns record what was said and cannot be edited; delete the turn, or add "
                    "a fact with POST /v1/memories",
                )
            if current.valid_to is not None:
                raise InvalidInputError(
                    "content",
                    "this memory was superseded, so it is history; edit the current fact "
                    "(GET /v1/memories lists the current ones)",
                )
            vector = await self._embed_for_request(request.content)
        try:
            updated = await self._runtime.facts.edit(
                tenant_id,
                request.user_id,
                memory_id,
                content=request.content.strip() if request.content is not None else None,
                vector=vector,
                pinned=request.pinned,
                metadata=request.metadata,
                cause=cause,
                actor=actor,
            )
        except sqlalchemy.exc.IntegrityError as error:
            raise ConflictError(
                "content", "another current fact of this user has the same text; delete one of them"
            ) from error
        if updated is None:
            raise NotFoundError("memory", str(memory_id))
        log.info(
            "memory.updated",
            tenant_id=tenant_id,
            user_id=request.user_id,
            memory_id=str(memory_id),
            content_changed=request.content is not None,
            pinned=request.pinned,
        )
        return memory_out(updated)

    async def memory_history(
        self, tenant_id: str, user_id: str, memory_id: uuid.UUID
    ) -> schemas.MemoryHistoryOut:
        """Return every recorded change of a memory, also after it was deleted."""
        entries = await history.read(self._runtime.engine, tenant_id, user_id, memory_id)
        if not entries:
            raise NotFoundError("memory", str(memory_id))
        return schemas.MemoryHistoryOut(
            memory_id=memory_id,
            user_id=user_id,
            entries=[
                schemas.HistoryEntryOut.model_validate(entry, from_attributes=True)
                for entry in entries
            ],
        )

    async def list_memories(
        self,
        tenant_id: str,
        user_id: str,
        *,
        kind: str | None,
        include_superseded: bool,
        pinned: bool | None,
        limit: int | None,
        cursor: str | None,
    ) -> schemas.MemoryList:
        """Return one page of the user's memories, newest first."""
        page_size = self._page_size(limit)
        offset = _check_cursor(cursor) if cursor is not None else 0
        rows = await self._runtime.facts.list_memories(
            tenant_id,
            user_id,
            kinds=[kind] if kind else None,
            include_superseded=include_superseded,
            pinned=pinned,
            limit=page_size + 1,
            offset=offset,
        )
        return schemas.MemoryList(
            user_id=user_id,
            memories=[memory_out(row) for row in rows[:page_size]],
            next_cursor=encode_cursor(offset + page_size) if len(rows) > page_size else None,
        )

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
        summary_text: str | None = None
        summary_id: uuid.UUID | None = None
        if request.session_id is not None:
            window = await self._runtime.short_term.recent(
                tenant_id, request.user_id, request.session_id, self._limits.window_max_turns
            )
            summary = await self._runtime.facts.current_summary(
                tenant_id, request.user_id, request.session_id
            )
            if summary is not None:
                # The summary stands in for the turns it covers; later ones follow as said.
                window = [turn for turn in window if turn.occurred_at > summary.last_occurred_at]
                summary_id = summary.id
                summary_text = self._runtime.prompts["context_summary"].render(
                    start=summary.first_occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                    end=summary.last_occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                    summary=summary.content,
                )
        query = request.query or _last_user_text(window)

        pinned = [
            _pinned_hit(memory)
            for memory in await self._runtime.facts.pinned(tenant_id, request.user_id)
            if memory.id != summary_id
        ]
        skip = {hit.id for hit in pinned} | {summary_id}
        hits: list[Hit] = []
        if query and query.strip() and self._limits.context_memory_limit > 0:
            filters = SearchFilters(
                tenant_id=tenant_id,
                user_id=request.user_id,
                hide_extracted_turns=self._hides_turns(tenant_id),
            )
            options = RankingOptions(
                mode=self._limits.search_default_mode,
                limit=self._limits.context_memory_limit,
                rrf_k=self._limits.search_rrf_k,
            )
            found = await self._search(filters, query, options, with_embeddings=True)
            hits = [hit for hit in found if hit.id not in skip]

        assembled = self._assembler.assemble(
            window, hits, budget, pinned=pinned, summary=summary_text
        )
        return schemas.ContextResponse(
            messages=[
                schemas.ChatMessage(role=message.role, content=message.content)
                for message in assembled.messages
            ],
            memories=[_hit_out(hit) for hit in assembled.memories],
            token_count=assembled.token_count,
            token_budget=budget,
            summary_id=summary_id if assembled.summary_used else None,
        )

    async def _embed_for_request(self, text: str) -> list[float]:
        """Embed one text on a request's path, in a worker thread."""
        embedder = self._runtime.embedder
        return (await anyio.to_thread.run_sync(embedder.embed_for_request, [text]))[0]

    def render_memories(self, hits: Sequence[Hit]) -> str:
        """Render the system message that lists long-term memories."""
        line = self._runtime.prompts["context_memory_line"]
        lines = [
            line.render(
                date=hit.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                role=(hit.role or hit.kind) + (" (pinned)" if hit.pinned else ""),
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
            vector = await self._embed_for_request(query)
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
                valid_from=ranked.candidate.valid_from,
                valid_to=ranked.candidate.valid_to,
                pinned=ranked.candidate.pinned,
            )
            for ranked in order
        ]

    def _hides_turns(self, tenant_id: str) -> bool:
        """Whether searches of this tenant leave out turns whose facts were extracted."""
        return self._runtime.settings.strategy_for(tenant_id) == "extract"

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
            self._check_metadata(f"turns.{index}.metadata", turn.metadata)

    def _check_metadata(self, field: str, metadata: dict[str, Any] | None) -> None:
        """Reject metadata nested or sized past the configured limits."""
        if metadata is None:
            return
        limits = self._limits
        depth = json_depth(metadata)
        if depth > limits.max_metadata_depth:
            raise InvalidInputError(
                field,
                f"metadata is nested {depth} levels deep; the limit is "
                f"{limits.max_metadata_depth} (MEMORY_MAX_METADATA_DEPTH), so flatten it",
            )
        metadata_size = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8"))
        if metadata_size > limits.max_metadata_bytes:
            raise PayloadTooLargeError(
                field,
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


def memory_out(memory: StoredMemory) -> schemas.MemoryOut:
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
        valid_from=memory.valid_from,
        valid_to=memory.valid_to,
        supersedes=memory.supersedes,
        superseded_by=memory.superseded_by,
        pinned=memory.pinned,
        source_turn_ids=memory.source_turn_ids or [],
        updated_at=memory.updated_at,
    )


def _pinned_hit(memory: StoredMemory) -> Hit:
    """A pinned memory as a context hit: it has no score, because no search found it."""
    return Hit(
        id=memory.id,
        content=memory.content,
        role=memory.role,
        kind=memory.kind,
        session_id=memory.session_id,
        turn_id=memory.turn_id,
        occurred_at=memory.occurred_at,
        metadata=memory.metadata,
        score=0.0,
        valid_from=memory.valid_from,
        valid_to=memory.valid_to,
        pinned=True,
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
        valid_from=hit.valid_from,
        valid_to=hit.valid_to,
        pinned=hit.pinned,
        score=hit.score,
        explanation=(
            schemas.ScoreExplanation.model_validate(asdict(hit.explanation))
            if hit.explanation is not None
            else None
        ),
    )
