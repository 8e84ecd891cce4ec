"""Request ids, one access-log line per request, and security headers."""

from __future__ import annotations

import re
import time
import uuid
from typing import TYPE_CHECKING

import structlog
from litestar.enums import ScopeType

from app.logging import get_logger

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = get_logger("http")

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RequestContext:
    """Binds a request id to every log record of a request and returns it as ``X-Request-ID``.

    It wraps the whole application, outside routing, so requests that never
    reach a handler (401, 404, 429) get an id and an access-log line too. A
    client's own id is kept when it is a plain token of at most 128
    characters; otherwise the service makes one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        request_id = _client_request_id(scope) or uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self._app(scope, receive, send_with_id)
            finally:
                log.info(
                    "http.request",
                    method=scope.get("method"),
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            return text if _VALID_REQUEST_ID.match(text) else None
    return None


# The API serves JSON; no page of it needs scripts, frames or other origins.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The API documentation pages load their viewer (Scalar, Swagger UI) from jsDelivr.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' data: https://fonts.gstatic.com https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://cdn.jsdelivr.net; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# The web chat loads only its own scripts and styles and talks only to this origin.
WEB_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"


def _security_headers(path: str, scheme: str | None) -> list[tuple[bytes, bytes]]:
    if path.startswith("/docs"):
        csp = DOCS_CSP
    elif path == "/" or path.startswith("/static/"):
        csp = WEB_CSP
    else:
        csp = API_CSP
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", csp.encode()),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if scheme == "https":
        headers.append((b"strict-transport-security", HSTS.encode()))
    return headers


async def add_security_headers(message: Message, scope: Scope) -> None:
    """Add security headers to every response, errors from routing included.

    This runs as Litestar's ``before_send`` hook rather than as a middleware,
    because responses for unknown paths never pass through route middleware.
    HSTS is sent only on requests that arrived over HTTPS.
    """
    if message["type"] != "http.response.start":
        return
    existing = list(message.get("headers", []))
    message["headers"] = [*existing, *_security_headers(scope["path"], scope.get("scheme"))]
