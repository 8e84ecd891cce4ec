"""Tracing and error reporting: on when configured, absent otherwise."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import pytest
import sentry_sdk
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import SecretStr
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from app.api.middleware import RequestContext
from app.errors import ConfigurationError
from app.main import attach_runtime, create_app
from app.observability import (
    build_tracer_provider,
    log_processors,
    report_logged_errors,
    scrub_event,
)
from app.settings import SentrySettings, Settings, TracingSettings
from tests.conftest import service_token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from opentelemetry.sdk.trace import ReadableSpan

    from app.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
COLLECTOR = "http://127.0.0.1:4318"
DSN = "https://key@127.0.0.1/1"


def log_records(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put back the logging set-up of earlier tests after a test that builds an app.

    An app built inside a test sets logging up to write to that test's
    ``capsys`` stream, which is closed when the test ends.
    """
    structlog_config = structlog.get_config()
    root_handlers = logging.getLogger().handlers[:]
    yield
    structlog.configure(**structlog_config)
    logging.getLogger().handlers = root_handlers


@contextlib.asynccontextmanager
async def traced_client(
    runtime: Runtime,
) -> AsyncIterator[tuple[httpx.AsyncClient, InMemorySpanExporter]]:
    """A client of an app whose spans go to an in-memory exporter.

    Tests call it in their body, after ``capsys`` is active, so that the
    logging the app sets up writes to ``capsys``.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = runtime.settings.model_copy(
        update={"tracing": TracingSettings(exporter_otlp_endpoint=COLLECTOR)}
    )
    app = create_app(settings, runtime=runtime, tracer_provider=provider)
    attach_runtime(app, runtime)
    headers = {"authorization": f"Bearer {service_token()}"}
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers
    ) as client:
        yield client, exporter
    provider.shutdown()


async def test_request_span_named_after_route(runtime: Runtime) -> None:
    async with traced_client(runtime) as (client, exporter):
        response = await client.get(f"/v1/memories/{uuid.uuid4()}?user_id=mia")

    assert response.status_code == 404
    spans = server_spans(exporter)
    assert len(spans) == 1
    assert spans[0].name == "GET /v1/memories/{memory_id}"
    assert spans[0].attributes is not None
    assert spans[0].attributes["http.route"] == "/v1/memories/{memory_id}"
    assert str(response.request.url.path) not in spans[0].name


async def test_log_line_carries_trace_id(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    async with traced_client(runtime) as (client, exporter):
        await client.post("/v1/memories/search", json={"user_id": "mia", "query": "hobbies"})

    spans = server_spans(exporter)
    assert len(spans) == 1
    trace_id = format(spans[0].context.trace_id, "032x")
    access = [r for r in log_records(capsys.readouterr().err) if r["event"] == "http.request"]
    assert len(access) == 1
    assert access[0]["trace_id"] == trace_id
    assert access[0]["path"] == "/v1/memories/search"


async def test_probes_are_not_traced(runtime: Runtime) -> None:
    async with traced_client(runtime) as (client, exporter):
        for path in ("/health", "/ready", "/metrics"):
            assert (await client.get(path)).status_code == 200

    assert server_spans(exporter) == []


async def test_tracing_off_installs_nothing(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(runtime=runtime)
    attach_runtime(app, runtime)

    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.get("/health")

    assert isinstance(app.asgi_handler, RequestContext)
    assert app.before_request is None
    assert log_processors(runtime.settings) == []
    records = log_records(capsys.readouterr().err)
    assert records
    assert all("trace_id" not in record for record in records)


def test_exporter_sends_to_traces_path() -> None:
    provider = build_tracer_provider(
        TracingSettings(exporter_otlp_endpoint="http://127.0.0.1:4318/", service_name="engram-x")
    )

    processor = provider._active_span_processor._span_processors[0]  # noqa: SLF001
    assert processor.span_exporter._endpoint == "http://127.0.0.1:4318/v1/traces"  # type: ignore[attr-defined]  # noqa: SLF001
    assert provider.resource.attributes["service.name"] == "engram-x"
    provider.shutdown()


@pytest.mark.parametrize(
    ("settings", "package"),
    [
        (
            Settings(tracing=TracingSettings(exporter_otlp_endpoint="http://x:4318")),
            "opentelemetry",
        ),
        (Settings(sentry=SentrySettings(dsn=SecretStr("https://key@127.0.0.1/1"))), "sentry_sdk"),
    ],
)
def test_missing_package_stops_start(
    settings: Settings, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name.startswith(package) else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    with pytest.raises(ConfigurationError, match="install engram"):
        log_processors(settings)


def test_scrub_drops_hook_reports() -> None:
    hook_event = {
        "exception": {"values": [{"type": "NotFoundError", "mechanism": {"type": "litestar"}}]}
    }

    assert scrub_event(hook_event, {}) is None


def test_scrub_removes_request_body() -> None:
    event = {
        "exception": {"values": [{"type": "RuntimeError", "mechanism": {"type": "generic"}}]},
        "request": {
            "url": "http://testserver/v1/chat",
            "data": {"message": "hi"},
            "cookies": "a=b",
        },
    }

    scrubbed = scrub_event(event, {})

    assert scrubbed is event
    assert scrubbed["request"] == {"url": "http://testserver/v1/chat"}


class KeepingTransport(Transport):
    """Keep Sentry events in a list instead of sending them."""

    events: ClassVar[list[dict[str, Any]]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            event = item.get_event()
            if event is not None:
                self.events.append(dict(event))


def fail_batch() -> None:
    raise RuntimeError("batch failed")


def test_logged_errors_reach_sentry() -> None:
    KeepingTransport.events.clear()
    # No integrations, so that Litestar is not patched for the other tests.
    sentry_sdk.init(dsn=DSN, transport=KeepingTransport, default_integrations=False)
    try:
        report_logged_errors(None, "error", {"event": "worker.dead_lettered", "entry_id": "1-0"})
        try:
            fail_batch()
        except RuntimeError:
            report_logged_errors(None, "exception", {"event": "worker.failed", "exc_info": True})
        report_logged_errors(None, "warning", {"event": "worker.retrying", "level": "warning"})
        sentry_sdk.flush()
    finally:
        sentry_sdk.get_client().close()

    events = KeepingTransport.events
    assert len(events) == 2
    assert events[0]["message"] == "worker.dead_lettered"
    assert events[0]["contexts"]["log"]["entry_id"] == "1-0"
    assert events[1]["exception"]["values"][-1]["type"] == "RuntimeError"


def test_sentry_reports_errors_without_bodies() -> None:
    # Sentry's Litestar integration patches Litestar for the rest of the process,
    # so the app that reports to Sentry runs in a process of its own.
    result = subprocess.run(
        [sys.executable, "-m", "tests.sentry_app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    errors = [event["exception"]["values"][-1]["type"] for event in events if "exception" in event]
    messages = [event.get("message") for event in events if "exception" not in event]
    assert errors.count("RuntimeError") == 2  # the failed request and the logged batch failure
    assert "NotFoundError" not in errors
    assert messages == ["worker.dead_lettered"]
    assert "peanut" not in result.stdout
    request_events = [event for event in events if event.get("request")]
    assert len(request_events) == 1
    assert request_events[0]["request"]["url"].endswith("/boom")
    assert "data" not in request_events[0]["request"]
    assert "not-a-real-token" not in result.stdout
