"""Search and context latency at 10k, 100k and 1M memories, and HNSW fidelity.

The memories are synthetic and labelled as such: chat-like sentences from a
Zipf-distributed vocabulary of made-up words, and unit vectors drawn around
1,000 random centres (so neighbourhoods exist, as in real embeddings). They
are spread evenly over 1,000 users of one tenant and bulk-loaded with COPY
into the ``memories`` table that the service's migrations create. Before
each load the HNSW and full-text indexes are dropped, and afterwards they
are rebuilt with the migrations' definitions.

For each scale:

- ``POST /v1/memories/search`` per ranking mode and ``POST /v1/context``, end
  to end at concurrency 1, with the service's default settings. Every user
  here has at most ``MEMORY_SEARCH_EXACT_MAX_ROWS`` (10,000) memories, so
  vector search is an exact scan over the user's rows.
- The same semantic search with ``MEMORY_SEARCH_EXACT_MAX_ROWS=0``, which
  forces the filtered HNSW index path.
- Fidelity: the share of the exact top 10 that the index path returns, for
  query vectors drawn from the same distribution as the stored ones.

    python -m bench.search_scale --scales 10000 100000 1000000 --queries 300
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

from bench.common import (
    DEFAULT_REDIS_URL,
    TENANT,
    ServiceConfig,
    ServiceProcesses,
    ensure_database,
    latency_summary,
    open_session,
    recorded,
    service_token,
    versions,
    write_result,
)

if TYPE_CHECKING:
    import aiohttp

DEFAULT_DATABASE_URL = os.environ.get(
    "ENGRAM_BENCH_SCALE_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/engram_bench_scale"
)
USERS = 1000
CENTRES = 1000
DIMENSION = 384
VOCABULARY = 5000
NOISE = 0.35
MODES = ("semantic", "keyword", "hybrid")
COLUMNS = (
    "id, tenant_id, user_id, session_id, kind, role, content, content_hash, turn_id, "
    "embedding, embedding_model, metadata, occurred_at"
)
COLUMN_TYPES = [
    *("uuid", "text", "text", "text", "text", "text", "text", "text", "text"),
    *("vector", "text", "jsonb", "timestamptz"),
]
# The index definitions of the migrations (0001 and 0003), with the default parameters.
INDEXES = {
    "memories_embedding_hnsw": "CREATE INDEX memories_embedding_hnsw ON memories "
    "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)",
    "memories_search_tsv": "CREATE INDEX memories_search_tsv ON memories USING gin (search_tsv)",
}
BUILD_MEMORY = "4GB"


class Corpus:
    """Deterministic synthetic memories: text, vector, user and time for each row number."""

    def __init__(self, seed: int = 11) -> None:
        generator = np.random.default_rng(seed)
        syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "an", "el", "or"]
        words: set[str] = set()
        while len(words) < VOCABULARY:
            count = int(generator.integers(2, 5))
            words.add("".join(generator.choice(syllables, count)))
        self.words = np.array(sorted(words))
        ranks = np.arange(1, VOCABULARY + 1)
        self.word_weights = (1 / ranks) / (1 / ranks).sum()
        centres = generator.standard_normal((CENTRES, DIMENSION)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        self.seed = seed

    def vectors(self, generator: np.random.Generator, count: int) -> np.ndarray:
        picks = generator.integers(0, CENTRES, count)
        noise = generator.standard_normal((count, DIMENSION)).astype(np.float32)
        vectors = self.centres[picks] + NOISE * noise / np.sqrt(DIMENSION) * 4
        result: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return result

    def sentence(self, generator: np.random.Generator) -> str:
        length = int(generator.integers(6, 30))
        return " ".join(generator.choice(self.words, length, p=self.word_weights))

    def rows(self, start: int, stop: int) -> Any:
        """Yield COPY rows for row numbers ``start`` to ``stop`` (exclusive)."""
        generator = np.random.default_rng((self.seed, start))
        base = datetime(2026, 1, 1, tzinfo=UTC)
        chunk = 10_000
        for first in range(start, stop, chunk):
            count = min(chunk, stop - first)
            vectors = self.vectors(generator, count)
            for offset in range(count):
                number = first + offset
                content = self.sentence(generator)
                user = f"user-{number % USERS}"
                turn_id = f"t{number}"
                yield (
                    uuid.UUID(int=number + 1),
                    TENANT,
                    user,
                    f"session-{number // (USERS * 20)}",
                    "turn",
                    "user" if number % 2 == 0 else "assistant",
                    content,
                    hashlib.sha256(content.encode()).hexdigest(),
                    turn_id,
                    vectors[offset],
                    "all-MiniLM-L6-v2",
                    Jsonb({"synthetic": True}),
                    base + timedelta(seconds=number),
                )


def stored_rows(connection: psycopg.Connection[Any]) -> int:
    row = connection.execute("SELECT count(*) FROM memories").fetchone()
    return int(row[0]) if row else 0


def _indexes_present(connection: psycopg.Connection[Any]) -> bool:
    row = connection.execute(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'memories' AND indexname = ANY(%s)",
        (list(INDEXES),),
    ).fetchone()
    return bool(row and row[0] == len(INDEXES))


def load(database_url: str, corpus: Corpus, target: int) -> dict[str, float]:
    """Bring the table to ``target`` synthetic rows; return load and index build times."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        register_vector(connection)
        present = stored_rows(connection)
        if present == target and _indexes_present(connection):
            return {"rows_added": 0, "copy_s": 0.0, "index_build_s": 0.0}
        if present > target:
            connection.execute("TRUNCATE memories")
            present = 0
        for name in INDEXES:
            connection.execute(f"DROP INDEX IF EXISTS {name}")
        started = time.monotonic()
        with connection.cursor() as cursor:
            statement = f"COPY memories ({COLUMNS}) FROM STDIN (FORMAT BINARY)"
            with cursor.copy(statement) as copy:
                copy.set_types(COLUMN_TYPES)
                for row in corpus.rows(present, target):
                    copy.write_row(row)
        copied = time.monotonic()
        connection.execute(f"SET maintenance_work_mem = '{BUILD_MEMORY}'")
        connection.execute("SET max_parallel_maintenance_workers = 2")
        for statement in INDEXES.values():
            connection.execute(statement)
        connection.execute("ANALYZE memories")
        indexed = time.monotonic()
    return {
        "rows_added": target - present,
        "copy_s": round(copied - started, 1),
        "index_build_s": round(indexed - copied, 1),
    }


