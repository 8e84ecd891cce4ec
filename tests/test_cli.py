"""The engram command against a live service on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from click.testing import CliRunner

from app import cli
from app.locomo import load_locomo, parse_session_time
from app.shortterm import StoredTurn
from tests.conftest import service_token
from tests.helpers import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from app.runtime import Runtime
    from app.settings import Settings

# A conversation in the LoCoMo file format, written for these tests.
SAMPLE = [
    {
        "sample_id": "conv-test",
        "conversation": {
            "speaker_a": "Noor",
            "speaker_b": "Sam",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Noor", "dia_id": "D1:1", "text": "Hey Sam, long time no see!"},
                {
                    "speaker": "Noor",
                    "dia_id": "D1:2",
                    "text": "I spent the spring researching volunteer programmes in Ghana.",
                },
                {
                    "speaker": "Sam",
                    "dia_id": "D1:3",
                    "text": "Look at what I baked!",
                    "blip_caption": "a photo of a lemon tart on a plate",
                },
            ],
            "session_2_date_time": "10:37 am on 27 June, 2023",
            "session_2": [
                {"speaker": "Sam", "dia_id": "D2:1", "text": "My marathon is in October."},
                {"speaker": "Noor", "dia_id": "D2:2", "text": "Good luck with the training!"},
            ],
            "session_3_date_time": "9:00 am on 1 July, 2023",
        },
        "qa": [
            {
                "question": "What did Noor research?",
                "answer": "volunteer programmes",
                "evidence": ["D1:2"],
                "category": 4,
            }
        ],
    }
]


@pytest.fixture
def sample_file(tmp_path: Path) -> Path:
    path = tmp_path / "sample_locomo.json"
    path.write_text(json.dumps(SAMPLE), encoding="utf-8")
    return path


AUTH = {"authorization": f"Bearer {service_token()}"}


def run_cli(*args: str) -> Any:
    runner = CliRunner(env={"ENGRAM_TOKEN": service_token()})
    return runner.invoke(cli.main, list(args), catch_exceptions=False)


def test_locomo_reader_parses_sessions(sample_file: Path) -> None:
    (conversation,) = load_locomo(sample_file)

    assert conversation.sample_id == "conv-test"
    assert [session.session_id for session in conversation.sessions] == ["session_1", "session_2"]
    first = conversation.sessions[0].turns
    assert first[1].memory_text == (
        'Noor said, "I spent the spring researching volunteer programmes in Ghana."'
    )
    assert first[2].memory_text.endswith("and shared a photo of a lemon tart on a plate")
    assert first[1].occurred_at == parse_session_time("1:56 pm on 8 May, 2023").replace(second=1)
    assert conversation.turn_count == 5


def test_import_search_and_context(live_server: str, sample_file: Path) -> None:
    imported = run_cli(
        "import", "locomo", str(sample_file), "--url", live_server, "--timeout", "60"
    )
    assert imported.exit_code == 0, imported.output
    assert "5 new turns, 0 already stored" in imported.output

    sessions = httpx.get(f"{live_server}/v1/users/conv-test/sessions", headers=AUTH).json()[
        "sessions"
    ]
    assert sorted(item["stored_turns"] for item in sessions) == [2, 3]

    table = run_cli(
        "search", "What did Noor research?", "--user", "conv-test", "--url", live_server
    )
    assert table.exit_code == 0, table.output
    assert "Memories of conv-test" in table.output

    found = run_cli(
        "search", "What did Noor research?", "--user", "conv-test", "--json", "--url", live_server
    )
    hits = json.loads(found.output)["hits"]
    evidence = next(hit for hit in hits if hit["metadata"]["dia_id"] == "D1:2")
    assert evidence in hits[:3]
    assert evidence["occurred_at"].startswith("2023-05-08T13:56:01")

    shown = run_cli(
        "context",
        "marathon plans",
        "--user",
        "conv-test",
        "--session",
        "session_2",
        "--budget",
        "300",
        "--url",
        live_server,
    )
    assert shown.exit_code == 0, shown.output
    assert "Good luck with the training!" in shown.output
    assert "of 300 tokens" in shown.output

    again = run_cli("import", "locomo", str(sample_file), "--url", live_server, "--timeout", "60")
    assert again.exit_code == 0
    assert "0 new turns, 5 already stored" in again.output
    sessions = httpx.get(f"{live_server}/v1/users/conv-test/sessions", headers=AUTH).json()[
        "sessions"
    ]
    assert sorted(item["stored_turns"] for item in sessions) == [2, 3]


def test_cli_reports_unreachable_service() -> None:
    result = CliRunner().invoke(
        cli.main, ["search", "hello", "--user", "u", "--url", "http://127.0.0.1:9"]
    )

    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in result.output


def test_cli_explains_missing_token(live_server: str) -> None:
    runner = CliRunner(env={"ENGRAM_TOKEN": None})

    result = runner.invoke(cli.main, ["search", "hello", "--user", "u", "--url", live_server])

    assert result.exit_code == 1
    assert "returned 401" in result.output
    assert "Set ENGRAM_TOKEN or pass --token" in result.output


def test_cli_reports_rejected_request(live_server: str) -> None:
    result = run_cli("search", "hello", "--user", "not valid!", "--url", live_server)

    assert result.exit_code == 1
    assert "returned 422" in result.output
    assert "user_id must be 1-128 characters" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not valid JSON"),
        ("{}", "expected a list of conversations"),
        ('[{"sample_id": "x"}]', "conversation 0 is not in the LoCoMo layout"),
    ],
)
def test_import_rejects_wrong_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "wrong.json"
    path.write_text(content, encoding="utf-8")

    result = CliRunner().invoke(
        cli.main, ["import", "locomo", str(path), "--url", "http://127.0.0.1:9"]
    )

    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_serve_starts_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "uvicorn.run", lambda *args, **kwargs: calls.append({"args": args, **kwargs})
    )

    result = run_cli("serve", "--port", "8123")

    assert result.exit_code == 0, result.output
    assert calls[0]["args"] == ("app.main:create_served_app",)
    assert calls[0]["factory"] is True
    assert calls[0]["port"] == 8123
    assert calls[0]["host"] == "127.0.0.1"


def test_worker_needs_external_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)

    result = CliRunner().invoke(cli.main, ["worker"])

    assert result.exit_code == 2
    assert "needs REDIS_URL (or REDIS_SENTINELS) and DATABASE_URL" in result.output


def test_migrate_reports_current_schema(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    assert settings.redis.url is not None
    assert settings.database.url is not None
    monkeypatch.setenv("REDIS_URL", settings.redis.url)
    monkeypatch.setenv("DATABASE_URL", settings.database.url)

    result = run_cli("migrate")

    assert result.exit_code == 0, result.output
    assert "schema is current" in result.output


@pytest.mark.slow
async def test_worker_process_promotes_and_stops_cleanly(
    settings: Settings, runtime: Runtime
) -> None:
    """``engram worker`` as its own process, the way external mode runs it."""
    assert settings.redis.url is not None
    assert settings.database.url is not None
    metrics_port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": settings.redis.url,
        "DATABASE_URL": settings.database.url,
        "WORKER_CONSUMER_NAME": "separate-process",
        "WORKER_METRICS_PORT": str(metrics_port),
        "ENGRAM_LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "worker",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    logs: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while not logs or b"worker.started" not in logs[-1]:
                logs.append(await process.stdout.readline())
        turns = [
            StoredTurn("default", "cli-worker", "s1", f"t{n}", "user", text, datetime.now(UTC), {})
            for n, text in enumerate(["Drinkt thee zonder suiker.", "Likes 🍵", "يحب الشاي"])
        ]
        await runtime.short_term.append("default", "cli-worker", "s1", turns)
        metrics = await _wait_for_metric(
            f"http://127.0.0.1:{metrics_port}/metrics", "engram_promoted_turns_total 3.0", 60
        )
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    output = b"".join(logs).decode() + rest.decode()

    assert "engram_promoted_turns_total 3.0" in metrics
    assert "engram_embedding_batch_seconds_count" in metrics
    assert "engram_stream_length" not in metrics  # the API reports it, from Redis
    assert process.returncode == 0, output
    assert "worker.stopped" in output
    assert all(line.startswith("{") for line in output.splitlines() if line), output
    stored = await runtime.long_term.all_memories("default", "cli-worker")
    assert sorted(memory.content for memory in stored) == sorted(turn.content for turn in turns)


async def _wait_for_metric(url: str, sample: str, timeout_s: float) -> str:
    text = ""
    async with httpx.AsyncClient() as client:
        for _ in range(int(timeout_s * 4)):
            with contextlib.suppress(httpx.TransportError):
                text = (await client.get(url)).text
                if sample in text:
                    return text
            await asyncio.sleep(0.25)
    return text


def test_worker_reports_a_busy_metrics_port(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.redis.url is not None
    assert settings.database.url is not None
    monkeypatch.setenv("REDIS_URL", settings.redis.url)
    monkeypatch.setenv("DATABASE_URL", settings.database.url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("WORKER_METRICS_PORT", str(taken.getsockname()[1]))

        result = CliRunner().invoke(cli.main, ["worker"])

    assert result.exit_code == 1
    assert "cannot serve worker metrics" in result.output
    assert "WORKER_METRICS_PORT" in result.output


def test_worker_rejects_partitions_before_loading(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.redis.url is not None
    assert settings.database.url is not None
    monkeypatch.setenv("REDIS_URL", settings.redis.url)
    monkeypatch.setenv("DATABASE_URL", settings.database.url)
    monkeypatch.setenv("REDIS_STREAM_PARTITIONS", "6")
    monkeypatch.setenv("WORKER_PARTITIONS", "3-9")

    result = CliRunner().invoke(cli.main, ["worker"])

    assert result.exit_code == 1
    assert "WORKER_PARTITIONS names partition 6" in result.output
    assert "Traceback" not in result.output


def test_invalid_settings_name_variables_not_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:Sup3rS3cretPw@127.0.0.1:6379/0")
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    monkeypatch.setenv("REDIS_SENTINELS", '["127.0.0.1:26379"]')

    result = CliRunner().invoke(cli.main, ["worker"])

    assert result.exit_code == 1
    assert "REDIS_CLUSTER and REDIS_SENTINELS exclude each other" in result.output
    assert "Sup3r" not in result.output


def test_serve_passes_address_to_app_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    started: dict[str, Any] = {}
    monkeypatch.setattr("uvicorn.run", lambda *_args, **options: started.update(options))
    # Set here so that monkeypatch restores both after the command overwrites them.
    monkeypatch.setenv("ENGRAM_PORT", "8000")
    monkeypatch.setenv("ENGRAM_HOST", "127.0.0.1")

    result = CliRunner().invoke(cli.main, ["serve", "--port", "18481", "--host", "127.0.0.2"])

    assert result.exit_code == 0, result.output
    assert (started["host"], started["port"]) == ("127.0.0.2", 18481)
    assert (os.environ["ENGRAM_HOST"], os.environ["ENGRAM_PORT"]) == ("127.0.0.2", "18481")
