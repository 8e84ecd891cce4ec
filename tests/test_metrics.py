"""Prometheus metrics: HTTP traffic, search and promotion, and the shared stream state."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tests.helpers import post_turns, turn
from tests.test_promotion import drain

if TYPE_CHECKING:
    import httpx

    from app.runtime import Runtime


def value(text: str, name: str, labels: str = "") -> float:
    """Return one sample's value from the Prometheus text format."""
    pattern = re.escape(name) + (r"\{" + labels + r"[^}]*\}" if labels else r"(\{[^}]*\})?")
    match = re.search(rf"^{pattern} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name} {labels} is not in the metrics"
    return float(match.group(match.lastindex or 1))


async def test_metrics_report_traffic_search_and_stream(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await post_turns(client, "s1", "mia", [turn("I like sailing."), turn("And chess.")])
    before = (await client.get("/metrics", headers={"authorization": ""})).text
    await drain(runtime.new_worker("w"))
    await post_turns(client, "s1", "mia", [turn("Not promoted yet.")])
    await client.post("/v1/memories/search", json={"user_id": "mia", "query": "hobbies"})

    response = await client.get("/metrics", headers={"authorization": ""})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert value(before, "engram_stream_length") == 2
    assert value(text, "engram_stream_length") == 1
    assert value(text, "engram_stream_pending") == 0
    assert value(text, "engram_dead_letters") == 0
    assert value(text, "engram_promotion_lag_seconds") >= 0
    assert value(text, "engram_memories", 'tenant="default"') == 2
    assert value(text, "engram_search_seconds_count", 'mode="hybrid"') >= 1
    assert value(text, "engram_promoted_turns_total") >= 2
    assert value(text, "engram_embedding_batch_seconds_count") >= 1
    # Requests are labelled by route template, so ids never become label values.
    appended = 'app_name="engram",method="POST",path="/v1/sessions/\\{session_id\\}/turns"'
    after = value(text, "engram_http_requests_total", appended)
    assert after - value(before, "engram_http_requests_total", appended) == 1
    assert "/v1/sessions/s1/turns" not in text
