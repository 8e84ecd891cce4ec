"""Open and close everything a process needs: servers, clients, model, stores.

The API and the standalone worker both start from ``open_runtime``. The app
factory hands the result to handlers through dependency injection, so tests
can build one runtime and share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException
from sqlalchemy.ext.asyncio import create_async_engine

from app.audit import AuditLog
from app.db import migrate
from app.embedded import EmbeddedServers
from app.errors import ConfigurationError
from app.facts import FactStore
from app.keys import KeyBuilder
from app.learning import Learner, LearningQueue
from app.llm import LLMGateway
from app.logging import get_logger
from app.longterm import LongTermStore
from app.retention import RetentionPolicy
from app.settings import to_sqlalchemy_url
from app.shortterm import ShortTermStore
from app.stream import TurnStream
from app.worker import PromotionWorker
from embeddings import Embedder, create_embedder
from prompts import load_prompts
from retrieval.search import MemorySearch
from retrieval.tokens import TiktokenCounter

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.redis_client import RedisClient
    from app.settings import RedisSettings, Settings
    from prompts import Prompt

log = get_logger("runtime")


@dataclass
class Runtime:
    """Connected clients and stores of one process."""

    settings: Settings
    redis: RedisClient
    engine: AsyncEngine
    embedder: Embedder
    short_term: ShortTermStore
    long_term: LongTermStore
    stream: TurnStream
    search: MemorySearch
    counter: TiktokenCounter
    prompts: dict[str, Prompt]
    embedded: EmbeddedServers | None
    audit: AuditLog
    facts: FactStore
    learning_queue: LearningQueue
    read_engine: AsyncEngine
    """The engine searches use: a read replica's (DATABASE_READ_URL), else ``engine``."""
    sentinel: Sentinel | None = None
    """The Sentinel client that finds the Redis primary, when REDIS_SENTINELS is set."""

    def new_worker(
        self,
        consumer: str | None = None,
        *,
        learn: bool = True,
        gateway: LLMGateway | None = None,
    ) -> PromotionWorker:
        """Build a promotion worker; with a learning model set, it also runs a learner.

        ``learn=False`` leaves the learner out (sessions are still queued), and
        ``gateway`` replaces the model client built from settings.
        """
        settings = self.settings
        memory = settings.memory
        retention = RetentionPolicy(memory.retention_days, dict(memory.retention_days_by_tenant))
        worker = PromotionWorker(
            self.stream,
            self.long_term,
            self.embedder,
            settings.worker,
            consumer,
            retention=retention,
            learning_queue=self.learning_queue,
            learns=lambda tenant_id: settings.strategy_for(tenant_id) != "verbatim",
            partitions=settings.worker.owned_partitions(settings.redis.stream_partitions),
        )
        if learn and settings.learning_model is not None:
            worker.learner = self.new_learner(worker.consumer, gateway)
        return worker

    def new_learner(self, consumer: str, gateway: LLMGateway | None = None) -> Learner:
        """Build a learner on the learning model (``LEARNING_MODEL`` or ``LLM_MODEL``)."""
        settings = self.settings
        if gateway is None:
            gateway = LLMGateway(settings.llm.model_copy(update={"model": settings.learning_model}))
        return Learner(
            settings,
            self.learning_queue,
            self.facts,
            self.engine,
            self.embedder,
            gateway,
            self.prompts,
            self.counter,
            consumer,
        )

    async def close(self) -> None:
        await _close_redis(self.redis, self.sentinel)
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
        if self.embedded is not None:
            await anyio.to_thread.run_sync(self.embedded.stop)
        log.info("runtime.closed")


def _resolve_urls(settings: Settings) -> tuple[str | None, str, EmbeddedServers | None]:
    """Return the Redis URL (None when Sentinel names the server) and the Postgres URL."""
    redis_url = settings.redis.url
    database_url = settings.database.url
    if not settings.embedded and database_url is not None:
        return redis_url, database_url, None

    embedded = EmbeddedServers(settings.server.data_dir.resolve())
    if redis_url is None and not settings.redis.sentinels:
        redis_url = embedded.start_redis()
    if database_url is None:
        database_url = embedded.start_postgres()
    return redis_url, database_url, embedded


