"""Retention purges memories past their tenant's maximum age."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from structlog.testing import capture_logs

from app.retention import RetentionPolicy, purge_once
from app.settings import MemorySettings
from app.shortterm import StoredTurn

if TYPE_CHECKING:
    from app.runtime import Runtime

NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def store_memory(runtime: Runtime, tenant: str, turn_id: str, stored_days_ago: int) -> None:
    turn = StoredTurn(tenant, "alice", "s1", turn_id, "user", f"note {turn_id}", NOW, {})
    vectors = runtime.embedder.embed([turn.content])
    await runtime.long_term.insert_turns([turn], vectors, runtime.embedder.model_name)
    async with runtime.engine.begin() as connection:
        await connection.execute(
            text("UPDATE memories SET created_at = :at WHERE turn_id = :turn_id"),
            {"at": NOW - timedelta(days=stored_days_ago), "turn_id": turn_id},
        )


async def remaining(runtime: Runtime) -> list[str]:
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(text("SELECT turn_id FROM memories ORDER BY turn_id"))
        return list(rows.scalars().all())


async def test_default_and_tenant_ages(runtime: Runtime) -> None:
    await store_memory(runtime, "plain", "plain-old", 40)
    await store_memory(runtime, "plain", "plain-new", 10)
    await store_memory(runtime, "strict", "strict-old", 8)
    await store_memory(runtime, "strict", "strict-new", 2)
    await store_memory(runtime, "forever", "forever-old", 4000)
    policy = RetentionPolicy(default_days=30, days_by_tenant={"strict": 7, "forever": 0})

    deleted = await purge_once(runtime.long_term, policy, now=NOW)

    assert deleted == {"expired": 0, "strict": 1, "default": 1}
    assert await remaining(runtime) == ["forever-old", "plain-new", "strict-new"]


async def test_expired_memories_are_purged(runtime: Runtime) -> None:
    await store_memory(runtime, "t", "keeps", 1)
    await store_memory(runtime, "t", "expires", 1)
    async with runtime.engine.begin() as connection:
        await connection.execute(
            text("UPDATE memories SET expires_at = :at WHERE turn_id = 'expires'"),
            {"at": NOW - timedelta(minutes=1)},
        )

    deleted = await purge_once(runtime.long_term, RetentionPolicy(), now=NOW)

    assert deleted == {"expired": 1}
    assert await remaining(runtime) == ["keeps"]


async def test_worker_runs_the_purge(runtime: Runtime) -> None:
    await store_memory(runtime, "t", "ancient", 10_000)
    runtime.settings.memory.retention_days = 30
    try:
        worker = runtime.new_worker("purging")
    finally:
        runtime.settings.memory.retention_days = 0
    stop = asyncio.Event()

    with capture_logs() as logs:
        task = asyncio.create_task(worker.run(stop))
        for _ in range(50):
            if not await remaining(runtime):
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    assert await remaining(runtime) == []
    purged = [entry for entry in logs if entry["event"] == "retention.purged"]
    assert purged == [
        {
            "component": "retention",
            "event": "retention.purged",
            "rule": "default",
            "memories_deleted": 1,
            "log_level": "info",
        }
    ]


def test_negative_tenant_retention_is_rejected() -> None:
    with pytest.raises(ValidationError, match="negative days"):
        MemorySettings(retention_days_by_tenant={"acme": -1})
