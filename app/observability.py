"""Optional OpenTelemetry tracing and Sentry error reporting.

Both are off until configured: tracing when ``OTEL_EXPORTER_OTLP_ENDPOINT``
is set, error reporting when ``SENTRY_DSN`` is set. Their packages come with
the ``otel`` and ``sentry`` extras, and a process configured for one whose
packages are missing refuses to start. Nothing here imports those packages
until the feature is switched on.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from app.errors import ConfigurationError
from app.logging import get_logger

if TYPE_CHECKING:
    from litestar import Request
    from litestar.types import ASGIApp, Scope
    from opentelemetry.sdk.trace import TracerProvider
    from sentry_sdk.transport import Transport
    from structlog.typing import EventDict, Processor, WrappedLogger

    from app.settings import SentrySettings, Settings, TracingSettings

log = get_logger("observability")

# Probes and scrapes arrive every few seconds and would drown the traces of real requests.
UNTRACED_PATHS = ["^/health$", "^/ready$", "^/metrics$", "^/static/"]
_ERROR_LEVELS = frozenset({"error", "exception", "critical"})


def _require(module: str, extra: str, setting: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigurationError(
            f"{setting} is set, but the {module} package is not installed; "
            f"install engram[{extra}] or unset {setting}"
        )


# Tracing


def build_tracer_provider(settings: TracingSettings) -> TracerProvider:
    """Create a tracer provider that sends spans to the configured OTLP/HTTP collector."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    if settings.exporter_otlp_endpoint is None:
        raise ValueError("OTEL_EXPORTER_OTLP_ENDPOINT is not set")
    # The OTLP specification puts traces under /v1/traces of the base endpoint.
    endpoint = settings.exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    # Before routing only the method is known; a raw path would put ids into span names.
    # name_span_after_route renames the span once a route matched.
    return str(scope.get("method", scope["type"])), {}


def wrap_in_tracing(
    app: ASGIApp, settings: TracingSettings, tracer_provider: TracerProvider | None = None
) -> ASGIApp:
    """Wrap an ASGI app in Litestar's OpenTelemetry middleware, one server span a request.

    The middleware goes outside everything else, so that the access-log line
    and the request id are inside the span. ``tracer_provider`` replaces the
    OTLP exporter (tests pass one with an in-memory exporter).
    """
    _require("opentelemetry.sdk", "otel", "OTEL_EXPORTER_OTLP_ENDPOINT")
    from litestar.plugins.opentelemetry import (  # noqa: PLC0415
        OpenTelemetryConfig,
        OpenTelemetryInstrumentationMiddleware,
    )

    config = OpenTelemetryConfig(
        tracer_provider=tracer_provider or build_tracer_provider(settings),
        scope_span_details_extractor=_span_details,
        exclude=UNTRACED_PATHS,
        # Applies to headers captured through OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*.
        http_capture_headers_sanitize_fields=["authorization", "cookie", "set-cookie"],
    )
    log.info("observability.tracing_on", endpoint=settings.exporter_otlp_endpoint)
    return OpenTelemetryInstrumentationMiddleware(app=app, config=config)


async def name_span_after_route(request: Request[Any, Any, Any]) -> None:
    """Name the server span after the route template, as in ``GET /v1/memories/{memory_id}``.

    Runs as a ``before_request`` hook, where the route is known and the server span is current.
    """
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE  # noqa: PLC0415

    span = trace.get_current_span()
    if not span.is_recording():
        return
    route = request.scope.get("path_template") or request.scope["path"]
    span.update_name(f"{request.method} {route}")
    span.set_attribute(HTTP_ROUTE, route)


def add_trace_ids(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Add the current span's ``trace_id`` and ``span_id`` (hex) to a log record."""
    from opentelemetry import trace  # noqa: PLC0415

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


# Error reporting


def start_error_reporting(
    settings: SentrySettings, transport: type[Transport] | None = None
) -> None:
    """Start the Sentry client with its Litestar integration, if a DSN is configured.

    It must run before the Litestar app is built, because the integration
    hooks into the app's constructor. Request bodies and local variables are
    never sent, since they can hold memory content. ``transport`` replaces
    the HTTP transport (tests pass one that keeps the events).
    """
    if settings.dsn is None:
        return
    _require("sentry_sdk", "sentry", "SENTRY_DSN")
    import sentry_sdk  # noqa: PLC0415
    from sentry_sdk.integrations.litestar import LitestarIntegration  # noqa: PLC0415

    from app import __version__  # noqa: PLC0415

    sentry_sdk.init(
        dsn=settings.dsn.get_secret_value(),
        environment=settings.environment,
        release=f"engram@{__version__}",
        integrations=[LitestarIntegration()],
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        before_send=scrub_event,
        transport=transport,
    )
    log.info("observability.error_reporting_on", environment=settings.environment)


def scrub_event(event: Any, _hint: dict[str, Any]) -> Any:
    """Drop the reports of the Litestar integration's exception hook, and request bodies.

    The app's own error handler logs every unhandled error, and
    ``report_logged_errors`` reports that record with the request attached.
    The hook would report each of them a second time (Sentry's de-duplication
    misses it, because the hook runs in another thread) and would also report
    the domain errors that become 4xx responses. The integration attaches
    request bodies even with ``max_request_body_size="never"`` (sentry-sdk
    2.76), and bodies hold memory content.
    """
    exceptions = (event.get("exception") or {}).get("values") or []
    if any((value.get("mechanism") or {}).get("type") == "litestar" for value in exceptions):
        return None
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
    return event


def report_logged_errors(_logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """Send records logged at ERROR or above to Sentry.

    structlog does not go through the standard library's logging, so Sentry's
    logging integration does not receive the worker's and the handlers' errors.
    """
    if method not in _ERROR_LEVELS and event.get("level") not in _ERROR_LEVELS:
        return event
    record = event.get("_record")  # set on records from the standard library's logging
    if record is not None and record.name.startswith("sentry_sdk"):
        return event  # the client's own errors would report themselves again
    import sentry_sdk  # noqa: PLC0415

    fields = {key: value for key, value in event.items() if key not in {"event", "exc_info"}}
    with sentry_sdk.new_scope() as scope:
        scope.set_context("log", fields)
        exc_info = event.get("exc_info")
        if exc_info is True:
            sentry_sdk.capture_exception()  # the exception being handled
        elif exc_info:
            sentry_sdk.capture_exception(exc_info)
        else:
            sentry_sdk.capture_message(str(event.get("event")), level="error")
    return event


def log_processors(settings: Settings) -> list[Processor]:
    """Return the structlog processors that tracing and error reporting add, if switched on."""
    processors: list[Processor] = []
    if settings.tracing.enabled:
        _require("opentelemetry.sdk", "otel", "OTEL_EXPORTER_OTLP_ENDPOINT")
        processors.append(add_trace_ids)
    if settings.sentry.dsn is not None:
        _require("sentry_sdk", "sentry", "SENTRY_DSN")
        processors.append(report_logged_errors)
    return processors
