"""Fault injection with real processes: every accepted turn ends in long-term memory once.

Each scenario starts its own Redis (``redis-server``, append-only file,
``appendfsync everysec``) and its own Postgres cluster (``initdb`` and
``pg_ctl`` of Postgres 15, with pgvector), both on loopback ports of their
own under a temporary folder, then an API process and worker processes. A
driver posts turns at a steady rate and keeps every turn id that got 202 Accepted.
Turns that got an error or no answer are posted again with the same ids
(the service reports a turn it already has as a duplicate). At the end the
``memories`` table must contain each accepted turn id exactly once.

Scenarios:

- ``worker-kill``: the worker process is killed with SIGKILL mid-batch,
  repeatedly, and a new one is started each time.
- ``postgres-outage``: Postgres is stopped for 30 s during ingest. The API
  must keep accepting turns and ``/ready`` must report the outage. The
  worker must retry with back-off.
- ``redis-crash``: Redis is killed with SIGKILL mid-ingest and started again
  on the same append-only file.

    python -m bench.faults [--scenario worker-kill postgres-outage redis-crash]

Postgres refuses to run as root, so as root the cluster runs as the
``postgres`` user (through ``runuser``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from app.keys import STREAM_GROUP, KeyBuilder
from bench.common import (
    REPO_ROOT,
    ServiceConfig,
    ServiceProcesses,
    free_port,
    machine_snapshot,
    open_client,
    service_token,
    synthetic_texts,
    turn_batch,
    write_result,
)

POSTGRES_BIN = Path(os.environ.get("ENGRAM_BENCH_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
HTTP_ACCEPTED = 202
TURNS_PER_REQUEST = 2
REQUEST_INTERVAL_S = 0.05
# Workers of the fault runs claim a dead consumer's events after this idle time.
CLAIM_IDLE_MS = 3000


def _as_postgres_user(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


class OwnRedis:
    """A redis-server of this benchmark, with an append-only file in its own folder."""

    def __init__(self, folder: Path, fsync: str = "everysec") -> None:
        self.folder = folder
        self.port = free_port()
        self.fsync = fsync
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
            *("--dir", str(self.folder), "--appendonly", "yes"),
            *("--appendfsync", self.fsync, "--save", ""),
        ]
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _wait_for(lambda: _redis_answers(self.port), 20, "redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class OwnPostgres:
    """A Postgres cluster of this benchmark, in its own folder and on its own port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/engram"

    def _run(self, *arguments: str) -> None:
        subprocess.run(_as_postgres_user(list(arguments)), check=True, capture_output=True)

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            str(POSTGRES_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"
        )
        self.start()
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as db:
            db.execute("CREATE DATABASE engram")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._run(
            str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.folder / "postgres.log"), "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


