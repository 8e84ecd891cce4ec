"""Exceptions of the client, one per kind of failure a caller handles differently."""

from __future__ import annotations

from typing import Any

SERVER_ERROR = 500


class EngramError(Exception):
    """Base of every error the client raises."""


class EngramConnectionError(EngramError):
    """The service could not be reached, after the retries."""


class ApiError(EngramError):
    """The service returned a problem response (RFC 9457)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type: str = str(problem.get("type", "about:blank"))
        self.title: str = str(problem.get("title", ""))
        self.detail: str = str(problem.get("detail", "")) or self.title
        self.errors: list[dict[str, str]] = list(problem.get("errors") or [])
        fields = "; ".join(f"{item['field']}: {item['message']}" for item in self.errors)
        super().__init__(f"{status} {self.detail}" + (f" ({fields})" if fields else ""))


class InvalidRequestError(ApiError):
    """400, 413 or 422: the request is malformed or a field is invalid; ``errors`` names them."""


class AuthenticationError(ApiError):
    """401: the token is missing, invalid or expired."""


class PermissionDeniedError(ApiError):
    """403: the token lacks a scope, or acts for another user."""


class NotFoundError(ApiError):
    """404: the object does not exist for this user."""


class RateLimitError(ApiError):
    """429 after the retries: the token or address is over its rate limit."""


class ServiceError(ApiError):
    """5xx after the retries: the service or one of its backends failed."""


def error_for(status: int, problem: dict[str, Any]) -> ApiError:
    """Return the exception class that matches an HTTP status."""
    if status in (400, 413, 422):
        return InvalidRequestError(status, problem)
    classes: dict[int, type[ApiError]] = {
        401: AuthenticationError,
        403: PermissionDeniedError,
        404: NotFoundError,
        429: RateLimitError,
    }
    if status in classes:
        return classes[status](status, problem)
    if status >= SERVER_ERROR:
        return ServiceError(status, problem)
    return ApiError(status, problem)