async def timed_post(
    session: aiohttp.ClientSession, path: str, body: dict[str, Any], into: list[float]
) -> None:
    started = time.perf_counter()
    async with session.post(path, json=body) as response:
        await response.read()
    into.append((time.perf_counter() - started) * 1000)
    response.raise_for_status()


def query_bodies(corpus: Corpus, count: int) -> list[dict[str, Any]]:
    generator = np.random.default_rng(99)
    bodies = []
    for _ in range(count):
        words = generator.choice(corpus.words[:2000], int(generator.integers(3, 8)))
        user = f"user-{int(generator.integers(0, USERS))}"
        bodies.append({"user_id": user, "query": " ".join(words)})
    return bodies


async def measure_api(
    url: str, token: str, corpus: Corpus, queries: int, modes: tuple[str, ...]
) -> Any:
    """Time each search mode and context on the same queries, interleaved per query.

    Interleaving spreads any load from other processes evenly over the modes.
    """
    bodies = query_bodies(corpus, queries)
    latencies: dict[str, list[float]] = {f"search_{mode}": [] for mode in modes}
    latencies["context"] = []
    async with open_session(url, token, connections=1) as client:
        for body in bodies[:20]:  # warm-up
            await timed_post(client, "/v1/memories/search", body, [])
        for body in bodies:
            for mode in modes:
                search = {**body, "mode": mode, "limit": 10}
                await timed_post(client, "/v1/memories/search", search, latencies[f"search_{mode}"])
            context = {**body, "token_budget": 1000}
            await timed_post(client, "/v1/context", context, latencies["context"])
    return {name: latency_summary(values) for name, values in latencies.items()}


async def fidelity(database_url: str, corpus: Corpus, queries: int) -> dict[str, Any]:
    """Share of the exact top 10 that the filtered HNSW path returns, per user query."""
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    from app.settings import to_sqlalchemy_url  # noqa: PLC0415
    from retrieval.search import MemorySearch, SearchFilters  # noqa: PLC0415

    engine = create_async_engine(to_sqlalchemy_url(database_url))
    index = MemorySearch(engine, ef_search=100, text_search_config="english", exact_max_rows=0)
    exact = MemorySearch(engine, ef_search=100, text_search_config="english", exact_max_rows=10**9)
    generator = np.random.default_rng(5)
    vectors = corpus.vectors(generator, queries)
    overlaps: list[float] = []
    index_ms: list[float] = []
    exact_ms: list[float] = []
    short = 0
    try:
        for number, vector in enumerate(vectors):
            filters = SearchFilters(tenant_id=TENANT, user_id=f"user-{number % USERS}")
            started = time.perf_counter()
            approximate = await index.candidates(filters, "semantic", "", vector.tolist(), 10)
            index_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            truth = await exact.candidates(filters, "semantic", "", vector.tolist(), 10)
            exact_ms.append((time.perf_counter() - started) * 1000)
            top = {candidate.id for candidate in truth[:10]}
            found = {candidate.id for candidate in approximate[:10]}
            short += len(approximate) < len(truth)
            overlaps.append(len(top & found) / max(len(top), 1))
    finally:
        await engine.dispose()
    unfiltered = await asyncio.to_thread(
        unfiltered_recall, database_url, vectors[:UNFILTERED_QUERIES]
    )
    return {
        "queries": queries,
        "filtered_plan": await asyncio.to_thread(filtered_plan, database_url, vectors[0]),
        "unfiltered": unfiltered,
        "recall_at_10": round(float(np.mean(overlaps)), 4),
        "min_recall_at_10": round(float(np.min(overlaps)), 2),
        "index_path_short_results": short,
        "index_path_database": latency_summary(index_ms),
        "exact_database": latency_summary(exact_ms),
    }


