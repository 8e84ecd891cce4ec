"""The Redis Stream of accepted turns and its consumer group.

Events stay pending in the group until a worker has stored them and calls
``ack``. A consumer that dies leaves its events pending, and ``claim_stale``
hands them to a live one. Acknowledged events are deleted, so the stream
contains only unfinished work and needs no length-based trimming, which
could drop unread events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from app.keys import STREAM_GROUP, KeyBuilder

if TYPE_CHECKING:
    from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class StreamEvent:
    event_id: str
    fields: dict[str, str]

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


def _events(entries: list[Any]) -> list[StreamEvent]:
    events = []
    for event_id, fields in entries:
        if fields is None:  # the entry was deleted while it was pending
            continue
        decoded = {_text(key): _text(value) for key, value in fields.items()}
        events.append(StreamEvent(_text(event_id), decoded))
    return events


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
    """Reads, acknowledges and dead-letters promotion events."""

    def __init__(self, redis: Redis, keys: KeyBuilder) -> None:
        self._redis = redis
        self._keys = keys

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless they exist."""
        try:
            await self._redis.xgroup_create(self._keys.stream, STREAM_GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def read_new(self, consumer: str, count: int, block_ms: int) -> list[StreamEvent]:
        """Return events never delivered to any consumer, waiting up to ``block_ms``."""
        response: Any = await self._redis.xreadgroup(
            STREAM_GROUP, consumer, {self._keys.stream: ">"}, count=count, block=block_ms
        )
        if not response:
            return []
        _, entries = response[0]
        return _events(entries)

    async def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[StreamEvent]:
        """Take over events that another consumer received but did not acknowledge in time."""
        response: Any = await self._redis.xautoclaim(
            self._keys.stream, STREAM_GROUP, consumer, min_idle_time=min_idle_ms, count=count
        )
        return _events(response[1])

    async def ack(self, event_ids: list[str]) -> None:
        """Acknowledge processed events and delete them from the stream."""
        if not event_ids:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self._keys.stream, STREAM_GROUP, *event_ids)
            pipe.xdel(self._keys.stream, *event_ids)
            pipe.hdel(self._keys.failure_counts, *event_ids)
            await pipe.execute()

    async def record_failure(self, event_id: str) -> int:
        """Count one failed attempt at an event and return the attempts so far."""
        return int(await self._redis.hincrby(self._keys.failure_counts, event_id, 1))

    async def dead_letter(self, event: StreamEvent, error: str, attempts: int) -> str:
        """Move an event to the dead-letter stream with its error, then acknowledge it."""
        fields = {
            **event.fields,
            "event_id": event.event_id,
            "error": error[:2000],
            "attempts": str(attempts),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._keys.dead_letter_stream, fields)  # type: ignore[arg-type]
            pipe.xack(self._keys.stream, STREAM_GROUP, event.event_id)
            pipe.xdel(self._keys.stream, event.event_id)
            pipe.hdel(self._keys.failure_counts, event.event_id)
            dead_id, *_ = await pipe.execute()
        return _text(dead_id)

    async def dead_letters(self, count: int = 100) -> list[StreamEvent]:
        """Return the oldest dead-lettered events."""
        entries: Any = await self._redis.xrange(self._keys.dead_letter_stream, count=count)
        return _events(entries)

    async def purge_user(self, tenant_id: str, user_id: str, chunk: int = 1000) -> int:
        """Remove a user's events from the turn and dead-letter streams; return how many.

        Pending events are acknowledged before they are deleted, so no worker
        is left holding them. This reads both streams in full, which is fine
        for an erasure request but not for a hot path.
        """
        removed = 0
        for stream in (self._keys.stream, self._keys.dead_letter_stream):
            start = "-"
            while True:
                entries: Any = await self._redis.xrange(stream, min=start, count=chunk)
                events = _events(entries)
                matching = [
                    event.event_id for event in events if _belongs_to(event, tenant_id, user_id)
                ]
                if matching:
                    async with self._redis.pipeline(transaction=True) as pipe:
                        if stream == self._keys.stream:
                            pipe.xack(stream, STREAM_GROUP, *matching)
                        pipe.xdel(stream, *matching)
                        await pipe.execute()
                    removed += len(matching)
                if len(entries) < chunk:
                    break
                start = "(" + _text(entries[-1][0])
        return removed

    async def stats(self) -> StreamStats:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self._keys.stream)
            pipe.xlen(self._keys.dead_letter_stream)
            length, dead = await pipe.execute()
        try:
            summary = await self._redis.xpending(self._keys.stream, STREAM_GROUP)
            pending = int(summary["pending"])
        except ResponseError:  # no group yet: nothing can be pending
            pending = 0
        return StreamStats(length=int(length), pending=pending, dead_letters=int(dead))
