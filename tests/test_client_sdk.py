"""The Python client package against a live service: every endpoint, retries, errors, frames."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
from engram_client import (
    AsyncEngramClient,
    AuthenticationError,
    EngramClient,
    EngramConnectionError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)

from tests.conftest import service_token, user_token

if TYPE_CHECKING:
    from collections.abc import Iterator

    from app.runtime import Runtime

USER = "sdk-user"
TURNS = [
    {"role": "user", "content": "I play the cello in a string quartet.", "turn_id": "t1"},
    {"role": "assistant", "content": "Lovely! Which piece are you rehearsing?", "turn_id": "t2"},
    {"role": "user", "content": "Dvořák's American quartet 🎻", "turn_id": "t3"},
]


def wait_for_memories(engram: EngramClient, count: int) -> None:
    for _ in range(300):
        if len(engram.memories(USER).memories) >= count:
            return
        threading.Event().wait(0.1)
    raise AssertionError("the turns were not promoted in time")


def test_sync_client_covers_the_endpoints(live_server: str, runtime: Runtime) -> None:
    with EngramClient(live_server, token=service_token()) as engram:
        accepted = engram.append_turns("music", USER, TURNS)
        again = engram.append_turns("music", USER, TURNS[:1])
        engram.append_turns("other", USER, [{"role": "user", "content": "Unrelated note."}])
        wait_for_memories(engram, 4)

        turns = list(engram.iter_turns("music", USER, page_size=2))
        sessions = engram.sessions(USER)
        results = engram.search(USER, "Which instrument do I play?", limit=2, mode="hybrid")
        memory = engram.get_memory(results.hits[0].id, USER)
        context = engram.context(USER, query="music", token_budget=300)
        tool = engram.call_tool("list_sessions", "{}", user_id=USER, tool_call_id="c1")
        memories = engram.memories(USER)

        assert [turn.duplicate for turn in accepted] == [False, False, False]
        assert [turn.duplicate for turn in again] == [True]
        assert [turn.content for turn in turns] == [turn["content"] for turn in TURNS]
        assert {session.session_id for session in sessions.sessions} == {"music", "other"}
        assert "cello" in results.hits[0].content
        assert results.mode == "hybrid"
        assert results.hits[0].explanation["rank"] == 1
        assert memory.content == results.hits[0].content
        assert context.token_count <= 300
        assert tool.tool_call_id == "c1"
        assert "music" in tool.content
        assert len(engram.tools()) == 5
        assert engram.models() == ["engram-offline"]

        frame = results.to_dataframe()
        assert list(frame["content"]) == [hit.content for hit in results.hits]
        assert "explanation.similarity" in frame.columns
        assert len(memories.to_dataframe()) == 4
        assert set(sessions.to_dataframe()["session_id"]) == {"music", "other"}

        fact = engram.remember(USER, "Plays the cello in an orchestra.", pinned=True)
        assert engram.remember(USER, "plays the cello in an orchestra").id == fact.id
        edited = engram.update_memory(fact.id, USER, content="Plays the viola in an orchestra.")
        assert (edited.content, edited.pinned) == ("Plays the viola in an orchestra.", True)
        listed = engram.list_memories(USER, kind="fact", pinned=True)
        assert [item.id for item in listed.memories] == [fact.id]
        history = engram.memory_history(fact.id, USER)
        assert [entry["event"] for entry in history] == ["create", "update"]
        engram.delete_memory(fact.id, USER, purge_history=True)
        assert [entry["event"] for entry in engram.memory_history(fact.id, USER)] == ["delete"]

        engram.delete_memory(memory.id, USER)
        with pytest.raises(NotFoundError):
            engram.get_memory(memory.id, USER)
        engram.delete_session("other", USER)
        erased = engram.erase_user(USER)
        assert erased["user_id"] == USER
        assert engram.export_user(USER)["memories"] == []

    with EngramClient(live_server, token=service_token(scopes=("admin",))) as admin:
        actions = {entry["action"] for entry in admin.iter_audit(user_id=USER, page_size=3)}
    assert {"memories.search", "memory.delete", "user.erase"} <= actions


def test_chat_events_stream(live_server: str, runtime: Runtime) -> None:
    with EngramClient(live_server, token=user_token(USER)) as engram:
        events = list(engram.chat(USER, "talk", "Hallo daar"))

    assert [event.event for event in events] == ["context", "delta", "done"]
    assert "No language model is configured" in events[1].data["text"]


def test_errors_are_typed(live_server: str, runtime: Runtime) -> None:
    with (
        EngramClient(live_server, token=service_token()) as engram,
        pytest.raises(InvalidRequestError) as invalid,
    ):
        engram.search(USER, "   ")
    with (
        EngramClient(live_server, token=user_token("x")) as other,
        pytest.raises(PermissionDeniedError),
    ):
        other.search(USER, "hi")
    with (
        EngramClient(live_server, token="not-a-token") as forged,
        pytest.raises(AuthenticationError),
    ):
        forged.search(USER, "hi")
    with (
        EngramClient("http://127.0.0.1:9", max_retries=0) as nowhere,
        pytest.raises(EngramConnectionError),
    ):
        nowhere.search(USER, "hi")

    assert invalid.value.status == 422
    assert invalid.value.errors[0]["field"] == "query"
    assert invalid.value.type == "urn:engram:problem:invalid-input"


class FlakyServer:
    """Return 429 with Retry-After a set number of times, then succeed; record each call."""

    def __init__(self, failures: int, retry_after: str) -> None:
        self.failures = failures
        self.retry_after = retry_after
        self.calls: list[float] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Keep test output quiet."""

            def do_POST(self) -> None:
                owner.calls.append(time.monotonic())
                length = int(self.headers.get("content-length", "0"))
                self.rfile.read(length)
                if owner.failures > 0:
                    owner.failures -= 1
                    body = json.dumps({"status": 429, "title": "Too many requests"}).encode()
                    self.send_response(429)
                    self.send_header("retry-after", owner.retry_after)
                else:
                    body = json.dumps({"hits": [], "mode": "hybrid", "timings": {}}).encode()
                    self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def flaky() -> Iterator[FlakyServer]:
    server = FlakyServer(failures=2, retry_after="0")
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_retries_honour_retry_after(flaky: FlakyServer) -> None:
    with EngramClient(flaky.url, max_retries=3) as engram:
        results = engram.search(USER, "hi")
    assert results.hits == []
    assert len(flaky.calls) == 3

    flaky.failures = 5
    with EngramClient(flaky.url, max_retries=1) as engram, pytest.raises(RateLimitError):
        engram.search(USER, "hi")


