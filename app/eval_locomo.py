"""Run the LoCoMo retrieval evaluation through a running service's HTTP API.

Steps: post every turn in order (one user per conversation, one session per
LoCoMo session), wait until all are searchable, ask every question once per
ranking, and score the rankings with ``app.evaluation``. Baselines that need
no query (random order, most recent first) rank the user's memories as read
from the export endpoint. The reports hold aggregates only: no question,
answer or memory text.
"""

from __future__ import annotations

import json
import platform
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.progress import Progress

from app.evaluation import (
    METRICS,
    QuestionSet,
    Scoreboard,
    build_questions,
    percentile,
    score_ranking,
)
from app.importer import session_batches, wait_until_promoted

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from app.client import EngramHTTP
    from app.evaluation import Question
    from app.locomo import LocomoConversation
    from embeddings import Embedder

TOP_K = 50
MemoryRef = tuple[str | None, str]
"""A memory's LoCoMo ``dia_id`` and its ``occurred_at`` as ISO 8601 text."""
BASELINES = ("random", "recent")


@dataclass
class Latencies:
    values_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "count": len(self.values_ms),
            "p50_ms": round(percentile(self.values_ms, 0.50), 2),
            "p95_ms": round(percentile(self.values_ms, 0.95), 2),
            "p99_ms": round(percentile(self.values_ms, 0.99), 2),
        }


@dataclass
class EvaluationReport:
    rankings: dict[str, dict[str, tuple[int, dict[str, float]]]] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "rankings": {
                name: {
                    group: {"questions": count, **{k: round(v, 4) for k, v in scores.items()}}
                    for group, (count, scores) in groups.items()
                }
                for name, groups in self.rankings.items()
            },
            "timings": self.timings,
            "notes": self.notes,
        }


def _memories_by_user(client: EngramHTTP, user_ids: Sequence[str]) -> dict[str, list[MemoryRef]]:
    """Return each user's (dia_id, occurred_at) pairs from the export endpoint."""
    memories: dict[str, list[MemoryRef]] = {}
    for user_id in user_ids:
        export = client.get(f"/v1/users/{user_id}/export")
        memories[user_id] = [
            (memory["metadata"].get("dia_id"), memory["occurred_at"])
            for memory in export["memories"]
        ]
    return memories


class LocomoEvaluation:
    """One evaluation run against one service."""

    def __init__(
        self,
        client: EngramHTTP,
        conversations: Sequence[LocomoConversation],
        *,
        modes: Sequence[str],
        seed: int = 7,
    ) -> None:
        self._client = client
        self._conversations = conversations
        self._modes = list(modes)
        self._seed = seed
        self.questions: QuestionSet = build_questions(conversations)
        self.report = EvaluationReport()

    def ingest(self, timeout_s: float, batch_size: int = 50) -> None:
        """Post every turn in order, one request per batch, and wait until all are stored."""
        latencies = Latencies()
        posted: dict[str, int] = {}
        started = time.perf_counter()
        with Progress() as progress:
            total = sum(conversation.turn_count for conversation in self._conversations)
            task = progress.add_task("Posting turns", total=total)
            for conversation in self._conversations:
                posted[conversation.sample_id] = 0
                for session in conversation.sessions:
                    for turns in session_batches(session, batch_size):
                        body = {"user_id": conversation.sample_id, "turns": turns}
                        sent = time.perf_counter()
                        self._client.post(f"/v1/sessions/{session.session_id}/turns", body)
                        latencies.values_ms.append((time.perf_counter() - sent) * 1000)
                        posted[conversation.sample_id] += len(turns)
                        progress.advance(task, len(turns))
            accepted = time.perf_counter()
            wait_until_promoted(self._client, posted, timeout_s, progress)
        searchable = time.perf_counter()
        total_turns = sum(posted.values())
        self.report.timings["ingest"] = {
            "turns": total_turns,
            "batch_size": batch_size,
            "concurrency": 1,
            "accept_turns_per_s": round(total_turns / max(accepted - started, 1e-9), 1),
            "batch_accept": latencies.summary(),
            "seconds_until_all_searchable": round(searchable - started, 1),
            "promotion_turns_per_s": round(total_turns / max(searchable - started, 1e-9), 1),
        }

    def run(self, concurrency: int = 8) -> EvaluationReport:
        """Score the baselines and every mode; measure search latency."""
        questions = self.questions.questions
        user_ids = sorted({question.user_id for question in questions})
        memories = _memories_by_user(self._client, user_ids)
        self.report.notes.update(
            {
                "questions": len(questions),
                "questions_without_matching_evidence": self.questions.without_evidence,
                "evidence_ids_repaired": len(self.questions.repaired),
                "evidence_ids_dropped": len(self.questions.dropped),
                "memories": sum(len(items) for items in memories.values()),
            }
        )
        generator = random.Random(self._seed)  # noqa: S311  (a reproducible baseline)
        self._score("random", lambda q: _shuffled(memories[q.user_id], generator))
        self._score("recent", lambda q: _most_recent_first(memories[q.user_id]))

        short_results = sum(self._score_mode(mode, memories) for mode in self._modes)
        self.report.notes["searches_returning_fewer_than_50"] = short_results
        self.report.notes["requests_retried"] = self._client.retried_requests
        self.report.notes["retry_wait_s"] = round(self._client.retry_wait_s, 1)
        if self._modes:
            self._measure_concurrency(self._modes[-1], concurrency)
        return self.report

    def _score_mode(self, mode: str, memories: dict[str, list[MemoryRef]]) -> int:
        """Score one ranking mode; return how many searches came back short of 50 hits."""
        latencies = Latencies()
        server: dict[str, list[float]] = {"embedding_ms": [], "database_ms": []}
        short_results = 0

        def ask(question: Question) -> list[str | None]:
            nonlocal short_results
            hits, elapsed_ms, timings = self._search(question, mode)
            latencies.values_ms.append(elapsed_ms)
            for name, values in server.items():
                values.append(timings[name])
            if mode != "keyword" and len(hits) < min(TOP_K, len(memories[question.user_id])):
                short_results += 1
            return [hit["metadata"].get("dia_id") for hit in hits]

        self._score(mode, ask)
        self.report.timings[f"search_{mode}"] = {
            "concurrency": 1,
            **latencies.summary(),
            **{
                f"server_{name}_p50": round(percentile(values, 0.5), 2)
                for name, values in server.items()
            },
        }
        return short_results

    def _search(
        self, question: Question, mode: str
    ) -> tuple[list[dict[str, Any]], float, dict[str, float]]:
        body = {"user_id": question.user_id, "query": question.text, "limit": TOP_K, "mode": mode}
        response = self._client.post("/v1/memories/search", body)
        # The final attempt alone: a retry after a 429 waits, and that wait is not search time.
        return response["hits"], self._client.last_attempt_ms, response["timings"]

    def _score(self, name: str, rank: Callable[[Question], list[str | None]]) -> None:
        board = Scoreboard()
        with Progress() as progress:
            task = progress.add_task(f"Ranking: {name}", total=len(self.questions.questions))
            for question in self.questions.questions:
                board.add(question.category, score_ranking(rank(question), question.evidence))
                progress.advance(task)
        self.report.rankings[name] = board.groups()

    def _measure_concurrency(self, mode: str, concurrency: int) -> None:
        questions = self.questions.questions
        latencies = Latencies()

        def timed(question: Question) -> float:
            # Threads share the client, so each times its own request.
            body = {"user_id": question.user_id, "query": question.text, "limit": TOP_K}
            sent = time.perf_counter()
            self._client.post("/v1/memories/search", {**body, "mode": mode})
            return (time.perf_counter() - sent) * 1000

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            latencies.values_ms.extend(pool.map(timed, questions))
        elapsed = time.perf_counter() - started
        self.report.timings[f"search_{mode}_concurrent"] = {
            "concurrency": concurrency,
            "queries_per_s": round(len(questions) / max(elapsed, 1e-9), 1),
            **latencies.summary(),
        }


