"""Running past one machine: Redis Cluster, Redis through Sentinel, searches on a read replica.

The cluster and Sentinel tests start their own servers from the
``redis-server`` binary on free 127.0.0.1 ports (three cluster primaries; a
primary, a replica and a Sentinel); they never touch the Redis the other
tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import redis
from redis.crc import key_slot

from app.errors import ConfigurationError
from app.facts import NewFact
from app.keys import KeyBuilder
from app.main import attach_runtime, create_app
from app.runtime import open_runtime
from app.schemas import SearchRequest
from app.service import MemoryService
from app.worker import PromotionWorker
from tests.conftest import make_settings, service_token
from tests.helpers import free_port, post_turns, turn, wait_until
from tests.test_promotion import drain

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from app.runtime import Runtime
    from app.stream import StreamStats
    from embeddings.local import LocalEmbedder

SERVICE = "engram-test"
REDIS_SERVER = shutil.which("redis-server") or "redis-server"
REDIS_CLI = shutil.which("redis-cli") or "redis-cli"
needs_redis_binaries = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="needs the redis-server and redis-cli binaries",
)


def _wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            value = check()
            if value:
                return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the servers, and kill any that has not exited after 10 s."""
    for process in processes:
        process.terminate()
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()


class SentinelSetup:
    """A primary, a replica and one Sentinel, each a redis-server process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.sentinel_port = free_port()
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
        _stop_all(list(self.processes.values()))


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


class ClusterSetup:
    """Three Redis Cluster primaries, each a redis-server process with append-only files."""

    def __init__(self, folder: Path, primaries: int = 3) -> None:
        self.folder = folder
        self.ports = [free_port() for _ in range(primaries)]
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for port in self.ports:
            data = self.folder / f"node-{port}"
            data.mkdir()
            self.processes.append(
                subprocess.Popen(  # noqa: S603  (fixed arguments, own ports)
                    [
                        REDIS_SERVER,
                        "--port", str(port),
                        "--bind", "127.0.0.1",
                        "--dir", str(data),
                        "--cluster-enabled", "yes",
                        # The bus port defaults to port + 10000, which may not exist.
                        "--cluster-port", str(free_port()),
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000",
                        "--appendonly", "yes",
                        "--save", "",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        for port in self.ports:
            with redis.Redis(port=port) as node:
                _wait_for(node.ping, 30, f"the cluster node on port {port} starting")
        subprocess.run(  # noqa: S603  (fixed arguments, own ports)
            [
                REDIS_CLI, "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        for port in self.ports:
            with redis.Redis(port=port, decode_responses=True) as node:
                _wait_for(
                    lambda node=node: node.cluster("INFO").get("cluster_state") == "ok",
                    30,
                    "the cluster agreeing on its slots",
                )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def owner_of(self, key: str) -> int:
        """The port of the primary that serves ``key``'s slot."""
        slot = key_slot(key.encode())
        with redis.Redis(port=self.ports[0]) as node:
            for first, last, primary, *_ in node.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return int(primary[1])
        raise AssertionError(f"no node serves slot {slot}")

    def keys_per_node(self) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {}
        for port in self.ports:
            with redis.Redis(port=port, decode_responses=True) as node:
                found[port] = sorted(node.scan_iter(count=1000))
        return found

    def stop(self) -> None:
        _stop_all(self.processes)


