"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from app.db import migrate
from app.logging import get_logger

log = get_logger("health")


@get("/health", tags=["operations"], security=[{}])
async def health() -> dict[str, str]:
    """Return 200 while the process is up."""
    return {"status": "ok"}


@get("/ready", tags=["operations"], security=[{}])
async def ready(state: State) -> Response[dict[str, Any]]:
    """Return 200 when Redis and Postgres respond and the schema is current, else 503."""
    runtime = state.runtime
    checks: dict[str, str] = {}
    try:
        await runtime.short_term.ping()
        checks["redis"] = "ok"
    except Exception as error:  # noqa: BLE001  (any failure means not ready)
        checks["redis"] = f"unavailable: {type(error).__name__}"
    try:
        current = await migrate.current_revision(runtime.engine)
        head = migrate.head_revision()
        checks["postgres"] = "ok"
        # A newer release's schema is fine: migrations only add (see migrate.is_newer).
        compatible = current == head or migrate.is_newer(current)
        checks["migrations"] = "ok" if compatible else f"at {current}, need {head}"
    except Exception as error:  # noqa: BLE001  (any failure means not ready)
        checks["postgres"] = f"unavailable: {type(error).__name__}"
        checks["migrations"] = "unknown"

    is_ready = all(value == "ok" for value in checks.values())
    if not is_ready:
        log.warning("health.not_ready", **checks)
    return Response(
        {"status": "ready" if is_ready else "not ready", "checks": checks},
        status_code=HTTP_200_OK if is_ready else HTTP_503_SERVICE_UNAVAILABLE,
    )
