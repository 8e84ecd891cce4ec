"""Every operation in the OpenAPI schema, aimed at another tenant's and another user's data.

Tenant A's user ``xavier`` has a session, a window and a promoted memory
with a marker text. An admin of tenant B and tenant A's end user ``yvonne``
call every ``/v1`` operation against xavier's ids. None of the answers may
contain the marker or the memory id, and xavier's data must be unchanged
afterwards. The table of requests must cover the whole schema, so a new
endpoint fails this test until it is added here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import service_token, user_token
from tests.helpers import turn
from tests.test_promotion import drain

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from app.runtime import Runtime

MARKER = "MARKER-7f3a xavier's private plan"
VICTIM = "xavier"
SESSION = "s-secret"

TENANT_A = {"authorization": f"Bearer {service_token('tenant-a', scopes=('admin',))}"}
TENANT_B_ADMIN = {"authorization": f"Bearer {service_token('tenant-b', scopes=('admin',))}"}
OTHER_USER = {"authorization": f"Bearer {user_token('yvonne', tenant_id='tenant-a')}"}

Request = tuple[str, dict[str, Any] | None, dict[str, Any] | None]
"""A path, query parameters and a JSON body."""


def requests_by_operation(memory_id: str) -> dict[tuple[str, str], Callable[[], Request]]:
    user = {"user_id": VICTIM}
    return {
        ("POST", "/v1/sessions/{session_id}/turns"): lambda: (
            f"/v1/sessions/{SESSION}/turns",
            None,
            {"user_id": VICTIM, "turns": [turn("planted by another tenant")]},
        ),
        ("GET", "/v1/sessions/{session_id}/turns"): lambda: (
            f"/v1/sessions/{SESSION}/turns",
            user,
            None,
        ),
        ("DELETE", "/v1/sessions/{session_id}"): lambda: (f"/v1/sessions/{SESSION}", user, None),
        ("GET", "/v1/users/{user_id}/sessions"): lambda: (
            f"/v1/users/{VICTIM}/sessions",
            None,
            None,
        ),
        ("POST", "/v1/memories/search"): lambda: (
            "/v1/memories/search",
            None,
            {"user_id": VICTIM, "query": "private plan", "limit": 100},
        ),
        ("GET", "/v1/memories/{memory_id}"): lambda: (f"/v1/memories/{memory_id}", user, None),
        ("DELETE", "/v1/memories/{memory_id}"): lambda: (f"/v1/memories/{memory_id}", user, None),
        ("GET", "/v1/memories"): lambda: (
            "/v1/memories",
            {**user, "include_superseded": "true"},
            None,
        ),
        ("POST", "/v1/memories"): lambda: (
            "/v1/memories",
            None,
            {"user_id": VICTIM, "content": "planted by another tenant", "supersedes": memory_id},
        ),
        ("PATCH", "/v1/memories/{memory_id}"): lambda: (
            f"/v1/memories/{memory_id}",
            None,
            {"user_id": VICTIM, "pinned": True, "metadata": {"planted": True}},
        ),
        ("GET", "/v1/memories/{memory_id}/history"): lambda: (
            f"/v1/memories/{memory_id}/history",
            user,
            None,
        ),
        ("POST", "/v1/context"): lambda: (
            "/v1/context",
            None,
            {"user_id": VICTIM, "session_id": SESSION, "query": "private plan"},
        ),
        ("GET", "/v1/users/{user_id}/export"): lambda: (f"/v1/users/{VICTIM}/export", None, None),
        ("DELETE", "/v1/users/{user_id}"): lambda: (f"/v1/users/{VICTIM}", None, None),
        ("GET", "/v1/audit"): lambda: ("/v1/audit", user, None),
        ("POST", "/v1/chat"): lambda: (
            "/v1/chat",
            None,
            {"user_id": VICTIM, "session_id": SESSION, "message": "What is my private plan?"},
        ),
        ("POST", "/v1/chat/completions"): lambda: (
            "/v1/chat/completions",
            None,
            {
                "model": "engram",
                "user": VICTIM,
                "messages": [{"role": "user", "content": "What is my private plan?"}],
            },
        ),
        ("GET", "/v1/models"): lambda: ("/v1/models", None, None),
        ("GET", "/v1/tools"): lambda: ("/v1/tools", None, None),
        ("POST", "/v1/tools/{name}/call"): lambda: (
            "/v1/tools/search_memory/call",
            user,
            {"arguments": {"query": "private plan", "limit": 20}},
        ),
    }


# Operations that hold no user's data, so an end user may call them.
UNSCOPED = {("GET", "/v1/models"), ("GET", "/v1/tools")}


async def seed_victim(client: httpx.AsyncClient, runtime: Runtime) -> str:
    response = await client.post(
        f"/v1/sessions/{SESSION}/turns",
        json={"user_id": VICTIM, "turns": [turn(MARKER)]},
        headers=TENANT_A,
    )
    assert response.status_code == 202
    await drain(runtime.new_worker("seed"))
    hits = (
        await client.post(
            "/v1/memories/search",
            json={"user_id": VICTIM, "query": "private plan"},
            headers=TENANT_A,
        )
    ).json()["hits"]
    assert [hit["content"] for hit in hits] == [MARKER]
    memory_id: str = hits[0]["id"]
    return memory_id


def v1_operations(schema: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        if path.startswith("/v1/")
        for method in item
    }


@pytest.mark.parametrize(
    ("attacker", "headers"), [("tenant B admin", TENANT_B_ADMIN), ("other user", OTHER_USER)]
)
async def test_no_operation_reaches_other_scope(
    client: httpx.AsyncClient, runtime: Runtime, attacker: str, headers: dict[str, str]
) -> None:
    memory_id = await seed_victim(client, runtime)
    schema = (await client.get("/docs/openapi.json")).json()
    table = requests_by_operation(memory_id)
    assert v1_operations(schema) == set(table), "add new operations to this table"

    for (method, template), build in table.items():
        path, params, body = build()
        response = await client.request(method, path, params=params, json=body, headers=headers)

        where = f"{attacker}: {method} {template} -> {response.status_code}"
        assert response.status_code < 500, where
        # A 404 repeats the id the caller sent, which reveals nothing new.
        text = response.text.replace(f"memory '{memory_id}' was not found", "")
        assert "MARKER-7f3a" not in text, where
        assert memory_id not in text, where
        if attacker == "other user" and (method, template) not in UNSCOPED:
            assert response.status_code == 403, where

    await assert_victim_intact(client, memory_id)


async def assert_victim_intact(client: httpx.AsyncClient, memory_id: str) -> None:
    memory = await client.get(
        f"/v1/memories/{memory_id}", params={"user_id": VICTIM}, headers=TENANT_A
    )
    window = await client.get(
        f"/v1/sessions/{SESSION}/turns", params={"user_id": VICTIM}, headers=TENANT_A
    )
    assert memory.status_code == 200
    assert memory.json()["content"] == MARKER
    assert [item["content"] for item in window.json()["turns"]] == [MARKER]


async def test_other_tenant_answers_match_empty_scope(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Tenant B gets the same answers it would get if xavier did not exist."""
    memory_id = await seed_victim(client, runtime)

    sessions = await client.get(f"/v1/users/{VICTIM}/sessions", headers=TENANT_B_ADMIN)
    memory = await client.get(
        f"/v1/memories/{memory_id}", params={"user_id": VICTIM}, headers=TENANT_B_ADMIN
    )
    unknown = await client.get(
        "/v1/memories/00000000-0000-0000-0000-000000000000",
        params={"user_id": VICTIM},
        headers=TENANT_B_ADMIN,
    )
    export = await client.get(f"/v1/users/{VICTIM}/export", headers=TENANT_B_ADMIN)

    assert sessions.json()["sessions"] == []
    assert memory.status_code == unknown.status_code == 404
    assert memory.json()["detail"].replace(memory_id, "ID") == unknown.json()["detail"].replace(
        "00000000-0000-0000-0000-000000000000", "ID"
    )
    assert export.json()["sessions"] == []
    assert export.json()["memories"] == []
