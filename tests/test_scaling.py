"""Running past one machine: Redis through Sentinel, searches on a Postgres read replica.

The Sentinel test starts its own primary, replica and Sentinel from the
``redis-server`` binary on free 127.0.0.1 ports; it never touches the Redis
the other tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import redis

from app.facts import NewFact
from app.main import attach_runtime, create_app
from app.runtime import open_runtime
from app.schemas import SearchRequest
from app.service import MemoryService
from tests.conftest import make_settings, service_token
from tests.helpers import post_turns, turn
from tests.test_promotion import drain

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from embeddings.local import LocalEmbedder

SERVICE = "engram-test"
REDIS_SERVER = shutil.which("redis-server") or "redis-server"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            value = check()
            if value:
                return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


class SentinelSetup:
    """A primary, a replica and one Sentinel, each a redis-server process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.primary_port = _free_port()
        self.replica_port = _free_port()
        self.sentinel_port = _free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _server(self, name: str, port: int, *extra: str) -> None:
        data = self.folder / name
        data.mkdir()
        self.processes[name] = subprocess.Popen(  # noqa: S603  (fixed arguments, own ports)
            [
                REDIS_SERVER,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(data),
                "--appendonly", "yes",
                "--save", "",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self) -> None:
        self._server("primary", self.primary_port)
        self._server(
            "replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port)
        )
        config = self.folder / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.folder}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n",
            encoding="utf-8",
        )
        self.processes["sentinel"] = subprocess.Popen(  # noqa: S603  (fixed arguments)
            [REDIS_SERVER, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with redis.Redis(port=self.replica_port) as replica:
            _wait_for(
                lambda: replica.info("replication").get("master_link_status") == "up",
                30,
                "replication to the replica",
            )
        _wait_for(lambda: self.primary() is not None, 30, "the Sentinel finding the primary")
        # The Sentinel learns of replicas from the primary's INFO, which it reads every 10 s;
        # a failover before that would find no replica to promote.
        _wait_for(self.replica_known, 30, "the Sentinel finding the replica")

    def replica_known(self) -> bool:
        with redis.Redis(port=self.sentinel_port, decode_responses=True) as sentinel:
            return len(sentinel.sentinel_slaves(SERVICE)) > 0

    def primary(self) -> tuple[str, int] | None:
        with redis.Redis(port=self.sentinel_port, decode_responses=True) as sentinel:
            address = sentinel.sentinel_get_master_addr_by_name(SERVICE)
        if not isinstance(address, tuple):
            return None
        host, port = address
        return (str(host), int(port))

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            if process.poll() is None:
                process.kill()


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
async def test_core_flow_survives_a_failover(
    sentinel_setup: SentinelSetup, server_urls: tuple[str, str], embedder: LocalEmbedder
) -> None:
    settings = make_settings("redis://unused.invalid:1/0", server_urls[1])
    settings.redis.url = None
    settings.redis.sentinels = [f"127.0.0.1:{sentinel_setup.sentinel_port}"]
    settings.redis.sentinel_service = SERVICE
    settings.redis.socket_timeout_s = 2.0
    settings.redis.key_prefix = "engram-sentinel"
    assert not settings.embedded

    runtime = await open_runtime(settings, embedder=embedder)
    app = create_app(runtime=runtime)
    attach_runtime(app, runtime)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {service_token()}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers
        ) as client:
            before = await post_turns(
                client,
                "trip",
                "sentinel-sam",
                [turn("The ferry to Texel leaves at 9:15.", turn_id="f1")],
            )
            assert before.status_code == 202
            # Wait until the replica has the turn, so the failover cannot lose it.
            with redis.Redis(port=sentinel_setup.primary_port) as primary:
                assert primary.wait(1, 5000) == 1

            sentinel_setup.processes["primary"].terminate()
            sentinel_setup.processes["primary"].wait(timeout=10)
            new_primary = await asyncio.to_thread(
                _wait_for,
                lambda: sentinel_setup.primary() == ("127.0.0.1", sentinel_setup.replica_port),
                30,
                "the failover to the replica",
            )
            assert new_primary

            async def accepted_after_failover() -> httpx.Response:
                for _ in range(50):
                    response = await post_turns(
                        client,
                        "trip",
                        "sentinel-sam",
                        [turn("The return ferry leaves Texel at 17:05.", turn_id="f2")],
                    )
                    if response.status_code != 503:
                        return response
                    await asyncio.sleep(0.2)
                return response

            after = await accepted_after_failover()
            assert after.status_code == 202, after.text

            await drain(runtime.new_worker("sentinel-worker"))
            window = (
                await client.get("/v1/sessions/trip/turns", params={"user_id": "sentinel-sam"})
            ).json()
            hits = (
                await client.post(
                    "/v1/memories/search",
                    json={"user_id": "sentinel-sam", "query": "ferry Texel", "mode": "keyword"},
                )
            ).json()["hits"]
            ready = await client.get("/ready")
    finally:
        await runtime.redis.flushdb()
        await runtime.close()

    assert [item["turn_id"] for item in window["turns"]] == ["f1", "f2"]
    assert sorted(hit["content"] for hit in hits) == [
        "The ferry to Texel leaves at 9:15.",
        "The return ferry leaves Texel at 17:05.",
    ]
    assert ready.status_code == 200


@pytest.fixture
def replica_database(server_urls: tuple[str, str]) -> Iterator[str]:
    """A second database that stands in for a read replica holding different rows."""
    parts = urlsplit(server_urls[1])
    name = f"engram_replica_{os.getpid()}"
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_searches_read_from_the_read_url(
    server_urls: tuple[str, str], replica_database: str, embedder: LocalEmbedder
) -> None:
    content = "Keeps the spare key under the blue flower pot."
    replica = await open_runtime(make_settings(server_urls[0], replica_database), embedder)
    try:
        fact = NewFact(
            kind="fact",
            content=content,
            vector=embedder.embed([content])[0],
            valid_from=datetime.now(UTC),
            session_id=None,
        )
        await replica.facts.write_facts(
            "default", "reader", [fact], model=embedder.model_name, cause="api",
            duplicate_similarity=0.95,
        )  # fmt: skip
    finally:
        await replica.close()

    settings = make_settings(*server_urls)
    settings.database.read_url = replica_database
    runtime = await open_runtime(settings, embedder=embedder)
    try:
        service = MemoryService(runtime)
        found = await service.search(
            "default", SearchRequest(user_id="reader", query="where is the spare key")
        )
        primary_rows = await runtime.long_term.all_memories("default", "reader")
    finally:
        await runtime.close()

    # The row exists only in the "replica", and the search found it there.
    assert [hit.content for hit in found.hits] == [content]
    assert primary_rows == []
