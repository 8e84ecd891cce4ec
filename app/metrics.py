"""The service's own Prometheus metrics; ``app.api.metrics`` serves them at ``/metrics``.

Litestar's Prometheus middleware counts requests and times them per route
template, method and status. The service adds its own metrics below. Those
that describe shared state (the stream, dead letters, memories per tenant)
are read from Redis and Postgres when ``/metrics`` is scraped, so every API
process reports the same values.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from sqlalchemy import text

if TYPE_CHECKING:
    from litestar.datastructures import State

# Tenants with the most memories get their own label; the rest are summed.
TOP_TENANTS = 20

SEARCH_SECONDS = Histogram(
    "engram_search_seconds",
    "Time of one search inside the service (embedding, database, ranking), by mode.",
    ["mode"],
    buckets=(0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5),
)
EMBEDDING_BATCH_SECONDS = Histogram(
    "engram_embedding_batch_seconds",
    "Time to embed one promotion batch.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PROMOTED_TURNS = Counter(
    "engram_promoted_turns_total", "Turns stored in long-term memory by promotion workers."
)
RATE_LIMITED = Counter(
    "engram_rate_limited_total", "Requests rejected with 429 by the service's own rate limit."
)
STREAM_LENGTH = Gauge("engram_stream_length", "Accepted turns not yet promoted (stream entries).")
STREAM_PENDING = Gauge(
    "engram_stream_pending", "Events delivered to a worker and not yet acknowledged."
)
DEAD_LETTERS = Gauge("engram_dead_letters", "Events in the dead-letter stream.")
PROMOTION_LAG_SECONDS = Gauge(
    "engram_promotion_lag_seconds", "Age of the oldest accepted turn not yet promoted; 0 if none."
)
LEARNING_RUNS = Counter(
    "engram_learning_runs_total",
    "Sessions a worker learned from, by outcome: done, retried (model or database "
    "unavailable) or busy (another worker held the user).",
    ["outcome"],
)
LEARNED_FACTS = Counter(
    "engram_learned_facts_total",
    "Facts from extraction by result: added, superseded (an update), duplicate, ignored "
    "(the model chose no change) or skipped (malformed output, deleted sources).",
    ["result"],
)
SUMMARIES_WRITTEN = Counter("engram_summaries_total", "Rolling session summaries stored.")
LEARNING_DUE = Gauge(
    "engram_learning_sessions_due", "Sessions waiting for fact extraction or a summary."
)
MEMORIES = Gauge(
    "engram_memories", f"Long-term memories per tenant (top {TOP_TENANTS}, then other).", ["tenant"]
)


API_ONLY_METRICS = (
    SEARCH_SECONDS,
    RATE_LIMITED,
    STREAM_LENGTH,
    STREAM_PENDING,
    DEAD_LETTERS,
    PROMOTION_LAG_SECONDS,
    LEARNING_DUE,
    MEMORIES,
)
"""Metrics that only an API process fills: in a standalone worker they would stay at 0."""


def serve_worker_metrics(host: str, port: int) -> None:
    """Serve a standalone worker's own metrics at ``/metrics`` from a background thread.

    The API-only metrics leave the registry once the port is bound, so a
    failed start leaves the registry as it was.
    """
    start_http_server(port, addr=host)
    for metric in API_ONLY_METRICS:
        REGISTRY.unregister(metric)


async def refresh_shared_metrics(state: State) -> None:
    """Read the stream and memory counts that every process shares into the gauges."""
    runtime = state.runtime
    stats = await runtime.stream.stats()
    STREAM_LENGTH.set(stats.length)
    STREAM_PENDING.set(stats.pending)
    DEAD_LETTERS.set(stats.dead_letters)
    oldest_ms = await runtime.stream.oldest_accepted_ms()
    if oldest_ms is not None:
        PROMOTION_LAG_SECONDS.set(max(0.0, time.time() - oldest_ms / 1000))
    else:
        PROMOTION_LAG_SECONDS.set(0)
    LEARNING_DUE.set(await runtime.learning_queue.due_count())
    async with runtime.engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT tenant_id, count(*) FROM memories GROUP BY tenant_id ORDER BY 2 DESC")
            )
        ).all()
    MEMORIES.clear()
    for tenant_id, count in rows[:TOP_TENANTS]:
        MEMORIES.labels(tenant=tenant_id).set(count)
    if len(rows) > TOP_TENANTS:
        MEMORIES.labels(tenant="other").set(sum(count for _, count in rows[TOP_TENANTS:]))
