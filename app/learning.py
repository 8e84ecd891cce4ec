"""Learning from conversations off the request path: fact extraction and session summaries.

The promotion worker stores turns and then marks their session in a Redis
sorted set, scored by when it is due. A session becomes due once it has
been quiet for ``LEARNING_DEBOUNCE_S``, or at once when
``LEARNING_BATCH_TURNS`` turns are waiting. A learner claims due sessions
with a lease, so a worker that dies mid-session hands it over when the
lease runs out, and learns from each in two steps:

1. **Facts.** The model reads the session's turns whose facts were not
   extracted yet and returns atomic facts, each with its source turns and
   the date from which it is true. Each fact is compared with the user's current
   facts. A near-identical one makes it a duplicate, and related ones go
   back to the model, which decides to add it, update (supersede) one of
   them, or change nothing. ``FactStore`` writes the result under the
   user's lock.
2. **Summary.** When the session's turns since its last summary exceed
   ``LEARNING_SUMMARY_TRIGGER_TOKENS``, the older ones are folded into a new
   rolling summary that supersedes the previous one.

Model output that is not valid (bad JSON, unknown turn ids, empty facts) is
sent back once with the error. If the second reply is not valid either,
the turns are marked ``skipped`` and stay in memory verbatim. A model or
database outage puts the session back in the queue with back-off, and
nothing is marked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as day_time
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
from sqlalchemy import text

from app.facts import (
    FACT_KINDS,
    FactStore,
    NewFact,
    PendingTurn,
    SimilarFact,
    is_near_duplicate,
)
from app.llm import LLMError
from app.logging import get_logger
from app.metrics import LEARNED_FACTS, LEARNING_RUNS, SUMMARIES_WRITTEN
from retrieval.context import newest_that_fit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.keys import KeyBuilder
    from app.llm import LLMGateway
    from app.redis_client import RedisClient
    from app.settings import Settings
    from embeddings import Embedder
    from prompts import Prompt
    from retrieval.tokens import TiktokenCounter

log = get_logger("learning")

# Longest fact the service stores; a longer one is not atomic.
MAX_FACT_CHARS = 500
# Longest turn text shown to the model, in tokens; the rest of a turn is cut.
MAX_TURN_TOKENS = 1500
# Most words of a rolling summary.
SUMMARY_MAX_WORDS = 250
# A reply that is not valid is sent back once; the second invalid one is given up on.
OUTPUT_ATTEMPTS = 2
# Most rounds of extraction for one session per claim, so one session cannot hold a worker.
MAX_ROUNDS = 10

SessionScope = tuple[str, str, str]
Parsed = TypeVar("Parsed")

# Bump the score of due sessions to the lease's end and return them with that score.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, member in ipairs(due) do
    redis.call('ZADD', KEYS[1], ARGV[2], member)
    redis.call('HDEL', KEYS[2], member)
end
return due
"""
# Count new turns and set when the session is due: after the quiet time, or now.
_TOUCH = """
local waiting = redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[2])
local due = tonumber(ARGV[3])
if waiting >= tonumber(ARGV[5]) then due = tonumber(ARGV[4]) end
redis.call('ZADD', KEYS[1], due, ARGV[1])
return waiting
"""
# Remove a session unless new turns re-scheduled it while it was being processed.
_RELEASE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 1
end
return 0
"""


def _member(scope: SessionScope) -> str:
    return json.dumps(list(scope), separators=(",", ":"))


def _scope(member: bytes | str) -> SessionScope:
    tenant_id, user_id, session_id = json.loads(member)
    return str(tenant_id), str(user_id), str(session_id)


class LearningQueue:
    """Sessions waiting to be learned from, in Redis, shared by every worker."""

    def __init__(
        self,
        redis: RedisClient,
        keys: KeyBuilder,
        debounce_s: float,
        batch_turns: int,
        lease_s: float,
    ) -> None:
        self._redis = redis
        self._due = keys.learning_due
        self._waiting = keys.learning_pending
        self._debounce_s = debounce_s
        self._batch_turns = batch_turns
        self._lease_s = lease_s

    async def touch(self, new_turns: dict[SessionScope, int]) -> None:
        """Record newly promoted turns; each session is due after the quiet time, or now."""
        now = time.time()
        for scope, count in new_turns.items():
            await self._redis.eval(
                _TOUCH,
                2,
                self._due,
                self._waiting,
                _member(scope),
                count,
                now + self._debounce_s,
                now,
                self._batch_turns,
            )

    async def claim(self, limit: int) -> list[tuple[SessionScope, float]]:
        """Take up to ``limit`` due sessions for one lease; return each with its lease score."""
        now = time.time()
        lease = now + self._lease_s
        members = await self._redis.eval(_CLAIM, 2, self._due, self._waiting, now, lease, limit)
        return [(_scope(member), lease) for member in members]

    async def release(self, scope: SessionScope, lease: float) -> bool:
        """Drop a finished session, unless new turns made it due again meanwhile."""
        released = await self._redis.eval(_RELEASE, 1, self._due, _member(scope), lease)
        return bool(released)

    async def retry(self, scope: SessionScope, delay_s: float) -> None:
        """Make a session due again after ``delay_s``."""
        await self._redis.zadd(self._due, {_member(scope): time.time() + delay_s})

    async def due_count(self) -> int:
        return int(await self._redis.zcard(self._due))

    async def forget(self, tenant_id: str, user_id: str, session_id: str | None = None) -> int:
        """Remove a user's sessions (or one session) from the queue; return how many."""
        removed = 0
        async for member, _score in self._redis.zscan_iter(self._due):
            scope = _scope(member)
            if scope[:2] == (tenant_id, user_id) and session_id in (None, scope[2]):
                removed += int(await self._redis.zrem(self._due, member))
                await self._redis.hdel(self._waiting, member)
        return removed


