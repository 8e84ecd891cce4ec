"""Facts written, edited, pinned and deleted through the API, each change in the history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from tests.conftest import user_token
from tests.helpers import post_turns, turn
from tests.test_promotion import drain

if TYPE_CHECKING:
    import httpx

    from app.runtime import Runtime


async def remember(client: httpx.AsyncClient, user_id: str, content: str, **extra: Any) -> Any:
    return await client.post("/v1/memories", json={"user_id": user_id, "content": content, **extra})


async def history_of(client: httpx.AsyncClient, user_id: str, memory_id: str) -> list[Any]:
    response = await client.get(f"/v1/memories/{memory_id}/history", params={"user_id": user_id})
    assert response.status_code == 200, response.text
    entries: list[Any] = response.json()["entries"]
    return entries


async def test_a_fact_is_created_once_and_a_repeat_returns_it(client: httpx.AsyncClient) -> None:
    created = await remember(client, "ana", "Speaks Dutch and Arabic 🇳🇱 عربي.", kind="fact")
    assert created.status_code == 201, created.text
    fact = created.json()
    assert fact["kind"] == "fact"
    assert fact["content"] == "Speaks Dutch and Arabic 🇳🇱 عربي."
    assert fact["valid_from"] is not None
    assert fact["valid_to"] is None

    again = await remember(client, "ana", "speaks dutch and arabic 🇳🇱 عربي!")
    assert again.status_code == 200
    assert again.json()["id"] == fact["id"]

    history = await history_of(client, "ana", fact["id"])
    assert [(entry["event"], entry["cause"]) for entry in history] == [("create", "api")]
    assert history[0]["new_content"] == "Speaks Dutch and Arabic 🇳🇱 عربي."


async def test_facts_that_differ_in_a_number_are_both_kept(client: httpx.AsyncClient) -> None:
    first = await remember(client, "abe", "Owes Sam 20 euros for the concert.")
    second = await remember(client, "abe", "Owes Sam 30 euros for the concert.")

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]


async def test_supersedes_needs_a_current_fact_of_the_user(client: httpx.AsyncClient) -> None:
    old = (await remember(client, "ben", "Works as a nurse.")).json()

    newer = await remember(
        client, "ben", "Works as a software engineer.", supersedes=old["id"], kind="fact"
    )
    assert newer.status_code == 201
    assert newer.json()["supersedes"] == old["id"]
    replaced = (await client.get(f"/v1/memories/{old['id']}", params={"user_id": "ben"})).json()
    assert replaced["superseded_by"] == newer.json()["id"]
    assert replaced["valid_to"] is not None

    again = await remember(client, "ben", "Works as a teacher.", supersedes=old["id"])
    assert again.status_code == 422
    assert again.json()["errors"][0]["field"] == "supersedes"
    other_user = await remember(client, "cleo", "Works as a pilot.", supersedes=newer.json()["id"])
    assert other_user.status_code == 422


async def test_editing_a_fact_records_old_and_new_text(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    fact = (await remember(client, "dan", "Has two cats.")).json()

    edited = await client.patch(
        f"/v1/memories/{fact['id']}",
        json={"user_id": "dan", "content": "Has three cats.", "metadata": {"source": "profile"}},
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["content"] == "Has three cats."
    assert edited.json()["updated_at"] is not None

    hits = (
        await client.post(
            "/v1/memories/search",
            json={"user_id": "dan", "query": "three cats", "mode": "semantic"},
        )
    ).json()["hits"]
    assert hits[0]["content"] == "Has three cats."
    assert hits[0]["explanation"]["similarity"] > 0.9

    history = await history_of(client, "dan", fact["id"])
    update = history[-1]
    assert (update["event"], update["old_content"], update["new_content"]) == (
        "update",
        "Has two cats.",
        "Has three cats.",
    )
    assert update["changes"]["metadata"] == {"old": {}, "new": {"source": "profile"}}
    async with runtime.engine.connect() as connection:
        rows = await connection.scalar(text("SELECT count(*) FROM memories WHERE user_id = 'dan'"))
    assert rows == 1


async def test_turns_cannot_be_edited_but_can_be_pinned(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await post_turns(client, "s1", "eli", [turn("My locker code is 4471.", turn_id="e1")])
    await drain(runtime.new_worker("w"))
    stored = (await client.get("/v1/memories", params={"user_id": "eli"})).json()["memories"]
    memory_id = stored[0]["id"]

    edit = await client.patch(
        f"/v1/memories/{memory_id}", json={"user_id": "eli", "content": "My code is 0000."}
    )
    assert edit.status_code == 422
    assert edit.json()["errors"][0]["field"] == "content"
    assert "cannot be edited" in edit.json()["errors"][0]["message"]

    pinned = await client.patch(
        f"/v1/memories/{memory_id}", json={"user_id": "eli", "pinned": True}
    )
    assert pinned.status_code == 200
    assert pinned.json()["pinned"] is True

    # A pinned memory is in context even for an unrelated question.
    context = (
        await client.post("/v1/context", json={"user_id": "eli", "query": "What is the weather?"})
    ).json()
    assert [hit["content"] for hit in context["memories"]] == ["My locker code is 4471."]
    assert context["memories"][0]["pinned"] is True
    assert "user (pinned): My locker code is 4471." in context["messages"][0]["content"]

    listed = (await client.get("/v1/memories", params={"user_id": "eli", "pinned": "true"})).json()
    assert [memory["id"] for memory in listed["memories"]] == [memory_id]
    history = await history_of(client, "eli", memory_id)
    assert [entry["event"] for entry in history] == ["create", "update"]
    assert history[0]["cause"] == "promotion"
    assert history[1]["changes"] == {"pinned": {"old": False, "new": True}}
    assert history[1]["old_content"] is None


async def test_an_edit_that_repeats_another_fact_is_a_conflict(client: httpx.AsyncClient) -> None:
    await remember(client, "fay", "Likes jazz.", kind="preference")
    other = (await remember(client, "fay", "Likes opera.", kind="preference")).json()

    clash = await client.patch(
        f"/v1/memories/{other['id']}", json={"user_id": "fay", "content": "Likes jazz."}
    )

    assert clash.status_code == 409
    assert clash.json()["type"].endswith(":conflict")
    kept = (await client.get(f"/v1/memories/{other['id']}", params={"user_id": "fay"})).json()
    assert kept["content"] == "Likes opera."

    # The same holds across kinds: a preference may not repeat a current fact.
    await remember(client, "fay", "Lives in Utrecht.", kind="fact")
    across = await client.patch(
        f"/v1/memories/{other['id']}", json={"user_id": "fay", "content": "Lives in Utrecht."}
    )
    assert across.status_code == 409
    assert across.json()["errors"][0]["field"] == "content"


async def test_deleting_keeps_the_text_in_history_unless_purged(
    client: httpx.AsyncClient,
) -> None:
    kept = (await remember(client, "gus", "Plays the cello.")).json()
    purged = (await remember(client, "gus", "Owes Sam 20 euros.")).json()

    assert (
        await client.delete(f"/v1/memories/{kept['id']}", params={"user_id": "gus"})
    ).status_code == 204
    assert (
        await client.delete(
            f"/v1/memories/{purged['id']}", params={"user_id": "gus", "purge_history": "true"}
        )
    ).status_code == 204

    kept_history = await history_of(client, "gus", kept["id"])
    assert [entry["event"] for entry in kept_history] == ["create", "delete"]
    assert kept_history[1]["old_content"] == "Plays the cello."
    purged_history = await history_of(client, "gus", purged["id"])
    assert [entry["event"] for entry in purged_history] == ["delete"]
    assert purged_history[0]["old_content"] is None
    assert purged_history[0]["changes"] == {"history_purged": True}
    assert "Owes Sam" not in str(purged_history)

    # The export holds the kept text, until the history is purged after the deletion.
    export = (await client.get("/v1/users/gus/export")).json()
    assert "Plays the cello." in [entry["old_content"] for entry in export["history"]]
    assert (
        await client.delete(
            f"/v1/memories/{kept['id']}", params={"user_id": "gus", "purge_history": "true"}
        )
    ).status_code == 204
    gone = await client.get(f"/v1/memories/{kept['id']}/history", params={"user_id": "gus"})
    assert gone.status_code == 404
    export = (await client.get("/v1/users/gus/export")).json()
    assert "Plays the cello." not in str(export)


async def test_a_users_own_token_is_recorded_as_the_user(
    client: httpx.AsyncClient,
) -> None:
    headers = {"authorization": f"Bearer {user_token('hal')}"}
    created = await client.post(
        "/v1/memories", json={"user_id": "hal", "content": "Is left-handed."}, headers=headers
    )
    assert created.status_code == 201
    history = (
        await client.get(
            f"/v1/memories/{created.json()['id']}/history",
            params={"user_id": "hal"},
            headers=headers,
        )
    ).json()["entries"]
    assert (history[0]["cause"], history[0]["actor"]) == ("user", "hal")

    # Another user's token sees neither the memory nor its history.
    other = {"authorization": f"Bearer {user_token('ivo')}"}
    for response in (
        await client.get(
            f"/v1/memories/{created.json()['id']}/history", params={"user_id": "hal"}, headers=other
        ),
        await client.patch(
            f"/v1/memories/{created.json()['id']}",
            json={"user_id": "hal", "pinned": True},
            headers=other,
        ),
    ):
        assert response.status_code == 403
    missing = await client.get(
        f"/v1/memories/{created.json()['id']}/history", params={"user_id": "ivo"}, headers=other
    )
    assert missing.status_code == 404


async def test_bad_fact_input_is_rejected_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for body, field in [
        ({"user_id": "jo", "content": "   "}, "content"),
        ({"user_id": "jo", "content": "x", "kind": "turn"}, "kind"),
        ({"user_id": "jo", "content": "x", "valid_from": "2024-01-01T00:00:00"}, "valid_from"),
        ({"user_id": "jo", "content": "x" * 2001}, "content"),
        ({"user_id": "jo", "content": "x", "valid_from": "2999-01-01T00:00:00Z"}, "valid_from"),
        (
            {"user_id": "jo", "content": "x", "metadata": {"a": {"b": {"c": {"d": {"e": {}}}}}}},
            "metadata",
        ),
    ]:
        response = await client.post("/v1/memories", json=body)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["field"] == field
    too_large = await client.post(
        "/v1/memories", json={"user_id": "jo", "content": "x", "metadata": {"note": "y" * 9000}}
    )
    assert too_large.status_code == 413
    async with runtime.engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM memories")) == 0
        assert await connection.scalar(text("SELECT count(*) FROM memory_history")) == 0


async def test_a_planned_event_may_lie_in_the_future(client: httpx.AsyncClient) -> None:
    planned = await remember(
        client, "lea", "Flies to Lisbon.", kind="event", valid_from="2999-06-01T08:00:00Z"
    )

    assert planned.status_code == 201
    assert planned.json()["valid_from"].startswith("2999-06-01")


async def test_listing_pages_through_memories(client: httpx.AsyncClient) -> None:
    for index in range(5):
        await remember(client, "kim", f"Fact number {index} about kites.")

    first = (await client.get("/v1/memories", params={"user_id": "kim", "limit": 3})).json()
    second = (
        await client.get(
            "/v1/memories", params={"user_id": "kim", "limit": 3, "cursor": first["next_cursor"]}
        )
    ).json()

    assert len(first["memories"]) == 3
    assert len(second["memories"]) == 2
    assert second["next_cursor"] is None
    seen = {memory["id"] for memory in first["memories"] + second["memories"]}
    assert len(seen) == 5
