"""Engram's own chat: context from memory, streamed replies, model failures, offline mode."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from app.llm import LLMGateway
from app.main import attach_runtime
from retrieval.tokens import REPLY_PRIMER_TOKENS, TiktokenCounter
from tests.conftest import llm_settings
from tests.conversation import SESSIONS, turns_payload
from tests.helpers import post_turns
from tests.openai_server import Reply
from tests.test_promotion import drain

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx
    from litestar import Litestar

    from app.runtime import Runtime
    from tests.openai_server import OpenAICompatibleServer

COUNTER = TiktokenCounter("cl100k_base")
USER = "chat-user"


def parse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """Split a Server-Sent Events body into (event, data) pairs."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data.append(line.removeprefix("data:").strip())
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(COUNTER.message_tokens(m["content"]) for m in messages) + REPLY_PRIMER_TOKENS


async def window(client: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/sessions/{session_id}/turns", params={"user_id": USER})
    assert response.status_code == 200, response.text
    turns: list[dict[str, Any]] = response.json()["turns"]
    return turns


async def seed_memories(client: httpx.AsyncClient, runtime: Runtime) -> None:
    for session_id in SESSIONS:
        response = await post_turns(client, session_id, USER, turns_payload(session_id))
        assert response.status_code == 202
    await drain(runtime.new_worker())


@pytest.fixture
async def model_client(
    app: Litestar, runtime: Runtime, client: httpx.AsyncClient, llm: OpenAICompatibleServer
) -> AsyncIterator[httpx.AsyncClient]:
    """The test client, with chat calling the local model server."""
    gateway = LLMGateway(llm_settings(llm, timeout_s=1.0))
    attach_runtime(app, runtime, gateway)
    yield client
    await gateway.close()


async def chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    payload = {"user_id": USER, "session_id": "today", **body}
    return await client.post("/v1/chat", json=payload)


async def test_chat_uses_memories_and_streams_the_reply(
    model_client: httpx.AsyncClient, runtime: Runtime, llm: OpenAICompatibleServer
) -> None:
    await seed_memories(model_client, runtime)
    llm.replies.append(Reply(text="You told me you are allergic to peanuts."))

    response = await chat(model_client, message="Which food should I avoid?")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_events(response.text)
    names = [name for name, _ in events]
    assert names[0] == "context"
    assert names[-1] == "done"
    assert set(names[1:-1]) == {"delta"}
    assert len(names) > 3, "the reply should arrive in several pieces"
    reply = "".join(data["text"] for name, data in events if name == "delta")
    assert reply == "You told me you are allergic to peanuts."

    context = events[0][1]
    contents = [hit["content"] for hit in context["memories"]]
    assert any("allergic to peanuts" in content for content in contents)
    assert all(isinstance(hit["score"], float) for hit in context["memories"])

    sent = llm.chat_requests[0]
    assert sent["model"] == "test-model"
    assert sent["stream"] is True
    assert sent["messages"][0]["role"] == "system"
    assert "long-term memory" in sent["messages"][0]["content"]
    assert "allergic to peanuts" in sent["messages"][1]["content"]
    assert sent["messages"][-1] == {"role": "user", "content": "Which food should I avoid?"}
    assert prompt_tokens(sent["messages"]) <= runtime.settings.chat.context_tokens
    assert context["token_count"] == prompt_tokens(sent["messages"])

    done = events[-1][1]
    assert done["memory_ids"] == [hit["id"] for hit in context["memories"]]
    turns = await window(model_client, "today")
    assert [(t["role"], t["turn_id"]) for t in turns] == [
        ("user", done["user_turn_id"]),
        ("assistant", done["assistant_turn_id"]),
    ]
    assert turns[1]["content"] == reply
    assert [m["id"] for m in turns[1]["metadata"]["memories"]] == done["memory_ids"]


async def test_chat_prompt_stays_within_a_small_budget(
    model_client: httpx.AsyncClient, runtime: Runtime, llm: OpenAICompatibleServer
) -> None:
    await seed_memories(model_client, runtime)
    for index in range(6):
        response = await chat(model_client, message=f"Tell me about my dog, question {index}.")
        assert response.status_code == 200

    response = await chat(model_client, message="What is my dog called?", token_budget=300)

    assert response.status_code == 200
    sent = llm.chat_requests[-1]["messages"]
    assert prompt_tokens(sent) <= 300
    assert sent[-1]["content"] == "What is my dog called?"
    assert any("Pepper" in message["content"] for message in sent)


async def test_chat_keeps_the_conversation_in_the_window(
    model_client: httpx.AsyncClient, llm: OpenAICompatibleServer
) -> None:
    await chat(model_client, message="My favourite colour is teal.")
    await chat(model_client, message="Wat is mijn lievelingskleur? 🎨")

    sent = llm.chat_requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "My favourite colour is teal."
    assert sent[2]["content"] == "You said: My favourite colour is teal."
    assert sent[3]["content"] == "Wat is mijn lievelingskleur? 🎨"


@pytest.mark.parametrize(
    ("fail_with", "status", "problem"),
    [(429, 429, "llm-rate-limited"), (500, 502, "llm-unavailable"), (401, 502, "llm-unavailable")],
)
async def test_model_error_before_the_reply_is_a_problem_and_keeps_the_turn(
    model_client: httpx.AsyncClient,
    llm: OpenAICompatibleServer,
    fail_with: int,
    status: int,
    problem: str,
) -> None:
    llm.fail_with = fail_with
    llm.retry_after = "7" if fail_with == 429 else None

    response = await chat(model_client, message="Are you there?", turn_id="t-1")

    assert response.status_code == status
    body = response.json()
    assert body["type"] == f"urn:engram:problem:{problem}"
    assert body["user_turn_id"] == "t-1"
    assert body["error"]["type"] == problem
    if fail_with == 429:
        assert response.headers["retry-after"] == "7"
    if fail_with == 401:
        assert "LLM_API_KEY" in body["detail"]
    turns = await window(model_client, "today")
    assert [(t["role"], t["content"]) for t in turns] == [("user", "Are you there?")]


async def test_model_timeout_is_a_gateway_timeout(
    model_client: httpx.AsyncClient, llm: OpenAICompatibleServer
) -> None:
    llm.delay_s = 2.0

    response = await chat(model_client, message="Slow question")

    assert response.status_code == 504
    assert response.json()["type"] == "urn:engram:problem:llm-timeout"
    assert "LLM_TIMEOUT_S" in response.json()["detail"]
    assert len(await window(model_client, "today")) == 1


@pytest.mark.parametrize(
    ("setting", "problem"),
    [("break_stream_after", "llm-bad-response"), ("error_in_stream_after", "llm-stream-error")],
)
async def test_failure_mid_stream_is_an_error_event(
    model_client: httpx.AsyncClient, llm: OpenAICompatibleServer, setting: str, problem: str
) -> None:
    llm.replies.append(Reply(text="one two three four five"))
    setattr(llm, setting, 3)

    response = await chat(model_client, message="Tell me a story")

    assert response.status_code == 200
    events = parse_events(response.text)
    assert [name for name, _ in events] == ["context", "delta", "delta", "error"]
    error = events[-1][1]
    assert error["type"] == f"urn:engram:problem:{problem}"
    assert error["user_turn_id"] == events[0][1]["user_turn_id"]
    turns = await window(model_client, "today")
    assert [t["role"] for t in turns] == ["user"], "a broken reply is not stored"


async def test_gateway_retries_a_failed_call(
    app: Litestar,
    runtime: Runtime,
    client: httpx.AsyncClient,
    llm: OpenAICompatibleServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = LLMGateway(llm_settings(llm, max_retries=2))
    attach_runtime(app, runtime, gateway)
    llm.fail_with, llm.fail_times, llm.retry_after = 503, 1, "0"

    response = await chat(client, message="Try again please")

    await gateway.close()
    assert response.status_code == 200
    assert len(llm.chat_requests) == 2
    assert parse_events(response.text)[-1][0] == "done"
    retries = [r for r in caplog.records if r.getMessage().startswith("Retrying request")]
    assert len(retries) == 1, "each retry is logged"


async def test_chat_offline_shows_the_context(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await seed_memories(client, runtime)

    response = await chat(client, message="Do I have any pets?")

    assert response.status_code == 200
    events = parse_events(response.text)
    assert [name for name, _ in events] == ["context", "delta", "done"]
    text = events[1][1]["text"]
    assert "No language model is configured" in text
    assert "LLM_MODEL" in text
    assert "Pepper" in text, "the memories that would have been sent are shown"
    assert "Do I have any pets?" in text
    done = events[2][1]
    assert done["offline"] is True
    assert done["assistant_turn_id"] is None
    assert done["memory_ids"], "offline replies still name the memories they found"
    turns = await window(client, "today")
    assert [t["role"] for t in turns] == ["user"], "offline replies are not stored"


async def test_chat_rejects_bad_input_and_stores_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"message": "   "}, "message"),
        ({"message": "hi", "token_budget": 10}, "token_budget"),
        ({"message": "hi", "token_budget": 10_000_000}, "token_budget"),
        ({"message": "word " * 2000, "token_budget": 1000}, "message"),
        ({"message": "hi", "session_id": "bad session"}, "session_id"),
    ]
    for body, field in cases:
        response = await chat(client, **body)
        assert response.status_code == 422, (body, response.text)
        assert field in [error["field"] for error in response.json()["errors"]]
    assert await runtime.redis.dbsize() == 1, "only the stream's consumer group exists"


async def test_chat_needs_the_users_own_token(client: httpx.AsyncClient) -> None:
    from tests.conftest import user_token  # noqa: PLC0415

    response = await client.post(
        "/v1/chat",
        json={"user_id": USER, "session_id": "today", "message": "hi"},
        headers={"authorization": f"Bearer {user_token('someone-else')}"},
    )

    assert response.status_code == 403
