"""Promotion: turns per second from accepted to searchable, against the model alone.

The same texts are embedded first by the model alone in this process (batch
sizes 1, 16 and the worker's batch size), then posted through the API while
one ``engram worker`` process promotes them. The ratio of the two rates is
what the pipeline (stream, worker, upsert, acknowledgement) costs on top of
the embedding itself. Resident memory of the API and worker processes is
read at the end, with the model loaded in both.

    python -m bench.promotion --turns 3000 [--locomo path/to/locomo10.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    ServiceConfig,
    ServiceProcesses,
    ensure_database,
    locomo_texts,
    open_session,
    process_rss_mib,
    recorded,
    reset_state,
    service_token,
    turn_batch,
    versions,
    wait_for_count,
    write_result,
)

WORKER_BATCH_SIZE = 64
TURNS_PER_REQUEST = 20
SENDERS = 4
USERS = 50


def embed_alone(texts: list[str], batch_sizes: list[int]) -> dict[str, float]:
    """Texts per second of the local model at each batch size, on ``texts``."""
    from embeddings.local import LocalEmbedder  # noqa: PLC0415  (loads torch)

    rates: dict[str, float] = {}
    for batch_size in batch_sizes:
        embedder = LocalEmbedder("all-MiniLM-L6-v2", batch_size=batch_size, device="cpu")
        embedder.embed(texts[:32])  # warm-up
        started = time.perf_counter()
        for start in range(0, len(texts), batch_size):
            embedder.embed(texts[start : start + batch_size])
        rates[f"batch_{batch_size}"] = round(len(texts) / (time.perf_counter() - started), 1)
        print(f"model alone, batch {batch_size}: {rates[f'batch_{batch_size}']} texts/s")
    return rates


async def post_all(url: str, token: str, texts: list[str], run_id: str) -> float:
    """Post every text as a turn; return how long accepting them took, in seconds."""
    requests = (len(texts) + TURNS_PER_REQUEST - 1) // TURNS_PER_REQUEST
    counter = itertools.count()

    async def sender(session: aiohttp.ClientSession) -> None:
        while (number := next(counter)) < requests:
            first = number * TURNS_PER_REQUEST
            chunk = texts[first : first + TURNS_PER_REQUEST]
            async with session.post(
                f"/v1/sessions/{run_id}/turns",
                json=turn_batch(f"user-{number % USERS}", chunk, first),
            ) as response:
                await response.read()
                response.raise_for_status()

    started = time.perf_counter()
    async with open_session(url, token, connections=SENDERS) as session:
        await asyncio.gather(*(sender(session) for _ in range(SENDERS)))
    return time.perf_counter() - started


async def promote(
    url: str, token: str, database_url: str, texts: list[str], timeout_s: float
) -> dict[str, Any]:
    """Post ``texts`` as turns and time until every one is stored in long-term memory."""
    started = time.monotonic()
    accept_s = await post_all(url, token, texts, f"promotion-{time.time_ns()}")
    finished = await wait_for_count(database_url, len(texts), timeout_s)
    elapsed = finished - started
    return {
        "turns": len(texts),
        "accept_s": round(accept_s, 2),
        "seconds_until_all_searchable": round(elapsed, 2),
        "turns_per_s_to_searchable": round(len(texts) / elapsed, 1),
    }


def run(config: ServiceConfig, turns: int, locomo: Path | None, timeout_s: float) -> dict[str, Any]:
    ensure_database(config.database_url)
    texts, source = locomo_texts(locomo, turns)
    result: dict[str, Any] = {
        "settings": {
            "turns": turns,
            "texts": source,
            "worker_batch_size": WORKER_BATCH_SIZE,
            "turns_per_request": TURNS_PER_REQUEST,
            "senders": SENDERS,
        },
        "versions": versions(config.database_url, config.redis_url),
    }
    config.env.setdefault("WORKER_BATCH_SIZE", str(WORKER_BATCH_SIZE))
    with recorded("promotion", result):
        result["model_alone_texts_per_s"] = embed_alone(texts, [1, 16, WORKER_BATCH_SIZE])
        with ServiceProcesses(config) as service:
            service.start_api()
            reset_state(config.redis_url, config.database_url)
            worker = service.start_worker()
            result["pipeline"] = asyncio.run(
                promote(service.url, service_token(), config.database_url, texts, timeout_s)
            )
            result["resident_mib"] = {
                "api": process_rss_mib(service.api_pid),
                "worker": process_rss_mib(worker.pid),
            }
    best = max(result["model_alone_texts_per_s"].values())
    same_batch = result["model_alone_texts_per_s"][f"batch_{WORKER_BATCH_SIZE}"]
    rate = result["pipeline"]["turns_per_s_to_searchable"]
    result["ratio_to_model_alone"] = {
        "best_batch_size": round(rate / best, 3),
        "worker_batch_size": round(rate / same_batch, 3),
    }
    print(result["pipeline"], result["ratio_to_model_alone"], result["resident_mib"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=3000, help="Turns to promote.")
    parser.add_argument("--locomo", type=Path, default=None, help="Use LoCoMo turn texts.")
    parser.add_argument("--timeout", type=float, default=1200, help="Wait limit, seconds.")
    arguments = parser.parse_args()
    result = run(ServiceConfig(), arguments.turns, arguments.locomo, arguments.timeout)
    print(write_result("promotion", result))


if __name__ == "__main__":
    main()
