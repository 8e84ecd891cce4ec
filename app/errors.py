"""Domain exceptions of Engram.

Services raise these; ``app.api.problems`` maps each to an RFC 9457 problem
response, so handlers never build HTTP errors themselves::

    EngramError
    ├── InvalidInputError        422: a field has a value the service cannot accept
    │   ├── PayloadTooLargeError 413: a field or batch is over a configured size limit
    │   └── ConflictError        409: the change clashes with the stored state
    ├── NotFoundError            404: the object does not exist in the caller's scope
    ├── ServiceUnavailableError  503: Redis or Postgres cannot be reached right now
    └── ConfigurationError       raised at start-up; the process refuses to start
        └── EmbeddingModelMismatchError  the database holds vectors of another model
"""

from __future__ import annotations


class EngramError(Exception):
    """Base of every error Engram raises on purpose."""


class InvalidInputError(EngramError):
    """Raised when a request field has a value the service cannot accept."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class PayloadTooLargeError(InvalidInputError):
    """Raised when a field or a batch is larger than its configured limit."""

    status_code = 413


class ConflictError(InvalidInputError):
    """Raised when a valid change clashes with what is stored, such as a duplicate fact."""

    status_code = 409


class NotFoundError(EngramError):
    """Raised when an object does not exist in the caller's tenant and user scope."""

    def __init__(self, kind: str, object_id: str) -> None:
        super().__init__(f"{kind} {object_id!r} was not found")
        self.kind = kind
        self.object_id = object_id


class ServiceUnavailableError(EngramError):
    """Raised when Redis or Postgres cannot be reached; the request may be retried."""

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(message)
        self.dependency = dependency


class ConfigurationError(EngramError):
    """Raised at start-up when settings or stored state make running unsafe."""


class EmbeddingModelMismatchError(ConfigurationError):
    """Raised when the configured embedding model differs from the one the stored vectors used."""
