"""Retrieval metrics, LoCoMo evidence clean-up, and a small evaluation run in CI."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from app.cli import main
from app.client import EngramHTTP
from app.eval_locomo import LocomoEvaluation, markdown_report, write_reports
from app.evaluation import Scoreboard, build_questions, percentile, score_ranking
from app.locomo import load_locomo
from tests.conftest import service_token
from tests.mini_locomo import mini_locomo

if TYPE_CHECKING:
    from pathlib import Path

    from app.runtime import Runtime

# Hybrid ranking on the conversation written for the tests; a change that ranks
# worse than this fails CI.
HYBRID_RECALL_AT_5_FLOOR = 0.85


def test_score_ranking_metrics() -> None:
    evidence = frozenset({"D1:2", "D1:9"})
    ranking = ["D1:1", "D1:2", None, "D1:3", "D1:4", "D1:5", "D1:6", "D1:7", "D1:8", "D1:10"]
    ranking += ["D1:9"]

    scores = score_ranking(ranking, evidence)

    assert scores["recall@1"] == 0.0
    assert scores["recall@5"] == 0.5
    assert scores["recall@10"] == 0.5
    assert scores["recall@25"] == 1.0
    assert scores["hit@10"] == 1.0
    assert scores["all@10"] == 0.0
    assert scores["mrr@50"] == 0.5
    ideal = 1 + 1 / 1.584962500721156
    assert scores["ndcg@10"] == pytest.approx((1 / 1.584962500721156) / ideal)


def test_evidence_is_repaired_split_and_dropped(tmp_path: Path) -> None:
    path = tmp_path / "mini.json"
    path.write_text(json.dumps(mini_locomo()), encoding="utf-8")

    questions = build_questions(load_locomo(path))

    by_text = {question.text: question for question in questions.questions}
    assert by_text["Who might join the trip?"].evidence == {"D1:5"}
    assert by_text["Which language is Mira studying?"].evidence == {"D1:7", "D2:12"}
    assert by_text["Where did Rui grow up?"].evidence == {"D1:9"}
    assert questions.repaired == ["mini-1:D:1:5"]
    assert questions.dropped == ["mini-1:D9:99"]
    assert questions.without_evidence == 1
    assert len(questions.questions) == 15


def test_scoreboard_groups_and_percentile() -> None:
    board = Scoreboard()
    board.add(1, score_ranking(["a"], frozenset({"a"})))
    board.add(5, score_ranking(["b"], frozenset({"a"})))

    groups = board.groups()

    assert groups["1"][0] == 1
    assert groups["1-4"] == (1, groups["1"][1])
    assert groups["all"][0] == 2
    assert groups["all"][1]["recall@1"] == 0.5
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile([], 0.95) == 0.0


def test_small_evaluation_meets_the_floor(
    live_server: str, runtime: Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "mini.json"
    path.write_text(json.dumps(mini_locomo()), encoding="utf-8")
    conversations = load_locomo(path)

    with EngramHTTP(live_server, token=service_token()) as client:
        evaluation = LocomoEvaluation(
            client, conversations, modes=("semantic", "keyword", "hybrid")
        )
        evaluation.ingest(timeout_s=120)
        report = evaluation.run(concurrency=2)

    hybrid = report.rankings["hybrid"]["1-4"][1]
    semantic = report.rankings["semantic"]["1-4"][1]
    random_order = report.rankings["random"]["1-4"][1]
    assert hybrid["recall@5"] >= HYBRID_RECALL_AT_5_FLOOR
    assert hybrid["recall@5"] >= semantic["recall@5"]
    assert hybrid["mrr@50"] > random_order["mrr@50"]
    assert report.notes["questions"] == 15
    assert report.notes["searches_returning_fewer_than_50"] == 0
    assert report.timings["ingest"]["turns"] == 36
    assert report.timings["search_hybrid_concurrent"]["concurrency"] == 2

    written = write_reports(report, {"service": live_server}, tmp_path / "out")
    markdown = written[0].read_text(encoding="utf-8")
    assert "| hybrid | 14 |" in markdown
    assert "Recall@10 by category" in markdown
    assert json.loads(written[1].read_text(encoding="utf-8"))["rankings"]["hybrid"]["all"]
    assert markdown == markdown_report(report, {"service": live_server})


def test_eval_command_writes_reports(live_server: str, runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "mini.json"
    path.write_text(json.dumps(mini_locomo()), encoding="utf-8")

    result = CliRunner().invoke(
        main,
        [
            "eval",
            "locomo",
            str(path),
            "--url",
            live_server,
            "--token",
            service_token(),
            "--mode",
            "hybrid",
            "--out",
            str(tmp_path / "reports"),
            "--no-embedding-speed",
            "--concurrency",
            "2",
        ],
    )

    assert result.exit_code == 0, result.output
    assert "hybrid: Recall@10" in result.output
    assert (tmp_path / "reports" / "locomo-eval.md").is_file()
