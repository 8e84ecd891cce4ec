"""Context assembly: relevant memories plus the recent window, never over budget."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.shortterm import StoredTurn
from prompts import load_prompts
from retrieval.context import ContextAssembler
from retrieval.ranking import Explanation
from retrieval.search import Hit
from retrieval.tokens import TiktokenCounter
from tests.conversation import SESSIONS, turns_payload
from tests.helpers import post_turns, turn
from tests.test_promotion import drain

if TYPE_CHECKING:
    import httpx

    from app.runtime import Runtime

COUNTER = TiktokenCounter("cl100k_base")
PROMPTS = load_prompts()


def render(hits: Any) -> str:
    lines = "\n".join(
        PROMPTS["context_memory_line"].render(
            date=hit.occurred_at.strftime("%Y-%m-%d"),
            role=hit.role or hit.kind,
            content=hit.content,
        )
        for hit in hits
    )
    return PROMPTS["context_memories"].render(memories=lines)


ASSEMBLER = ContextAssembler(counter=COUNTER, render_memories=render, window_share=0.5)
START = datetime(2024, 1, 1, tzinfo=UTC)


def make_turn(index: int, content: str) -> StoredTurn:
    return StoredTurn(
        "default", "u", "s", f"t{index}", "user", content, START + timedelta(minutes=index), {}
    )


def make_hit(index: int, content: str, turn_id: str | None = None) -> Hit:
    return Hit(
        id=uuid.uuid4(),
        content=content,
        role="user",
        kind="turn",
        session_id="old",
        turn_id=turn_id or f"m{index}",
        occurred_at=START - timedelta(days=index),
        metadata={},
        score=1.0 - index / 100,
    )


def message_tokens(messages: list[dict[str, str]]) -> int:
    return sum(COUNTER.message_tokens(message["content"]) for message in messages) + 3


async def test_context_lists_memories_then_window(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for session_id in SESSIONS:
        await post_turns(client, session_id, "dana", turns_payload(session_id))
    await drain(runtime.new_worker("w"))
    await post_turns(client, "today", "dana", [turn("Hello again!"), turn("Any snack ideas?")])

    response = await client.post(
        "/v1/context",
        json={
            "user_id": "dana",
            "session_id": "today",
            "query": "What snacks are safe given my allergy?",
            "token_budget": 400,
        },
    )

    assert response.status_code == 200
    body = response.json()
    messages = body["messages"]
    assert messages[0]["role"] == "system"
    assert "allergic to peanuts" in messages[0]["content"]
    assert [message["content"] for message in messages[1:]] == ["Hello again!", "Any snack ideas?"]
    assert body["token_count"] <= body["token_budget"] == 400
    assert body["token_count"] == message_tokens(messages)
    assert any("peanuts" in memory["content"] for memory in body["memories"])
    # The window's own turns are not repeated as memories.
    assert all(memory["session_id"] != "today" for memory in body["memories"])


async def test_context_query_defaults_to_last_user_turn(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for session_id in SESSIONS:
        await post_turns(client, session_id, "dana", turns_payload(session_id))
    await drain(runtime.new_worker("w"))
    await post_turns(client, "today", "dana", [turn("How is my dog doing with the shoes?")])

    body = (
        await client.post("/v1/context", json={"user_id": "dana", "session_id": "today"})
    ).json()

    assert body["memories"]
    assert "Pepper" in body["memories"][0]["content"] or "shoe" in body["memories"][0]["content"]
    assert body["token_budget"] == 2000


async def test_small_budget_keeps_newest_turns(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_turns(client, "chat", "ivy", [turn(f"message number {i}") for i in range(30)])

    body = (
        await client.post(
            "/v1/context", json={"user_id": "ivy", "session_id": "chat", "token_budget": 60}
        )
    ).json()

    contents = [message["content"] for message in body["messages"]]
    assert contents
    assert contents[-1] == "message number 29"
    assert contents == sorted(contents, key=lambda text: int(text.rsplit(" ", 1)[1]))
    assert body["token_count"] <= 60


async def test_context_without_session_or_memories(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/context", json={"user_id": "nobody", "query": "hello"})).json()

    assert body == {
        "messages": [],
        "memories": [],
        "token_count": 0,
        "token_budget": 2000,
        "summary_id": None,
    }


def test_memories_in_window_are_not_repeated() -> None:
    window = [make_turn(0, "I live in Utrecht now.")]
    hits = [make_hit(1, "I live in Utrecht now.", turn_id="t0"), make_hit(2, "I like tea.")]

    assembled = ASSEMBLER.assemble(window, hits, budget=500)

    assert [hit.content for hit in assembled.memories] == ["I like tea."]


def test_budget_too_small_for_anything_is_empty() -> None:
    assembled = ASSEMBLER.assemble([make_turn(0, "a long message " * 20)], [], budget=5)

    assert assembled.messages == []
    assert assembled.token_count == 0


def test_memories_fill_unused_window_share() -> None:
    window = [make_turn(0, "hi")]
    hits = [make_hit(i, f"memory {i} " + "detail " * 20) for i in range(10)]

    small_window = ASSEMBLER.assemble(window, hits, budget=300)

    # The window needs few tokens, so memories may use most of the budget.
    assert small_window.token_count > 150
    assert len(small_window.memories) >= 4


texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=120
)


@settings(max_examples=150, deadline=None)
@given(
    window=st.lists(texts, max_size=12),
    memories=st.lists(texts, max_size=12),
    budget=st.integers(min_value=1, max_value=800),
    share=st.floats(min_value=0.0, max_value=1.0),
)
def test_assembly_never_exceeds_budget(
    window: list[str], memories: list[str], budget: int, share: float
) -> None:
    assembler = ContextAssembler(counter=COUNTER, render_memories=render, window_share=share)
    turns = [make_turn(index, text) for index, text in enumerate(window)]
    hits = [make_hit(index, text) for index, text in enumerate(memories)]

    assembled = assembler.assemble(turns, hits, budget)

    counted = (
        sum(COUNTER.message_tokens(message.content) for message in assembled.messages) + 3
        if assembled.messages
        else 0
    )
    assert assembled.token_count == counted
    assert counted <= budget
    kept = [message.content for message in assembled.messages if message.role != "system"]
    # The window part is a suffix of the window, in its original order.
    assert kept == window[len(window) - len(kept) :] if kept else True


@pytest.mark.parametrize("budget", [50, 120, 400, 2000])
async def test_api_budget_is_respected(
    client: httpx.AsyncClient, runtime: Runtime, budget: int
) -> None:
    for session_id in SESSIONS:
        await post_turns(client, session_id, "dana", turns_payload(session_id))
    await drain(runtime.new_worker("w"))

    body = (
        await client.post(
            "/v1/context",
            json={
                "user_id": "dana",
                "session_id": "s-2024-06",
                "query": "family plans",
                "token_budget": budget,
            },
        )
    ).json()

    assert body["token_count"] <= budget
    assert body["token_count"] == (message_tokens(body["messages"]) if body["messages"] else 0)


def explained(similarity: float, text_rank: int | None = None) -> Explanation:
    return Explanation(
        mode="hybrid",
        similarity=similarity,
        vector_rank=1,
        text_score=None,
        text_rank=text_rank,
        relevance=0.0,
        age_days=0.0,
        recency_factor=1.0,
        score=0.0,
        rank=1,
        diversity_penalty=None,
        diversity_score=None,
    )


def hit_at(
    content: str,
    days_ago: int,
    similarity: float = 0.8,
    text_rank: int | None = None,
    embedding: list[float] | None = None,
) -> Hit:
    return Hit(
        id=uuid.uuid4(),
        content=content,
        role="user",
        kind="turn",
        session_id="old",
        turn_id=None,
        occurred_at=START - timedelta(days=days_ago),
        metadata={},
        score=similarity,
        explanation=explained(similarity, text_rank),
        embedding=embedding,
    )


def test_memories_are_deduplicated_filtered_and_listed_by_time() -> None:
    assembler = ContextAssembler(
        counter=COUNTER, render_memories=render, window_share=0.5, min_similarity=0.2
    )
    hits = [
        hit_at("We moved to Rotterdam in May.", days_ago=3, embedding=[1.0, 0.0]),
        hit_at("we moved to  ROTTERDAM in may.", days_ago=2),
        hit_at("Our new flat is in Rotterdam-Noord.", days_ago=1, embedding=[0.99, 0.141]),
        hit_at("I started a pottery class.", days_ago=30, embedding=[0.0, 1.0]),
        hit_at("The weather is grey today.", days_ago=5, similarity=0.05),
        hit_at("Rotterdam has a new bridge.", days_ago=9, similarity=0.05, text_rank=1),
    ]

    assembled = assembler.assemble([], hits, budget=2000)

    kept = [hit.content for hit in assembled.memories]
    assert kept == [
        "We moved to Rotterdam in May.",
        "I started a pottery class.",
        "Rotterdam has a new bridge.",
    ], "repeats and dissimilar memories without shared words are left out"
    system = assembled.messages[0].content
    order = [system.index(text) for text in ("pottery", "bridge", "moved to Rotterdam")]
    assert order == sorted(order), "the system message lists memories oldest first"
