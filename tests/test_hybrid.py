"""Ranking modes, filters, score explanations, recency and diversity."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from app.shortterm import StoredTurn
from tests.helpers import post_turns, turn
from tests.test_promotion import drain
from tests.test_search import load_conversation, search

if TYPE_CHECKING:
    import httpx

    from app.runtime import Runtime

NOW = datetime.now(UTC)


async def test_keyword_mode_finds_exact_codes(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_turns(
        client,
        "orders",
        "olga",
        [
            turn("My order number is ZX-4471 and it has not arrived."),
            turn("The parcel was supposed to come on Tuesday."),
            turn("I ordered a blue raincoat in size M."),
        ],
    )
    await drain(runtime.new_worker("w"))

    hits = await search(client, user_id="olga", query="ZX-4471", mode="keyword")

    assert [hit["content"] for hit in hits] == [
        "My order number is ZX-4471 and it has not arrived."
    ], "only memories that share a word match in keyword mode"
    explanation = hits[0]["explanation"]
    assert explanation["mode"] == "keyword"
    assert explanation["text_rank"] == 1
    assert explanation["similarity"] is None
    assert hits[0]["score"] == explanation["score"] == explanation["text_score"]


async def test_hybrid_explains_both_rankings(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await load_conversation(client, runtime, "dana")

    hits = await search(client, user_id="dana", query="Pepper the beagle", mode="hybrid", limit=5)

    top = hits[0]
    assert "Pepper" in top["content"]
    explanation = top["explanation"]
    assert explanation["vector_rank"] is not None
    assert explanation["text_rank"] is not None
    k = runtime.settings.memory.search_rrf_k
    expected = 1 / (k + explanation["vector_rank"]) + 1 / (k + explanation["text_rank"])
    assert explanation["relevance"] == pytest.approx(expected)
    assert [hit["explanation"]["rank"] for hit in hits] == [1, 2, 3, 4, 5]
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)


async def test_semantic_mode_scores_are_similarities(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await load_conversation(client, runtime, "dana")

    hits = await search(client, user_id="dana", query="pets", mode="semantic", limit=3)

    for hit in hits:
        assert hit["explanation"]["text_rank"] is None
        assert hit["score"] == pytest.approx(hit["explanation"]["similarity"])


async def test_kind_role_and_metadata_filters(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_turns(
        client,
        "trip",
        "tom",
        [
            turn("Book the train to Utrecht.", metadata={"topic": "travel", "urgent": True}),
            turn("The train to Utrecht leaves at nine.", role="assistant"),
            turn("Pack the train tickets.", metadata={"topic": "travel"}),
        ],
    )
    await drain(runtime.new_worker("w"))

    by_role = await search(client, user_id="tom", query="train", role="assistant")
    by_metadata = await search(
        client, user_id="tom", query="train", metadata={"topic": "travel", "urgent": True}
    )
    by_kind = await search(client, user_id="tom", query="train", kind="fact")

    assert [hit["content"] for hit in by_role] == ["The train to Utrecht leaves at nine."]
    assert [hit["content"] for hit in by_metadata] == ["Book the train to Utrecht."]
    assert by_kind == []
    bad = await client.post(
        "/v1/memories/search", json={"user_id": "tom", "query": "train", "metadata": "travel"}
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0] == {"field": "metadata", "message": "must be a JSON object"}


async def test_recency_favours_newer_memories(client: httpx.AsyncClient, runtime: Runtime) -> None:
    old = (NOW - timedelta(days=400)).isoformat()
    new = (NOW - timedelta(days=2)).isoformat()
    await post_turns(
        client,
        "jobs",
        "rita",
        [
            turn("I work as a nurse at the city hospital.", occurred_at=old),
            turn("I now work as a teacher at the primary school.", occurred_at=new),
        ],
    )
    await drain(runtime.new_worker("w"))

    plain = await search(client, user_id="rita", query="Where does she work as a nurse?")
    recent = await search(
        client,
        user_id="rita",
        query="Where does she work as a nurse?",
        recency_half_life_days=30,
        recency_weight=0.9,
    )

    assert "nurse" in plain[0]["content"]
    assert "teacher" in recent[0]["content"]
    factors = {hit["content"][:12]: hit["explanation"]["recency_factor"] for hit in recent}
    assert factors["I work as a "] < factors["I now work a"] <= 1.0


async def test_diversity_pushes_near_duplicates_down(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    repeats = [turn(f"I love hiking in the mountains{'!' * i}") for i in range(1, 4)]
    other = turn("I enjoy long walks along mountain lakes with my sister.")
    await post_turns(client, "hobby", "hana", [*repeats, other])
    await drain(runtime.new_worker("w"))

    plain = await search(client, user_id="hana", query="hiking mountains", mode="semantic", limit=2)
    diverse = await search(
        client, user_id="hana", query="hiking mountains", mode="semantic", limit=2, diversity=0.5
    )

    assert all("hiking" in hit["content"] for hit in plain)
    assert "walks" in diverse[1]["content"]
    assert diverse[1]["explanation"]["diversity_penalty"] is not None
    values = [hit["explanation"]["diversity_score"] for hit in diverse]
    assert all(value is not None for value in values)


def synthetic_turns(user_id: str, session_id: str, count: int) -> list[StoredTurn]:
    return [
        StoredTurn(
            tenant_id="default",
            user_id=user_id,
            session_id=session_id,
            turn_id=f"{session_id}-{index}",
            role="user",
            content=f"Synthetic note {index} of {user_id}",
            occurred_at=NOW - timedelta(minutes=index),
            metadata={},
        )
        for index in range(count)
    ]


def unit_vectors(count: int, dimension: int, seed: int) -> list[list[float]]:
    generator = random.Random(seed)  # noqa: S311  (reproducible test vectors, not secrets)
    vectors = []
    for _ in range(count):
        vector = [generator.gauss(0.0, 1.0) for _ in range(dimension)]
        norm = sum(value * value for value in vector) ** 0.5
        vectors.append([value / norm for value in vector])
    return vectors


@pytest.mark.parametrize("mode", ["semantic", "hybrid"])
@pytest.mark.parametrize("exact_max_rows", [0, 10_000], ids=["hnsw", "exact-for-small"])
async def test_filtered_search_fills_limit_for_large_and_small_users(
    client: httpx.AsyncClient,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    exact_max_rows: int,
) -> None:
    """Labelled synthetic vectors: one user with 3,000 memories and 40 users with 12 each.

    With ``exact_max_rows`` 0 every search goes through the HNSW index first.
    """
    monkeypatch.setattr(runtime.search, "_exact_max_rows", exact_max_rows)
    dimension = runtime.embedder.dimension
    model = runtime.embedder.model_name
    big: list[StoredTurn] = []
    for session in range(100):
        big += synthetic_turns("big-user", f"s{session}", 30)
    await runtime.long_term.insert_turns(big, unit_vectors(len(big), dimension, 1), model)
    for index in range(40):
        small = synthetic_turns(f"small-{index}", "only", 12)
        vectors = unit_vectors(len(small), dimension, 100 + index)
        await runtime.long_term.insert_turns(small, vectors, model)

    queries: list[dict[str, Any]] = [
        {"user_id": "big-user", "session_id": "s42", "limit": 25},
        {"user_id": "small-7", "limit": 10},
        {"user_id": "small-7", "session_id": "only", "limit": 12},
    ]
    for query in queries:
        hits = await search(client, query="a note", mode=mode, **query)
        assert len(hits) == query["limit"], query
        assert all(hit["session_id"] == query.get("session_id", "only") for hit in hits)
