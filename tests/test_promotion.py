"""Promotion from the turn stream into long-term memory: exactly once, whatever fails."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from app.shortterm import StoredTurn
from app.worker import PromotionWorker
from embeddings.base import Embedder
from tests.conftest import service_token
from tests.helpers import post_turns, turn, wait_until

if TYPE_CHECKING:
    import httpx

    from app.runtime import Runtime


async def memory_count(runtime: Runtime, user_id: str | None = None) -> int:
    query = "SELECT count(*) FROM memories"
    params: dict[str, str] = {}
    if user_id is not None:
        query += " WHERE user_id = :user_id"
        params["user_id"] = user_id
    async with runtime.engine.connect() as connection:
        return int((await connection.execute(text(query), params)).scalar_one())


async def drain(worker: PromotionWorker, rounds: int = 20) -> None:
    for _ in range(rounds):
        outcome = await worker.run_once()
        if outcome.received == 0:
            return


class FailingEmbedder(Embedder):
    """Wraps the real model and fails on texts that contain a marker."""

    def __init__(self, inner: Embedder, marker: str, error: Exception) -> None:
        super().__init__(inner.model_name, inner.dimension, inner.batch_size)
        self._inner = inner
        self._marker = marker
        self._error = error
        self.calls = 0

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if any(self._marker in item for item in texts):
            raise self._error
        return self._inner.embed(texts)


async def test_posted_turn_becomes_searchable_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    stop = asyncio.Event()
    worker_task = asyncio.create_task(runtime.new_worker("background").run(stop))
    try:
        await post_turns(client, "s1", "alice", [turn("My sister Ines moved to Lisbon in May.")])

        async def found() -> bool:
            response = await client.post(
                "/v1/memories/search",
                json={"user_id": "alice", "query": "Where does Ines live now?", "limit": 5},
            )
            return any("Lisbon" in hit["content"] for hit in response.json()["hits"])

        await wait_until(found, timeout_s=30)
    finally:
        stop.set()
        await asyncio.wait_for(worker_task, timeout=10)

    assert await memory_count(runtime, "alice") == 1
    stats = await runtime.stream.stats()
    assert stats.length == 0
    assert stats.pending == 0


async def test_retried_turn_is_promoted_once(client: httpx.AsyncClient, runtime: Runtime) -> None:
    worker = runtime.new_worker("w1")
    batch = [turn("first", turn_id="a"), turn("second", turn_id="b")]
    await post_turns(client, "s1", "alice", batch)
    await drain(worker)

    # The window expired (simulated), so the same ids are accepted again as new events.
    await runtime.redis.flushdb()
    await runtime.stream.ensure_group()
    await post_turns(client, "s1", "alice", batch)
    await drain(worker)

    assert await memory_count(runtime, "alice") == 2


async def test_dead_worker_events_are_reclaimed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await post_turns(client, "s1", "alice", [turn(f"fact number {i}") for i in range(10)])
    dying = runtime.new_worker("dying")
    survivor = runtime.new_worker("survivor")

    # The first consumer receives the batch, stores half of it, then dies before acknowledging.
    taken = await runtime.stream.read_new(dying.consumer, count=10, block_ms=100)
    assert len(taken) == 10
    await dying.process(taken[:5])
    stored_not_acked = [StoredTurn.from_json(event.fields["turn"]) for event in taken[5:8]]
    await runtime.long_term.insert_turns(
        stored_not_acked,
        runtime.embedder.embed([item.content for item in stored_not_acked]),
        runtime.embedder.model_name,
    )
    assert (await runtime.stream.stats()).pending == 5

    await asyncio.sleep(0.3)  # longer than claim_idle_ms in the test settings
    await drain(survivor)

    assert await memory_count(runtime, "alice") == 10
    stats = await runtime.stream.stats()
    assert stats.pending == 0
    assert stats.length == 0
    async with runtime.engine.connect() as connection:
        distinct = (
            await connection.execute(text("SELECT count(DISTINCT turn_id) FROM memories"))
        ).scalar_one()
    assert distinct == 10


async def test_malformed_event_is_dead_lettered(runtime: Runtime) -> None:
    await runtime.redis.xadd(runtime.stream._keys.stream(), {"turn": "{not json"})  # noqa: SLF001
    worker = runtime.new_worker("w1")

    outcome = await worker.run_once()

    assert outcome.dead_lettered == 1
    dead = await runtime.stream.dead_letters()
    assert len(dead) == 1
    assert "malformed event" in dead[0].fields["error"]
    stats = await runtime.stream.stats()
    assert (stats.length, stats.pending, stats.dead_letters) == (0, 0, 1)


async def test_failing_event_moves_to_dead_letter_after_attempts(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    embedder = FailingEmbedder(runtime.embedder, "POISON", ValueError("model rejected input"))
    settings = runtime.settings.worker.model_copy(update={"max_attempts": 3, "claim_idle_ms": 100})
    worker = PromotionWorker(runtime.stream, runtime.long_term, embedder, settings, "w1")
    await post_turns(
        client, "s1", "alice", [turn("fine one"), turn("POISON pill"), turn("fine two")]
    )

    await worker.run_once()
    assert await memory_count(runtime, "alice") == 2
    for _ in range(2):
        await asyncio.sleep(0.15)
        await worker.run_once()

    dead = await runtime.stream.dead_letters()
    assert [item.fields["attempts"] for item in dead] == ["3"]
    assert "model rejected input" in dead[0].fields["error"]
    stats = await runtime.stream.stats()
    assert (stats.length, stats.pending) == (0, 0)
    assert await memory_count(runtime, "alice") == 2


async def test_outage_is_retried_without_losing_events(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    embedder = FailingEmbedder(runtime.embedder, "", ConnectionError("backend down"))
    settings = runtime.settings.worker.model_copy(
        update={"retry_initial_s": 0.05, "retry_max_s": 0.1}
    )
    worker = PromotionWorker(runtime.stream, runtime.long_term, embedder, settings, "w1")
    await post_turns(client, "s1", "alice", [turn("kept through the outage")])

    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await wait_until(lambda: _at_least(embedder, 3), timeout_s=10)
    assert await memory_count(runtime, "alice") == 0
    assert (await runtime.stream.stats()).dead_letters == 0

    embedder._marker = "\x00never"  # noqa: SLF001  (the backend recovers)
    await wait_until(lambda: _has_memories(runtime, 1), timeout_s=10)
    stop.set()
    await asyncio.wait_for(task, timeout=10)

    stats = await runtime.stream.stats()
    assert (stats.length, stats.pending, stats.dead_letters) == (0, 0, 0)


async def _at_least(embedder: FailingEmbedder, calls: int) -> bool:
    return embedder.calls >= calls


async def _has_memories(runtime: Runtime, count: int) -> bool:
    return await memory_count(runtime) == count


async def test_deleted_session_events_are_not_promoted(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await post_turns(client, "gone", "alice", [turn("delete me before promotion")])
    await post_turns(client, "kept", "alice", [turn("keep me")])

    response = await client.delete("/v1/sessions/gone", params={"user_id": "alice"})
    assert response.status_code == 204
    await drain(runtime.new_worker("w1"))

    async with runtime.engine.connect() as connection:
        sessions = (
            (await connection.execute(text("SELECT session_id FROM memories"))).scalars().all()
        )
    assert sessions == ["kept"]

    # A session id can be reused after deletion; new turns are promoted again.
    await post_turns(client, "gone", "alice", [turn("a fresh start")])
    await drain(runtime.new_worker("w1"))
    assert await memory_count(runtime, "alice") == 2


async def test_insert_checks_deletion_under_lock(runtime: Runtime) -> None:
    """A deletion that lands after the worker's early check still wins over the insert."""
    early = StoredTurn("default", "alice", "s1", "t1", "user", "said before", _now(), {})
    late = StoredTurn("default", "alice", "s1", "t2", "user", "said after", _now(), {})
    vectors = runtime.embedder.embed([early.content, late.content])
    await runtime.long_term.delete_session("default", "alice", "s1", deleted_ms=1_000)

    inserted = await runtime.long_term.insert_turns(
        [early, late], vectors, runtime.embedder.model_name, accepted_ms=[999, 1_001]
    )

    assert inserted == 1
    async with runtime.engine.connect() as connection:
        kept = (await connection.execute(text("SELECT turn_id FROM memories"))).scalars().all()
    assert kept == ["t2"]


