"""Bad input gets a problem response that names the field, and stores nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from app.service import json_depth
from tests.helpers import post_turns, turn

if TYPE_CHECKING:
    import httpx

    from app.runtime import Runtime

BIG_TEXT = "x" * 32_769  # one byte over the default MEMORY_MAX_CONTENT_BYTES

BAD_TURN_BATCHES: list[tuple[str, list[dict[str, Any]], int, str]] = [
    ("empty content", [turn("")], 422, "turns.0.content"),
    ("blank content", [turn(" \n\t ")], 422, "turns.0.content"),
    ("unknown role", [turn("hi", role="robot")], 422, "turns.0.role"),
    ("malformed time", [turn("hi", occurred_at="yesterday")], 422, "turns.0.occurred_at"),
    (
        "time without zone",
        [turn("hi", occurred_at="2024-01-01T10:00:00")],
        422,
        "turns.0.occurred_at",
    ),
    ("NUL in content", [turn("a\x00b")], 422, "turns.0.content"),
    ("NUL in metadata", [turn("hi", metadata={"k": "a\x00"})], 422, "turns.0.metadata"),
    ("metadata not an object", [turn("hi", metadata=["a"])], 422, "turns.0.metadata"),
    ("bad turn id", [turn("hi", turn_id="has space")], 422, "turns.0.turn_id"),
    ("unknown field", [{"role": "user", "content": "hi", "colour": "red"}], 422, "turns.0.colour"),
    ("oversized content", [turn("ok"), turn(BIG_TEXT)], 413, "turns.1.content"),
    ("oversized metadata", [turn("hi", metadata={"blob": "y" * 9000})], 413, "turns.0.metadata"),
    (
        "metadata too deep",
        [turn("hi", metadata={"a": {"b": {"c": {"d": {"e": [1]}}}}})],
        422,
        "turns.0.metadata",
    ),
    ("oversized batch", [turn(f"t{i}") for i in range(101)], 413, "turns"),
    ("empty batch", [], 422, "turns"),
]


async def _nothing_stored(client: httpx.AsyncClient, runtime: Runtime, user_id: str) -> None:
    sessions = (await client.get(f"/v1/users/{user_id}/sessions")).json()
    assert sessions["sessions"] == []
    assert (await runtime.stream.stats()).length == 0


@pytest.mark.parametrize(
    ("case", "turns", "status", "field"),
    BAD_TURN_BATCHES,
    ids=[case[0] for case in BAD_TURN_BATCHES],
)
async def test_bad_turns_are_rejected(
    client: httpx.AsyncClient,
    runtime: Runtime,
    case: str,
    turns: list[dict[str, Any]],
    status: int,
    field: str,
) -> None:
    response = await post_turns(client, "s1", "alice", turns)

    assert response.status_code == status, case
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert field in [error["field"] for error in problem["errors"]]
    await _nothing_stored(client, runtime, "alice")


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ({}, 1), ({"a": [1, {"b": 2}]}, 3), ([[[]]], 3), ({"a": {"b": {}}, "c": 1}, 3)],
)
def test_json_depth(value: object, depth: int) -> None:
    assert json_depth(value) == depth


async def test_unpaired_surrogate_is_rejected(client: httpx.AsyncClient, runtime: Runtime) -> None:
    raw = b'{"user_id": "alice", "turns": [{"role": "user", "content": "bad \\ud800 text"}]}'

    response = await client.post(
        "/v1/sessions/s1/turns", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code in {400, 422}
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await runtime.stream.stats()).length == 0


async def test_oversized_content_message_names_limit(client: httpx.AsyncClient) -> None:
    response = await post_turns(client, "s1", "alice", [turn(BIG_TEXT)])

    assert "MEMORY_MAX_CONTENT_BYTES" in response.json()["detail"]
    assert "32768" in response.json()["detail"]


async def test_content_limit_counts_utf8_bytes(client: httpx.AsyncClient) -> None:
    # 8,193 four-byte emoji: under the limit in characters, over it in bytes.
    response = await post_turns(client, "s1", "alice", [turn("🎉" * 8193)])

    assert response.status_code == 413


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/sessions/bad%20id/turns", {"user_id": "alice", "turns": [turn("hi")]}, "session_id"),
        ("/v1/sessions/s1/turns", {"user_id": "a:b", "turns": [turn("hi")]}, "user_id"),
        ("/v1/sessions/s1/turns", {"user_id": "x" * 129, "turns": [turn("hi")]}, "user_id"),
        ("/v1/sessions/s1/turns", {"turns": [turn("hi")]}, "user_id"),
    ],
)
async def test_bad_ids_are_rejected(
    client: httpx.AsyncClient, runtime: Runtime, path: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post(path, json=body)

    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["errors"]]
    assert (await runtime.stream.stats()).length == 0


async def test_malformed_json_is_400(client: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await client.post(
        "/v1/sessions/s1/turns",
        content=b'{"user_id": "alice", "turns": [',
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:engram:problem:malformed-request"
    assert "JSON object" in response.json()["detail"]
    assert (await runtime.stream.stats()).length == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/sessions/s1/turns"),
        ("DELETE", "/v1/sessions/s1"),
        ("GET", "/v1/memories/8d206cde-2977-52c5-996c-a6367ecc687a"),
    ],
)
async def test_missing_user_id_is_named(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path)

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "user_id", "message": "is a required query parameter"}
    ]


async def test_id_format_error_is_readable(client: httpx.AsyncClient) -> None:
    body = await post_turns(client, "s1", "bob smith", [turn("hi")])
    query = await client.get("/v1/sessions/s1/turns", params={"user_id": "bob smith"})

    for response in (body, query):
        (error,) = response.json()["errors"]
        assert error["field"] == "user_id"
        assert error["message"].startswith("must be 1-128 characters: letters, digits")
        assert "^" not in error["message"]


async def test_whitespace_message_has_no_prefix(client: httpx.AsyncClient) -> None:
    response = await post_turns(client, "s1", "alice", [turn("   ")])

    assert response.json()["errors"][0]["message"] == "must contain text, not only whitespace"


async def test_unknown_route_is_problem_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/memories/not-a-uuid", params={"user_id": "alice"})

    assert response.status_code == 404
    assert response.json()["type"] == "urn:engram:problem:not-found"


async def test_body_over_request_limit_is_413(client: httpx.AsyncClient, runtime: Runtime) -> None:
    many = [turn("y" * 30_000) for _ in range(40)]  # about 1.2 MB, over ENGRAM_MAX_REQUEST_BYTES

    response = await post_turns(client, "s1", "alice", many)

    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await runtime.stream.stats()).length == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "alice", "query": ""}, "query"),
        ({"user_id": "alice", "query": "   "}, "query"),
        ({"user_id": "alice", "query": "hi", "limit": 0}, "limit"),
        ({"user_id": "alice", "query": "hi", "limit": 101}, "limit"),
        ({"user_id": "alice", "query": "hi", "after": "not a time"}, "after"),
        (
            {
                "user_id": "alice",
                "query": "hi",
                "after": "2024-02-01T00:00:00Z",
                "before": "2024-01-01T00:00:00Z",
            },
            "after",
        ),
        ({"query": "hi"}, "user_id"),
    ],
)
async def test_bad_search_is_rejected(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/memories/search", json=body)

    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["errors"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "alice", "token_budget": 0}, "token_budget"),
        ({"user_id": "alice", "token_budget": 10_000_000}, "token_budget"),
        ({"user_id": "alice", "session_id": "no spaces"}, "session_id"),
    ],
)
async def test_bad_context_request_is_rejected(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/context", json=body)

    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_bad_page_size_is_rejected(client: httpx.AsyncClient) -> None:
    await post_turns(client, "s1", "alice", [turn("hi")])

    too_big = await client.get("/v1/sessions/s1/turns", params={"user_id": "alice", "limit": 501})
    zero = await client.get("/v1/sessions/s1/turns", params={"user_id": "alice", "limit": 0})

    assert too_big.status_code == 422
    assert too_big.json()["errors"][0]["field"] == "limit"
    assert zero.status_code == 422


async def test_error_shape_is_the_same_everywhere(client: httpx.AsyncClient) -> None:
    responses = [
        await post_turns(client, "s1", "alice", [turn("")]),
        await client.post("/v1/memories/search", json={"user_id": "alice", "query": ""}),
        await client.get("/v1/sessions/none/turns", params={"user_id": "alice"}),
        await client.get("/v1/no-such-route"),
    ]

    for response in responses:
        problem = response.json()
        assert {"status", "title", "detail", "type"} <= problem.keys(), problem
        assert problem["status"] == response.status_code
        assert "Traceback" not in response.text
