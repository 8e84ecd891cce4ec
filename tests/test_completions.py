"""The OpenAI-compatible completions API, driven by the official openai client."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import openai
import pytest

from app.llm import LLMGateway
from app.main import attach_runtime
from tests.conftest import llm_settings, make_settings, serve, service_token, user_token
from tests.openai_server import Reply
from tests.test_chat import USER, seed_memories, window

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from litestar import Litestar

    from app.runtime import Runtime
    from embeddings.local import LocalEmbedder
    from tests.openai_server import OpenAICompatibleServer

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
async def engram(
    app: Litestar, runtime: Runtime, client: httpx.AsyncClient, llm: OpenAICompatibleServer
) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official client, pointed at Engram, with Engram calling the local model server."""
    gateway = LLMGateway(llm_settings(llm, allowed_models=["other-model"]))
    attach_runtime(app, runtime, gateway)
    # The openai package speaks HTTP through httpx2, the successor of httpx.
    transport = httpx2.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield openai.AsyncOpenAI(
            base_url="http://testserver/v1",
            api_key=service_token(),
            http_client=http,
            max_retries=0,
            default_headers={"x-engram-user-id": USER, "x-engram-session-id": "support"},
        )
    await gateway.close()


async def test_completion_adds_memories_and_stores_both_sides(
    engram: openai.AsyncOpenAI,
    client: httpx.AsyncClient,
    runtime: Runtime,
    llm: OpenAICompatibleServer,
) -> None:
    await seed_memories(client, runtime)
    llm.replies.append(Reply(text="Pepper the beagle, adopted in March."))

    raw = await engram.chat.completions.with_raw_response.create(
        model="test-model",
        messages=[
            {"role": "system", "content": "You are a support bot."},
            {"role": "user", "content": "What is my dog called?"},
        ],
        temperature=0.2,
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "Pepper the beagle, adopted in March."
    sent = llm.chat_requests[0]
    assert sent["temperature"] == 0.2
    assert "user" not in sent, "the Engram user id is not passed on to the model server"
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "system", "user"]
    assert sent["messages"][0]["content"] == "You are a support bot."
    assert "Pepper" in sent["messages"][1]["content"]
    extension = (completion.model_extra or {})["engram"]
    assert extension["memory_ids"]
    assert raw.headers["x-engram-memory-ids"] == ",".join(extension["memory_ids"])

    turns = await window(client, "support")
    assert [(t["role"], t["content"]) for t in turns] == [
        ("user", "What is my dog called?"),
        ("assistant", "Pepper the beagle, adopted in March."),
    ]
    assert turns[1]["turn_id"] == extension["assistant_turn_id"]


async def test_tool_calls_pass_through_and_only_text_is_stored(
    engram: openai.AsyncOpenAI, client: httpx.AsyncClient, llm: OpenAICompatibleServer
) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": "Rotterdam"})},
    }
    llm.replies.extend([Reply(tool_calls=[call]), Reply(text="It is 12 °C in Rotterdam.")])
    messages: list[Any] = [{"role": "user", "content": "Weather in Rotterdam?"}]

    first = await engram.chat.completions.create(
        model="test-model", messages=messages, tools=[WEATHER_TOOL]
    )

    tool_calls = first.choices[0].message.tool_calls
    assert tool_calls is not None
    assert tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert first.choices[0].finish_reason == "tool_calls"
    assert llm.chat_requests[0]["tools"] == [WEATHER_TOOL]

    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 12}'},
    ]
    second = await engram.chat.completions.create(
        model="test-model", messages=messages, tools=[WEATHER_TOOL]
    )

    assert second.choices[0].message.content == "It is 12 °C in Rotterdam."
    assert llm.chat_requests[1]["messages"][-1]["tool_call_id"] == "call_1"
    turns = await window(client, "support")
    assert [(t["role"], t["content"]) for t in turns] == [
        ("user", "Weather in Rotterdam?"),
        ("assistant", "It is 12 °C in Rotterdam."),
    ]


async def test_streamed_tool_calls_reach_the_client(
    engram: openai.AsyncOpenAI, llm: OpenAICompatibleServer
) -> None:
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Utrecht"}'},
    }
    llm.replies.append(Reply(tool_calls=[call]))

    stream = await engram.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": "Weather in Utrecht?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls = [
        tool_call
        async for chunk in stream
        for choice in chunk.choices
        for tool_call in choice.delta.tool_calls or []
    ]

    assert [c.function.arguments for c in calls if c.function] == ['{"city": "Utrecht"}']


