"""Short-term memory through the API: append, read, page, expire, delete."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from app.keys import KeyBuilder
from app.shortterm import ShortTermStore, StoredTurn
from tests.helpers import post_turns, turn

if TYPE_CHECKING:
    import httpx

    from app.runtime import Runtime

MULTILINGUAL = [
    "Ik woon sinds maart in Rotterdam, vlak bij de Maas.",
    "Party time 🎉🥳 — see you at 8!",
    "שלום, מה שלומך היום?",
    "مرحبا بالعالم",
    "Zürich → Köln, naïve café, 東京",
]


async def test_turns_round_trip_in_order(client: httpx.AsyncClient) -> None:
    sent = [
        turn(text, role="user" if i % 2 == 0 else "assistant")
        for i, text in enumerate(MULTILINGUAL)
    ]
    response = await post_turns(client, "trip", "alice", sent)

    assert response.status_code == 202
    accepted = response.json()["turns"]
    assert len(accepted) == len(sent)
    assert not any(item["duplicate"] for item in accepted)

    window = await client.get("/v1/sessions/trip/turns", params={"user_id": "alice"})
    assert window.status_code == 200
    turns = window.json()["turns"]
    assert [item["content"] for item in turns] == MULTILINGUAL
    assert [item["turn_id"] for item in turns] == [item["turn_id"] for item in accepted]
    assert turns[1]["role"] == "assistant"


async def test_turn_keeps_time_and_metadata(client: httpx.AsyncClient) -> None:
    metadata = {"channel": "web", "tags": ["a", "b"], "nested": {"depth": 2, "note": "ok ✓"}}
    sent = turn("Booked the flight", occurred_at="2024-03-01T09:30:00+01:00", metadata=metadata)
    await post_turns(client, "s1", "alice", [sent])

    stored = (await client.get("/v1/sessions/s1/turns", params={"user_id": "alice"})).json()
    assert stored["turns"][0]["metadata"] == metadata
    # The client's own offset is kept, not only the instant.
    assert stored["turns"][0]["occurred_at"] == "2024-03-01T09:30:00+01:00"


async def test_same_turn_id_is_stored_once(client: httpx.AsyncClient, runtime: Runtime) -> None:
    batch = [turn("first", turn_id="t-1"), turn("second", turn_id="t-2")]
    first = await post_turns(client, "s1", "alice", batch)
    retry = await post_turns(client, "s1", "alice", [*batch, turn("third", turn_id="t-3")])

    assert [item["duplicate"] for item in first.json()["turns"]] == [False, False]
    assert [item["duplicate"] for item in retry.json()["turns"]] == [True, True, False]
    window = (await client.get("/v1/sessions/s1/turns", params={"user_id": "alice"})).json()
    assert [item["turn_id"] for item in window["turns"]] == ["t-1", "t-2", "t-3"]
    assert (await runtime.stream.stats()).length == 3


async def test_duplicate_turn_id_within_one_batch(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await post_turns(
        client, "s1", "alice", [turn("one", turn_id="x"), turn("two", turn_id="x")]
    )

    assert [item["duplicate"] for item in response.json()["turns"]] == [False, True]
    window = (await client.get("/v1/sessions/s1/turns", params={"user_id": "alice"})).json()
    assert [item["content"] for item in window["turns"]] == ["one"]
    assert (await runtime.stream.stats()).length == 1


async def test_window_pages_with_cursor(client: httpx.AsyncClient) -> None:
    await post_turns(client, "long", "alice", [turn(f"message {i}") for i in range(7)])

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"user_id": "alice", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/sessions/long/turns", params=params)).json()
        seen.extend(item["content"] for item in page["turns"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == [f"message {i}" for i in range(7)]
    assert pages == 3


async def test_window_of_unknown_session_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sessions/nothing/turns", params={"user_id": "alice"})

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_invalid_cursor_is_rejected(client: httpx.AsyncClient) -> None:
    await post_turns(client, "s1", "alice", [turn("hello")])
    response = await client.get(
        "/v1/sessions/s1/turns", params={"user_id": "alice", "cursor": "not-a-cursor!"}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "cursor"


async def test_windows_are_per_user(client: httpx.AsyncClient) -> None:
    await post_turns(client, "shared-name", "alice", [turn("alice's secret")])
    await post_turns(client, "shared-name", "bob", [turn("bob's note")])

    alice = (await client.get("/v1/sessions/shared-name/turns", params={"user_id": "alice"})).json()
    bob = (await client.get("/v1/sessions/shared-name/turns", params={"user_id": "bob"})).json()
    assert [item["content"] for item in alice["turns"]] == ["alice's secret"]
    assert [item["content"] for item in bob["turns"]] == ["bob's note"]


def _stored(turn_id: str, content: str, session_id: str = "brief") -> StoredTurn:
    return StoredTurn(
        tenant_id="default",
        user_id="alice",
        session_id=session_id,
        turn_id=turn_id,
        role="user",
        content=content,
        occurred_at=datetime.now(UTC),
        metadata={},
    )


@pytest.mark.slow
async def test_window_expires_after_ttl(runtime: Runtime) -> None:
    store = ShortTermStore(runtime.redis, KeyBuilder("engram"), ttl_s=1, window_max_turns=100)
    await store.append("default", "alice", "brief", [_stored("t1", "short-lived")])
    assert await store.exists("default", "alice", "brief")

    await asyncio.sleep(0.6)
    # A new turn slides the expiry forward.
    await store.append("default", "alice", "brief", [_stored("t2", "still here")])
    await asyncio.sleep(0.6)
    assert await store.exists("default", "alice", "brief")

    await asyncio.sleep(1.0)
    assert not await store.exists("default", "alice", "brief")
    assert await store.sessions("default", "alice") == []
    # The promotion events outlive the window.
    assert (await runtime.stream.stats()).length == 2


async def test_window_keeps_newest_turns(runtime: Runtime) -> None:
    store = ShortTermStore(runtime.redis, KeyBuilder("engram"), ttl_s=60, window_max_turns=3)
    await store.append("default", "alice", "s", [_stored(f"t{i}", f"m{i}", "s") for i in range(5)])

    recent = await store.recent("default", "alice", "s", 10)
    assert [item.content for item in recent] == ["m2", "m3", "m4"]
    assert (await runtime.stream.stats()).length == 5


async def test_list_sessions_counts_turns(client: httpx.AsyncClient) -> None:
    await post_turns(client, "older", "alice", [turn("a"), turn("b")])
    await asyncio.sleep(0.01)
    await post_turns(client, "newer", "alice", [turn("c")])
    await post_turns(client, "other", "bob", [turn("d")])

    response = await client.get("/v1/users/alice/sessions")

    assert response.status_code == 200
    sessions = response.json()["sessions"]
    assert [item["session_id"] for item in sessions] == ["newer", "older"]
    assert [item["window_turns"] for item in sessions] == [1, 2]
    assert all(item["active"] for item in sessions)
    assert all(item["last_activity_at"] for item in sessions)


async def test_list_sessions_pages(client: httpx.AsyncClient) -> None:
    for index in range(5):
        await post_turns(client, f"s{index}", "alice", [turn("x")])
        await asyncio.sleep(0.002)

    first = (await client.get("/v1/users/alice/sessions", params={"limit": 2})).json()
    second = (
        await client.get(
            "/v1/users/alice/sessions", params={"limit": 2, "cursor": first["next_cursor"]}
        )
    ).json()
    third = (
        await client.get(
            "/v1/users/alice/sessions", params={"limit": 2, "cursor": second["next_cursor"]}
        )
    ).json()

    ids = [item["session_id"] for page in (first, second, third) for item in page["sessions"]]
    assert ids == ["s4", "s3", "s2", "s1", "s0"]
    assert third["next_cursor"] is None


async def test_delete_session_removes_window(client: httpx.AsyncClient) -> None:
    await post_turns(client, "s1", "alice", [turn("to be forgotten")])

    deleted = await client.delete("/v1/sessions/s1", params={"user_id": "alice"})
    window = await client.get("/v1/sessions/s1/turns", params={"user_id": "alice"})
    again = await client.delete("/v1/sessions/s1", params={"user_id": "alice"})

    assert deleted.status_code == 204
    assert window.status_code == 404
    assert again.status_code == 404
    assert (await client.get("/v1/users/alice/sessions")).json()["sessions"] == []


async def test_delete_session_of_other_user_is_404(client: httpx.AsyncClient) -> None:
    await post_turns(client, "s1", "alice", [turn("mine")])

    response = await client.delete("/v1/sessions/s1", params={"user_id": "mallory"})

    assert response.status_code == 404
    window = await client.get("/v1/sessions/s1/turns", params={"user_id": "alice"})
    assert len(window.json()["turns"]) == 1