def measure_embedding(embedder: Embedder, texts: Sequence[str]) -> dict[str, float]:
    """Texts per second of the model alone at batch sizes 1, 32 and 128."""
    results: dict[str, float] = {}
    embedder.embed(list(texts[:8]))  # warm-up
    for batch in (1, 32, 128):
        sample = list(texts[: max(batch * 4, 32)])
        started = time.perf_counter()
        for start in range(0, len(sample), batch):
            embedder.embed(sample[start : start + batch])
        results[f"batch_{batch}_texts_per_s"] = round(
            len(sample) / (time.perf_counter() - started), 1
        )
    return results


def _shuffled(items: list[MemoryRef], generator: random.Random) -> list[str | None]:
    order = [dia_id for dia_id, _ in items]
    generator.shuffle(order)
    return order[:TOP_K]


def _most_recent_first(items: list[MemoryRef]) -> list[str | None]:
    return [dia_id for dia_id, _ in sorted(items, key=lambda item: item[1], reverse=True)][:TOP_K]


def markdown_report(report: EvaluationReport, context: dict[str, Any]) -> str:
    """Render the report as Markdown tables."""
    lines = ["# LoCoMo retrieval evaluation", ""]
    lines += [f"- {key}: {value}" for key, value in context.items()]
    lines += ["", "## Categories 1-4", ""]
    lines += _metric_table(report, "1-4")
    lines += ["", "## All five categories", ""]
    lines += _metric_table(report, "all")
    lines += ["", "## Recall@10 by category", ""]
    categories = sorted(
        int(group) for group in next(iter(report.rankings.values()), {}) if group.isdigit()
    )
    header = [f"category {number} (n)" for number in categories]
    lines.append("| ranking | " + " | ".join(header) + " |")
    lines.append("|---" * (len(categories) + 1) + "|")
    for name, groups in report.rankings.items():
        cells = [
            f"{100 * groups[str(n)][1]['recall@10']:.1f} ({groups[str(n)][0]})" for n in categories
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Timings", "", "```json", json.dumps(report.timings, indent=2), "```"]
    lines += ["", "## Notes", "", "```json", json.dumps(report.notes, indent=2), "```", ""]
    return "\n".join(lines)


def _metric_table(report: EvaluationReport, group: str) -> list[str]:
    names = [metric.replace("recall", "R") for metric in METRICS]
    lines = ["| ranking | n | " + " | ".join(names) + " |", "|---" * (len(METRICS) + 2) + "|"]
    for name, groups in report.rankings.items():
        count, scores = groups[group]
        cells = [f"{100 * scores[metric]:.1f}" for metric in METRICS]
        lines.append(f"| {name} | {count} | " + " | ".join(cells) + " |")
    return lines


def write_reports(report: EvaluationReport, context: dict[str, Any], folder: Path) -> list[Path]:
    """Write ``locomo-eval.md`` and ``locomo-eval.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    markdown = folder / "locomo-eval.md"
    markdown.write_text(markdown_report(report, context), encoding="utf-8")
    data = folder / "locomo-eval.json"
    data.write_text(json.dumps({"context": context, **report.to_json()}, indent=2), "utf-8")
    return [markdown, data]


def run_context(url: str, modes: Sequence[str], options: dict[str, Any]) -> dict[str, Any]:
    """Describe the run for the report's header: when, against what, and how."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "service": url,
        "modes": ", ".join(modes),
        **options,
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        "top_k": TOP_K,
        "baselines": ", ".join(BASELINES),
    }
