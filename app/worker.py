"""The promotion worker: from the turn stream into long-term memory.

The worker consumes every partition's stream it owns (all of them unless
``WORKER_PARTITIONS`` names some), each in a loop of its own. Per batch:
parse the events, drop those of sessions deleted since, embed the
texts in one call, insert with an idempotent upsert, and only then
acknowledge. A crash at any step leaves the events pending, and a retry
writes the same rows, so each accepted turn becomes exactly one memory.

Outages of Redis or Postgres are retried with exponential back-off and do
not count against an event. Any other failure is retried per event, and an
event that fails ``max_attempts`` times moves to the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio.to_thread
import redis.exceptions
import sqlalchemy.exc

from app.learning import sessions_of
from app.logging import get_logger
from app.metrics import EMBEDDING_BATCH_SECONDS, PROMOTED_TURNS
from app.retention import purge_periodically
from app.shortterm import StoredTurn

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from app.learning import Learner, LearningQueue
    from app.longterm import LongTermStore
    from app.retention import RetentionPolicy
    from app.settings import WorkerSettings
    from app.stream import StreamEvent, TurnStream
    from embeddings import Embedder

log = get_logger("worker")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    # A cluster that lost a primary returns these errors until a replica takes over.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    ConnectionError,
    TimeoutError,
)


@dataclass(slots=True)
class BatchOutcome:
    received: int = 0
    inserted: int = 0
    skipped_deleted: int = 0
    dead_lettered: int = 0
    failed: int = 0

    def add(self, other: BatchOutcome) -> None:
        for item in dataclasses.fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


class PromotionWorker:
    """Consumes the turn streams as one member of each partition's consumer group."""

    def __init__(
        self,
        stream: TurnStream,
        store: LongTermStore,
        embedder: Embedder,
        settings: WorkerSettings,
        consumer: str | None = None,
        retention: RetentionPolicy | None = None,
        learning_queue: LearningQueue | None = None,
        learns: Callable[[str], bool] | None = None,
        learner: Learner | None = None,
        partitions: Sequence[int] | None = None,
    ) -> None:
        self._stream = stream
        self._store = store
        self._embedder = embedder
        self._settings = settings
        self.consumer = consumer or settings.consumer_name
        self.partitions = list(stream.partitions if partitions is None else partitions)
        self._held: dict[int, list[StreamEvent]] = {}
        self._retention = retention
        self._learning_queue = learning_queue
        self._learns = learns or (lambda _tenant_id: False)
        self.learner = learner

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until ``stop`` is set; purge by the retention policy alongside."""
        await self._stream.ensure_group()
        log.info(
            "worker.started",
            consumer=self.consumer,
            batch_size=self._settings.batch_size,
            partitions=self.partitions,
        )
        helpers: list[asyncio.Task[None]] = []
        if self._retention is not None:
            helpers.append(
                asyncio.create_task(
                    purge_periodically(
                        self._store, self._retention, self._settings.purge_interval_s, stop
                    ),
                    name="retention",
                )
            )
        if self.learner is not None:
            helpers.append(asyncio.create_task(self.learner.run(stop), name="learning"))
        halt = asyncio.Event()
        loops = [
            asyncio.create_task(self._consume(stop, halt, partition), name=f"promote-{partition}")
            for partition in self.partitions
        ]
        try:
            # asyncio.wait, unlike gather, returns at once when this task is cancelled,
            # even if a loop has not seen its own cancellation yet.
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for loop in done:
                loop.result()
        finally:
            # A cancelled worker also halts its loops by event, because a database
            # driver can turn a cancellation into an error that a loop would retry.
            halt.set()
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            for helper in helpers:
                # A cancelled worker (stop never set) must not wait out a helper's sleep,
                # such as the retention task's purge interval.
                if not stop.is_set():
                    helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper

    async def _consume(self, stop: asyncio.Event, halt: asyncio.Event, partition: int) -> None:
        delay = self._settings.retry_initial_s
        while not (stop.is_set() or halt.is_set()):
            try:
                await self.run_once(partition)
                delay = self._settings.retry_initial_s
            except TRANSIENT_ERRORS as error:
                _raise_if_cancelled()
                log.warning(
                    "worker.retrying",
                    consumer=self.consumer,
                    partition=partition,
                    error=f"{type(error).__name__}: {error}",
                    retry_in_s=delay,
                    held_events=len(self._held.get(partition, [])),
                )
                await _sleep_unless_set(delay, stop, halt)
                delay = min(delay * 2, self._settings.retry_max_s)
            except Exception:
                _raise_if_cancelled()
                # An unexpected failure must not end promotion; the held batch is retried.
                log.exception(
                    "worker.unexpected_error",
                    consumer=self.consumer,
                    partition=partition,
                    retry_in_s=delay,
                )
                await _sleep_unless_set(delay, stop, halt)
                delay = min(delay * 2, self._settings.retry_max_s)
        log.info("worker.stopped", consumer=self.consumer, partition=partition)

    async def run_once(self, partition: int | None = None) -> BatchOutcome:
        """Process one batch of a partition, or one of each owned partition when None.

        Per partition: held events first, then stale ones, then new ones.
        """
        if partition is None:
            total = BatchOutcome()
            for owned in self.partitions:
                total.add(await self.run_once(owned))
            return total

        settings = self._settings
        events = self._held.get(partition, [])
        if not events:
            events = await self._stream.claim_stale(
                self.consumer, settings.claim_idle_ms, settings.batch_size, partition
            )
        if not events:
            events = await self._stream.read_new(
                self.consumer, settings.batch_size, settings.block_ms, partition
            )
        if not events:
            return BatchOutcome()

        # Kept until the batch is done, so an outage mid-batch retries the same events.
        self._held[partition] = events
        outcome = await self.process(events)
        del self._held[partition]
        return outcome

    async def process(self, events: list[StreamEvent]) -> BatchOutcome:
        """Promote a batch, falling back to one event at a time when the batch fails."""
        outcome = BatchOutcome(received=len(events))
        turns: dict[str, StoredTurn] = {}
        for event in events:
            try:
                turns[event.event_id] = StoredTurn.from_json(event.fields["turn"])
            except (KeyError, ValueError, TypeError) as error:
                await self._dead_letter(event, f"malformed event: {error}", attempts=1)
                outcome.dead_lettered += 1

        live = await self._drop_deleted(
            [event for event in events if event.event_id in turns], turns
        )
        outcome.skipped_deleted = len(turns) - len(live)

        try:
            outcome.inserted = await self._promote(live, turns)
        except TRANSIENT_ERRORS:
            raise
        except Exception as error:  # noqa: BLE001  (isolate the event that fails)
            log.warning(
                "worker.batch_failed",
                consumer=self.consumer,
                events=len(live),
                error=f"{type(error).__name__}: {error}",
            )
            await self._promote_one_by_one(live, turns, outcome)

        log.info(
            "worker.batch_done",
            consumer=self.consumer,
            partition=events[0].partition if events else None,
            received=outcome.received,
            inserted=outcome.inserted,
            duplicates=len(live) - outcome.inserted - outcome.failed - outcome.dead_lettered,
            skipped_deleted=outcome.skipped_deleted,
            dead_lettered=outcome.dead_lettered,
            failed=outcome.failed,
        )
        return outcome

    async def _promote(self, events: list[StreamEvent], turns: dict[str, StoredTurn]) -> int:
        if not events:
            return 0
        batch = [turns[event.event_id] for event in events]
        started = time.perf_counter()
        vectors = await anyio.to_thread.run_sync(
            self._embedder.embed, [turn.content for turn in batch]
        )
        EMBEDDING_BATCH_SECONDS.observe(time.perf_counter() - started)
        inserted = await self._store.insert_turns(
            batch,
            vectors,
            self._embedder.model_name,
            accepted_ms=[event.accepted_ms for event in events],
        )
        await self._stream.ack(events)
        PROMOTED_TURNS.inc(inserted)
        await self._schedule_learning(batch)
        return inserted

    async def _schedule_learning(self, turns: list[StoredTurn]) -> None:
        """Queue the sessions of promoted turns for fact extraction, where the tenant learns.

        A failure here is logged and not raised: the turns are stored and acknowledged,
        and the session is queued again with its next promoted turn.
        """
        if self._learning_queue is None:
            return
        scopes = sessions_of(
            (turn.tenant_id, turn.user_id, turn.session_id)
            for turn in turns
            if self._learns(turn.tenant_id)
        )
        if not scopes:
            return
        try:
            await self._learning_queue.touch(scopes)
        except Exception as error:  # noqa: BLE001  (learning is best effort; turns are safe)
            log.warning(
                "worker.learning_not_queued",
                consumer=self.consumer,
                sessions=len(scopes),
                error=f"{type(error).__name__}: {error}",
            )

    async def _promote_one_by_one(
        self, events: list[StreamEvent], turns: dict[str, StoredTurn], outcome: BatchOutcome
    ) -> None:
        for event in events:
            try:
                outcome.inserted += await self._promote([event], turns)
            except TRANSIENT_ERRORS:
                raise
            except Exception as error:  # noqa: BLE001  (counted, then retried or dead-lettered)
                attempts = await self._stream.record_failure(event)
                message = f"{type(error).__name__}: {error}"
                if attempts >= self._settings.max_attempts:
                    await self._dead_letter(event, message, attempts)
                    outcome.dead_lettered += 1
                else:
                    log.warning(
                        "worker.event_failed",
                        consumer=self.consumer,
                        event_id=event.event_id,
                        attempts=attempts,
                        error=message,
                    )
                    outcome.failed += 1

    async def _drop_deleted(
        self, events: list[StreamEvent], turns: dict[str, StoredTurn]
    ) -> list[StreamEvent]:
        """Acknowledge events of sessions deleted after the event was accepted."""
        scopes = {
            (turn.tenant_id, turn.user_id, turn.session_id)
            for turn in (turns[event.event_id] for event in events)
        }
        deleted = await self._store.deletion_times(scopes)
        if not deleted:
            return events

        live: list[StreamEvent] = []
        dropped: list[StreamEvent] = []
        for event in events:
            turn = turns[event.event_id]
            deleted_ms = deleted.get((turn.tenant_id, turn.user_id, turn.session_id))
            if deleted_ms is not None and event.accepted_ms <= deleted_ms:
                dropped.append(event)
            else:
                live.append(event)
        await self._stream.ack(dropped)
        return live

    async def _dead_letter(self, event: StreamEvent, error: str, attempts: int) -> None:
        dead_id = await self._stream.dead_letter(event, error, attempts)
        log.error(
            "worker.dead_lettered",
            consumer=self.consumer,
            event_id=event.event_id,
            dead_letter_id=dead_id,
            attempts=attempts,
            error=error,
        )


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that a database driver turned into another error.

    A cancelled query or connection ping can surface as a SQLAlchemy
    OperationalError, and retrying it would keep a cancelled worker running.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _sleep_unless_set(seconds: float, *events: asyncio.Event) -> None:
    """Wait ``seconds``, or less when one of ``events`` is set."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