def _now() -> datetime:
    return datetime.now(UTC)


async def test_delete_session_removes_memories(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_turns(client, "s1", "alice", [turn("one"), turn("two")])
    await drain(runtime.new_worker("w1"))
    await runtime.redis.flushdb()  # the window expired; only long-term memory remains
    await runtime.stream.ensure_group()

    sessions = (await client.get("/v1/users/alice/sessions")).json()["sessions"]
    assert sessions == [
        {
            "session_id": "s1",
            "window_turns": 0,
            "stored_turns": 2,
            "last_activity_at": sessions[0]["last_activity_at"],
            "active": False,
        }
    ]

    response = await client.delete("/v1/sessions/s1", params={"user_id": "alice"})

    assert response.status_code == 204
    assert await memory_count(runtime, "alice") == 0


@pytest.mark.slow
async def test_live_server_promotes_in_process(live_server: str) -> None:
    import httpx  # noqa: PLC0415

    headers = {"authorization": f"Bearer {service_token()}"}
    async with httpx.AsyncClient(base_url=live_server, headers=headers) as http:
        response = await http.post(
            "/v1/sessions/s1/turns",
            json={"user_id": "carol", "turns": [turn("Carol adopted a grey cat named Miso.")]},
        )
        assert response.status_code == 202

        async def promoted() -> bool:
            sessions = (await http.get("/v1/users/carol/sessions")).json()["sessions"]
            return bool(sessions) and sessions[0]["stored_turns"] == 1

        await wait_until(promoted, timeout_s=30)
        ready = await http.get("/ready")

    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "postgres": "ok", "migrations": "ok"}
