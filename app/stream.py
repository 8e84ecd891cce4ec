"""The Redis Streams of accepted turns and their consumer groups.

There is one stream per partition (see ``app.keys``), each with its own
consumer group and dead-letter stream. Events stay pending in the group until
a worker has stored them and calls ``ack``. A consumer that dies leaves its
events pending, and ``claim_stale`` hands them to a live one. Acknowledged
events are deleted, so a stream contains only unfinished work and needs no
length-based trimming, which could drop unread events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from app.keys import STREAM_GROUP, KeyBuilder

if TYPE_CHECKING:
    from collections.abc import Sequence

    from app.redis_client import RedisClient


@dataclass(frozen=True, slots=True)
class StreamEvent:
    event_id: str
    fields: dict[str, str]
    partition: int = 0

    @property
    def accepted_ms(self) -> int:
        """Redis server time in ms when the event was added; it is part of the id."""
        return int(self.event_id.split("-", 1)[0])


@dataclass(frozen=True, slots=True)
class StreamStats:
    length: int
    pending: int
    dead_letters: int


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _events(entries: list[Any], partition: int) -> list[StreamEvent]:
    events = []
    for event_id, fields in entries:
        if fields is None:  # the entry was deleted while it was pending
            continue
        decoded = {_text(key): _text(value) for key, value in fields.items()}
        events.append(StreamEvent(_text(event_id), decoded, partition))
    return events


def _order(event: StreamEvent) -> tuple[int, int]:
    milliseconds, _, sequence = event.event_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _belongs_to(event: StreamEvent, tenant_id: str, user_id: str) -> bool:
    try:
        turn = json.loads(event.fields.get("turn", ""))
    except ValueError:
        return False
    return isinstance(turn, dict) and (turn.get("tenant_id"), turn.get("user_id")) == (
        tenant_id,
        user_id,
    )


class TurnStream:
    """Reads, acknowledges and dead-letters promotion events in every partition."""

    def __init__(self, redis: RedisClient, keys: KeyBuilder) -> None:
        self._redis = redis
        self._keys = keys

    @property
    def partitions(self) -> range:
        return range(self._keys.partitions)

    async def ensure_group(self) -> None:
        """Create each partition's consumer group (and stream) unless they exist."""
        for partition in self.partitions:
            try:
                await self._redis.xgroup_create(
                    self._keys.stream(partition), STREAM_GROUP, id="0", mkstream=True
                )
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    async def read_new(
        self, consumer: str, count: int, block_ms: int, partition: int = 0
    ) -> list[StreamEvent]:
        """Return events never delivered to any consumer, waiting up to ``block_ms``."""
        response: Any = await self._redis.xreadgroup(
            STREAM_GROUP,
            consumer,
            {self._keys.stream(partition): ">"},
            count=count,
            block=block_ms,
        )
        if not response:
            return []
        _, entries = response[0]
        return _events(entries, partition)

    async def claim_stale(
        self, consumer: str, min_idle_ms: int, count: int, partition: int = 0
    ) -> list[StreamEvent]:
        """Take over events that another consumer received but did not acknowledge in time."""
        response: Any = await self._redis.xautoclaim(
            self._keys.stream(partition),
            STREAM_GROUP,
            consumer,
            min_idle_time=min_idle_ms,
            count=count,
        )
        return _events(response[1], partition)

    async def ack(self, events: Sequence[StreamEvent]) -> None:
        """Acknowledge processed events and delete them from their streams."""
        by_partition: dict[int, list[str]] = {}
        for event in events:
            by_partition.setdefault(event.partition, []).append(event.event_id)
        for partition, event_ids in by_partition.items():
            stream = self._keys.stream(partition)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(stream, STREAM_GROUP, *event_ids)
                pipe.xdel(stream, *event_ids)
                pipe.hdel(self._keys.failure_counts(partition), *event_ids)
                await pipe.execute()

    async def record_failure(self, event: StreamEvent) -> int:
        """Count one failed attempt at an event and return the attempts so far."""
        counts = self._keys.failure_counts(event.partition)
        return int(await self._redis.hincrby(counts, event.event_id, 1))

    async def dead_letter(self, event: StreamEvent, error: str, attempts: int) -> str:
        """Move an event to its partition's dead-letter stream with its error, then ack it."""
        fields = {
            **event.fields,
            "event_id": event.event_id,
            "error": error[:2000],
            "attempts": str(attempts),
        }
        stream = self._keys.stream(event.partition)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._keys.dead_letter_stream(event.partition), fields)  # type: ignore[arg-type]
            pipe.xack(stream, STREAM_GROUP, event.event_id)
            pipe.xdel(stream, event.event_id)
            pipe.hdel(self._keys.failure_counts(event.partition), event.event_id)
            dead_id, *_ = await pipe.execute()
        return _text(dead_id)

    async def dead_letters(self, count: int = 100) -> list[StreamEvent]:
        """Return the oldest dead-lettered events over all partitions."""
        found: list[StreamEvent] = []
        for partition in self.partitions:
            entries: Any = await self._redis.xrange(
                self._keys.dead_letter_stream(partition), count=count
            )
            found.extend(_events(entries, partition))
        return sorted(found, key=_order)[:count]

    async def purge_user(self, tenant_id: str, user_id: str, chunk: int = 1000) -> int:
        """Remove a user's events from the turn and dead-letter streams; return how many.

        Pending events are acknowledged before they are deleted, so no worker
        is left holding them. This reads every partition's streams in full
        (a user's events can sit in an old partition after a layout change),
        which is fine for an erasure request but not for a hot path.
        """
        removed = 0
        for partition in self.partitions:
            live = self._keys.stream(partition)
            for stream in (live, self._keys.dead_letter_stream(partition)):
                removed += await self._purge_stream(
                    stream, stream == live, tenant_id, user_id, chunk
                )
        return removed

    async def _purge_stream(
        self, stream: str, grouped: bool, tenant_id: str, user_id: str, chunk: int
    ) -> int:
        removed = 0
        start = "-"
        while True:
            entries: Any = await self._redis.xrange(stream, min=start, count=chunk)
            matching = [
                event.event_id
                for event in _events(entries, 0)
                if _belongs_to(event, tenant_id, user_id)
            ]
            if matching:
                async with self._redis.pipeline(transaction=True) as pipe:
                    if grouped:
                        pipe.xack(stream, STREAM_GROUP, *matching)
                    pipe.xdel(stream, *matching)
                    await pipe.execute()
                removed += len(matching)
            if len(entries) < chunk:
                return removed
            start = "(" + _text(entries[-1][0])

    async def stats(self) -> StreamStats:
        """Events waiting, pending and dead-lettered, summed over the partitions."""
        length = pending = dead = 0
        for partition in self.partitions:
            stream = self._keys.stream(partition)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xlen(stream)
                pipe.xlen(self._keys.dead_letter_stream(partition))
                partition_length, partition_dead = await pipe.execute()
            length += int(partition_length)
            dead += int(partition_dead)
            try:
                summary = await self._redis.xpending(stream, STREAM_GROUP)
                pending += int(summary["pending"])
            except ResponseError:  # no group yet: nothing can be pending
                pass
        return StreamStats(length=length, pending=pending, dead_letters=dead)

    async def oldest_accepted_ms(self) -> int | None:
        """When the oldest unfinished event was accepted (Redis clock, ms); None when none waits."""
        oldest: int | None = None
        for partition in self.partitions:
            entries: Any = await self._redis.xrange(self._keys.stream(partition), count=1)
            for event in _events(entries, partition):
                if oldest is None or event.accepted_ms < oldest:
                    oldest = event.accepted_ms
        return oldest
