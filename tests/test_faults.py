"""Faults that tests can inject quickly: crashed workers, a failing or slow embedding
backend, and Postgres failing under the audit log. Each accepted turn must end in
long-term memory exactly once. ``bench/faults.py`` kills real processes and servers.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

import sqlalchemy.exc
from sqlalchemy import text

from app.worker import PromotionWorker
from embeddings.base import Embedder
from tests.helpers import post_turns, turn, wait_until
from tests.test_metrics import value
from tests.test_promotion import drain

if TYPE_CHECKING:
    import httpx
    import pytest

    from app.runtime import Runtime


class SlowEmbedder(Embedder):
    """Wraps the real model and sleeps before each batch, like an overloaded backend."""

    def __init__(self, inner: Embedder, delay_s: float) -> None:
        super().__init__(inner.model_name, inner.dimension, inner.batch_size)
        self._inner = inner
        self.delay_s = delay_s
        self.failing = False

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        time.sleep(self.delay_s)
        if self.failing:
            raise ConnectionError("embedding backend unreachable")
        return self._inner.embed(texts)


async def stored_turn_ids(runtime: Runtime) -> list[str]:
    async with runtime.engine.connect() as connection:
        rows = (await connection.execute(text("SELECT turn_id FROM memories"))).all()
    return [str(row.turn_id) for row in rows]


async def test_crashed_workers_promote_each_turn_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    accepted: list[str] = []
    ingesting = True

    async def ingest() -> None:
        number = 0
        while ingesting:
            ids = [f"c{number}-{k}" for k in range(4)]
            response = await post_turns(
                client, "s1", f"user-{number % 3}", [turn(f"note {i}", turn_id=i) for i in ids]
            )
            assert response.status_code == 202
            accepted.extend(ids)
            number += 1
            await asyncio.sleep(0.02)

    producer = asyncio.create_task(ingest())
    generator = random.Random(4)  # noqa: S311  (test timing, not secrets)
    # Each worker is cancelled at a random moment, mid-batch or between batches,
    # so it never acknowledges what it was holding, as after a SIGKILL.
    for number in range(6):
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.new_worker(f"crashing-{number}").run(stop))
        await asyncio.sleep(generator.uniform(0.05, 0.4))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ingesting = False
    await producer

    await asyncio.sleep(0.3)  # longer than claim_idle_ms in the test settings
    await drain(runtime.new_worker("survivor"), rounds=200)

    stored = await stored_turn_ids(runtime)
    assert len(accepted) > 20
    assert sorted(stored) == sorted(accepted)
    stats = await runtime.stream.stats()
    assert (stats.length, stats.pending, stats.dead_letters) == (0, 0, 0)


async def test_slow_embedder_leaves_ingest_fast_and_backlog_visible(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    embedder = SlowEmbedder(runtime.embedder, delay_s=1.0)
    worker = PromotionWorker(
        runtime.stream, runtime.long_term, embedder, runtime.settings.worker, "slow"
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        latencies = []
        for number in range(10):
            started = time.perf_counter()
            response = await post_turns(client, "s1", "ann", [turn(f"slow {number}")])
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 202
        await asyncio.sleep(0.2)
        metrics = (await client.get("/metrics", headers={"authorization": ""})).text
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)

    # The worker sleeps 1 s per batch in a thread; accepting never waits for it.
    assert max(latencies) < 0.5
    assert value(metrics, "engram_stream_length") >= 9
    assert value(metrics, "engram_promotion_lag_seconds") > 0.1


async def test_failing_embedder_keeps_backlog_without_dead_letters(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    embedder = SlowEmbedder(runtime.embedder, delay_s=0.0)
    embedder.failing = True
    settings = runtime.settings.worker.model_copy(
        update={"retry_initial_s": 0.05, "retry_max_s": 0.1}
    )
    worker = PromotionWorker(runtime.stream, runtime.long_term, embedder, settings, "failing")
    for number in range(5):
        assert (await post_turns(client, "s1", "bo", [turn(f"kept {number}")])).status_code == 202

    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.5)
    metrics = (await client.get("/metrics", headers={"authorization": ""})).text
    embedder.failing = False
    await wait_until(lambda: _stored(runtime, 5), timeout_s=20)
    stop.set()
    await asyncio.wait_for(task, timeout=30)

    assert value(metrics, "engram_stream_pending") == 5
    assert value(metrics, "engram_dead_letters") == 0
    assert value(metrics, "engram_promotion_lag_seconds") > 0.4
    assert sorted(await stored_turn_ids(runtime)) == sorted(set(await stored_turn_ids(runtime)))


async def _stored(runtime: Runtime, count: int) -> bool:
    return len(await stored_turn_ids(runtime)) == count


async def test_turns_accepted_while_audit_database_fails(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = runtime.audit
    original = audit._insert  # noqa: SLF001  (the seam this test breaks)
    outage = True

    async def insert_unless_down(entries: list[dict[str, object]]) -> None:
        if outage:
            raise sqlalchemy.exc.OperationalError("INSERT", {}, ConnectionRefusedError())
        await original(entries)

    monkeypatch.setattr(audit, "_insert", insert_unless_down)
    monkeypatch.setattr("app.audit.RETRY_INITIAL_S", 0.05)
    statuses = []
    for number in range(5):
        response = await post_turns(client, "s1", "cy", [turn(f"during outage {number}")])
        statuses.append(response.status_code)
    deferred = audit.deferred_entries
    outage = False
    await wait_until(lambda: _audited(runtime, 5), timeout_s=10)

    assert statuses == [202] * 5
    assert deferred >= 4
    assert audit.deferred_entries == 0


async def _audited(runtime: Runtime, count: int) -> bool:
    async with runtime.engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT count(*) FROM audit_log WHERE action = 'turns.append'")
            )
        ).scalar_one()
    return int(rows) == count