@pytest.fixture
def plain_redis(tmp_path: Path) -> Iterator[int]:
    """A standalone redis-server on a free port; yields the port."""
    port = free_port()
    server = subprocess.Popen(  # noqa: S603  (fixed arguments, own port)
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with redis.Redis(port=port) as node:
            _wait_for(node.ping, 30, "the plain Redis starting")
        yield port
    finally:
        _stop_all([server])


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[ClusterSetup]:
    setup = ClusterSetup(tmp_path)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


CLUSTER_PARTITIONS = 6
CLUSTER_PREFIX = "engram-cluster"
CLUSTER_TURNS = {
    "anna": ["Ik verhuis in maart naar Utrecht.", "Mijn fiets is gestolen bij het station."],
    "bram": ["Booked the ferry to Texel for Saturday 🚢", "The cabin has a sea view 🌊"],
    "carmen": ["أحب القهوة العربية في الصباح", "My sister visits from Madrid in June."],
    "dev": ["Allergic to peanuts, so no satay.", "Training for the Rotterdam marathon."],
    "elif": ["Adopted a grey kitten named Pixel.", "Pixel sleeps on the keyboard."],
    "femke": ["Plays cello in a string quartet.", "The quartet rehearses on Thursdays."],
}


@needs_redis_binaries
async def test_core_flow_on_a_three_primary_cluster(
    redis_cluster: ClusterSetup, server_urls: tuple[str, str], embedder: LocalEmbedder
) -> None:
    settings = make_settings(redis_cluster.url, server_urls[1])
    settings.redis.cluster = True
    settings.redis.stream_partitions = CLUSTER_PARTITIONS
    settings.redis.key_prefix = CLUSTER_PREFIX
    # The rate-limit counters live in the cluster too.
    settings.server.rate_limit_per_token_per_minute = 1000
    keys = KeyBuilder(CLUSTER_PREFIX, CLUSTER_PARTITIONS, cluster=True)

    runtime = await open_runtime(settings, embedder=embedder)
    app = create_app(runtime=runtime)
    attach_runtime(app, runtime)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {service_token()}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers
        ) as client:
            for user, texts in CLUSTER_TURNS.items():
                response = await post_turns(
                    client,
                    "week",
                    user,
                    [turn(text, turn_id=f"{user}-{n}") for n, text in enumerate(texts)],
                )
                assert response.status_code == 202, response.text
            window = (
                await client.get("/v1/sessions/week/turns", params={"user_id": "anna"})
            ).json()
            before = (await runtime.stream.stats()).length
            stored_keys = redis_cluster.keys_per_node()

            # Two workers split the partitions, as WORKER_PARTITIONS would.
            halves = [list(range(3)), list(range(3, CLUSTER_PARTITIONS))]
            workers = [
                PromotionWorker(
                    runtime.stream, runtime.long_term, runtime.embedder, settings.worker,
                    f"cluster-worker-{number}", partitions=half,
                )
                for number, half in enumerate(halves)
            ]  # fmt: skip
            after = await _run_until_drained(runtime, workers)
            promoted = await _count_promoted(server_urls[1], list(CLUSTER_TURNS))

            semantic = (
                await client.post(
                    "/v1/memories/search",
                    json={"user_id": "bram", "query": "Which ferry did I book?", "limit": 1},
                )
            ).json()["hits"]
            keyword = (
                await client.post(
                    "/v1/memories/search",
                    json={"user_id": "carmen", "query": "القهوة", "mode": "keyword"},
                )
            ).json()["hits"]
            context = await client.post(
                "/v1/context",
                json={"user_id": "elif", "session_id": "week", "query": "what is my cat called"},
            )
            metrics = (await client.get("/metrics")).text
            ready = await client.get("/ready")
            deleted = await client.delete("/v1/sessions/week", params={"user_id": "dev"})
            erased = await client.delete("/v1/users/femke")
            left_after_erasure = redis_cluster.keys_per_node()
    finally:
        await runtime.close()

    assert [item["content"] for item in window["turns"]] == CLUSTER_TURNS["anna"]
    assert before == sum(len(texts) for texts in CLUSTER_TURNS.values())
    _assert_partitioned_layout(redis_cluster, keys, stored_keys)
    assert after.length == 0
    assert after.pending == 0
    assert promoted == before
    assert semantic[0]["content"] == CLUSTER_TURNS["bram"][0]
    assert [hit["content"] for hit in keyword] == [CLUSTER_TURNS["carmen"][0]]
    assert context.status_code == 200
    assert "Pixel" in context.text
    assert "engram_stream_length 0.0" in metrics
    assert ready.status_code == 200
    assert deleted.status_code in (200, 204)
    assert erased.status_code in (200, 202, 204)
    remaining = [key for node_keys in left_after_erasure.values() for key in node_keys]
    assert not [key for key in remaining if "|femke" in key]
    assert not [key for key in remaining if "|dev:session:week" in key]


def _assert_partitioned_layout(
    cluster: ClusterSetup, keys: KeyBuilder, stored_keys: dict[int, list[str]]
) -> None:
    # The partitions are shared equally by the three primaries, and the six users
    # landed on all of them.
    owners = [cluster.owner_of(keys.stream(partition)) for partition in range(CLUSTER_PARTITIONS)]
    assert sorted(owners.count(port) for port in cluster.ports) == [2, 2, 2]
    used = {keys.partition_of("default", user) for user in CLUSTER_TURNS}
    assert {owners[partition] for partition in used} == set(cluster.ports)
    # Each partition's stream sits on the node that serves its hash tag, next to its users.
    for partition in used:
        node = cluster.owner_of(keys.stream(partition))
        assert keys.stream(partition) in stored_keys[node]
    for user in CLUSTER_TURNS:
        session = keys.session("default", user, "week")
        slots = {
            key_slot(key.encode())
            for key in (
                session.window,
                session.turns,
                session.meta,
                session.user_sessions,
                session.stream,
            )
        }
        assert len(slots) == 1


