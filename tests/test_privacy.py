"""Audit log, export of a user's data, and erasure of a user everywhere."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from tests.conftest import service_token, user_token
from tests.helpers import post_turns, turn
from tests.test_promotion import drain, memory_count

if TYPE_CHECKING:
    import httpx

    from app.runtime import Runtime

SECRET_TEXT = "My bank PIN is 4921"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


ADMIN = bearer(service_token(scopes=("admin",)))


async def audit_entries(client: httpx.AsyncClient, **params: str) -> list[dict[str, object]]:
    response = await client.get("/v1/audit", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    entries: list[dict[str, object]] = response.json()["entries"]
    return entries


async def test_actions_are_audited_without_content(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await post_turns(client, "s1", "alice", [turn(SECRET_TEXT)])
    await drain(runtime.new_worker("w"))
    await client.post("/v1/memories/search", json={"user_id": "alice", "query": "bank PIN"})
    await client.get(
        "/v1/sessions/s1/turns", params={"user_id": "alice"}, headers={"x-request-id": "req-7"}
    )

    entries = await audit_entries(client, user_id="alice")

    assert [entry["action"] for entry in entries] == [
        "turns.read",
        "memories.search",
        "turns.append",
    ]
    newest = entries[0]
    assert newest["subject"] == "test-backend"
    assert newest["tenant_id"] == "default"
    assert newest["object_ids"] == ["s1"]
    assert newest["request_id"] == "req-7"
    assert newest["client_address"]
    assert newest["token_id"]
    async with runtime.engine.connect() as connection:
        dump = (
            (await connection.execute(text("SELECT row_to_json(a)::text FROM audit_log a")))
            .scalars()
            .all()
        )
    # Ids are hex, so "4921" may occur inside one by chance, but the PIN is a separate number.
    pin = re.compile(r"(?<![0-9a-f])4921(?![0-9a-f])")
    assert not any(pin.search(row) or "bank" in row for row in dump)


async def test_audit_needs_admin_and_stays_in_tenant(client: httpx.AsyncClient) -> None:
    await post_turns(client, "s1", "alice", [turn("hello")])
    await client.post(
        "/v1/sessions/s1/turns",
        json={"user_id": "alice", "turns": [turn("other tenant")]},
        headers=bearer(service_token("tenant-b")),
    )

    reader = await client.get("/v1/audit", headers=bearer(service_token(scopes=("memory:read",))))
    end_user = await client.get("/v1/audit", headers=bearer(user_token("alice")))
    other_admin = await client.get(
        "/v1/audit", headers=bearer(service_token("tenant-b", scopes=("admin",)))
    )

    assert reader.status_code == 403
    assert end_user.status_code == 403
    assert [entry["tenant_id"] for entry in other_admin.json()["entries"]] == ["tenant-b"]
    assert len(await audit_entries(client)) == 1
    assert [entry["action"] for entry in await audit_entries(client)] == [
        "audit.read",
        "turns.append",
    ]


async def test_audit_filters_and_pages(client: httpx.AsyncClient) -> None:
    for index in range(5):
        await post_turns(client, f"s{index}", "alice", [turn("x")])
    await post_turns(client, "s9", "bob", [turn("y")])

    first = (
        await client.get("/v1/audit", params={"user_id": "alice", "limit": 3}, headers=ADMIN)
    ).json()
    second = (
        await client.get(
            "/v1/audit",
            params={"user_id": "alice", "limit": 3, "cursor": first["next_cursor"]},
            headers=ADMIN,
        )
    ).json()
    actions = await audit_entries(client, action="turns.append", user_id="bob")

    sessions = [entry["object_ids"][0] for entry in first["entries"] + second["entries"]]
    assert sessions == ["s4", "s3", "s2", "s1", "s0"]
    assert second["next_cursor"] is None
    assert [entry["user_id"] for entry in actions] == ["bob"]


async def test_audit_log_is_append_only(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_turns(client, "s1", "alice", [turn("x")])

    for statement in ("UPDATE audit_log SET action = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):
            async with runtime.engine.begin() as connection:
                await connection.execute(text(statement))

    assert [entry["action"] for entry in await audit_entries(client)] == ["turns.append"]


async def test_export_holds_everything_about_user(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await post_turns(client, "old", "alice", [turn("Ik woon in Utrecht 🌷", turn_id="t1")])
    await drain(runtime.new_worker("w"))
    await post_turns(client, "new", "alice", [turn("Nieuwe sessie")])
    await post_turns(client, "other", "bob", [turn("bob's data")])

    response = await client.get("/v1/users/alice/export", headers=bearer(user_token("alice")))
    foreign = await client.get("/v1/users/bob/export", headers=bearer(user_token("alice")))

    assert response.status_code == 200
    document = response.json()
    assert document["user_id"] == "alice"
    windows = {session["session_id"]: session for session in document["sessions"]}
    assert set(windows) == {"old", "new"}
    assert windows["old"]["turns"][0]["content"] == "Ik woon in Utrecht 🌷"
    assert [memory["content"] for memory in document["memories"]] == ["Ik woon in Utrecht 🌷"]
    assert {entry["action"] for entry in document["audit"]} == {"turns.append"}
    assert "bob's data" not in response.text
    assert foreign.status_code == 403


async def test_erasure_leaves_nothing_behind(client: httpx.AsyncClient, runtime: Runtime) -> None:
    # Promoted memories, a live window, events still on the stream, and one held by a worker.
    await post_turns(client, "s1", "alice", [turn(f"{SECRET_TEXT} part {i}") for i in range(3)])
    await drain(runtime.new_worker("w"))
    await post_turns(client, "s2", "alice", [turn(f"{SECRET_TEXT} again")])
    await post_turns(client, "s3", "alice", [turn(f"{SECRET_TEXT} in flight")])
    await post_turns(client, "s1", "bob", [turn("bob stays")])
    holder = runtime.new_worker("holder")
    held = await runtime.stream.read_new(holder.consumer, count=1, block_ms=100)
    assert len(held) == 1

    response = await client.delete("/v1/users/alice")

    assert response.status_code == 200
    assert response.json()["memories_deleted"] == 3
    assert response.json()["stream_events_deleted"] == 2
    # The worker that held an event before the erasure finishes its batch: nothing comes back.
    await holder.process(held)
    await drain(runtime.new_worker("after"))

    assert await memory_count(runtime, "alice") == 0
    assert await memory_count(runtime, "bob") == 1
    keys = [key.decode() async for key in runtime.redis.scan_iter(match="*")]
    assert not [key for key in keys if "alice" in key]
    remaining = await runtime.redis.xrange(runtime.stream._keys.stream()) or []  # noqa: SLF001
    dead = await runtime.stream.dead_letters()
    stream_dump = json.dumps([[event.fields for event in dead], [str(item) for item in remaining]])
    assert "alice" not in stream_dump
    assert SECRET_TEXT not in stream_dump
    actions = await audit_entries(client, user_id="alice", action="user.erase")
    assert len(actions) == 1


async def test_end_user_can_erase_only_self(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await post_turns(client, "s1", "bob", [turn("bob's turn")])

    refused = await client.delete("/v1/users/bob", headers=bearer(user_token("alice")))
    allowed = await client.delete("/v1/users/bob", headers=bearer(user_token("bob")))

    assert refused.status_code == 403
    assert allowed.status_code == 200
    assert (await client.get("/v1/users/bob/sessions")).json()["sessions"] == []
