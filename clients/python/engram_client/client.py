"""Sync and async clients for every endpoint of the Engram API.

Each endpoint is described once, as a request plus a parser for its
response (the ``_api`` functions below). ``EngramClient`` sends them with
``httpx.Client`` and ``AsyncEngramClient`` with ``httpx.AsyncClient``. Both
retry 429 and 503 responses and connection errors, waiting as long as
``Retry-After`` says (at most ``MAX_RETRY_AFTER_S``) or backing off.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import httpx

from engram_client.errors import EngramConnectionError, error_for
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

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

RETRY_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_S = 60.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _none(_: Any) -> None:
    return None


def _same(data: Any) -> Any:
    return data


# One function per endpoint: the request to send, and how to parse its response.


def _append_turns(session_id: str, user_id: str, turns: list[dict[str, Any]]) -> _Call[Any]:
    return _Call(
        "POST",
        f"/v1/sessions/{session_id}/turns",
        lambda data: [AcceptedTurn(item["turn_id"], item["duplicate"]) for item in data["turns"]],
        body={"user_id": user_id, "turns": turns},
    )


def _list_turns(
    session_id: str, user_id: str, limit: int | None, cursor: str | None
) -> _Call[TurnPage]:
    return _Call(
        "GET",
        f"/v1/sessions/{session_id}/turns",
        lambda data: TurnPage([Turn.from_json(t) for t in data["turns"]], data["next_cursor"]),
        params=_clean({"user_id": user_id, "limit": limit, "cursor": cursor}),
    )


def _list_sessions(user_id: str, limit: int | None, cursor: str | None) -> _Call[SessionPage]:
    return _Call(
        "GET",
        f"/v1/users/{user_id}/sessions",
        lambda data: SessionPage(
            [Session.from_json(s) for s in data["sessions"]], data["next_cursor"]
        ),
        params=_clean({"limit": limit, "cursor": cursor}),
    )


def _search(user_id: str, query: str, options: dict[str, Any]) -> _Call[SearchResults]:
    return _Call(
        "POST",
        "/v1/memories/search",
        lambda data: SearchResults(
            [Hit.from_json(hit) for hit in data["hits"]], data["mode"], data["timings"]
        ),
        body=_clean({"user_id": user_id, "query": query, **options}),
    )


def _context(user_id: str, options: dict[str, Any]) -> _Call[Context]:
    return _Call(
        "POST",
        "/v1/context",
        lambda data: Context(
            data["messages"],
            [Hit.from_json(hit) for hit in data["memories"]],
            data["token_count"],
            data["token_budget"],
        ),
        body=_clean({"user_id": user_id, **options}),
    )


def _call_tool(
    name: str, arguments: str | dict[str, Any], user_id: str | None, tool_call_id: str | None
) -> _Call[ToolResult]:
    return _Call(
        "POST",
        f"/v1/tools/{name}/call",
        lambda data: ToolResult(
            data["tool"], data["tool_call_id"], data["content"], data["truncated"], data["data"]
        ),
        body=_clean({"arguments": arguments, "tool_call_id": tool_call_id}),
        headers={"x-engram-user-id": user_id} if user_id else {},
    )


def _audit(
    user_id: str | None, action: str | None, limit: int | None, cursor: str | None
) -> _Call[dict[str, Any]]:
    params = _clean({"user_id": user_id, "action": action, "limit": limit, "cursor": cursor})
    return _Call("GET", "/v1/audit", _same, params)


def _tools(tool_format: str) -> _Call[list[dict[str, Any]]]:
    return _Call("GET", "/v1/tools", lambda data: data["tools"], {"format": tool_format})


def _models() -> _Call[list[str]]:
    return _Call("GET", "/v1/models", lambda data: [model["id"] for model in data["data"]])


def _chat_body(user_id: str, session_id: str, message: str) -> dict[str, str]:
    return {"user_id": user_id, "session_id": session_id, "message": message}


def _memories(data: dict[str, Any]) -> MemoryList:
    return MemoryList(
        [Memory.from_json(item) for item in data["memories"]], data.get("next_cursor")
    )


def _list_memories(user_id: str, filters: dict[str, Any]) -> _Call[MemoryList]:
    params = _clean({"user_id": user_id, **filters})
    for name, value in params.items():
        if isinstance(value, bool):
            params[name] = "true" if value else "false"
    return _Call("GET", "/v1/memories", _memories, params)


def _remember(user_id: str, content: str, options: dict[str, Any]) -> _Call[Memory]:
    body = _clean({"user_id": user_id, "content": content, **options})
    return _Call("POST", "/v1/memories", Memory.from_json, body=body)


def _update_memory(memory_id: str, user_id: str, changes: dict[str, Any]) -> _Call[Memory]:
    body = _clean({"user_id": user_id, **changes})
    return _Call("PATCH", f"/v1/memories/{memory_id}", Memory.from_json, body=body)


def _memory_history(memory_id: str, user_id: str) -> _Call[list[dict[str, Any]]]:
    path = f"/v1/memories/{memory_id}/history"
    return _Call("GET", path, lambda data: list(data["entries"]), {"user_id": user_id})


def _delete_memory(memory_id: str, user_id: str, purge_history: bool) -> _Call[None]:
    params = {"user_id": user_id, **({"purge_history": "true"} if purge_history else {})}
    return _Call("DELETE", f"/v1/memories/{memory_id}", _none, params)


def _retry_after(response: httpx.Response | None, attempt: int) -> float:
    """Seconds to wait before the next attempt: Retry-After when given, else back-off."""
    header = response.headers.get("retry-after") if response is not None else None
    if header:
        try:
            return min(MAX_RETRY_AFTER_S, max(0.0, float(header)))
        except ValueError:
            try:
                moment = parsedate_to_datetime(header).timestamp()
                return min(MAX_RETRY_AFTER_S, max(0.0, moment - time.time()))
            except (TypeError, ValueError):
                pass
    return min(MAX_RETRY_AFTER_S, 0.5 * 2.0**attempt)


def _decode(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    try:
        problem = response.json()
    except ValueError:
        problem = {"detail": response.text[:500]}
    if not isinstance(problem, dict):
        problem = {"detail": str(problem)}
    raise error_for(response.status_code, problem)


def _events(lines: list[str]) -> ChatEvent | None:
    """Build one event from the lines of a Server-Sent Events block."""
    name, data = "message", []
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    return ChatEvent(name, json.loads("\n".join(data))) if data else None


class EngramClient:
    """A blocking client; use it as a context manager, or call ``close()``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._max_retries = max_retries

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call[T]) -> T:
        for attempt in range(self._max_retries + 1):
            last = attempt == self._max_retries
            try:
                response = self._http.request(
                    call.method, call.path, params=call.params, json=call.body, headers=call.headers
                )
            except httpx.TransportError as error:
                if last:
                    raise EngramConnectionError(f"cannot reach Engram: {error}") from error
                time.sleep(_retry_after(None, attempt))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(_retry_after(response, attempt))
                continue
            return call.parse(_decode(response))
        raise AssertionError("unreachable")  # pragma: no cover

    # Sessions and turns

    def append_turns(
        self, session_id: str, user_id: str, turns: list[dict[str, Any]]
    ) -> list[AcceptedTurn]:
        """Append turns (dicts with role, content and optional fields) to a session."""
        result: list[AcceptedTurn] = self._send(_append_turns(session_id, user_id, turns))
        return result

    def list_turns(
        self, session_id: str, user_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> TurnPage:
        return self._send(_list_turns(session_id, user_id, limit, cursor))

    def iter_turns(self, session_id: str, user_id: str, page_size: int = 100) -> Iterator[Turn]:
        """Yield every turn of the session window, oldest first, page by page."""
        cursor = None
        while True:
            page = self.list_turns(session_id, user_id, limit=page_size, cursor=cursor)
            yield from page.turns
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def delete_session(self, session_id: str, user_id: str) -> None:
        self._send(_Call("DELETE", f"/v1/sessions/{session_id}", _none, {"user_id": user_id}))

    def list_sessions(
        self, user_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> SessionPage:
        return self._send(_list_sessions(user_id, limit, cursor))

    def iter_sessions(self, user_id: str, page_size: int = 100) -> Iterator[Session]:
        cursor = None
        while True:
            page = self.list_sessions(user_id, limit=page_size, cursor=cursor)
            yield from page.sessions
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def sessions(self, user_id: str) -> SessionPage:
        """Return all of the user's sessions in one page object."""
        return SessionPage(list(self.iter_sessions(user_id)), None)

    # Long-term memory

    def search(self, user_id: str, query: str, **options: Any) -> SearchResults:
        """Search; options are the fields of the search request (limit, mode, filters, ...)."""
        return self._send(_search(user_id, query, options))

    def get_memory(self, memory_id: str, user_id: str) -> Memory:
        path = f"/v1/memories/{memory_id}"
        return self._send(_Call("GET", path, Memory.from_json, {"user_id": user_id}))

    def delete_memory(self, memory_id: str, user_id: str, *, purge_history: bool = False) -> None:
        """Delete a memory; ``purge_history`` also removes the copies of its text in history."""
        self._send(_delete_memory(memory_id, user_id, purge_history))

    def list_memories(self, user_id: str, **filters: Any) -> MemoryList:
        """Return one page, newest first; filters are kind, include_superseded, pinned,
        limit and cursor."""
        return self._send(_list_memories(user_id, filters))

    def remember(self, user_id: str, content: str, **options: Any) -> Memory:
        """Store a fact; options are kind, session_id, valid_from, pinned, metadata and
        supersedes. A repeat of a current fact returns that fact."""
        return self._send(_remember(user_id, content, options))

    def update_memory(self, memory_id: str, user_id: str, **changes: Any) -> Memory:
        """Change a fact's content, or any memory's pinned flag or metadata."""
        return self._send(_update_memory(memory_id, user_id, changes))

    def memory_history(self, memory_id: str, user_id: str) -> list[dict[str, Any]]:
        """Return the recorded changes of a memory, oldest first."""
        return self._send(_memory_history(memory_id, user_id))

    def memories(self, user_id: str) -> MemoryList:
        """Return every long-term memory of the user, oldest first (from the export)."""
        return self._send(_Call("GET", f"/v1/users/{user_id}/export", _memories))

    def context(self, user_id: str, **options: Any) -> Context:
        """Build context; options are session_id, query and token_budget."""
        return self._send(_context(user_id, options))

    # Users

    def export_user(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._send(_Call("GET", f"/v1/users/{user_id}/export", _same))
        return result

    def erase_user(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._send(_Call("DELETE", f"/v1/users/{user_id}", _same))
        return result

    # Tools and chat

    def audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Return one page of the tenant's audit log, newest first (needs the admin scope)."""
        return self._send(_audit(user_id, action, limit, cursor))

    def iter_audit(self, *, user_id: str | None = None, page_size: int = 100) -> Iterator[Any]:
        """Yield every audit entry, newest first, page by page."""
        cursor = None
        while True:
            page = self.audit(user_id=user_id, limit=page_size, cursor=cursor)
            yield from page["entries"]
            if page["next_cursor"] is None:
                return
            cursor = page["next_cursor"]

    def tools(self, tool_format: str = "openai") -> list[dict[str, Any]]:
        return self._send(_tools(tool_format))

    def models(self) -> list[str]:
        """Return the models /v1/chat/completions accepts."""
        return self._send(_models())

    def call_tool(
        self,
        name: str,
        arguments: str | dict[str, Any],
        *,
        user_id: str | None = None,
        tool_call_id: str | None = None,
    ) -> ToolResult:
        return self._send(_call_tool(name, arguments, user_id, tool_call_id))

    def chat(self, user_id: str, session_id: str, message: str) -> Iterator[ChatEvent]:
        """Send a chat message and yield its events as they stream in."""
        body = _chat_body(user_id, session_id, message)
        with self._http.stream("POST", "/v1/chat", json=body) as response:
            if not response.is_success:
                response.read()
                _decode(response)
            block: list[str] = []
            for line in response.iter_lines():
                if line:
                    block.append(line)
                    continue
                event = _events(block)
                block = []
                if event is not None:
                    yield event


class AsyncEngramClient:
    """The same endpoints as ``EngramClient``, as coroutines."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._max_retries = max_retries

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        for attempt in range(self._max_retries + 1):
            last = attempt == self._max_retries
            try:
                response = await self._http.request(
                    call.method, call.path, params=call.params, json=call.body, headers=call.headers
                )
            except httpx.TransportError as error:
                if last:
                    raise EngramConnectionError(f"cannot reach Engram: {error}") from error
                await asyncio.sleep(_retry_after(None, attempt))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                await asyncio.sleep(_retry_after(response, attempt))
                continue
            return call.parse(_decode(response))
        raise AssertionError("unreachable")  # pragma: no cover

    async def append_turns(
        self, session_id: str, user_id: str, turns: list[dict[str, Any]]
    ) -> list[AcceptedTurn]:
        result: list[AcceptedTurn] = await self._send(_append_turns(session_id, user_id, turns))
        return result

    async def list_turns(
        self, session_id: str, user_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> TurnPage:
        return await self._send(_list_turns(session_id, user_id, limit, cursor))

    async def iter_turns(
        self, session_id: str, user_id: str, page_size: int = 100
    ) -> AsyncIterator[Turn]:
        cursor = None
        while True:
            page = await self.list_turns(session_id, user_id, limit=page_size, cursor=cursor)
            for turn in page.turns:
                yield turn
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def delete_session(self, session_id: str, user_id: str) -> None:
        path = f"/v1/sessions/{session_id}"
        await self._send(_Call("DELETE", path, _none, {"user_id": user_id}))

    async def list_sessions(
        self, user_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> SessionPage:
        return await self._send(_list_sessions(user_id, limit, cursor))

    async def iter_sessions(self, user_id: str, page_size: int = 100) -> AsyncIterator[Session]:
        cursor = None
        while True:
            page = await self.list_sessions(user_id, limit=page_size, cursor=cursor)
            for session in page.sessions:
                yield session
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def search(self, user_id: str, query: str, **options: Any) -> SearchResults:
        return await self._send(_search(user_id, query, options))

    async def get_memory(self, memory_id: str, user_id: str) -> Memory:
        path = f"/v1/memories/{memory_id}"
        return await self._send(_Call("GET", path, Memory.from_json, {"user_id": user_id}))

    async def delete_memory(
        self, memory_id: str, user_id: str, *, purge_history: bool = False
    ) -> None:
        await self._send(_delete_memory(memory_id, user_id, purge_history))

    async def list_memories(self, user_id: str, **filters: Any) -> MemoryList:
        return await self._send(_list_memories(user_id, filters))

    async def remember(self, user_id: str, content: str, **options: Any) -> Memory:
        return await self._send(_remember(user_id, content, options))

    async def update_memory(self, memory_id: str, user_id: str, **changes: Any) -> Memory:
        return await self._send(_update_memory(memory_id, user_id, changes))

    async def memory_history(self, memory_id: str, user_id: str) -> list[dict[str, Any]]:
        return await self._send(_memory_history(memory_id, user_id))

    async def memories(self, user_id: str) -> MemoryList:
        return await self._send(_Call("GET", f"/v1/users/{user_id}/export", _memories))

    async def context(self, user_id: str, **options: Any) -> Context:
        return await self._send(_context(user_id, options))

    async def sessions(self, user_id: str) -> SessionPage:
        return SessionPage([session async for session in self.iter_sessions(user_id)], None)

    async def export_user(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(
            _Call("GET", f"/v1/users/{user_id}/export", _same)
        )
        return result

    async def erase_user(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(_Call("DELETE", f"/v1/users/{user_id}", _same))
        return result

    async def audit(
        self,
        *,
        user_id: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        return await self._send(_audit(user_id, action, limit, cursor))

    async def iter_audit(
        self, *, user_id: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Any]:
        cursor = None
        while True:
            page = await self.audit(user_id=user_id, limit=page_size, cursor=cursor)
            for entry in page["entries"]:
                yield entry
            if page["next_cursor"] is None:
                return
            cursor = page["next_cursor"]

    async def tools(self, tool_format: str = "openai") -> list[dict[str, Any]]:
        return await self._send(_tools(tool_format))

    async def models(self) -> list[str]:
        return await self._send(_models())

    async def call_tool(
        self,
        name: str,
        arguments: str | dict[str, Any],
        *,
        user_id: str | None = None,
        tool_call_id: str | None = None,
    ) -> ToolResult:
        return await self._send(_call_tool(name, arguments, user_id, tool_call_id))

    async def chat(self, user_id: str, session_id: str, message: str) -> AsyncIterator[ChatEvent]:
        """Send a chat message and yield its events as they stream in."""
        body = _chat_body(user_id, session_id, message)
        async with self._http.stream("POST", "/v1/chat", json=body) as response:
            if not response.is_success:
                await response.aread()
                _decode(response)
            block: list[str] = []
            async for line in response.aiter_lines():
                if line:
                    block.append(line)
                    continue
                event = _events(block)
                block = []
                if event is not None:
                    yield event