def _redis_answers(port: int) -> bool:
    import redis  # noqa: PLC0415

    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _wait_for(check: Any, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(message)


@dataclass
class Ledger:
    """What the driver sent and what the service accepted."""

    accepted: set[str] = field(default_factory=set)
    waiting: list[tuple[str, list[str], list[str]]] = field(default_factory=list)
    responses: dict[str, int] = field(default_factory=dict)
    accepted_during: dict[str, int] = field(default_factory=dict)
    phase: str = "before"

    def count(self, outcome: str) -> None:
        self.responses[outcome] = self.responses.get(outcome, 0) + 1


async def _post(
    client: httpx.AsyncClient, ledger: Ledger, user: str, ids: list[str], texts: list[str]
) -> bool:
    body = turn_batch(user, texts, 0)
    for item, turn_id in zip(body["turns"], ids, strict=True):
        item["turn_id"] = turn_id
    try:
        response = await client.post("/v1/sessions/faults/turns", json=body)
    except httpx.HTTPError as error:
        ledger.count(type(error).__name__)
        return False
    ledger.count(str(response.status_code))
    if response.status_code != HTTP_ACCEPTED:
        return False
    ledger.accepted.update(ids)
    ledger.accepted_during[ledger.phase] = ledger.accepted_during.get(ledger.phase, 0) + len(ids)
    return True


async def drive(url: str, ledger: Ledger, stop: asyncio.Event) -> None:
    """Post turns at a steady rate until ``stop``; then post every unaccepted batch again."""
    texts = synthetic_texts(500, seed=3)
    number = 0
    async with open_client(url, service_token(), timeout_s=10) as client:
        while not stop.is_set():
            user = f"user-{number % 20}"
            ids = [f"f{number}-{k}" for k in range(TURNS_PER_REQUEST)]
            chunk = [texts[(number + k) % len(texts)] for k in range(TURNS_PER_REQUEST)]
            if not await _post(client, ledger, user, ids, chunk):
                ledger.waiting.append((user, ids, chunk))
            number += 1
            await asyncio.sleep(REQUEST_INTERVAL_S)
        for _ in range(60):
            pending, ledger.waiting = ledger.waiting, []
            for user, ids, chunk in pending:
                if not await _post(client, ledger, user, ids, chunk):
                    ledger.waiting.append((user, ids, chunk))
            if not ledger.waiting:
                return
            await asyncio.sleep(1)


def stored_turns(database_url: str) -> tuple[int, set[str]]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        rows = connection.execute("SELECT turn_id FROM memories WHERE kind = 'turn'").fetchall()
    ids = [str(row[0]) for row in rows]
    return len(ids), set(ids)


async def wait_for_drain(database_url: str, expected: set[str], timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        _, found = await asyncio.to_thread(stored_turns, database_url)
        if expected <= found:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    return -1.0


def verdict(database_url: str, ledger: Ledger) -> dict[str, Any]:
    rows, stored = stored_turns(database_url)
    return {
        "accepted_turns": len(ledger.accepted),
        "stored_rows": rows,
        "lost": len(ledger.accepted - stored),
        "duplicated": rows - len(stored),
        "stored_but_never_accepted": len(stored - ledger.accepted),
        "never_accepted_after_retries": sum(len(ids) for _, ids, _ in ledger.waiting),
        "responses": ledger.responses,
        "accepted_by_phase": ledger.accepted_during,
    }


async def _ready(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.get("/ready")
        return {"status": response.status_code, **response.json()}


def pending_of(redis_url: str, consumer: str) -> int:
    """Events delivered to ``consumer`` and not acknowledged: its batch in flight."""
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(redis_url)
    try:
        for entry in client.xinfo_consumers(KeyBuilder("engram").stream(), STREAM_GROUP):
            if entry["name"].decode() == consumer:
                return int(entry["pending"])
        return 0
    finally:
        client.close()


async def worker_kill(service: ServiceProcesses, ledger: Ledger, kills: int) -> dict[str, Any]:
    """SIGKILL the worker every few seconds while it is promoting, and start a new one."""
    notes: dict[str, Any] = {"kills": 0, "events_in_flight_at_kill": []}
    generator = random.Random(1)
    for number in range(kills):
        ledger.phase = f"worker {number}"
        await asyncio.sleep(generator.uniform(3, 6))
        victim = service.workers[-1]
        consumer = f"fault-worker-{number}"
        victim.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait)
        in_flight = await asyncio.to_thread(pending_of, service.config.redis_url, consumer)
        notes["events_in_flight_at_kill"].append(in_flight)
        notes["kills"] += 1
        await asyncio.to_thread(service.start_worker, f"fault-worker-{number + 1}")
    ledger.phase = "after"
    await asyncio.sleep(3)
    return notes


async def postgres_outage(
    service: ServiceProcesses, ledger: Ledger, postgres: OwnPostgres, outage_s: float
) -> dict[str, Any]:
    await asyncio.sleep(5)
    ledger.phase = "outage"
    await asyncio.to_thread(postgres.stop, "immediate")
    await asyncio.sleep(2)
    ready_during = await _ready(service.url)
    await asyncio.sleep(outage_s - 2)
    await asyncio.to_thread(postgres.start)
    ledger.phase = "after"
    await asyncio.sleep(5)
    return {"outage_s": outage_s, "ready_during_outage": ready_during}


async def redis_crash(ledger: Ledger, redis_server: OwnRedis, down_s: float) -> dict[str, Any]:
    await asyncio.sleep(5)
    ledger.phase = "redis down"
    await asyncio.to_thread(redis_server.kill)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(redis_server.start)
    ledger.phase = "after"
    await asyncio.sleep(5)
    return {"down_s": down_s, "appendfsync": redis_server.fsync}


def worker_retries(log_dir: Path) -> int:
    return sum(
        path.read_text(errors="replace").count('"worker.retrying"')
        for path in log_dir.glob("fault-worker-*.log")
    )


async def run_scenario(name: str, folder: Path, outage_s: float, kills: int) -> dict[str, Any]:
    redis_server = OwnRedis(folder / "redis")
    postgres = OwnPostgres(folder / "postgres")
    redis_server.start()
    await asyncio.to_thread(postgres.init)
    log_dir = REPO_ROOT / "reports" / "bench" / "logs" / name
    config = ServiceConfig(
        redis_url=redis_server.url,
        database_url=postgres.url,
        log_level="INFO",
        env={
            "WORKER_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
            "WORKER_RETRY_MAX_S": "4",
            "WORKER_BATCH_SIZE": "32",
        },
        log_dir=log_dir,
    )
    result: dict[str, Any] = {"scenario": name, "machine_before": machine_snapshot()}
    try:
        with ServiceProcesses(config) as service:
            await asyncio.to_thread(service.start_api)
            await asyncio.to_thread(service.start_worker, "fault-worker-0")
            ledger = Ledger()
            stop = asyncio.Event()
            driver = asyncio.create_task(drive(service.url, ledger, stop))
            if name == "worker-kill":
                result["fault"] = await worker_kill(service, ledger, kills)
            elif name == "postgres-outage":
                result["fault"] = await postgres_outage(service, ledger, postgres, outage_s)
            else:
                result["fault"] = await redis_crash(ledger, redis_server, 3.0)
            stop.set()
            await driver
            result["drain_s"] = round(await wait_for_drain(postgres.url, ledger.accepted, 600), 1)
            result["ready_after"] = await _ready(service.url)
            result["worker_retry_log_lines"] = worker_retries(log_dir)
            result.update(verdict(postgres.url, ledger))
    finally:
        postgres.stop()
        redis_server.stop()
    result["machine_after"] = machine_snapshot()
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario",
        nargs="+",
        choices=["worker-kill", "postgres-outage", "redis-crash"],
        default=["worker-kill", "postgres-outage", "redis-crash"],
    )
    parser.add_argument("--outage", type=float, default=30.0, help="Postgres outage, seconds.")
    parser.add_argument("--kills", type=int, default=3, help="Worker kills in worker-kill.")
    arguments = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="engram-faults-") as folder:
        # The postgres user must reach its data folder inside.
        os.chmod(folder, 0o755)  # noqa: PTH101, S103
        for name in arguments.scenario:
            results.append(
                asyncio.run(
                    run_scenario(name, Path(folder) / name, arguments.outage, arguments.kills)
                )
            )
    print(write_result("faults", {"scenarios": results}))


if __name__ == "__main__":
    main()
