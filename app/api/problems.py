"""Map every error to an RFC 9457 problem response.

Bodies never carry stack traces or SQL. Field errors list each problem as
``{"field": ..., "message": ...}``, with the field as a dotted path such as
``turns.0.content``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
)

from app.errors import (
    EngramError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
)
from app.llm import LLMError
from app.logging import get_logger
from app.metrics import RATE_LIMITED
from app.schemas import SCOPE_ID_PATTERN, TURN_ID_PATTERN

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar import Request, Response

log = get_logger("http")

PROBLEM_BASE = "urn:engram:problem:"
_INTERNAL_DETAIL = "The server failed; see its logs."


def _problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=status,
        type_=PROBLEM_BASE + slug,
        title=title,
        detail=detail,
        extra=extra or None,
        headers=headers,
    )


_MISSING_PARAMETER = re.compile(r"Missing required (\w+) parameter '([^']+)'")

# Readable descriptions of the id formats, in place of the raw patterns.
_PATTERN_HINTS = {
    SCOPE_ID_PATTERN: "must be 1-128 characters: letters, digits and . _ @ + = -, "
    "starting with a letter or digit",
    TURN_ID_PATTERN: "must be 1-128 characters: letters, digits and . _ : @ + = -, "
    "starting with a letter or digit",
}


def _field_name(key: str, source: object) -> str:
    if key:
        return key
    return "body" if source in (None, "body") else str(source)


def _readable(message: str) -> str:
    """Replace validator jargon with a sentence a client can act on."""
    for pattern, hint in _PATTERN_HINTS.items():
        if pattern in message:
            return hint
    message = message.removeprefix("Value error, ")
    return message.replace("Input should be a valid dictionary", "must be a JSON object")


def _field_errors(error: ValidationException) -> list[dict[str, str]]:
    if isinstance(error.extra, list):
        return [
            {
                "field": _field_name(str(item.get("key", "")), item.get("source")),
                "message": _readable(str(item.get("message", ""))),
            }
            for item in error.extra
            if isinstance(item, dict)
        ]
    missing = _MISSING_PARAMETER.search(str(error.detail))
    if missing:
        kind, name = missing.groups()
        return [{"field": name, "message": f"is a required {kind} parameter"}]
    return []


def validation_problem(error: ValidationException) -> ProblemDetailsException:
    errors = _field_errors(error)
    fields = ", ".join(entry["field"] for entry in errors) or "the request"
    return _problem(
        422,
        "invalid-input",
        "Invalid input",
        f"Correct {fields} as `errors` describes, then send the request again.",
        errors=errors,
    )


def domain_problem(error: EngramError) -> ProblemDetailsException:
    if isinstance(error, InvalidInputError):
        slug, title = {
            HTTP_413_REQUEST_ENTITY_TOO_LARGE: ("too-large", "Payload too large"),
            HTTP_409_CONFLICT: ("conflict", "Conflict"),
        }.get(error.status_code, ("invalid-input", "Invalid input"))
        return _problem(
            error.status_code,
            slug,
            title,
            error.message,
            errors=[{"field": error.field, "message": error.message}],
        )
    if isinstance(error, NotFoundError):
        return _problem(404, "not-found", "Not found", str(error))
    if isinstance(error, ServiceUnavailableError):
        return _problem(
            503,
            "unavailable",
            "Service unavailable",
            f"{error.dependency} is unavailable; retry shortly.",
            headers={"Retry-After": "5"},
        )
    if isinstance(error, LLMError):
        return llm_problem(error)
    log.error("http.unmapped_domain_error", error_type=type(error).__name__)
    return _problem(500, "internal", "Internal server error", _INTERNAL_DETAIL)


def llm_problem(error: LLMError) -> ProblemDetailsException:
    """Build the problem for a failed model call; ``error`` repeats it for OpenAI clients."""
    extra: dict[str, Any] = {
        "error": {"message": error.detail, "type": error.slug, "code": error.status}
    }
    if error.turn_id is not None:
        extra["user_turn_id"] = error.turn_id
    headers = {"Retry-After": error.retry_after} if error.retry_after else None
    return _problem(error.status, error.slug, error.title, error.detail, headers=headers, **extra)


# Status code to (problem type, title, detail built from Litestar's detail, extra headers).
_HTTP_PROBLEMS: dict[int, tuple[str, str, Callable[[str], str], dict[str, str] | None]] = {
    HTTP_400_BAD_REQUEST: (
        "malformed-request",
        "Malformed request",
        lambda detail: (
            f"The request body could not be parsed ({detail}); "
            "send a JSON object with the content type application/json."
        ),
        None,
    ),
    HTTP_401_UNAUTHORIZED: (
        "unauthorized",
        "Unauthorized",
        lambda detail: f"{detail}; send a valid token as 'Authorization: Bearer <token>'.",
        {"WWW-Authenticate": "Bearer"},
    ),
    HTTP_403_FORBIDDEN: ("forbidden", "Forbidden", lambda detail: detail, None),
    HTTP_404_NOT_FOUND: (
        "not-found",
        "Not found",
        lambda _: "No resource exists at this path; see /docs.",
        None,
    ),
    HTTP_429_TOO_MANY_REQUESTS: (
        "rate-limited",
        "Too many requests",
        lambda _: (
            "This token or client address is over its request rate limit; "
            "retry after the number of seconds in Retry-After."
        ),
        None,
    ),
    HTTP_413_REQUEST_ENTITY_TOO_LARGE: (
        "too-large",
        "Payload too large",
        lambda _: (
            "The request body is larger than ENGRAM_MAX_REQUEST_BYTES allows; "
            "send less per request."
        ),
        None,
    ),
}


def _retry_headers(limit_headers: dict[str, str] | None) -> dict[str, str]:
    """Keep the rate-limit headers and add Retry-After from the window's reset time."""
    headers = dict(limit_headers or {})
    headers["Retry-After"] = str(max(1, int(headers.get("RateLimit-Reset", "1"))))
    return headers


