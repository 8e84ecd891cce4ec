"""Semantic search and memory lookups over promoted turns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text

from app.errors import EmbeddingModelMismatchError
from tests.conversation import QUESTIONS, SESSIONS, turns_payload
from tests.helpers import post_turns, turn
from tests.test_promotion import drain

if TYPE_CHECKING:
    import httpx

    from app.runtime import Runtime


async def load_conversation(client: httpx.AsyncClient, runtime: Runtime, user_id: str) -> None:
    for session_id in SESSIONS:
        response = await post_turns(client, session_id, user_id, turns_payload(session_id))
        assert response.status_code == 202
    await drain(runtime.new_worker("loader"))


async def search(client: httpx.AsyncClient, **body: Any) -> list[dict[str, Any]]:
    response = await client.post("/v1/memories/search", json=body)
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["hits"]
    return hits


@pytest.mark.parametrize(("question", "expected_turn"), QUESTIONS)
async def test_paraphrased_question_finds_turn(
    client: httpx.AsyncClient, runtime: Runtime, question: str, expected_turn: str
) -> None:
    await load_conversation(client, runtime, "dana")

    hits = await search(client, user_id="dana", query=question, limit=3)

    assert expected_turn in [hit["turn_id"] for hit in hits]


async def test_hits_carry_fields_and_sorted_scores(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await load_conversation(client, runtime, "dana")

    hits = await search(client, user_id="dana", query="rescue dog", limit=5)

    assert len(hits) == 5
    first = hits[0]
    assert first["turn_id"] == "s2-1"
    assert first["session_id"] == "s-2024-03"
    assert first["role"] == "user"
    assert first["kind"] == "turn"
    assert first["occurred_at"].startswith("2024-03-02T09:15:00")
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= score <= 1.0 for score in scores)


async def test_search_never_returns_other_users(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await load_conversation(client, runtime, "dana")
    await post_turns(client, "private", "erik", [turn("Erik is allergic to peanuts as well.")])
    await drain(runtime.new_worker("loader"))

    dana_hits = await search(client, user_id="dana", query="peanut allergy", limit=100)
    erik_hits = await search(client, user_id="erik", query="peanut allergy", limit=100)
    nobody_hits = await search(client, user_id="nobody", query="peanut allergy", limit=100)

    assert all(hit["session_id"] != "private" for hit in dana_hits)
    assert [hit["content"] for hit in erik_hits] == ["Erik is allergic to peanuts as well."]
    assert nobody_hits == []


async def test_session_filter_limits_scope(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await load_conversation(client, runtime, "dana")

    hits = await search(client, user_id="dana", query="moving", session_id="s-2024-01", limit=50)

    assert len(hits) == len(SESSIONS["s-2024-01"])
    assert {hit["session_id"] for hit in hits} == {"s-2024-01"}


async def test_time_filters_limit_scope(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await load_conversation(client, runtime, "dana")

    spring = await search(
        client,
        user_id="dana",
        query="news",
        after="2024-02-01T00:00:00Z",
        before="2024-05-01T00:00:00Z",
        limit=50,
    )

    assert {hit["session_id"] for hit in spring} == {"s-2024-03"}


async def test_limit_returns_full_count_with_filter(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A filtered search returns ``limit`` hits when that many match, even past the HNSW list."""
    big = [turn(f"Note {i} about the garden and the weather.") for i in range(60)]
    await post_turns(client, "garden", "fay", big)
    await post_turns(client, "other", "fay", [turn("Completely unrelated remark about taxes.")])
    await drain(runtime.new_worker("loader"))

    hits = await search(client, user_id="fay", query="taxes", session_id="garden", limit=50)

    assert len(hits) == 50


async def test_get_and_delete_memory(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await load_conversation(client, runtime, "dana")
    hit = (await search(client, user_id="dana", query="beagle", limit=1))[0]

    fetched = await client.get(f"/v1/memories/{hit['id']}", params={"user_id": "dana"})
    assert fetched.status_code == 200
    memory = fetched.json()
    assert memory["content"] == hit["content"]
    assert memory["embedding_model"] == "all-MiniLM-L6-v2"
    assert memory["user_id"] == "dana"

    hidden = await client.get(f"/v1/memories/{hit['id']}", params={"user_id": "erik"})
    refused = await client.delete(f"/v1/memories/{hit['id']}", params={"user_id": "erik"})
    assert hidden.status_code == 404
    assert refused.status_code == 404

    deleted = await client.delete(f"/v1/memories/{hit['id']}", params={"user_id": "dana"})
    gone = await client.get(f"/v1/memories/{hit['id']}", params={"user_id": "dana"})
    assert deleted.status_code == 204
    assert gone.status_code == 404
    after = await search(client, user_id="dana", query="beagle", limit=3)
    assert hit["id"] not in [item["id"] for item in after]


async def test_expired_memories_are_not_found(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_turns(client, "s1", "gil", [turn("The spare key is under the blue flowerpot.")])
    await drain(runtime.new_worker("loader"))
    async with runtime.engine.begin() as connection:
        await connection.execute(text("UPDATE memories SET expires_at = now() - interval '1 day'"))

    assert await search(client, user_id="gil", query="where is the key") == []


async def test_model_of_other_dimension_is_refused(runtime: Runtime) -> None:
    with pytest.raises(EmbeddingModelMismatchError, match="384-dimension"):
        await runtime.long_term.check_embedding_space("some-bigger-model", 768)


async def test_model_of_other_name_is_refused(runtime: Runtime) -> None:
    with pytest.raises(EmbeddingModelMismatchError, match="cannot be compared"):
        await runtime.long_term.check_embedding_space("another-384-model", 384)