async def open_runtime(settings: Settings, embedder: Embedder | None = None) -> Runtime:
    """Start or connect to Redis and Postgres, load the model, and migrate the schema."""
    prompts = load_prompts()
    counter = TiktokenCounter(settings.memory.tokenizer)
    redis_url, database_url, embedded = await anyio.to_thread.run_sync(_resolve_urls, settings)
    log.info(
        "runtime.starting",
        mode="external" if embedded is None else "embedded",
        embedding_model=settings.embeddings.model,
    )

    redis, sentinel = connect_redis(settings.redis, redis_url)
    engine = create_async_engine(
        to_sqlalchemy_url(database_url),
        pool_size=settings.database.pool_size,
        pool_pre_ping=True,
    )
    read_engine = engine
    if settings.database.read_url is not None:
        read_engine = create_async_engine(
            to_sqlalchemy_url(settings.database.read_url),
            pool_size=settings.database.pool_size,
            pool_pre_ping=True,
        )
        log.info("runtime.read_replica", searches="DATABASE_READ_URL")
    keys = KeyBuilder(
        settings.redis.key_prefix, settings.redis.stream_partitions, settings.redis.cluster
    )
    try:
        # Before the model loads, so a wrong Redis setting fails at once.
        await check_redis_layout(redis, keys)
        if embedder is None:
            embedder = await anyio.to_thread.run_sync(create_embedder, settings.embeddings)
        long_term = LongTermStore(engine, settings.memory.text_search_config)
        await _prepare_schema(engine, settings, embedder, long_term)
    except BaseException:
        await _close_redis(redis, sentinel)
        await engine.dispose()
        if read_engine is not engine:
            await read_engine.dispose()
        if embedded is not None:
            await anyio.to_thread.run_sync(embedded.stop)
        raise

    runtime = Runtime(
        settings=settings,
        redis=redis,
        engine=engine,
        embedder=embedder,
        short_term=ShortTermStore(
            redis, keys, settings.memory.session_ttl_s, settings.memory.window_max_turns
        ),
        long_term=long_term,
        stream=TurnStream(redis, keys),
        search=MemorySearch(
            read_engine,
            settings.database.hnsw_ef_search,
            settings.memory.text_search_config,
            settings.memory.search_exact_max_rows,
        ),
        counter=counter,
        prompts=prompts,
        embedded=embedded,
        audit=AuditLog(engine),
        facts=FactStore(engine, settings.memory.text_search_config),
        learning_queue=LearningQueue(
            redis,
            keys,
            settings.learning.debounce_s,
            settings.learning.batch_turns,
            settings.learning.lease_s,
        ),
        read_engine=read_engine,
        sentinel=sentinel,
    )
    await runtime.stream.ensure_group()
    log.info(
        "runtime.ready",
        dimension=embedder.dimension,
        learning_model=settings.learning_model,
        learning_strategy=settings.learning.strategy if settings.learning_model else "verbatim",
    )
    return runtime


