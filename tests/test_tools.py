"""Memory tools for agents: definitions, calls, errors a model can act on, and an agent loop."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import openai
import pytest

from tests.conftest import service_token, user_token
from tests.openai_server import Reply
from tests.test_chat import USER, seed_memories
from tests.test_promotion import drain

if TYPE_CHECKING:
    import httpx

    from app.runtime import Runtime
    from tests.openai_server import OpenAICompatibleServer

AS_USER = {"x-engram-user-id": USER}
TOOL_NAMES = ["search_memory", "remember", "get_context", "forget_memory", "list_sessions"]


async def call(
    client: httpx.AsyncClient, name: str, arguments: Any, **headers: str
) -> httpx.Response:
    return await client.post(
        f"/v1/tools/{name}/call",
        json={"arguments": arguments, "tool_call_id": "call_1"},
        headers={**AS_USER, **headers},
    )


async def test_tools_are_listed_in_both_formats(client: httpx.AsyncClient) -> None:
    openai_tools = (await client.get("/v1/tools")).json()["tools"]
    anthropic_tools = (await client.get("/v1/tools", params={"format": "anthropic"})).json()

    assert [tool["function"]["name"] for tool in openai_tools] == TOOL_NAMES
    search = openai_tools[0]["function"]
    assert search["parameters"]["required"] == ["query"]
    assert search["parameters"]["properties"]["limit"]["maximum"] == 20
    assert "title" not in search["parameters"]
    assert all(len(tool["function"]["description"]) > 40 for tool in openai_tools)
    assert [tool["name"] for tool in anthropic_tools["tools"]] == TOOL_NAMES
    assert anthropic_tools["tools"][0]["input_schema"] == search["parameters"]
    bad = await client.get("/v1/tools", params={"format": "xml"})
    assert bad.status_code == 422


async def test_agent_uses_tools_end_to_end(
    client: httpx.AsyncClient, runtime: Runtime, llm: OpenAICompatibleServer
) -> None:
    """An agent built on the official client: the model calls search_memory, then answers."""
    await seed_memories(client, runtime)
    tools = (await client.get("/v1/tools")).json()["tools"]
    search_call = {
        "id": "call_42",
        "type": "function",
        "function": {
            "name": "search_memory",
            "arguments": json.dumps({"query": "name of my dog", "limit": 3}),
        },
    }
    llm.replies.extend([Reply(tool_calls=[search_call]), Reply(text="Your dog is Pepper.")])
    model = openai.AsyncOpenAI(base_url=llm.base_url, api_key="test-key", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "What is my dog called?"}]

    for _ in range(3):
        completion = await model.chat.completions.create(
            model="test-model", messages=messages, tools=tools
        )
        message = completion.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            break
        for tool_call in message.tool_calls:
            response = await client.post(
                f"/v1/tools/{tool_call.function.name}/call",  # type: ignore[union-attr]
                json={
                    "arguments": tool_call.function.arguments,  # type: ignore[union-attr]
                    "tool_call_id": tool_call.id,
                },
                headers=AS_USER,
            )
            assert response.status_code == 200, response.text
            result = response.json()
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": result["tool_call_id"],
                    "content": result["content"],
                }
            )
    await model.close()

    assert messages[-1]["content"] == "Your dog is Pepper."
    assert llm.chat_requests[0]["tools"] == tools
    tool_message = llm.chat_requests[1]["messages"][-1]
    assert tool_message["role"] == "tool"
    assert tool_message["tool_call_id"] == "call_42"
    assert "Pepper" in tool_message["content"]
    assert len(tool_message["content"].splitlines()) == 3


async def test_invalid_arguments_explain_the_fix(client: httpx.AsyncClient) -> None:
    cases: list[tuple[Any, str, str]] = [
        ("{not json", "arguments", "not valid JSON"),
        ("[1, 2]", "arguments", "must be a JSON object"),
        ({}, "arguments.query", "Field required"),
        ({"query": "x", "limit": 100}, "arguments.limit", "less than or equal to 20"),
        ({"query": "x", "colour": "red"}, "arguments.colour", "Extra inputs"),
    ]
    for arguments, field, message in cases:
        response = await call(client, "search_memory", arguments)
        assert response.status_code == 422, arguments
        body = response.json()
        assert body["errors"][0]["field"] == field
        assert message in body["detail"]
    assert "Call the tool again" in body["detail"]

    unknown = await call(client, "delete_everything", {})
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == (
        "there is no tool 'delete_everything'; the tools are " + ", ".join(TOOL_NAMES)
    )


async def test_remember_then_search_and_forget(client: httpx.AsyncClient, runtime: Runtime) -> None:
    stored = await call(client, "remember", {"content": "Mijn fiets is knalrood 🚲"})
    assert stored.status_code == 200
    assert "Stored as turn" in stored.json()["content"]
    await drain(runtime.new_worker("w"))

    found = await call(client, "search_memory", {"query": "fiets", "mode": "keyword"})
    hit = found.json()["data"]["hits"][0]
    assert hit["content"] == "Mijn fiets is knalrood 🚲"
    assert hit["session_id"] == "agent-notes"

    forgotten = await call(client, "forget_memory", json.dumps({"memory_id": hit["id"]}))
    again = await call(client, "forget_memory", {"memory_id": hit["id"]})
    assert forgotten.json()["content"] == f"Forgot memory {hit['id']}."
    assert again.status_code == 404

    sessions = await call(client, "list_sessions", None)
    assert sessions.json()["content"].startswith("- agent-notes: 1 turn, last active")
    context = await call(client, "get_context", {"session_id": "agent-notes"})
    assert "[user] Mijn fiets is knalrood 🚲" in context.json()["content"]


async def test_results_are_cut_to_the_size_limit(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed_memories(client, runtime)
    monkeypatch.setattr(runtime.settings.tools, "result_max_tokens", 60)

    response = await call(client, "search_memory", {"query": "what happened", "limit": 10})

    result = response.json()
    assert result["truncated"] is True
    assert result["content"].endswith("more left out to fit the result size.)")
    assert len(result["data"]["hits"]) == 10, "the structured data stays complete"


async def test_tools_follow_scopes_and_users(client: httpx.AsyncClient) -> None:
    read_only = {"authorization": f"Bearer {service_token(scopes=('memory:read',))}"}
    own = {"authorization": f"Bearer {user_token(USER)}"}

    denied = await client.post(
        "/v1/tools/remember/call",
        json={"arguments": {"content": "x"}},
        headers={**AS_USER, **read_only},
    )
    mine = await client.post("/v1/tools/list_sessions/call", json={"arguments": {}}, headers=own)
    other = await client.post(
        "/v1/tools/list_sessions/call",
        json={"arguments": {}},
        headers={**own, "x-engram-user-id": "someone-else"},
    )
    nobody = await client.post("/v1/tools/list_sessions/call", json={"arguments": {}})

    assert denied.status_code == 403
    assert "memory:write" in denied.json()["detail"]
    assert mine.status_code == 200
    assert other.status_code == 403
    assert nobody.status_code == 422
    assert nobody.json()["errors"][0]["field"] == "x-engram-user-id"
