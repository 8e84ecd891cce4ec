"""The memory tools over MCP, driven by the official SDK's own client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import service_token, user_token
from tests.test_tools import TOOL_NAMES

if TYPE_CHECKING:
    from app.runtime import Runtime

USER = "mcp-user"


async def seed(base_url: str) -> None:
    """Store two turns through the API and wait until the in-process worker promoted them."""
    headers = {"authorization": f"Bearer {service_token()}"}
    turns = [
        {"role": "user", "content": "My favourite climbing gym is Monk in Utrecht."},
        {"role": "user", "content": "I am allergic to hazelnuts."},
    ]
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
        response = await client.post(
            "/v1/sessions/intro/turns", json={"user_id": USER, "turns": turns}
        )
        assert response.status_code == 202
        for _ in range(300):
            found = await client.post(
                "/v1/memories/search", json={"user_id": USER, "query": "climbing"}
            )
            if len(found.json()["hits"]) == len(turns):
                return
            await asyncio.sleep(0.1)
    raise AssertionError("the turns were not promoted in time")


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(part.text for part in result.content if isinstance(part, types.TextContent))


async def with_http_session(base_url: str, headers: dict[str, str], work: Any) -> Any:
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        streamable_http_client(f"{base_url}/mcp/", http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        return await work(session)


async def test_mcp_over_http_lists_and_calls_tools(live_server: str, runtime: Runtime) -> None:
    await seed(live_server)
    headers = {"authorization": f"Bearer {service_token()}", "x-engram-user-id": USER}

    async def work(session: ClientSession) -> tuple[Any, ...]:
        tools = await session.list_tools()
        found = await session.call_tool("search_memory", {"query": "Which gym?", "limit": 1})
        invalid = await session.call_tool("search_memory", {"limit": 3})
        unknown = await session.call_tool("drop_tables", {})
        return tools, found, invalid, unknown

    tools, found, invalid, unknown = await with_http_session(live_server, headers, work)

    assert [tool.name for tool in tools.tools] == TOOL_NAMES
    assert tools.tools[0].input_schema["required"] == ["query"]
    assert found.is_error is False
    assert "Monk in Utrecht" in text_of(found)
    assert found.structured_content is not None
    assert len(found.structured_content["hits"]) == 1
    assert invalid.is_error is True
    assert "Call the tool again" in text_of(invalid)
    assert unknown.is_error is True
    assert "search_memory" in text_of(unknown)


async def test_mcp_over_http_uses_the_token(live_server: str, runtime: Runtime) -> None:
    async with httpx2.AsyncClient() as http:
        anonymous = await http.post(
            f"{live_server}/mcp/",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream"},
        )
    assert anonymous.status_code == 401
    assert "resource_metadata" not in anonymous.headers.get("www-authenticate", "")

    own = {"authorization": f"Bearer {user_token(USER)}"}
    other = {**own, "x-engram-user-id": "someone-else"}
    read_only = {
        "authorization": f"Bearer {service_token(scopes=('memory:read',))}",
        "x-engram-user-id": USER,
    }

    async def sessions(session: ClientSession) -> types.CallToolResult:
        return await session.call_tool("list_sessions", {})

    async def remember(session: ClientSession) -> types.CallToolResult:
        return await session.call_tool("remember", {"content": "Likes tea"})

    mine = await with_http_session(live_server, own, sessions)
    theirs = await with_http_session(live_server, other, sessions)
    denied = await with_http_session(live_server, read_only, remember)

    assert mine.is_error is False
    assert theirs.is_error is True
    assert "own user" in text_of(theirs)
    assert denied.is_error is True
    assert "memory:write" in text_of(denied)


async def test_mcp_over_stdio_forwards_to_the_service(live_server: str, runtime: Runtime) -> None:
    await seed(live_server)
    engram = Path(sys.executable).with_name("engram")
    parameters = StdioServerParameters(
        command=str(engram),
        args=["mcp", "--url", live_server, "--user", USER],
        env={"ENGRAM_TOKEN": service_token()},
    )

    async with (
        stdio_client(parameters) as (read_stream, write_stream),
        ClientSession(read_stream, write_stream) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        found = await session.call_tool("search_memory", {"query": "nut allergy", "limit": 1})
        invalid = await session.call_tool("forget_memory", {"memory_id": "not-a-uuid"})

    assert [tool.name for tool in tools.tools] == TOOL_NAMES
    assert found.is_error is False
    assert "hazelnuts" in text_of(found)
    assert invalid.is_error is True
    assert "memory_id" in text_of(invalid)


def test_mcp_over_stdio_reports_a_bad_token(live_server: str, runtime: Runtime) -> None:
    engram = Path(sys.executable).with_name("engram")
    result = subprocess.run(  # noqa: S603  (the project's own command, fixed arguments)
        [str(engram), "mcp", "--url", live_server, "--user", USER],
        env={**os.environ, "ENGRAM_TOKEN": "not-a-token"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "the token was rejected" in result.stderr
    assert result.stdout == "", "stdout is kept for the protocol"
