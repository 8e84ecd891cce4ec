"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import httpx


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, interval_s: float = 0.1
) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {timeout_s} s")
        await asyncio.sleep(interval_s)


async def post_turns(
    client: httpx.AsyncClient,
    session_id: str,
    user_id: str,
    turns: list[dict[str, Any]],
) -> httpx.Response:
    return await client.post(
        f"/v1/sessions/{session_id}/turns", json={"user_id": user_id, "turns": turns}
    )


def turn(content: str, role: str = "user", **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}
