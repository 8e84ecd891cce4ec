"""Health, readiness, request ids, the OpenAPI schema, and restarts of embedded servers."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
import structlog
from redis.asyncio import Redis
from structlog.testing import capture_logs

from app.embedded import EmbeddedServers
from app.errors import EmbeddingModelMismatchError
from app.keys import KeyBuilder
from app.main import attach_runtime, create_app
from app.runtime import open_runtime
from app.shortterm import ShortTermStore, StoredTurn
from embeddings.base import Embedder
from tests.helpers import post_turns, turn

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    from litestar import Litestar

    from app.runtime import Runtime
    from app.settings import Settings


class TinyEmbedder(Embedder):
    """An embedder of another dimension than the stored vectors."""

    def __init__(self) -> None:
        super().__init__("tiny-model", dimension=3, batch_size=8)

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0, 0.0] for _ in texts]


async def test_health_is_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_when_servers_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"redis": "ok", "postgres": "ok", "migrations": "ok"},
    }


async def test_not_ready_when_redis_is_down(
    app: Litestar, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    broken = replace(
        runtime, short_term=ShortTermStore(dead, KeyBuilder(), ttl_s=60, window_max_turns=10)
    )
    attach_runtime(app, broken)
    try:
        response = await client.get("/ready")
        write = await post_turns(client, "s1", "alice", [turn("hello")])
    finally:
        await dead.aclose()

    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("unavailable")
    assert response.json()["checks"]["postgres"] == "ok"
    assert write.status_code == 503
    assert write.headers["retry-after"] == "5"
    assert write.headers["content-type"].startswith("application/problem+json")


async def test_request_id_is_returned(client: httpx.AsyncClient) -> None:
    generated = await client.get("/health")
    echoed = await client.get("/health", headers={"x-request-id": "client-id-42"})
    replaced = await client.get("/health", headers={"x-request-id": "bad id with spaces"})

    assert len(generated.headers["x-request-id"]) == 32
    assert echoed.headers["x-request-id"] == "client-id-42"
    assert replaced.headers["x-request-id"] != "bad id with spaces"


async def test_openapi_schema_lists_routes(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/docs/openapi.json")).json()
    page = await client.get("/docs")

    assert schema["info"]["title"] == "Engram"
    assert {
        "/v1/sessions/{session_id}/turns",
        "/v1/sessions/{session_id}",
        "/v1/users/{user_id}/sessions",
        "/v1/memories/search",
        "/v1/memories/{memory_id}",
        "/v1/context",
        "/health",
        "/ready",
    } <= set(schema["paths"])
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    append = schema["paths"]["/v1/sessions/{session_id}/turns"]["post"]["responses"]
    assert {"202", "413", "422"} <= set(append)
    assert "application/problem+json" in append["422"]["content"]


async def test_other_model_dimension_stops_start(settings: Settings) -> None:
    with pytest.raises(EmbeddingModelMismatchError, match="3-dimension vectors"):
        await open_runtime(settings, embedder=TinyEmbedder())


@pytest.mark.slow
async def test_embedded_servers_keep_data_across_restart(tmp_path: Path) -> None:
    turn_record = StoredTurn(
        "default", "alice", "s1", "t1", "user", "Remember me 🌷", datetime.now(UTC), {}
    )
    keys = KeyBuilder()

    async def write(servers: EmbeddedServers) -> None:
        redis = Redis.from_url(await asyncio.to_thread(servers.start_redis))
        database_url = await asyncio.to_thread(servers.start_postgres)
        store = ShortTermStore(redis, keys, ttl_s=3600, window_max_turns=10)
        await store.append("default", "alice", "s1", [turn_record])
        await redis.aclose()
        await asyncio.to_thread(_create_marker_table, database_url)

    async def read(servers: EmbeddedServers) -> tuple[list[StoredTurn], int, str]:
        redis = Redis.from_url(await asyncio.to_thread(servers.start_redis))
        database_url = await asyncio.to_thread(servers.start_postgres)
        store = ShortTermStore(redis, keys, ttl_s=3600, window_max_turns=10)
        window = await store.recent("default", "alice", "s1", 10)
        stream_length = int(await redis.xlen(keys.stream()))
        await redis.aclose()
        marker = await asyncio.to_thread(_read_marker, database_url)
        return window, stream_length, marker

    first = EmbeddedServers(tmp_path)
    await write(first)
    await asyncio.to_thread(first.stop)

    second = EmbeddedServers(tmp_path)
    window, stream_length, marker = await read(second)
    await asyncio.to_thread(second.stop)

    assert [item.content for item in window] == ["Remember me 🌷"]
    assert stream_length == 1
    assert marker == "kept"


def _create_marker_table(url: str) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE marker (value text)")
        connection.execute("INSERT INTO marker VALUES ('kept')")


def _read_marker(url: str) -> str:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT value FROM marker").fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v1/users/alice/sessions", {"authorization": ""}, 401),
        ("/no-such-path", {}, 404),
        ("/health", {}, 200),
    ],
)
async def test_unrouted_requests_get_id_and_log(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], status: int
) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await client.get(path, headers=headers)

    assert response.status_code == status
    request_id = response.headers["x-request-id"]
    lines = [entry for entry in logs if entry["event"] == "http.request"]
    assert [(entry["path"], entry["status"]) for entry in lines] == [(path, status)]
    assert lines[0]["request_id"] == request_id


@pytest.mark.parametrize("freeze", [True, False])
async def test_startup_objects_frozen_on_request(runtime: Runtime, freeze: bool) -> None:
    app = create_app(runtime=runtime, freeze_startup_objects=freeze)
    try:
        async with app.lifespan():
            frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()

    assert (frozen > 0) is freeze
