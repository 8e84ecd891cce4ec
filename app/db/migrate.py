"""Apply and inspect schema migrations (Alembic) on the service's own engine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.settings import DatabaseSettings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Any constant works; it keeps two processes that start together from migrating at once.
_MIGRATION_LOCK_ID = 0x656E6772616D


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def is_newer(revision: str | None) -> bool:
    """Whether ``revision`` comes from a newer release: it is set but unknown to this code.

    Migrations only add to the schema (expand), and removals wait for a
    later release (contract), so this release runs correctly on a newer
    schema. That lets old and new processes overlap during a rolling deploy.
    """
    if revision is None:
        return False
    known = {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }
    return revision not in known


async def current_revision(engine: AsyncEngine) -> str | None:
    """Return the revision the database is at; None before the first migration."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


async def upgrade(engine: AsyncEngine, settings: DatabaseSettings, dimension: int) -> None:
    """Bring the schema to the newest revision, holding an advisory lock while doing so."""

    def run(connection: Connection) -> None:
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        config = alembic_config(connection)
        config.attributes["embedding_dimension"] = dimension
        config.attributes["hnsw_m"] = settings.hnsw_m
        config.attributes["hnsw_ef_construction"] = settings.hnsw_ef_construction
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(run)