async def test_stream_failure_reaches_the_client_as_an_error(
    engram: openai.AsyncOpenAI, client: httpx.AsyncClient, llm: OpenAICompatibleServer
) -> None:
    llm.replies.append(Reply(text="alpha beta gamma delta"))
    llm.error_in_stream_after = 2

    stream = await engram.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "Go"}], stream=True
    )
    with pytest.raises(openai.APIError, match=r"reported an error mid-stream"):
        async for _ in stream:
            pass

    assert [t["role"] for t in await window(client, "support")] == ["user"]


async def test_model_errors_keep_the_openai_status(
    engram: openai.AsyncOpenAI, client: httpx.AsyncClient, llm: OpenAICompatibleServer
) -> None:
    llm.fail_with = 429

    with pytest.raises(openai.RateLimitError) as caught:
        await engram.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "Hello"}]
        )

    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "llm-rate-limited", "the client reads the OpenAI-style error member"
    assert "Retry-After" in caught.value.message
    assert [t["role"] for t in await window(client, "support")] == ["user"]


async def test_model_must_be_offered(
    engram: openai.AsyncOpenAI, llm: OpenAICompatibleServer
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await engram.chat.completions.create(
            model="gpt-unknown", messages=[{"role": "user", "content": "Hello"}]
        )

    assert "LLM_ALLOWED_MODELS" in str(caught.value.body)
    await engram.chat.completions.create(
        model="other-model", messages=[{"role": "user", "content": "Hello"}]
    )
    assert llm.chat_requests[-1]["model"] == "other-model"
    listed = await engram.models.list()
    assert [model.id for model in listed.data] == ["test-model", "other-model"]


async def test_user_comes_from_the_field_or_a_user_token(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    body = {"model": "engram", "messages": [{"role": "user", "content": "Hoi! 👋"}]}

    missing = await client.post("/v1/chat/completions", json=body)
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "user"

    by_field = await client.post("/v1/chat/completions", json={**body, "user": USER})
    assert by_field.status_code == 200
    assert by_field.json()["model"] == "engram-offline"

    blank = await client.post(
        "/v1/chat/completions",
        json={**body, "user": USER, "messages": [{"role": "user", "content": "  "}]},
    )
    assert blank.status_code == 422
    assert blank.json()["errors"][0]["field"] == "messages.0.content"

    token = user_token("self-user")
    own = await client.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {token}"}
    )
    assert own.status_code == 200
    other = await client.post(
        "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {token}", "x-engram-user-id": USER},
    )
    assert other.status_code == 403

    turns = await client.get(
        "/v1/sessions/chat/turns",
        params={"user_id": "self-user"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert [t["content"] for t in turns.json()["turns"]] == ["Hoi! 👋"]


@pytest.fixture
def model_server(
    server_urls: tuple[str, str],
    embedder: LocalEmbedder,
    runtime: Runtime,
    llm: OpenAICompatibleServer,
) -> Iterator[str]:
    settings = make_settings(*server_urls)
    settings.llm = llm_settings(llm)
    with serve(settings, embedder) as url:
        yield url


def test_official_client_streams_a_reply_over_http(
    model_server: str, llm: OpenAICompatibleServer
) -> None:
    llm.replies.append(Reply(text="Streaming works over a real socket."))
    engram = openai.OpenAI(base_url=f"{model_server}/v1", api_key=service_token(), max_retries=0)

    stream = engram.chat.completions.create(
        model="test-model",
        messages=[{"role": "user", "content": "Stream please"}],
        user=USER,
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]

    assert len([piece for piece in pieces if piece]) > 1
    assert "".join(pieces) == "Streaming works over a real socket."
    engram.close()


async def test_offline_completion_streams_the_context(client: httpx.AsyncClient) -> None:
    body = {
        "model": "engram",
        "user": USER,
        "stream": True,
        "messages": [{"role": "user", "content": "שלום, מה שלומך?"}],
    }

    response = await client.post("/v1/chat/completions", json=body)

    assert response.status_code == 200
    lines = [
        line.removeprefix("data: ")
        for line in response.text.replace("\r\n", "\n").split("\n")
        if line.startswith("data: ")
    ]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert "No language model is configured" in text
    assert "שלום, מה שלומך?" in text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
