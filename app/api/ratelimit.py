"""Request rate limits per bearer token and per client address, counted in Redis.

Both limits use Litestar's rate-limit middleware. Its counters live in
Redis stores registered when the runtime is attached, so every API process
shares them. A client over a limit gets a 429 problem response with
``Retry-After``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address
from litestar.stores.redis import RedisStore

if TYPE_CHECKING:
    from litestar import Litestar, Request
    from litestar.middleware import DefineMiddleware

    from app.redis_client import RedisClient
    from app.settings import ServerSettings

CALLER_LIMIT_STORE = "engram-rate-limit-token"
ADDRESS_LIMIT_STORE = "engram-rate-limit-address"
_UNLIMITED_PATHS = ["^/health", "^/ready", "^/metrics"]


def _token_identifier(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    # A digest keeps tokens out of Redis keys; requests without a token share one bucket.
    return "token:" + hashlib.sha256(header.encode()).hexdigest()[:32]


def _address_identifier(request: Request[Any, Any, Any]) -> str:
    return "address:" + get_remote_address(request)


def rate_limit_middleware(settings: ServerSettings) -> list[DefineMiddleware]:
    """Return the configured limiters; a limit of 0 turns that limiter off."""
    limits = (
        (settings.rate_limit_per_token_per_minute, _token_identifier, CALLER_LIMIT_STORE),
        (settings.rate_limit_per_address_per_minute, _address_identifier, ADDRESS_LIMIT_STORE),
    )
    return [
        RateLimitConfig(
            rate_limit=("minute", per_minute),
            identifier_for_request=identifier,
            store=store,
            exclude=_UNLIMITED_PATHS,
        ).middleware
        for per_minute, identifier, store in limits
        if per_minute > 0
    ]


def register_rate_limit_stores(app: Litestar, redis: RedisClient, key_prefix: str) -> None:
    """Keep rate-limit counters in Redis, shared by every API process."""
    for name in (CALLER_LIMIT_STORE, ADDRESS_LIMIT_STORE):
        # The store is typed for one server, but its commands and script each use one key,
        # so a cluster client serves it as well.
        store = RedisStore(redis, namespace=f"{key_prefix}:{name}")  # type: ignore[arg-type]
        app.stores.register(name, store, allow_override=True)