async def _run_until_drained(
    runtime: Runtime, workers: list[PromotionWorker], timeout_s: float = 60
) -> StreamStats:
    """Run the workers' loops until every stream is empty, then stop them."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]

    async def drained() -> bool:
        stats = await runtime.stream.stats()
        return stats.length == 0 and stats.pending == 0

    try:
        await wait_until(drained, timeout_s)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return await runtime.stream.stats()


async def _count_promoted(database_url: str, users: list[str]) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as connection:
        cursor = await connection.execute(
            "SELECT count(*) FROM memories WHERE kind = 'turn' AND user_id = ANY(%s)", (users,)
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


@needs_redis_binaries
async def test_cluster_outage_shows_in_ready_not_metrics(
    redis_cluster: ClusterSetup, server_urls: tuple[str, str], embedder: LocalEmbedder
) -> None:
    settings = make_settings(redis_cluster.url, server_urls[1])
    settings.redis.cluster = True
    settings.redis.stream_partitions = 3
    settings.redis.socket_timeout_s = 2.0
    runtime = await open_runtime(settings, embedder=embedder)
    app = create_app(runtime=runtime)
    attach_runtime(app, runtime)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            before = await client.get("/ready")
            redis_cluster.processes[2].terminate()
            redis_cluster.processes[2].wait(timeout=10)

            async def cluster_failed() -> bool:
                return (await client.get("/ready")).status_code == 503

            await wait_until(cluster_failed, timeout_s=30)
            ready = (await client.get("/ready")).json()
            metrics = await client.get("/metrics")
    finally:
        await runtime.close()

    assert before.status_code == 200
    assert ready["checks"]["redis"].startswith("unavailable")
    assert metrics.status_code == 200
    assert "engram_http_requests_total" in metrics.text


@needs_redis_binaries
async def test_wrong_redis_topology_is_named(
    redis_cluster: ClusterSetup,
    server_urls: tuple[str, str],
    embedder: LocalEmbedder,
    plain_redis: int,
) -> None:
    not_cluster = make_settings(redis_cluster.url, server_urls[1])
    plain = make_settings(f"redis://127.0.0.1:{plain_redis}/0", server_urls[1])
    plain.redis.cluster = True

    with pytest.raises(ConfigurationError, match="set REDIS_CLUSTER=true"):
        await open_runtime(not_cluster, embedder=embedder)
    with pytest.raises(ConfigurationError, match="does not reach a cluster node"):
        await open_runtime(plain, embedder=embedder)


async def test_layout_mismatch_stops_start_up(
    server_urls: tuple[str, str], embedder: LocalEmbedder
) -> None:
    first = make_settings(*server_urls)
    first.redis.key_prefix = "engram-layout"
    first.redis.stream_partitions = 4
    second = make_settings(*server_urls)
    second.redis.key_prefix = "engram-layout"
    second.redis.stream_partitions = 2

    runtime = await open_runtime(first, embedder=embedder)
    try:
        with pytest.raises(ConfigurationError, match="set the same REDIS_STREAM_PARTITIONS"):
            await open_runtime(second, embedder=embedder)
        stored = await runtime.redis.get("engram-layout:layout")
    finally:
        keys = [key async for key in runtime.redis.scan_iter(match="engram-layout:*")]
        await runtime.redis.delete(*keys)
        await runtime.close()

    assert stored == b'{"partitions": 4, "partitioned": true}'


async def test_workers_split_partitioned_streams_on_one_redis(
    server_urls: tuple[str, str], embedder: LocalEmbedder
) -> None:
    settings = make_settings(*server_urls)
    settings.redis.stream_partitions = 4
    settings.redis.key_prefix = "engram-partitioned"
    users = [f"part-{number}" for number in range(24)]
    runtime = await open_runtime(settings, embedder=embedder)
    app = create_app(runtime=runtime)
    attach_runtime(app, runtime)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {service_token()}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers
        ) as client:
            for user in users:
                texts = [f"{user} likes tulips.", f"{user} cycles to work."]
                response = await post_turns(client, "daily", user, [turn(text) for text in texts])
                assert response.status_code == 202
        per_partition = [
            int(await runtime.redis.xlen(runtime.stream._keys.stream(number)))  # noqa: SLF001
            for number in range(4)
        ]

        workers = []
        for owned in ("0-1", "2-3"):
            settings.worker.partitions = owned
            workers.append(runtime.new_worker(f"owner-of-{owned}"))
        stats = await _run_until_drained(runtime, workers)
        consumers = {
            number: [
                entry["name"].decode()
                for entry in await runtime.redis.xinfo_consumers(
                    runtime.stream._keys.stream(number),  # noqa: SLF001
                    "promotion",
                )
            ]
            for number in range(4)
        }
        promoted = await _count_promoted(server_urls[1], users)
    finally:
        keys = [key async for key in runtime.redis.scan_iter(match="engram-partitioned:*")]
        if keys:
            await runtime.redis.delete(*keys)
        await runtime.close()

    assert sum(per_partition) == 2 * len(users)
    assert all(per_partition), per_partition  # 24 users fill all four partitions
    assert (stats.length, stats.pending) == (0, 0)
    assert promoted == 2 * len(users)
    assert [workers[0].partitions, workers[1].partitions] == [[0, 1], [2, 3]]
    assert consumers == {
        0: ["owner-of-0-1"],
        1: ["owner-of-0-1"],
        2: ["owner-of-2-3"],
        3: ["owner-of-2-3"],
    }


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
