"""Export and erasure of everything held about one user."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app import history
from app.audit import AuditQuery, AuditRecord
from app.logging import get_logger

if TYPE_CHECKING:
    from app.runtime import Runtime

log = get_logger("privacy")

# An export lists at most this many audit entries, newest first.
EXPORT_AUDIT_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class ErasureCounts:
    memories: int
    redis_keys: int
    stream_events: int


class UserDataService:
    """Finds every piece of a user's data in Redis and Postgres."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def export(self, tenant_id: str, user_id: str) -> dict[str, Any]:
        """Return the user's session windows, long-term memories, their history and audit."""
        short_term = self._runtime.short_term
        sessions = []
        for window in await short_term.sessions(tenant_id, user_id):
            turns = await short_term.recent(
                tenant_id,
                user_id,
                window.session_id,
                self._runtime.settings.memory.window_max_turns,
            )
            sessions.append(
                {
                    "session_id": window.session_id,
                    "last_activity_at": window.last_activity_at,
                    "turns": [
                        {
                            "turn_id": turn.turn_id,
                            "role": turn.role,
                            "content": turn.content,
                            "occurred_at": turn.occurred_at,
                            "metadata": turn.metadata,
                        }
                        for turn in turns
                    ],
                }
            )
        memories = await self._runtime.long_term.all_memories(tenant_id, user_id)
        changes = await history.read_user(self._runtime.engine, tenant_id, user_id)
        audit = await self._runtime.audit.find(
            AuditQuery(tenant_id=tenant_id, user_id=user_id, limit=EXPORT_AUDIT_LIMIT)
        )
        return {
            "tenant_id": tenant_id,
            "user_id": user_id,
            "exported_at": datetime.now(UTC),
            "sessions": sessions,
            "memories": [{**asdict(memory), "tenant_id": tenant_id} for memory in memories],
            # Includes the kept text of memories deleted without purge_history.
            "history": [asdict(change) for change in changes],
            "audit": [asdict(entry) for entry in audit],
        }

    async def audit(self, query: AuditQuery) -> list[AuditRecord]:
        return await self._runtime.audit.find(query)

    async def erase(self, tenant_id: str, user_id: str) -> ErasureCounts:
        """Remove the user from Postgres and Redis, including events not yet promoted.

        The tombstone is written first, so a worker that has already read one of the
        user's events when erasure starts drops it instead of storing it.
        """
        deleted_ms = await self._runtime.short_term.server_time_ms()
        memories = await self._runtime.long_term.erase_user(tenant_id, user_id, deleted_ms)
        stream_events = await self._runtime.stream.purge_user(tenant_id, user_id)
        redis_keys = await self._runtime.short_term.erase_user(tenant_id, user_id)
        await self._runtime.learning_queue.forget(tenant_id, user_id)
        counts = ErasureCounts(
            memories=memories, redis_keys=redis_keys, stream_events=stream_events
        )
        log.info("user.erased", tenant_id=tenant_id, user_id=user_id, **asdict(counts))
        return counts