class ModelOutputError(ValueError):
    """The model's reply does not have the form the prompt asked for."""


@dataclass(frozen=True, slots=True)
class ExtractedFact:
    kind: str
    content: str
    source_turn_ids: list[str]
    valid_from: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    action: str
    """``add``, ``update`` (supersede ``target``), ``none`` (the model chose no change),
    or ``duplicate`` (a current fact repeats it, found without the model)."""
    target: uuid.UUID | None = None


@dataclass(slots=True)
class SessionOutcome:
    """What one pass over a session did."""

    turns_read: int = 0
    turns_skipped: int = 0
    added: int = 0
    superseded: int = 0
    duplicates: int = 0
    ignored: int = 0
    skipped: int = 0
    summary_id: uuid.UUID | None = None
    fact_ids: list[uuid.UUID] = field(default_factory=list)
    run_id: str | None = None


def _strip_fences(reply: str) -> str:
    """Remove a Markdown code fence that some models put around JSON."""
    match = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", reply, flags=re.DOTALL)
    return match.group(1) if match else reply.strip()


def _json_object(reply: str) -> dict[str, Any]:
    try:
        value = json.loads(_strip_fences(reply))
    except ValueError as error:
        raise ModelOutputError(f"the reply is not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise ModelOutputError("the reply must be a JSON object")
    return value


def _date(value: Any, default: datetime) -> datetime:
    """Parse a date or date-time from the model; a date means midnight UTC."""
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ModelOutputError("valid_from must be a date string such as 2024-05-01")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise ModelOutputError(f"valid_from {value!r} is not a date such as 2024-05-01") from error
    if len(value) == len("2024-05-01"):
        parsed = datetime.combine(parsed.date(), day_time(), tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_facts(reply: str, turns: dict[str, PendingTurn]) -> list[ExtractedFact]:
    """Validate an extraction reply against the turns it was given; raise ModelOutputError."""
    body = _json_object(reply)
    items = body.get("facts")
    if not isinstance(items, list):
        raise ModelOutputError('the object needs a "facts" list')
    facts: list[ExtractedFact] = []
    for index, item in enumerate(items):
        where = f"facts[{index}]"
        if not isinstance(item, dict):
            raise ModelOutputError(f"{where} must be an object")
        kind = item.get("kind", "fact")
        if kind not in FACT_KINDS:
            raise ModelOutputError(f"{where}.kind must be one of {', '.join(FACT_KINDS)}")
        content = item.get("content")
        if not isinstance(content, str) or not content.strip():
            raise ModelOutputError(f"{where}.content must be a sentence, not empty")
        if len(content) > MAX_FACT_CHARS:
            raise ModelOutputError(f"{where}.content is over {MAX_FACT_CHARS} characters")
        sources = item.get("sources")
        if not isinstance(sources, list) or not sources:
            raise ModelOutputError(f"{where}.sources must list the ids of its turns")
        unknown = [source for source in sources if source not in turns]
        if unknown:
            raise ModelOutputError(f"{where}.sources has ids not in the input: {unknown}")
        latest = max(turns[source].occurred_at for source in sources)
        valid_from = _date(item.get("valid_from"), latest)
        if kind != "event":
            # Only an event may lie ahead; a fact said today holds from today at the latest.
            valid_from = min(valid_from, latest)
        facts.append(
            ExtractedFact(
                kind=kind,
                content=content.strip(),
                source_turn_ids=[turns[source].turn_id for source in dict.fromkeys(sources)],
                valid_from=valid_from,
            )
        )
    return facts


def parse_decision(reply: str, candidates: dict[str, SimilarFact]) -> Decision:
    """Validate a decision reply; raise ModelOutputError."""
    body = _json_object(reply)
    action = body.get("decision")
    if action not in ("add", "update", "none"):
        raise ModelOutputError('"decision" must be "add", "update" or "none"')
    if action != "update":
        return Decision(action)
    target = body.get("target")
    if target not in candidates:
        raise ModelOutputError(f'"target" must be one of {sorted(candidates)} for an update')
    return Decision(action, candidates[target].id)


def parse_summary(reply: str) -> str:
    summary = reply.strip()
    if not summary:
        raise ModelOutputError("the summary is empty")
    words = len(summary.split())
    if words > SUMMARY_MAX_WORDS * 2:
        raise ModelOutputError(f"the summary has {words} words; write at most {SUMMARY_MAX_WORDS}")
    return summary


class Learner:
    """Claims due sessions and learns facts and summaries from them."""

    def __init__(
        self,
        settings: Settings,
        queue: LearningQueue,
        facts: FactStore,
        engine: AsyncEngine,
        embedder: Embedder,
        gateway: LLMGateway,
        prompts: dict[str, Prompt],
        counter: TiktokenCounter,
        consumer: str,
    ) -> None:
        self._settings = settings
        self._learning = settings.learning
        self._queue = queue
        self._facts = facts
        self._engine = engine
        self._embedder = embedder
        self._gateway = gateway
        self._prompts = prompts
        self._counter = counter
        self.consumer = consumer
        self._model = settings.learning_model or ""

    async def run(self, stop: asyncio.Event) -> None:
        """Learn from due sessions until ``stop`` is set."""
        log.info(
            "learning.started",
            consumer=self.consumer,
            model=self._model,
            strategy=self._learning.strategy,
            debounce_s=self._learning.debounce_s,
        )
        try:
            while not stop.is_set():
                handled = await self.run_once()
                if not handled:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self._learning.poll_interval_s)
        finally:
            await self._gateway.close()
            log.info("learning.stopped", consumer=self.consumer)

    async def run_once(self, limit: int = 4) -> int:
        """Process the sessions due now; return how many were claimed."""
        try:
            claimed = await self._queue.claim(limit)
        except Exception:
            log.exception("learning.claim_failed", consumer=self.consumer)
            return 0
        for scope, lease in claimed:
            await self._handle(scope, lease)
        return len(claimed)

    async def _handle(self, scope: SessionScope, lease: float) -> None:
        tenant_id, user_id, session_id = scope
        context = {"tenant_id": tenant_id, "user_id": user_id, "session_id": session_id}
        try:
            outcome = await self.learn(tenant_id, user_id, session_id)
        except _UserBusyError:
            LEARNING_RUNS.labels(outcome="busy").inc()
            log.info("learning.user_busy", consumer=self.consumer, retry_in_s=1.0, **context)
            await self._queue.retry(scope, 1.0)
            return
        except Exception as error:  # noqa: BLE001  (logged; the session is retried later)
            LEARNING_RUNS.labels(outcome="retried").inc()
            delay = 30.0 if isinstance(error, LLMError) else 5.0
            log.warning(
                "learning.retrying",
                consumer=self.consumer,
                error=f"{type(error).__name__}: {error}",
                retry_in_s=delay,
                **context,
            )
            with contextlib.suppress(Exception):
                await self._queue.retry(scope, delay)
            return
        LEARNING_RUNS.labels(outcome="done").inc()
        await self._queue.release(scope, lease)
        log.info(
            "learning.session_done",
            consumer=self.consumer,
            run_id=outcome.run_id,
            fact_ids=[str(fact_id) for fact_id in outcome.fact_ids],
            turns_read=outcome.turns_read,
            turns_skipped=outcome.turns_skipped,
            facts_added=outcome.added,
            facts_superseded=outcome.superseded,
            duplicates=outcome.duplicates,
            ignored=outcome.ignored,
            skipped=outcome.skipped,
            summary_id=str(outcome.summary_id) if outcome.summary_id else None,
            **context,
        )

    async def learn(self, tenant_id: str, user_id: str, session_id: str) -> SessionOutcome:
        """Extract facts from a session's new turns and refresh its summary.

        Holds the user's learning lock throughout, so two workers never decide on
        the same user's facts at once; raises ``_UserBusyError`` when another holds it.
        """
        outcome = SessionOutcome()
        if self._settings.strategy_for(tenant_id) == "verbatim":
            return outcome
        run_id = uuid.uuid4().hex
        outcome.run_id = run_id
        async with _user_learning_lock(self._engine, tenant_id, user_id):
            for _ in range(MAX_ROUNDS):
                turns = await self._facts.pending_turns(
                    tenant_id, user_id, session_id, self._learning.batch_turns
                )
                if not turns:
                    break
                await self._extract(tenant_id, user_id, session_id, turns, run_id, outcome)
            if self._learning.summaries:
                outcome.summary_id = await self._summarize(tenant_id, user_id, session_id, run_id)
        return outcome

    # Facts

    async def _extract(
        self,
        tenant_id: str,
        user_id: str,
        session_id: str,
        turns: Sequence[PendingTurn],
        run_id: str,
        outcome: SessionOutcome,
    ) -> None:
        outcome.turns_read += len(turns)
        by_local_id = {f"t{index}": turn for index, turn in enumerate(turns, start=1)}
        messages = extraction_messages(
            self._prompts, self._counter, by_local_id, datetime.now(UTC).date()
        )
        memory_ids = [turn.id for turn in turns]
        try:
            extracted = await self._ask(messages, lambda reply: parse_facts(reply, by_local_id))
        except ModelOutputError as error:
            log.warning(
                "learning.extraction_skipped",
                tenant_id=tenant_id,
                user_id=user_id,
                session_id=session_id,
                run_id=run_id,
                turns=len(turns),
                error=str(error),
            )
            LEARNED_FACTS.labels(result="skipped").inc()
            outcome.turns_skipped += len(turns)
            await self._facts.mark_extracted(tenant_id, user_id, memory_ids, "skipped")
            return

        if extracted:
            vectors = await anyio.to_thread.run_sync(
                self._embedder.embed, [fact.content for fact in extracted]
            )
            new_facts: list[NewFact] = []
            for fact, vector in zip(extracted, vectors, strict=True):
                decision = await self._decide(tenant_id, user_id, fact, vector, run_id)
                if decision.action == "duplicate":
                    outcome.duplicates += 1
                    LEARNED_FACTS.labels(result="duplicate").inc()
                    continue
                if decision.action == "none":
                    outcome.ignored += 1
                    LEARNED_FACTS.labels(result="ignored").inc()
                    continue
                new_facts.append(
                    NewFact(
                        kind=fact.kind,
                        content=fact.content,
                        vector=vector,
                        valid_from=fact.valid_from,
                        session_id=session_id,
                        source_turn_ids=fact.source_turn_ids,
                        supersedes=decision.target,
                    )
                )
            results = await self._facts.write_facts(
                tenant_id,
                user_id,
                new_facts,
                model=self._embedder.model_name,
                cause="extraction",
                duplicate_similarity=self._learning.duplicate_similarity,
                run_id=run_id,
                actor=self._model,
                require_sources=True,
            )
            for result in results:
                if result.id is not None:
                    outcome.fact_ids.append(result.id)
                    if result.superseded is not None:
                        outcome.superseded += 1
                        LEARNED_FACTS.labels(result="superseded").inc()
                    else:
                        outcome.added += 1
                        LEARNED_FACTS.labels(result="added").inc()
                elif result.duplicate_of is not None:
                    outcome.duplicates += 1
                    LEARNED_FACTS.labels(result="duplicate").inc()
                else:
                    outcome.skipped += 1
                    LEARNED_FACTS.labels(result="skipped").inc()
        await self._facts.mark_extracted(tenant_id, user_id, memory_ids, "done")

    async def _decide(
        self, tenant_id: str, user_id: str, fact: ExtractedFact, vector: list[float], run_id: str
    ) -> Decision:
        """Compare a new fact with the user's related current facts; ask the model if any."""
        related = await self._facts.similar_current(
            tenant_id,
            user_id,
            vector,
            self._learning.similar_facts,
            self._learning.related_similarity,
        )
        if not related:
            return Decision("add")
        threshold = self._learning.duplicate_similarity
        if any(is_near_duplicate(item, fact.content, threshold) for item in related):
            return Decision("duplicate")
        candidates = {f"m{index}": item for index, item in enumerate(related, start=1)}
        messages = decision_messages(self._prompts, fact, candidates)
        try:
            return await self._ask(messages, lambda reply: parse_decision(reply, candidates))
        except ModelOutputError as error:
            log.warning(
                "learning.decision_skipped",
                tenant_id=tenant_id,
                user_id=user_id,
                run_id=run_id,
                error=str(error),
            )
            LEARNED_FACTS.labels(result="skipped").inc()
            return Decision("none")

    # Summaries

    async def _summarize(
        self, tenant_id: str, user_id: str, session_id: str, run_id: str
    ) -> uuid.UUID | None:
        current = await self._facts.current_summary(tenant_id, user_id, session_id)
        turns = await self._facts.turns_after(
            tenant_id, user_id, session_id, current.last_occurred_at if current else None
        )
        costs = [self._counter.message_tokens(turn.content) for turn in turns]
        if sum(costs) <= self._learning.summary_trigger_tokens:
            return None
        kept = newest_that_fit(costs, self._learning.summary_keep_tokens)
        covered = turns[: len(turns) - kept]
        if not covered:
            return None
        messages = summary_messages(
            self._prompts, self._counter, current.content if current else None, covered
        )
        try:
            summary = await self._ask(messages, parse_summary, json_reply=False)
        except ModelOutputError as error:
            log.warning(
                "learning.summary_skipped",
                tenant_id=tenant_id,
                user_id=user_id,
                session_id=session_id,
                run_id=run_id,
                error=str(error),
            )
            return None
        vector = (await anyio.to_thread.run_sync(self._embedder.embed, [summary]))[0]
        summary_id = await self._facts.write_summary(
            tenant_id,
            user_id,
            session_id,
            summary,
            vector,
            covered,
            previous=current.id if current else None,
            model=self._embedder.model_name,
            run_id=run_id,
        )
        if summary_id is not None:
            SUMMARIES_WRITTEN.inc()
        return summary_id

    # The model

    async def _ask(
        self,
        messages: list[dict[str, Any]],
        parse: Callable[[str], Parsed],
        *,
        json_reply: bool = True,
    ) -> Parsed:
        """Call the model and parse its reply; send an invalid reply back once with the error."""
        options: dict[str, Any] = {"temperature": 0, "max_tokens": self._learning.max_reply_tokens}
        if json_reply:
            options["response_format"] = {"type": "json_object"}
        conversation = list(messages)
        for attempt in range(1, OUTPUT_ATTEMPTS + 1):
            completion = await self._gateway.complete(conversation, self._model, options)
            reply = completion.choices[0].message.content if completion.choices else None
            try:
                result = parse(reply or "")
            except ModelOutputError as error:
                if attempt == OUTPUT_ATTEMPTS:
                    raise
                log.info("learning.output_retry", model=self._model, error=str(error))
                conversation = [
                    *messages,
                    {"role": "assistant", "content": reply or ""},
                    {
                        "role": "user",
                        "content": f"That reply is not valid: {error}. "
                        "Reply again with only the corrected answer.",
                    },
                ]
            else:
                return result
        raise AssertionError("unreachable")  # pragma: no cover


def _turn_json(turn: PendingTurn, counter: TiktokenCounter) -> dict[str, Any]:
    return {
        "role": turn.role,
        "time": turn.occurred_at.astimezone(UTC).isoformat(timespec="minutes"),
        "text": counter.truncate(turn.content, MAX_TURN_TOKENS),
    }


def _as_json(value: Any) -> str:
    """JSON for a prompt: readable, and with every language's text kept as written."""
    return json.dumps(value, ensure_ascii=False, indent=1)


def extraction_messages(
    prompts: dict[str, Prompt],
    counter: TiktokenCounter,
    turns: dict[str, PendingTurn],
    today: date,
) -> list[dict[str, Any]]:
    """Render the extraction request; ``turns`` maps the ids the model sees to the turns."""
    payload = [{"id": local_id, **_turn_json(turn, counter)} for local_id, turn in turns.items()]
    return [
        {"role": "system", "content": prompts["extract_facts"].render(today=today.isoformat())},
        {
            "role": "user",
            "content": prompts["extract_facts_input"].render(turns=_as_json({"turns": payload})),
        },
    ]


def decision_messages(
    prompts: dict[str, Prompt], fact: ExtractedFact, candidates: dict[str, SimilarFact]
) -> list[dict[str, Any]]:
    """Render the add, update or none question for one new fact."""
    facts = {
        "new_fact": {
            "kind": fact.kind,
            "text": fact.content,
            "valid_from": fact.valid_from.date().isoformat(),
        },
        "existing": [
            {
                "id": local_id,
                "kind": item.kind,
                "text": item.content,
                "valid_from": item.valid_from.date().isoformat() if item.valid_from else None,
            }
            for local_id, item in candidates.items()
        ],
    }
    return [
        {"role": "system", "content": prompts["decide_fact"].render()},
        {"role": "user", "content": prompts["decide_fact_input"].render(facts=_as_json(facts))},
    ]


def summary_messages(
    prompts: dict[str, Prompt],
    counter: TiktokenCounter,
    previous: str | None,
    turns: Sequence[PendingTurn],
) -> list[dict[str, Any]]:
    """Render the request to fold ``turns`` into the previous summary."""
    conversation = {
        "previous_summary": previous,
        "turns": [_turn_json(turn, counter) for turn in turns],
    }
    return [
        {
            "role": "system",
            "content": prompts["summarize_session"].render(max_words=str(SUMMARY_MAX_WORDS)),
        },
        {
            "role": "user",
            "content": prompts["summarize_session_input"].render(
                conversation=_as_json(conversation)
            ),
        },
    ]


class _UserBusyError(Exception):
    """Another worker is learning from the same user right now."""


@contextlib.asynccontextmanager
async def _user_learning_lock(engine: AsyncEngine, tenant_id: str, user_id: str) -> Any:
    """Hold a session-level advisory lock on the user for the whole learning pass.

    Postgres releases it if the worker's connection drops, so a crashed
    worker never leaves a user locked.
    """
    key = f"learning|{tenant_id}|{user_id}"
    async with engine.connect() as connection:
        locked = await connection.scalar(
            text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))"), {"key": key}
        )
        await connection.commit()
        if not locked:
            raise _UserBusyError
        try:
            yield
        finally:
            await connection.execute(
                text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"), {"key": key}
            )
            await connection.commit()


def sessions_of(turns: Iterable[tuple[str, str, str]]) -> dict[SessionScope, int]:
    """Count turns per (tenant, user, session)."""
    counts: dict[SessionScope, int] = {}
    for scope in turns:
        counts[scope] = counts.get(scope, 0) + 1
    return counts