def http_problem(error: HTTPException) -> ProblemDetailsException:
    status = error.status_code
    known = _HTTP_PROBLEMS.get(status)
    if known is not None:
        slug, title, describe, headers = known
        if status == HTTP_429_TOO_MANY_REQUESTS:
            RATE_LIMITED.inc()
            headers = _retry_headers(error.headers)
        return _problem(status, slug, title, describe(str(error.detail)), headers=headers)
    if status >= HTTP_500_INTERNAL_SERVER_ERROR:
        return _problem(status, "internal", "Internal server error", _INTERNAL_DETAIL)
    title = str(error.detail) if error.detail else "HTTP error"
    return ProblemDetailsException(
        status_code=status, type_="about:blank", title=title, detail=title, headers=error.headers
    )


def unavailable_problem(_: Exception) -> ProblemDetailsException:
    return _problem(
        503,
        "unavailable",
        "Service unavailable",
        "A storage backend (Redis or Postgres) is unavailable; retry shortly.",
        headers={"Retry-After": "5"},
    )


def internal_error_handler(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.error(
        "http.unhandled_error",
        exc_info=error,
        path=request.url.path,
        error_type=type(error).__name__,
    )
    problem = _problem(500, "internal", "Internal server error", _INTERNAL_DETAIL)
    return problem.to_response(request)


def problem_config() -> ProblemDetailsConfig:
    from app.worker import TRANSIENT_ERRORS  # noqa: PLC0415  (the same list the worker retries)

    mapping: dict[type[Exception], Any] = {
        ValidationException: validation_problem,
        HTTPException: http_problem,
        EngramError: domain_problem,
    }
    for error_type in TRANSIENT_ERRORS:
        if issubclass(error_type, Exception):
            mapping[error_type] = unavailable_problem
    return ProblemDetailsConfig(exception_to_problem_detail_map=mapping)
