"""Ingest: accept latency and turns per second of ``POST /v1/sessions/{id}/turns``.

An aiohttp driver keeps ``concurrency`` requests in flight against one
API process on 127.0.0.1 until ``requests`` have been answered. No worker
runs during the measurement, so the two cores serve only the API, Redis,
Postgres (the audit log) and the driver itself.

    python -m bench.ingest --requests 4000 --concurrency 1 16 64
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any

import aiohttp

from bench.common import (
    REQUEST_ERRORS,
    CpuMeter,
    ServiceConfig,
    ServiceProcesses,
    ensure_database,
    latency_summary,
    open_session,
    recorded,
    reset_state,
    service_token,
    synthetic_texts,
    turn_batch,
    versions,
    write_result,
)

USERS = 100
HTTP_ACCEPTED = 202


async def drive_ingest(
    url: str,
    token: str,
    *,
    concurrency: int,
    requests: int,
    turns_per_request: int,
    texts: list[str],
    run_id: str,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Send ``requests`` turn batches with ``concurrency`` in flight; return latency and rate.

    With ``server_pid``, the CPU time the API process and this driver used is reported too.
    """
    counter = itertools.count()
    latencies_ms: list[float] = []
    errors: dict[str, int] = {}

    async def sender(session: aiohttp.ClientSession) -> None:
        while (number := next(counter)) < requests:
            user = f"user-{number % USERS}"
            first = number * turns_per_request
            chunk = [texts[(first + k) % len(texts)] for k in range(turns_per_request)]
            body = turn_batch(user, chunk, first)
            started = time.perf_counter()
            try:
                async with session.post(f"/v1/sessions/{run_id}/turns", json=body) as response:
                    await response.read()
            except REQUEST_ERRORS as error:
                errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                continue
            latencies_ms.append((time.perf_counter() - started) * 1000)
            if response.status != HTTP_ACCEPTED:
                key = str(response.status)
                errors[key] = errors.get(key, 0) + 1

    async with open_session(url, token, connections=concurrency) as session:
        # Open the connections before the clock starts.
        await asyncio.gather(*(_get_health(session) for _ in range(concurrency)))
        cpu = CpuMeter(server_pid)
        started = time.perf_counter()
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_used = cpu.used()

    accepted = len(latencies_ms) - sum(errors.values())
    return {
        "concurrency": concurrency,
        "turns_per_request": turns_per_request,
        "requests": requests,
        "errors": errors,
        "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(len(latencies_ms) / elapsed, 1),
        "turns_per_s": round(accepted * turns_per_request / elapsed, 1),
        "latency": latency_summary(latencies_ms),
        "cpu_s": cpu_used,
    }


async def _get_health(session: aiohttp.ClientSession) -> None:
    async with session.get("/health") as response:
        await response.read()


async def measure(
    url: str, server_pid: int, concurrencies: list[int], requests: int, batch_sizes: list[int]
) -> list[dict[str, Any]]:
    token = service_token()
    texts = synthetic_texts(2000)
    runs = []
    for turns_per_request in batch_sizes:
        for concurrency in concurrencies:
            run_id = f"ingest-c{concurrency}-b{turns_per_request}-{time.time_ns()}"
            runs.append(
                await drive_ingest(
                    url,
                    token,
                    concurrency=concurrency,
                    requests=requests,
                    turns_per_request=turns_per_request,
                    texts=texts,
                    run_id=run_id,
                    server_pid=server_pid,
                )
            )
            print(runs[-1], flush=True)
    return runs


def run(
    config: ServiceConfig, concurrencies: list[int], requests: int, batch_sizes: list[int]
) -> dict[str, Any]:
    ensure_database(config.database_url)
    result: dict[str, Any] = {
        "settings": {"requests": requests, "batch_sizes": batch_sizes, "users": USERS},
        "versions": versions(config.database_url, config.redis_url),
    }
    with recorded("ingest", result), ServiceProcesses(config) as service:
        service.start_api()
        reset_state(config.redis_url, config.database_url)
        result["runs"] = asyncio.run(
            measure(service.url, service.api_pid, concurrencies, requests, batch_sizes)
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="Requests per run.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--turns-per-request", type=int, nargs="+", default=[1, 10], help="Turns in one request."
    )
    parser.add_argument("--log-level", default="WARNING", help="ENGRAM_LOG_LEVEL of the service.")
    arguments = parser.parse_args()
    config = ServiceConfig(log_level=arguments.log_level)
    result = run(config, arguments.concurrency, arguments.requests, arguments.turns_per_request)
    print(write_result("ingest", result))


if __name__ == "__main__":
    main()
