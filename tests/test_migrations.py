"""Schema migrations upgrade a database that holds data, and the old code's writes still work."""

from __future__ import annotations

import json
import os
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import structlog
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import migrate
from app.errors import ConfigurationError
from app.main import attach_runtime, create_app
from app.runtime import open_runtime
from app.settings import DatabaseSettings, to_sqlalchemy_url
from retrieval.search import MemorySearch, SearchFilters
from tests.conftest import make_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Connection

    from embeddings.local import LocalEmbedder

DIMENSION = 384
# The revision before facts, pinning and history; rows written by it must survive the upgrade.
PREVIOUS = "0003"


@pytest.fixture
def scratch_database(server_urls: tuple[str, str]) -> Iterator[str]:
    """An empty database of its own on the test Postgres server; dropped afterwards."""
    parts = urlsplit(server_urls[1])
    name = f"engram_upgrade_{os.getpid()}"
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(connection: Connection, target: str, downgrade: bool = False) -> None:
    config = migrate.alembic_config(connection)
    config.attributes["embedding_dimension"] = DIMENSION
    if downgrade:
        command.downgrade(config, target)
    else:
        command.upgrade(config, target)


# The INSERT of a promoted turn as the code of the previous revision wrote it.
OLD_INSERT = text(
    """
    INSERT INTO memories (id, tenant_id, user_id, session_id, kind, role, content, content_hash,
                          turn_id, embedding, embedding_model, metadata, occurred_at)
    VALUES (:id, 'default', 'old-user', 's1', 'turn', 'user', :content, 'hash', :turn_id,
            CAST(:embedding AS vector), 'all-MiniLM-L6-v2', '{"source": "v1"}', now())
    """
)


async def test_upgrade_keeps_rows_of_the_previous_schema(
    scratch_database: str, embedder: LocalEmbedder
) -> None:
    engine = create_async_engine(to_sqlalchemy_url(scratch_database))
    vector = embedder.embed(["Mijn fiets is gestolen bij het station 🚲"])[0]
    before_id = uuid.uuid4()
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate, PREVIOUS)
            await connection.execute(
                OLD_INSERT,
                {
                    "id": before_id,
                    "content": "Mijn fiets is gestolen bij het station 🚲",
                    "turn_id": "t1",
                    "embedding": json.dumps(vector),
                },
            )
        assert await migrate.current_revision(engine) == PREVIOUS

        await migrate.upgrade(engine, DatabaseSettings(url=scratch_database), DIMENSION)

        assert await migrate.current_revision(engine) == migrate.head_revision()
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT content, metadata, pinned, valid_to, extraction, "
                        "source_turn_ids FROM memories WHERE id = :id"
                    ),
                    {"id": before_id},
                )
            ).one()
            history = await connection.scalar(text("SELECT count(*) FROM memory_history"))
        assert row.content == "Mijn fiets is gestolen bij het station 🚲"
        assert row.metadata == {"source": "v1"}
        assert (row.pinned, row.valid_to, row.extraction, row.source_turn_ids) == (
            False,
            None,
            None,
            [],
        )
        assert history == 0

        # Code of the previous revision still writes to the new schema (expand before contract).
        after_id = uuid.uuid4()
        async with engine.begin() as connection:
            await connection.execute(
                OLD_INSERT,
                {
                    "id": after_id,
                    "content": "Written by an old process during the rollout.",
                    "turn_id": "t2",
                    "embedding": json.dumps(embedder.embed(["rollout"])[0]),
                },
            )

        # Both rows are found by today's search.
        search = MemorySearch(engine, ef_search=40, text_search_config="english")
        found = await search.candidates(
            SearchFilters(tenant_id="default", user_id="old-user"),
            "hybrid",
            "fiets gestolen",
            embedder.embed(["fiets gestolen"])[0],
            10,
        )
        assert {candidate.id for candidate in found} == {before_id, after_id}

        # The migration can be rolled back and applied again without losing the rows.
        async with engine.begin() as connection:
            await connection.run_sync(_migrate, PREVIOUS, True)
        assert await migrate.current_revision(engine) == PREVIOUS
        await migrate.upgrade(engine, DatabaseSettings(url=scratch_database), DIMENSION)
        async with engine.connect() as connection:
            count: Any = await connection.scalar(text("SELECT count(*) FROM memories"))
        assert count == 2
    finally:
        await engine.dispose()


async def test_a_schema_from_a_newer_release_is_accepted(
    scratch_database: str, server_urls: tuple[str, str], embedder: LocalEmbedder
) -> None:
    engine = create_async_engine(to_sqlalchemy_url(scratch_database))
    try:
        await migrate.upgrade(engine, DatabaseSettings(url=scratch_database), DIMENSION)
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    finally:
        await engine.dispose()
    assert migrate.is_newer("0099")
    assert not migrate.is_newer(PREVIOUS)
    assert not migrate.is_newer(None)

    settings = make_settings(server_urls[0], scratch_database)
    with structlog.testing.capture_logs() as logs:
        runtime = await open_runtime(settings, embedder=embedder)
    try:
        app = create_app(runtime=runtime)
        attach_runtime(app, runtime)
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            ready = await client.get("/ready")
    finally:
        await runtime.close()

    assert ready.status_code == 200
    assert ready.json()["checks"]["migrations"] == "ok"
    newer = [entry for entry in logs if entry["event"] == "runtime.schema_newer"]
    assert [entry["schema_revision"] for entry in newer] == ["0099"]


async def test_an_older_schema_without_auto_migrate_stops_start_up(
    scratch_database: str, server_urls: tuple[str, str], embedder: LocalEmbedder
) -> None:
    engine = create_async_engine(to_sqlalchemy_url(scratch_database))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate, PREVIOUS)
    finally:
        await engine.dispose()
    settings = make_settings(server_urls[0], scratch_database)
    settings.database.auto_migrate = False

    with pytest.raises(ConfigurationError, match=f"at revision {PREVIOUS}"):
        await open_runtime(settings, embedder=embedder)