def connect_redis(settings: RedisSettings, url: str | None) -> tuple[RedisClient, Sentinel | None]:
    """Connect to Redis at ``url``, to a cluster through it, or to the primary Sentinels name.

    Returns the client and, through Sentinel, the Sentinel client to close with it.

    Through Sentinel, each new connection asks the Sentinels for the current
    primary, so after a failover the client reconnects to the promoted replica.
    A cluster client learns the slot map from ``url``'s node and follows
    MOVED and ASK replies when slots move or a replica takes over.
    """
    options: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
        "health_check_interval": 30,
    }
    if settings.sentinels:
        password = settings.password.get_secret_value() if settings.password else None
        sentinel = Sentinel(
            settings.sentinel_addresses,
            sentinel_kwargs={"socket_timeout": settings.socket_timeout_s},
            password=password,
            db=settings.db,
            **options,
        )
        log.info(
            "runtime.redis_sentinel",
            sentinels=settings.sentinels,
            service=settings.sentinel_service,
        )
        primary: Redis = sentinel.master_for(settings.sentinel_service, redis_class=Redis)
        return primary, sentinel
    if url is None:
        raise ConfigurationError("set REDIS_URL or REDIS_SENTINELS")
    if settings.cluster:
        log.info("runtime.redis_cluster", partitions=settings.stream_partitions)
        cluster: RedisCluster = RedisCluster.from_url(
            url,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.socket_timeout_s,
        )
        return cluster, None
    return Redis.from_url(url, **options), None


async def check_redis_layout(redis: RedisClient, keys: KeyBuilder) -> None:
    """Check that the Redis topology and the key layout match this process's settings.

    The first process to start records the layout (partition count and
    whether keys are partitioned) under ``<prefix>:layout``. A process whose
    settings differ would read and write other keys than the rest, so it
    raises ConfigurationError instead of starting.
    """
    try:
        if isinstance(redis, RedisCluster):
            await redis.initialize()
            primaries = len(redis.get_primaries())
            if keys.partitions < primaries:
                log.warning(
                    "runtime.few_partitions",
                    partitions=keys.partitions,
                    primaries=primaries,
                    detail="some primaries hold no partition; set REDIS_STREAM_PARTITIONS to 4 "
                    "or more per primary (docs/scaling.md)",
                )
        else:
            info = await redis.info("cluster")
            if int(info.get("cluster_enabled", 0)):
                raise ConfigurationError(
                    "REDIS_URL names a node of a Redis Cluster; set REDIS_CLUSTER=true and "
                    "REDIS_STREAM_PARTITIONS (4 or more per primary, see docs/scaling.md)"
                )
    except RedisClusterException as error:
        raise ConfigurationError(
            f"REDIS_CLUSTER is true, but REDIS_URL does not reach a cluster node ({error}); "
            "unset REDIS_CLUSTER for a single Redis, or point REDIS_URL at a node of the cluster"
        ) from None

    expected = json.dumps({"partitions": keys.partitions, "partitioned": keys.partitioned})
    await redis.set(keys.layout, expected, nx=True)
    stored = await redis.get(keys.layout)
    found = stored.decode() if isinstance(stored, bytes) else str(stored)
    if found != expected:
        raise ConfigurationError(
            f"Redis holds keys laid out as {found}, but this process's settings expect {expected}; "
            "set the same REDIS_STREAM_PARTITIONS and REDIS_CLUSTER on every process. To change "
            f"the layout, drain the streams and delete the key {keys.layout} first "
            "(docs/scaling.md)"
        )


async def _close_redis(redis: RedisClient, sentinel: Sentinel | None) -> None:
    await redis.aclose()
    if sentinel is not None:
        for client in sentinel.sentinels:
            await client.aclose()


async def _prepare_schema(
    engine: AsyncEngine, settings: Settings, embedder: Embedder, long_term: LongTermStore
) -> None:
    current = await migrate.current_revision(engine)
    if settings.database.auto_migrate and not migrate.is_newer(current):
        await migrate.upgrade(engine, settings.database, embedder.dimension)
        current = await migrate.current_revision(engine)
    head = migrate.head_revision()
    if migrate.is_newer(current):
        log.warning(
            "runtime.schema_newer",
            schema_revision=current,
            code_revision=head,
            detail="a newer release migrated the database; this release keeps working on it",
        )
    elif current != head:
        raise ConfigurationError(
            f"the database schema is at revision {current}, the code needs {head}; "
            "run `engram migrate` or set DATABASE_AUTO_MIGRATE=true"
        )
    await long_term.check_embedding_space(embedder.model_name, embedder.dimension)
    await long_term.check_text_search_config()
