"""Smoke tests of the benchmark scripts in ``bench/``: each runs at a tiny scale.

They check that the scripts still run against the current service and
report what docs/benchmarks.md reads from them; the figures mean nothing
at this size.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING

import pytest

from bench import faults, ingest, load, mem0_compare, promotion, search_scale
from bench.common import TENANT, ServiceConfig, ensure_database, synthetic_texts
from tests.conftest import service_token
from tests.helpers import post_turns, turn
from tests.mini_locomo import mini_locomo
from tests.test_promotion import drain

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from app.runtime import Runtime


@pytest.fixture
def bench_token() -> str:
    """A service token of the tenant whose memories the scripts count."""
    return service_token(tenant_id=TENANT)


async def test_ingest_script_reports_rate(live_server: str, bench_token: str) -> None:
    result = await ingest.drive_ingest(
        live_server,
        bench_token,
        concurrency=2,
        requests=6,
        turns_per_request=2,
        texts=synthetic_texts(10),
        run_id="smoke",
    )

    assert result["errors"] == {}
    assert result["latency"]["count"] == 6
    assert result["turns_per_s"] > 0


async def test_promotion_script_waits_until_searchable(
    live_server: str, bench_token: str, server_urls: tuple[str, str]
) -> None:
    texts = synthetic_texts(6)

    result = await promotion.promote(live_server, bench_token, server_urls[1], texts, 60)

    assert result["turns"] == 6
    assert result["turns_per_s_to_searchable"] > 0


def test_promotion_script_times_model_alone() -> None:
    rates = promotion.embed_alone(synthetic_texts(8), [4])

    assert rates["batch_4"] > 0


async def test_scale_script_loads_and_measures(
    live_server: str, bench_token: str, server_urls: tuple[str, str]
) -> None:
    corpus = search_scale.Corpus()

    loaded = search_scale.load(server_urls[1], corpus, 40)
    latencies = await search_scale.measure_api(
        live_server, bench_token, corpus, 2, search_scale.MODES
    )
    fidelity = await search_scale.fidelity(server_urls[1], corpus, 4)

    assert loaded["rows_added"] == 40
    assert set(latencies) == {"search_semantic", "search_keyword", "search_hybrid", "context"}
    assert latencies["context"]["count"] == 2
    assert fidelity["recall_at_10"] == 1.0
    assert fidelity["unfiltered"]["queries"] == 4
    assert fidelity["filtered_plan"]


async def test_load_script_runs_without_errors(live_server: str, bench_token: str) -> None:
    result = await load.drive(live_server, bench_token, users=2, seconds=2, api_pid=os.getpid())

    assert result["requests"] > 0
    assert result["error_rate"] == 0
    assert set(result["steps"]) == set(load.WEIGHTS)


async def test_faults_verdict_finds_lost_turns(
    client: httpx.AsyncClient, runtime: Runtime, server_urls: tuple[str, str]
) -> None:
    await post_turns(client, "s1", "al", [turn("one", turn_id="f1"), turn("two", turn_id="f2")])
    await drain(runtime.new_worker("smoke"))
    ledger = faults.Ledger(accepted={"f1", "f2", "f3"})

    verdict = faults.verdict(server_urls[1], ledger)

    assert verdict["lost"] == 1
    assert verdict["duplicated"] == 0
    assert verdict["stored_rows"] == 2


def test_mem0_comparison_summary() -> None:
    engram = {
        "turns_per_s_to_searchable": 60.0,
        "timings": {
            "search_semantic": {"p50_ms": 12.0, "p95_ms": 18.0},
            "search_hybrid": {"p50_ms": 20.0, "p95_ms": 30.0},
        },
        "rankings": {
            "hybrid": {"all": {"recall@10": 0.7}},
            "semantic": {"all": {"recall@10": 0.5}},
        },
    }
    mem0 = {
        "turns_per_s_to_searchable": 20.0,
        "search": {"p50_ms": 15.0, "p95_ms": 25.0},
        "rankings": {"all": {"recall@10": 0.45}},
    }

    summary = mem0_compare.compare(engram, mem0)

    assert summary["to_searchable_speedup"] == 3.0
    assert summary["recall_at_10_all"]["mem0"] == 0.45
    expected_p50 = {"engram_semantic": 12.0, "engram_hybrid": 20.0, "mem0": 15.0}
    assert summary["search_p50_ms"] == expected_p50
    assert summary["search_p95_ms"]["engram_semantic"] == 18.0


def test_mem0_comparison_stops_without_mem0(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(mem0_compare, "MEM0_PYTHON", tmp_path / "missing" / "python")

    with pytest.raises(SystemExit, match="set MEM0_PYTHON"):
        mem0_compare.run(tmp_path / "locomo10.json", 1, ServiceConfig())


@pytest.mark.slow
@pytest.mark.skipif(not mem0_compare.MEM0_PYTHON.exists(), reason="mem0's venv is not installed")
def test_mem0_phase_scores_mini_conversation(tmp_path: Path, server_urls: tuple[str, str]) -> None:
    if not server_urls[1].startswith("postgresql://postgres@127.0.0.1"):
        pytest.skip("mem0's pgvector store needs a TCP Postgres URL")
    data = tmp_path / "mini.json"
    data.write_text(json.dumps(mini_locomo()), encoding="utf-8")
    out = tmp_path / "mem0.json"
    ensure_database(mem0_compare.MEM0_DATABASE_URL)

    command = [str(mem0_compare.MEM0_PYTHON), "-m", "bench.mem0_phase", str(data)]
    command += ["--database-url", mem0_compare.MEM0_DATABASE_URL, "--out", str(out)]
    subprocess.run(  # noqa: S603
        command,
        check=True,
        env={**os.environ, "MEM0_TELEMETRY": "False", "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )

    result = json.loads(out.read_text())
    assert result["turns"] > 0
    assert result["rankings"]["all"]["questions"] > 0