UNFILTERED_QUERIES = 30


def unfiltered_recall(database_url: str, vectors: np.ndarray) -> dict[str, Any]:
    """Recall@10 of the HNSW index over the whole table, against an exact scan.

    Per-user searches rarely reach the index (see ``filtered_plan``), so this
    measures the index itself: the same top-10 query with and without it.
    """
    query = "SELECT id FROM memories ORDER BY embedding <=> %s LIMIT 10"
    overlaps: list[float] = []
    index_ms: list[float] = []
    exact_ms: list[float] = []
    with psycopg.connect(database_url) as connection:
        register_vector(connection)
        connection.execute("SET hnsw.ef_search = 100")
        for vector in vectors:
            started = time.perf_counter()
            approximate = {row[0] for row in connection.execute(query, (vector,))}
            index_ms.append((time.perf_counter() - started) * 1000)
            connection.execute("SET LOCAL enable_indexscan = off")
            started = time.perf_counter()
            exact = {row[0] for row in connection.execute(query, (vector,))}
            exact_ms.append((time.perf_counter() - started) * 1000)
            connection.rollback()
            connection.execute("SET hnsw.ef_search = 100")
            overlaps.append(len(approximate & exact) / 10)
    return {
        "queries": len(overlaps),
        "recall_at_10": round(float(np.mean(overlaps)), 4),
        "min_recall_at_10": round(float(np.min(overlaps)), 2),
        "hnsw": latency_summary(index_ms),
        "exact_scan": latency_summary(exact_ms),
    }


def filtered_plan(database_url: str, vector: np.ndarray) -> str:
    """Name the access path Postgres picks for one user's nearest-neighbour query."""
    with psycopg.connect(database_url) as connection:
        register_vector(connection)
        connection.execute("SET hnsw.ef_search = 100")
        rows = connection.execute(
            "EXPLAIN SELECT id FROM memories WHERE tenant_id = %s AND user_id = %s "
            "ORDER BY embedding <=> %s LIMIT 100",
            (TENANT, "user-1", vector),
        ).fetchall()
    plan = " ".join(str(row[0]) for row in rows)
    for index in ("memories_embedding_hnsw", "memories_scope_session", "memories_scope_time"):
        if index in plan:
            return index
    return "sequential scan"


def measure_scale(
    config: ServiceConfig, corpus: Corpus, scale: int, queries: int
) -> dict[str, Any]:
    result: dict[str, Any] = {"memories": scale, "memories_per_user": scale // USERS}
    result["load"] = load(config.database_url, corpus, scale)
    print(f"{scale}: loaded {result['load']}", flush=True)
    with ServiceProcesses(config) as service:
        service.start_api()
        result["default"] = asyncio.run(
            measure_api(service.url, service_token(), corpus, queries, MODES)
        )
    print(f"{scale}: default {result['default']}", flush=True)
    forced = ServiceConfig(
        redis_url=config.redis_url,
        database_url=config.database_url,
        env={**config.env, "MEMORY_SEARCH_EXACT_MAX_ROWS": "0"},
    )
    with ServiceProcesses(forced) as service:
        service.start_api()
        result["index_path"] = asyncio.run(
            measure_api(service.url, service_token(), corpus, queries, ("semantic", "hybrid"))
        )
    result["fidelity"] = asyncio.run(fidelity(config.database_url, corpus, min(queries, 200)))
    print(f"{scale}: index path {result['index_path']} fidelity {result['fidelity']}", flush=True)
    return result


def prepare_schema(config: ServiceConfig) -> None:
    """Create the scale database and let the service migrate its schema."""
    ensure_database(config.database_url)
    with ServiceProcesses(config) as service:
        service.start_api()


def run(config: ServiceConfig, scales: list[int], queries: int) -> dict[str, Any]:
    prepare_schema(config)
    result: dict[str, Any] = {
        "settings": {
            "users": USERS,
            "queries_per_measurement": queries,
            "vectors": f"synthetic: {CENTRES} random unit centres plus Gaussian noise, "
            f"{DIMENSION} dimensions, normalised",
            "texts": f"synthetic: 6-29 words from {VOCABULARY} made-up words, Zipf-distributed",
            "index": "HNSW m=16, ef_construction=64, hnsw.ef_search=100 (raised to the "
            "candidate count), iterative scan where pgvector supports it",
        },
        "versions": versions(config.database_url, config.redis_url),
    }
    corpus = Corpus()
    with recorded("search_scale", result):
        result["scales"] = [measure_scale(config, corpus, scale, queries) for scale in scales]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=300, help="Requests per measurement.")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    arguments = parser.parse_args()
    config = ServiceConfig(redis_url=arguments.redis_url, database_url=arguments.database_url)
    result = run(config, sorted(arguments.scales), arguments.queries)
    print(write_result("search_scale", result))


if __name__ == "__main__":
    main()
