"""Fact extraction, supersession, duplicates, summaries and history, against a scripted model."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import structlog
from sqlalchemy import text

from app.facts import NewFact, PendingTurn, SimilarFact
from app.keys import KeyBuilder
from app.learning import Learner, LearningQueue, ModelOutputError, parse_decision, parse_facts
from app.llm import LLMGateway
from app.main import attach_runtime, create_app
from app.settings import LearningSettings
from tests.conftest import llm_settings, make_settings, serve, service_token
from tests.helpers import post_turns, turn, wait_until
from tests.learning_model import ScriptedModel, kind_of
from tests.test_promotion import drain

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from app.runtime import Runtime
    from tests.openai_server import OpenAICompatibleServer

SEPTEMBER = "2026-09-10T12:00:00+00:00"
MOVE_CONVERSATION = [
    turn("Hi! I live in Amsterdam, near the Vondelpark.", turn_id="a1", occurred_at=SEPTEMBER),
    turn("Nice, Amsterdam is lovely.", role="assistant", turn_id="a2", occurred_at=SEPTEMBER),
    turn("I am allergic to peanuts, by the way.", turn_id="a3", occurred_at=SEPTEMBER),
]
MOVED = [
    turn("Big news: I moved to Rotterdam last month.", turn_id="b1"),
    turn("Congratulations on the move!", role="assistant", turn_id="b2"),
]


def learning_runtime(runtime: Runtime, server: OpenAICompatibleServer, **learning: Any) -> Runtime:
    """The shared runtime with a model configured and the given learning settings."""
    values: dict[str, Any] = {"debounce_s": 0.0, "poll_interval_s": 0.05}
    values.update(learning)
    options = LearningSettings(**values)
    settings = runtime.settings.model_copy(
        update={"llm": llm_settings(server), "learning": options}
    )
    queue = LearningQueue(
        runtime.redis,
        KeyBuilder(settings.redis.key_prefix),
        options.debounce_s,
        options.batch_turns,
        options.lease_s,
    )
    return dataclasses.replace(runtime, settings=settings, learning_queue=queue)


def new_learner(active: Runtime, server: OpenAICompatibleServer, name: str = "learner") -> Learner:
    return active.new_learner(name, gateway=LLMGateway(llm_settings(server)))


@pytest.fixture
def model(llm: OpenAICompatibleServer) -> ScriptedModel:
    scripted = ScriptedModel()
    llm.responder = scripted
    return scripted


@pytest.fixture
async def learning(runtime: Runtime, llm: OpenAICompatibleServer) -> Runtime:
    return learning_runtime(runtime, llm)


@pytest.fixture
async def api(learning: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=learning)
    attach_runtime(app, learning)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {service_token()}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers
    ) as client:
        yield client


async def learn_all(active: Runtime, learner: Learner, rounds: int = 20) -> None:
    """Promote every queued turn, then learn from every due session."""
    await drain(active.new_worker("promoter", learn=False))
    for _ in range(rounds):
        if not await learner.run_once():
            return


async def facts_of(active: Runtime, user_id: str, *, current_only: bool = True) -> list[Any]:
    async with active.engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT id, kind, content, valid_from, valid_to, supersedes, superseded_by, "
                "source_turn_ids, session_id FROM memories WHERE user_id = :user "
                "AND kind IN ('fact', 'preference', 'event') "
                "AND (valid_to IS NULL OR NOT :current_only) ORDER BY created_at"
            ),
            {"user": user_id, "current_only": current_only},
        )
        return list(rows.all())


async def test_moving_city_supersedes_the_old_fact(
    learning: Runtime, llm: OpenAICompatibleServer, model: ScriptedModel, api: httpx.AsyncClient
) -> None:
    await post_turns(api, "s1", "mia", MOVE_CONVERSATION)
    learner = new_learner(learning, llm)
    await learn_all(learning, learner)

    first = await facts_of(learning, "mia")
    assert sorted(row.content for row in first) == [
        "Is allergic to peanuts.",
        "Lives in Amsterdam.",
    ]
    amsterdam = next(row for row in first if row.content == "Lives in Amsterdam.")
    assert amsterdam.source_turn_ids == ["a1"]
    assert amsterdam.session_id == "s1"

    model.valid_from["Lives in Rotterdam."] = "2026-11-01"
    await post_turns(api, "s2", "mia", MOVED)
    await learn_all(learning, learner)

    current = await facts_of(learning, "mia")
    assert sorted(row.content for row in current) == [
        "Is allergic to peanuts.",
        "Lives in Rotterdam.",
    ]
    rotterdam = next(row for row in current if row.content == "Lives in Rotterdam.")
    assert rotterdam.supersedes == amsterdam.id
    assert rotterdam.valid_from == datetime(2026, 11, 1, tzinfo=UTC)
    everything = await facts_of(learning, "mia", current_only=False)
    old = next(row for row in everything if row.id == amsterdam.id)
    assert old.content == "Lives in Amsterdam."
    assert old.valid_to == rotterdam.valid_from
    assert old.superseded_by == rotterdam.id

    # The decision step saw the old fact and chose to update it.
    decisions = [
        json.loads(request["messages"][1]["content"].split("\n", 1)[1])
        for request in llm.chat_requests
        if kind_of(request) == "decide"
    ]
    assert any(
        decision["new_fact"]["text"] == "Lives in Rotterdam."
        and decision["existing"][0]["text"] == "Lives in Amsterdam."
        for decision in decisions
    )

    # Context for "where do I live?" has the current fact and not the old one.
    context = (
        await api.post("/v1/context", json={"user_id": "mia", "query": "Where do I live?"})
    ).json()
    fact_texts = [hit["content"] for hit in context["memories"] if hit["kind"] == "fact"]
    assert "Lives in Rotterdam." in fact_texts
    assert "Lives in Amsterdam." not in fact_texts

    # Search returns current facts by default, and the old one "as of" before the move.
    search = {"user_id": "mia", "query": "where does she live", "kind": "fact"}
    now = (await api.post("/v1/memories/search", json=search)).json()
    assert now["hits"][0]["content"] == "Lives in Rotterdam."
    assert "Lives in Amsterdam." not in [hit["content"] for hit in now["hits"]]
    before = (
        await api.post("/v1/memories/search", json={**search, "as_of": "2026-10-15T00:00:00Z"})
    ).json()
    assert "Lives in Amsterdam." in [hit["content"] for hit in before["hits"]]
    assert "Lives in Rotterdam." not in [hit["content"] for hit in before["hits"]]
    every = (
        await api.post("/v1/memories/search", json={**search, "include_superseded": True})
    ).json()
    assert {"Lives in Amsterdam.", "Lives in Rotterdam."} <= {
        hit["content"] for hit in every["hits"]
    }

    # The old fact's history shows its creation by extraction and its supersession.
    history = (
        await api.get(f"/v1/memories/{amsterdam.id}/history", params={"user_id": "mia"})
    ).json()
    events = [(entry["event"], entry["cause"]) for entry in history["entries"]]
    assert events == [("create", "extraction"), ("supersede", "extraction")]
    assert history["entries"][1]["old_content"] == "Lives in Amsterdam."
    assert history["entries"][1]["new_content"] == "Lives in Rotterdam."
    assert history["entries"][1]["changes"]["superseded_by"] == str(rotterdam.id)
    assert history["entries"][0]["run_id"] != history["entries"][1]["run_id"]

    # The turns themselves stay in long-term memory.
    turns = (await api.get("/v1/memories", params={"user_id": "mia", "kind": "turn"})).json()
    assert len(turns["memories"]) == len(MOVE_CONVERSATION) + len(MOVED)


async def test_a_repeated_fact_is_not_stored_twice(
    learning: Runtime, llm: OpenAICompatibleServer, model: ScriptedModel, api: httpx.AsyncClient
) -> None:
    learner = new_learner(learning, llm)
    await post_turns(api, "s1", "noa", [turn("I am allergic to peanuts.", turn_id="x1")])
    await learn_all(learning, learner)
    await post_turns(api, "s2", "noa", [turn("Remember, I am allergic to peanuts!", turn_id="y1")])
    with structlog.testing.capture_logs() as logs:
        await learn_all(learning, learner)

    facts = await facts_of(learning, "noa", current_only=False)
    assert [row.content for row in facts] == ["Is allergic to peanuts."]
    # Identical text is caught before any decision call, and counted as a duplicate.
    assert "decide" not in model.calls
    (done,) = [entry for entry in logs if entry["event"] == "learning.session_done"]
    assert (done["duplicates"], done["ignored"], done["fact_ids"]) == (1, 0, [])
    assert done["run_id"]


async def test_two_workers_racing_on_one_user_store_one_fact(
    learning: Runtime, llm: OpenAICompatibleServer, model: ScriptedModel, api: httpx.AsyncClient
) -> None:
    for session in ("s1", "s2", "s3", "s4"):
        await post_turns(
            api, session, "ravi", [turn("I live in Utrecht these days.", turn_id=f"{session}-t")]
        )
    await drain(learning.new_worker("promoter", learn=False))
    llm.delay_s = 0.2
    first, second = new_learner(learning, llm, "one"), new_learner(learning, llm, "two")

    async def keep_learning(learner: Learner) -> None:
        # One session per claim, so the two learners interleave on the same user.
        deadline = asyncio.get_running_loop().time() + 30
        while await learning.learning_queue.due_count():
            assert asyncio.get_running_loop().time() < deadline, "sessions still due after 30 s"
            await learner.run_once(limit=1)
            await asyncio.sleep(0.05)

    await asyncio.gather(keep_learning(first), keep_learning(second))

    facts = await facts_of(learning, "ravi", current_only=False)
    assert [row.content for row in facts] == ["Lives in Utrecht."]
    async with learning.engine.connect() as connection:
        pending = await connection.scalar(
            text(
                "SELECT count(*) FROM memories "
                "WHERE user_id = 'ravi' AND kind = 'turn' AND extraction IS NULL"
            )
        )
    assert pending == 0


async def test_concurrent_writes_of_one_fact_store_it_once(learning: Runtime) -> None:
    vector = learning.embedder.embed(["Works at the harbour."])[0]
    fact = NewFact(
        kind="fact",
        content="Works at the harbour.",
        vector=vector,
        valid_from=datetime.now(UTC),
        session_id=None,
    )

    async def write() -> Any:
        return await learning.facts.write_facts(
            "default", "lex", [fact], model="m", cause="api", duplicate_similarity=0.95
        )

    outcomes = await asyncio.gather(*(write() for _ in range(5)))
    stored = [outcome[0].id for outcome in outcomes if outcome[0].id is not None]
    assert len(stored) == 1
    assert all(outcome[0].duplicate_of == stored[0] for outcome in outcomes if not outcome[0].id)


async def test_malformed_output_is_sent_back_once(
    learning: Runtime, llm: OpenAICompatibleServer, model: ScriptedModel, api: httpx.AsyncClient
) -> None:
    model.bad_replies = 1
    await post_turns(api, "s1", "ola", [turn("I love cycling.", turn_id="c1")])
    await learn_all(learning, new_learner(learning, llm))

    assert [row.content for row in await facts_of(learning, "ola")] == ["Loves cycling."]
    extractions = [request for request in llm.chat_requests if kind_of(request) == "extract"]
    assert len(extractions) == 2
    correction = extractions[1]["messages"][-1]["content"]
    assert "not valid JSON" in correction
    assert extractions[1]["temperature"] == 0
    assert extractions[1]["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("bad_kind", ["not-json", "unknown-id", "empty-fact"])
async def test_output_malformed_twice_is_skipped_and_turns_stay_verbatim(
    learning: Runtime,
    llm: OpenAICompatibleServer,
    model: ScriptedModel,
    api: httpx.AsyncClient,
    bad_kind: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model.bad_replies = 2
    model.bad_kind = bad_kind
    await post_turns(api, "s1", "pim", [turn("I live in Leiden.", turn_id="p1")])
    with structlog.testing.capture_logs() as logs:
        await learn_all(learning, new_learner(learning, llm))

    assert await facts_of(learning, "pim") == []
    async with learning.engine.connect() as connection:
        status = await connection.scalar(
            text("SELECT extraction FROM memories WHERE user_id = 'pim' AND kind = 'turn'")
        )
    assert status == "skipped"
    skipped = [entry for entry in logs if entry["event"] == "learning.extraction_skipped"]
    assert len(skipped) == 1
    assert skipped[0]["turns"] == 1
    hits = (
        await api.post("/v1/memories/search", json={"user_id": "pim", "query": "Leiden"})
    ).json()["hits"]
    assert [hit["content"] for hit in hits] == ["I live in Leiden."]
    assert await learning.learning_queue.due_count() == 0


async def test_a_decision_malformed_twice_leaves_the_fact_out(
    learning: Runtime, llm: OpenAICompatibleServer, model: ScriptedModel, api: httpx.AsyncClient
) -> None:
    learner = new_learner(learning, llm)
    await post_turns(api, "s1", "kai", [turn("I live in Delft.", turn_id="k1")])
    await learn_all(learning, learner)
    model.bad_kind = "bad-decision"

    original = model.__call__

    def bad_decisions(body: dict[str, Any]) -> Any:
        if kind_of(body) == "decide":
            model.bad_replies = 1
        return original(body)

    llm.responder = bad_decisions
    await post_turns(api, "s2", "kai", [turn("I moved to Gouda.", turn_id="k2")])
    await learn_all(learning, learner)

    assert [row.content for row in await facts_of(learning, "kai")] == ["Lives in Delft."]
    assert sum(1 for request in llm.chat_requests if kind_of(request) == "decide") == 2


async def test_a_model_outage_leaves_the_turns_for_a_later_run(
    learning: Runtime, llm: OpenAICompatibleServer, model: ScriptedModel, api: httpx.AsyncClient
) -> None:
    learner = new_learner(learning, llm)
    await post_turns(api, "s1", "bo", [turn("I live in Breda.", turn_id="b1")])
    await drain(learning.new_worker("promoter", learn=False))
    llm.fail_with = 503

    assert await learner.run_once() == 1
    assert await facts_of(learning, "bo") == []
    assert await learning.learning_queue.due_count() == 1
    async with learning.engine.connect() as connection:
        pending = await connection.scalar(
            text(
                "SELECT count(*) FROM memories "
                "WHERE user_id = 'bo' AND kind = 'turn' AND extraction IS NULL"
            )
        )
    assert pending == 1

    llm.fail_with = None
    await learning.learning_queue.retry(("default", "bo", "s1"), 0)
    await learner.run_once()
    assert [row.content for row in await facts_of(learning, "bo")] == ["Lives in Breda."]


async def test_a_long_session_is_folded_into_a_rolling_summary(
    runtime: Runtime, llm: OpenAICompatibleServer, model: ScriptedModel
) -> None:
    active = learning_runtime(runtime, llm, summary_trigger_tokens=150, summary_keep_tokens=40)
    app = create_app(runtime=active)
    attach_runtime(app, active)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {service_token()}"}
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    turns = [
        turn(
            f"Message {index}: planning the garden, bed {index} gets tomatoes and basil.",
            role="user" if index % 2 == 0 else "assistant",
            turn_id=f"g{index}",
            occurred_at=(start + timedelta(minutes=index)).isoformat(),
        )
        for index in range(12)
    ]
    learner = new_learner(active, llm)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers
    ) as api:
        await post_turns(api, "garden", "zoe", turns)
        await learn_all(active, learner)

        summaries = (
            await api.get("/v1/memories", params={"user_id": "zoe", "kind": "summary"})
        ).json()["memories"]
        assert len(summaries) == 1
        summary = summaries[0]
        assert summary["content"].startswith("Summary: Message 0")
        covered = summary["source_turn_ids"]
        assert covered[0] == "g0"
        assert "g11" not in covered
        assert summary["metadata"]["covers"]["turns"] == len(covered)

        context = (
            await api.post(
                "/v1/context",
                json={"user_id": "zoe", "session_id": "garden", "query": "tomatoes"},
            )
        ).json()
        assert context["summary_id"] == summary["id"]
        contents = [message["content"] for message in context["messages"]]
        summary_messages = [text for text in contents if summary["content"] in text]
        assert len(summary_messages) == 1
        assert "2026-12-01 09:00 UTC" in summary_messages[0]
        window = [message for message in context["messages"] if message["role"] != "system"]
        assert window
        assert all(
            int(message["content"].split(":")[0].split()[1]) >= len(covered) for message in window
        )

        # More turns make a new summary that supersedes the first and builds on it.
        more = [
            turn(
                f"Message {index}: the shed needs a new roof before the winter storms arrive.",
                role="user" if index % 2 == 0 else "assistant",
                turn_id=f"g{index}",
                occurred_at=(start + timedelta(minutes=index)).isoformat(),
            )
            for index in range(12, 24)
        ]
        await post_turns(api, "garden", "zoe", more)
        await learn_all(active, learner)
        every = (
            await api.get(
                "/v1/memories",
                params={"user_id": "zoe", "kind": "summary", "include_superseded": True},
            )
        ).json()["memories"]
        assert len(every) == 2
        newest = next(item for item in every if item["valid_to"] is None)
        assert newest["supersedes"] == summary["id"]
        assert newest["content"].startswith(summary["content"] + " Then: ")
        # The turns stay in long-term memory.
        stored = (
            await api.get("/v1/memories", params={"user_id": "zoe", "kind": "turn", "limit": 100})
        ).json()["memories"]
        assert len(stored) == 24


async def test_without_a_model_promotion_stays_verbatim(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    await post_turns(client, "s1", "uma", [turn("I live in Zwolle.", turn_id="u1")])
    worker = runtime.new_worker("w")

    await drain(worker)

    assert worker.learner is None
    assert await runtime.learning_queue.due_count() == 0
    async with runtime.engine.connect() as connection:
        kinds = (
            await connection.execute(text("SELECT kind FROM memories WHERE user_id = 'uma'"))
        ).scalars()
        assert list(kinds) == ["turn"]


async def test_extract_strategy_hides_turns_whose_facts_were_extracted(
    runtime: Runtime, llm: OpenAICompatibleServer, model: ScriptedModel
) -> None:
    active = learning_runtime(runtime, llm, strategy="extract")
    app = create_app(runtime=active)
    attach_runtime(app, active)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {service_token()}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers
    ) as api:
        await post_turns(api, "s1", "eva", [turn("I live in Haarlem.", turn_id="e1")])
        await learn_all(active, new_learner(active, llm))

        hits = (
            await api.post("/v1/memories/search", json={"user_id": "eva", "query": "Haarlem"})
        ).json()["hits"]
        assert [hit["kind"] for hit in hits] == ["fact"]
        turns = (
            await api.post(
                "/v1/memories/search",
                json={"user_id": "eva", "query": "Haarlem", "kind": "turn"},
            )
        ).json()["hits"]
        assert [hit["content"] for hit in turns] == ["I live in Haarlem."]


async def test_verbatim_tenants_are_not_queued(
    runtime: Runtime, llm: OpenAICompatibleServer, model: ScriptedModel, client: httpx.AsyncClient
) -> None:
    active = learning_runtime(runtime, llm, strategy_by_tenant={"default": "verbatim"})
    await post_turns(client, "s1", "ian", [turn("I live in Venlo.", turn_id="i1")])
    await drain(active.new_worker("w", learn=False))

    assert await active.learning_queue.due_count() == 0
    outcome = await new_learner(active, llm).learn("default", "ian", "s1")
    assert (outcome.turns_read, outcome.fact_ids, outcome.summary_id) == (0, [], None)
    assert model.calls == []


async def test_erasing_a_user_removes_facts_history_and_queue_entries(
    learning: Runtime, llm: OpenAICompatibleServer, model: ScriptedModel, api: httpx.AsyncClient
) -> None:
    await post_turns(api, "s1", "liv", [turn("I live in Assen.", turn_id="l1")])
    await learn_all(learning, new_learner(learning, llm))
    await post_turns(api, "s2", "liv", [turn("I love chess.", turn_id="l2")])
    await drain(learning.new_worker("promoter", learn=False))
    assert await learning.learning_queue.due_count() == 1

    response = await api.delete("/v1/users/liv")
    assert response.status_code in (200, 204)

    async with learning.engine.connect() as connection:
        history_rows = await connection.scalar(
            text("SELECT count(*) FROM memory_history WHERE user_id = 'liv'")
        )
        memories = await connection.scalar(
            text("SELECT count(*) FROM memories WHERE user_id = 'liv'")
        )
    assert (history_rows, memories) == (0, 0)
    assert await learning.learning_queue.due_count() == 0


async def test_facts_from_a_session_deleted_meanwhile_are_not_stored(
    learning: Runtime, llm: OpenAICompatibleServer, model: ScriptedModel, api: httpx.AsyncClient
) -> None:
    await post_turns(api, "gone", "max", [turn("I live in Tilburg.", turn_id="m1")])
    await drain(learning.new_worker("promoter", learn=False))
    learner = new_learner(learning, llm)
    original = model.__call__

    def delete_during_extraction(body: dict[str, Any]) -> Any:
        reply = original(body)
        if kind_of(body) == "extract":
            # The session is deleted while the model is still answering.
            asyncio.run_coroutine_threadsafe(
                api.delete("/v1/sessions/gone", params={"user_id": "max"}), loop
            ).result(timeout=10)
        return reply

    loop = asyncio.get_running_loop()
    llm.responder = delete_during_extraction
    await learner.run_once()

    assert await facts_of(learning, "max", current_only=False) == []


def test_parse_facts_rejects_what_the_prompt_forbids() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    turns = {"t1": PendingTurn(uuid.uuid4(), "x", "user", "hi", now)}
    ok = parse_facts(
        '```json\n{"facts": [{"kind": "event", "content": "Ran a marathon.", "sources": ["t1"], '
        '"valid_from": "2025-10-12"}]}\n```',
        turns,
    )
    assert ok[0].kind == "event"
    assert ok[0].source_turn_ids == ["x"]
    assert ok[0].valid_from == datetime(2025, 10, 12, tzinfo=UTC)
    assert parse_facts('{"facts": []}', turns) == []
    # Only an event may start after the turn that mentions it.
    future = (
        '{"facts": [{"kind": "%s", "content": "x", "sources": ["t1"], "valid_from": "2030-01-01"}]}'
    )
    assert parse_facts(future % "fact", turns)[0].valid_from == now
    assert parse_facts(future % "event", turns)[0].valid_from == datetime(2030, 1, 1, tzinfo=UTC)
    defaulted = parse_facts('{"facts": [{"content": "Has a cat.", "sources": ["t1"]}]}', turns)
    assert defaulted[0].valid_from == now

    for reply, message in [
        ("[]", "JSON object"),
        ('{"items": []}', '"facts" list'),
        ('{"facts": ["x"]}', "must be an object"),
        ('{"facts": [{"kind": "opinion", "content": "x", "sources": ["t1"]}]}', "kind"),
        ('{"facts": [{"content": "x" , "sources": "t1"}]}', "sources"),
        ('{"facts": [{"content": "' + "x" * 600 + '", "sources": ["t1"]}]}', "500"),
        ('{"facts": [{"content": "x", "sources": ["t1"], "valid_from": "soon"}]}', "not a date"),
        ('{"facts": [{"content": "x", "sources": ["t1"], "valid_from": 2024}]}', "date string"),
    ]:
        with pytest.raises(ModelOutputError, match=message):
            parse_facts(reply, turns)


def test_parse_decision_needs_a_known_target_for_an_update() -> None:
    existing = {"m1": SimilarFact(uuid.uuid4(), "fact", "Lives in X.", 0.8, None)}
    assert parse_decision('{"decision": "add"}', existing).target is None
    assert parse_decision('{"decision": "update", "target": "m1"}', existing).target == (
        existing["m1"].id
    )
    with pytest.raises(ModelOutputError, match="target"):
        parse_decision('{"decision": "update", "target": "m7"}', existing)


async def test_a_served_instance_learns_off_the_request_path(
    server_urls: tuple[str, str],
    embedder: Any,
    runtime: Runtime,
    llm: OpenAICompatibleServer,
    model: ScriptedModel,
) -> None:
    settings = make_settings(*server_urls)
    settings.worker.in_process = True
    settings.worker.consumer_name = "served-worker"
    settings.llm = llm_settings(llm)
    settings.learning = LearningSettings(debounce_s=1.0, poll_interval_s=0.1)
    headers = {"authorization": f"Bearer {service_token()}"}
    with serve(settings, embedder) as url:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as api:
            accepted = await post_turns(api, "s1", "ray", MOVE_CONVERSATION)
            assert accepted.status_code == 202
            # The request returned before any model call: extraction waits for the quiet time.
            assert llm.chat_requests == []

            async def learned() -> bool:
                body = (
                    await api.get("/v1/memories", params={"user_id": "ray", "kind": "fact"})
                ).json()
                return len(body["memories"]) == 2

            await wait_until(learned, timeout_s=30)
            await post_turns(api, "s2", "ray", MOVED)

            async def moved() -> bool:
                body = (
                    await api.get("/v1/memories", params={"user_id": "ray", "kind": "fact"})
                ).json()
                return "Lives in Rotterdam." in [memory["content"] for memory in body["memories"]]

            await wait_until(moved, timeout_s=30)
            facts = (
                await api.get("/v1/memories", params={"user_id": "ray", "kind": "fact"})
            ).json()["memories"]
            assert sorted(memory["content"] for memory in facts) == [
                "Is allergic to peanuts.",
                "Lives in Rotterdam.",
            ]
            metrics = (await api.get("/metrics")).text
            assert 'engram_learned_facts_total{result="superseded"}' in metrics
