"""Typed Python client for the Engram memory service."""

from engram_client.client import AsyncEngramClient, EngramClient
from engram_client.errors import (
    ApiError,
    AuthenticationError,
    EngramConnectionError,
    EngramError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceError,
)
from engram_client.models import (
    AcceptedTurn,
    ChatEvent,
    Context,
    Hit,
    Memory,
    MemoryList,
    SearchResults,
    Session,
    SessionPage,
    ToolResult,
    Turn,
    TurnPage,
)

__all__ = [
    "AcceptedTurn",
    "ApiError",
    "AsyncEngramClient",
    "AuthenticationError",
    "ChatEvent",
    "Context",
    "EngramClient",
    "EngramConnectionError",
    "EngramError",
    "Hit",
    "InvalidRequestError",
    "Memory",
    "MemoryList",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "SearchResults",
    "ServiceError",
    "Session",
    "SessionPage",
    "ToolResult",
    "Turn",
    "TurnPage",
]