async def test_async_client(live_server: str, runtime: Runtime) -> None:
    async with AsyncEngramClient(live_server, token=service_token()) as engram:
        await engram.append_turns("music", USER, TURNS)
        turns = [turn async for turn in engram.iter_turns("music", USER, page_size=1)]
        sessions = [session async for session in engram.iter_sessions(USER)]
        for _ in range(300):
            if len((await engram.memories(USER)).memories) == len(TURNS):
                break
            await asyncio.sleep(0.1)
        results = await engram.search(USER, "quartet", mode="keyword")
        first = results.hits[0]
        fetched = await engram.get_memory(first.id, USER)
        context = await engram.context(USER, session_id="music")
        tool = await engram.call_tool("search_memory", {"query": "cello"}, user_id=USER)
        tools = await engram.tools("anthropic")
        everything = await engram.sessions(USER)
        exported = await engram.export_user(USER)
        events = [event async for event in engram.chat(USER, "music", "Which quartet?")]
        fact = await engram.remember(USER, "Rehearses on Tuesdays.", kind="event")
        repinned = await engram.update_memory(fact.id, USER, pinned=True)
        facts = await engram.list_memories(USER, kind="event")
        fact_history = await engram.memory_history(fact.id, USER)
        await engram.delete_memory(fact.id, USER, purge_history=True)
        await engram.delete_memory(first.id, USER)
        await engram.delete_session("music", USER)
        with pytest.raises(NotFoundError):
            await engram.delete_memory(first.id, USER)
        erased = await engram.erase_user(USER)

    async with AsyncEngramClient(live_server, token=service_token(scopes=("admin",))) as admin:
        entries = [entry async for entry in admin.iter_audit(user_id=USER, page_size=5)]
        page = await admin.audit(user_id=USER, limit=2)

    assert tools[0]["name"] == "search_memory"
    assert "input_schema" in tools[0]
    assert [session.session_id for session in everything.sessions] == ["music"]
    assert len(exported["memories"]) == len(TURNS)
    assert [event.event for event in events] == ["context", "delta", "done"]
    assert erased["user_id"] == USER
    assert len(entries) > 5, "the iterator follows the cursor past the first page"
    assert {entry["action"] for entry in entries} >= {"turns.append", "memory.delete"}
    assert len(page["entries"]) == 2

    assert repinned.pinned is True
    assert [item.id for item in facts.memories] == [fact.id]
    assert [entry["event"] for entry in fact_history] == ["create", "update"]
    assert [turn.turn_id for turn in turns] == ["t1", "t2", "t3"]
    assert [session.session_id for session in sessions] == ["music"]
    assert fetched.id == first.id
    assert context.messages[-1]["content"] == TURNS[-1]["content"]
    assert "cello" in tool.content
