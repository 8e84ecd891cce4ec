"""``GET /metrics`` in the Prometheus text format, and the HTTP metrics middleware."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from app.logging import get_logger
from app.metrics import refresh_shared_metrics
from app.worker import TRANSIENT_ERRORS

log = get_logger("metrics")


@get("/metrics", include_in_schema=False, security=[{}])
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Return every metric in the Prometheus text format, with the shared gauges refreshed."""
    try:
        await refresh_shared_metrics(request.app.state)
    except TRANSIENT_ERRORS:
        # A backend outage must not hide the other metrics; the gauges keep their last values.
        log.warning("metrics.refresh_failed", exc_info=True)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def prometheus_config() -> PrometheusConfig:
    # Route templates as path labels keep the label set bounded (no ids in paths).
    return PrometheusConfig(
        app_name="engram",
        prefix="engram_http",
        group_path=True,
        exclude=["^/metrics", "^/static/"],
    )
