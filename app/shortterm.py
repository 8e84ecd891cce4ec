"""Short-term memory: each session's recent turns in Redis, with a sliding expiry.

Appending a batch is one Lua script, so storing a turn in its window and
emitting its promotion event happen together or not at all. A turn that got
a 202 is therefore always on the stream, and a retried turn id is neither
stored nor emitted twice.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError

from app.keys import KeyBuilder, glob_escape

if TYPE_CHECKING:
    from app.redis_client import RedisClient


# KEYS: window, turns, meta, user_sessions, stream
# ARGV: ttl_ms, window_max_turns, session_id, then turn_id/payload pairs
# The script reads the server clock itself, which saves a round trip per
# append. Stream ids come from the same clock.
_APPEND_SCRIPT = """
local ttl_ms = tonumber(ARGV[1])
local max_turns = tonumber(ARGV[2])
local session_id = ARGV[3]
local clock = redis.call('TIME')
local now_ms = string.format('%d', clock[1] * 1000 + math.floor(clock[2] / 1000))
local result = {}
for i = 4, #ARGV, 2 do
  local turn_id = ARGV[i]
  local payload = ARGV[i + 1]
  if redis.call('HSETNX', KEYS[2], turn_id, payload) == 1 then
    local seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
    redis.call('ZADD', KEYS[1], seq, turn_id)
    result[#result + 1] = redis.call('XADD', KEYS[5], '*', 'turn', payload)
  else
    result[#result + 1] = ''
  end
end
local size = redis.call('ZCARD', KEYS[1])
if size > max_turns then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, size - max_turns - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, size - max_turns - 1)
  for _, turn_id in ipairs(oldest) do
    redis.call('HDEL', KEYS[2], turn_id)
  end
end
redis.call('HSETNX', KEYS[3], 'created_at_ms', now_ms)
redis.call('HSET', KEYS[3], 'last_activity_ms', now_ms)
redis.call('ZADD', KEYS[4], now_ms, session_id)
for k = 1, 4 do
  redis.call('PEXPIRE', KEYS[k], ttl_ms)
end
return result
"""


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """A turn as kept in a session window and carried by its promotion event."""

    tenant_id: str
    user_id: str
    session_id: str
    turn_id: str
    role: str
    content: str
    occurred_at: datetime
    metadata: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(
            {
                "tenant_id": self.tenant_id,
                "user_id": self.user_id,
                "session_id": self.session_id,
                "turn_id": self.turn_id,
                "role": self.role,
                "content": self.content,
                "occurred_at": self.occurred_at.isoformat(),
                "metadata": self.metadata,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredTurn:
        data = json.loads(raw)
        occurred_at = datetime.fromisoformat(data["occurred_at"])
        if occurred_at.tzinfo is None:
            raise ValueError("occurred_at has no timezone")
        return cls(
            tenant_id=str(data["tenant_id"]),
            user_id=str(data["user_id"]),
            session_id=str(data["session_id"]),
            turn_id=str(data["turn_id"]),
            role=str(data["role"]),
            content=str(data["content"]),
            occurred_at=occurred_at,
            metadata=dict(data["metadata"]),
        )


@dataclass(frozen=True, slots=True)
class AppendResult:
    turn_id: str
    event_id: str | None
    """Stream id of the promotion event; None when the turn id was already stored."""


@dataclass(frozen=True, slots=True)
class SessionWindowInfo:
    session_id: str
    turn_count: int
    last_activity_at: datetime


@dataclass(frozen=True, slots=True)
class WindowPage:
    turns: list[StoredTurn]
    next_cursor: str | None


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(str(position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Decode a pagination cursor; raise ValueError when it was not made by ``encode_cursor``."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        position = int(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError("cursor is not one this service returned") from error
    if position < 0:
        raise ValueError("cursor is not one this service returned")
    return position


def _ms_to_datetime(value: bytes | str | float) -> datetime:
    return datetime.fromtimestamp(int(float(value)) / 1000, tz=UTC)


class ShortTermStore:
    """Session windows in Redis, scoped by tenant and user."""

    def __init__(
        self, redis: RedisClient, keys: KeyBuilder, ttl_s: int, window_max_turns: int
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = ttl_s * 1000
        self._window_max_turns = window_max_turns
        self._append = redis.register_script(_APPEND_SCRIPT)

    async def append(
        self, tenant_id: str, user_id: str, session_id: str, turns: list[StoredTurn]
    ) -> list[AppendResult]:
        """Add turns to the window and emit one promotion event per new turn, atomically."""
        keys = self._keys.session(tenant_id, user_id, session_id)
        args: list[str | int] = [self._ttl_ms, self._window_max_turns, session_id]
        for turn in turns:
            args.extend((turn.turn_id, turn.to_json()))

        event_ids = await self._append(
            keys=[keys.window, keys.turns, keys.meta, keys.user_sessions, keys.stream],
            args=args,
        )
        return [
            AppendResult(turn_id=turn.turn_id, event_id=_decode(event_id) or None)
            for turn, event_id in zip(turns, event_ids, strict=True)
        ]

    async def window(
        self, tenant_id: str, user_id: str, session_id: str, *, limit: int, cursor: str | None
    ) -> WindowPage:
        """Return up to ``limit`` turns, oldest first, after the turn ``cursor`` points at.

        The cursor carries a turn's arrival number, so a page stays correct
        when older turns are trimmed or new ones arrive between requests.
        """
        keys = self._keys.session(tenant_id, user_id, session_id)
        after = decode_cursor(cursor) if cursor else 0
        entries: list[Any] = await self._redis.zrange(
            keys.window, f"({after}", "+inf", byscore=True, offset=0, num=limit + 1, withscores=True
        )
        has_more = len(entries) > limit
        entries = entries[:limit]
        turns = await self._load(keys.turns, [turn_id for turn_id, _ in entries])
        next_cursor = encode_cursor(int(entries[-1][1])) if has_more else None
        return WindowPage(turns=turns, next_cursor=next_cursor)

    async def recent(
        self, tenant_id: str, user_id: str, session_id: str, count: int
    ) -> list[StoredTurn]:
        """Return the newest ``count`` turns of the window, oldest first."""
        keys = self._keys.session(tenant_id, user_id, session_id)
        turn_ids = await self._redis.zrange(keys.window, -count, -1)
        return await self._load(keys.turns, turn_ids)

    async def exists(self, tenant_id: str, user_id: str, session_id: str) -> bool:
        keys = self._keys.session(tenant_id, user_id, session_id)
        return bool(await self._redis.exists(keys.window))

    async def delete_session(self, tenant_id: str, user_id: str, session_id: str) -> bool:
        """Remove the window; return whether there was one."""
        keys = self._keys.session(tenant_id, user_id, session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.window, keys.turns, keys.meta)
            pipe.zrem(keys.user_sessions, session_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def erase_user(self, tenant_id: str, user_id: str) -> int:
        """Delete every key of a user (windows, turns, session index); return how many."""
        pattern = glob_escape(self._keys.user_tag(tenant_id, user_id))
        keys = [key async for key in self._redis.scan_iter(match=f"{pattern}:*", count=500)]
        if not keys:
            return 0
        return int(await self._redis.unlink(*keys))

    async def sessions(self, tenant_id: str, user_id: str) -> list[SessionWindowInfo]:
        """Return the user's live windows, most recently active first."""
        index = self._keys.user_sessions(tenant_id, user_id)
        entries: list[Any] = await self._redis.zrevrange(index, 0, -1, withscores=True)
        if not entries:
            return []

        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id, _ in entries:
                pipe.zcard(self._keys.session(tenant_id, user_id, _decode(session_id)).window)
            counts = await pipe.execute()

        live: list[SessionWindowInfo] = []
        expired: list[str] = []
        for (raw_id, score), count in zip(entries, counts, strict=True):
            session_id = _decode(raw_id)
            if count == 0:
                expired.append(session_id)
                continue
            live.append(SessionWindowInfo(session_id, int(count), _ms_to_datetime(score)))
        if expired:
            # The index outlives windows that expired on their own; drop those entries.
            await self._redis.zrem(index, *expired)
        return live

    async def server_time_ms(self) -> int:
        """Return Redis's clock in ms; stream ids use the same clock."""
        seconds, microseconds = await self._redis.time()
        return int(seconds) * 1000 + int(microseconds) // 1000

    async def ping(self) -> bool:
        """Check that Redis serves commands; for a cluster, that every slot is served."""
        if isinstance(self._redis, RedisCluster):
            info = await self._redis.cluster_info()
            state = info.get("cluster_state")
            if state != "ok":
                raise ClusterDownError(f"the Redis Cluster reports cluster_state {state}")
            return True
        return bool(await self._redis.ping())

    async def _load(self, turns_key: str, turn_ids: list[Any]) -> list[StoredTurn]:
        if not turn_ids:
            return []
        payloads = await self._redis.hmget(turns_key, turn_ids)
        return [StoredTurn.from_json(payload) for payload in payloads if payload is not None]


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
