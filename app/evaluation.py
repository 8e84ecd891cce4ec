"""Retrieval metrics on LoCoMo questions, measured through the service's own API.

Each question belongs to one conversation (one Engram user) and names the
``dia_id`` of the turns that answer it (its evidence). A ranking is the list
of ``dia_id`` values of the hits, best first. Per question:

- Recall@k: the share of the evidence found in the top k.
- Hit@k: 1 when any evidence is in the top k; All@k: 1 when all of it is.
- MRR@50: 1 / the position of the first evidence in the top 50, else 0.
- nDCG@10: discounted gain of the evidence in the top 10 (binary relevance),
  over the gain of a perfect ranking.

Scores are averaged per category, keyed by the number in the file because
projects name the categories differently; over categories 1-4 (category 5
contains adversarial questions); and over all questions.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from app.locomo import LocomoConversation

RECALL_KS = (1, 5, 10, 25, 50)
METRICS = (
    *(f"recall@{k}" for k in RECALL_KS),
    "hit@10",
    "all@10",
    "mrr@50",
    "ndcg@10",
)
HEADLINE_CATEGORIES = frozenset({1, 2, 3, 4})
_MISSING_SESSION_NUMBER = re.compile(r"^D:(\d+):(\d+)$")


@dataclass(frozen=True, slots=True)
class Question:
    user_id: str
    text: str
    category: int
    evidence: frozenset[str]


@dataclass
class QuestionSet:
    questions: list[Question]
    repaired: list[str] = field(default_factory=list)
    """Evidence ids that were rewritten into the ``D<session>:<turn>`` form."""
    dropped: list[str] = field(default_factory=list)
    """Evidence ids that match no turn of their conversation."""
    without_evidence: int = 0
    """Questions left out because none of their evidence matches a turn."""


def split_evidence(raw: Iterable[Any]) -> list[str]:
    """Split evidence entries such as ``"D1:3; D1:4"`` into single ids."""
    ids: list[str] = []
    for entry in raw:
        ids.extend(part.strip() for part in re.split(r"[;,\s]+", str(entry)) if part.strip())
    return ids


def repair_evidence_id(evidence_id: str) -> str:
    """Rewrite the malformed ``D:11:26`` into ``D11:26``; other ids are returned unchanged."""
    match = _MISSING_SESSION_NUMBER.match(evidence_id)
    return f"D{match.group(1)}:{match.group(2)}" if match else evidence_id


def build_questions(conversations: Sequence[LocomoConversation]) -> QuestionSet:
    """Collect every question with its evidence normalised against the stored turns."""
    result = QuestionSet(questions=[])
    for conversation in conversations:
        known = {turn.dia_id for session in conversation.sessions for turn in session.turns}
        for raw in conversation.questions:
            evidence: set[str] = set()
            for evidence_id in split_evidence(raw.get("evidence", [])):
                repaired = repair_evidence_id(evidence_id)
                if repaired != evidence_id:
                    result.repaired.append(f"{conversation.sample_id}:{evidence_id}")
                if repaired in known:
                    evidence.add(repaired)
                else:
                    result.dropped.append(f"{conversation.sample_id}:{evidence_id}")
            if not evidence:
                result.without_evidence += 1
                continue
            result.questions.append(
                Question(
                    user_id=conversation.sample_id,
                    text=str(raw["question"]),
                    category=int(raw["category"]),
                    evidence=frozenset(evidence),
                )
            )
    return result


def score_ranking(ranking: Sequence[str | None], evidence: frozenset[str]) -> dict[str, float]:
    """Return every metric of one question's ranking (a list of dia_ids, best first)."""
    scores: dict[str, float] = {}
    for k in RECALL_KS:
        found = evidence.intersection(item for item in ranking[:k] if item is not None)
        scores[f"recall@{k}"] = len(found) / len(evidence)
    top10 = {item for item in ranking[:10] if item is not None}
    scores["hit@10"] = float(bool(evidence & top10))
    scores["all@10"] = float(evidence <= top10)
    first = next((index for index, item in enumerate(ranking[:50]) if item in evidence), None)
    scores["mrr@50"] = 0.0 if first is None else 1.0 / (first + 1)
    gain = sum(
        1.0 / math.log2(index + 2) for index, item in enumerate(ranking[:10]) if item in evidence
    )
    ideal = sum(1.0 / math.log2(index + 2) for index in range(min(len(evidence), 10)))
    scores["ndcg@10"] = gain / ideal
    return scores


@dataclass
class Scoreboard:
    """Per-question scores of one ranking, averaged on demand."""

    by_category: dict[int, list[dict[str, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add(self, category: int, scores: dict[str, float]) -> None:
        self.by_category[category].append(scores)

    def groups(self) -> dict[str, tuple[int, dict[str, float]]]:
        """Return question count and mean scores for each category, ``1-4`` and ``all``."""
        groups: dict[str, list[dict[str, float]]] = {}
        for category in sorted(self.by_category):
            groups[str(category)] = self.by_category[category]
        groups["1-4"] = [
            scores
            for category, items in self.by_category.items()
            if category in HEADLINE_CATEGORIES
            for scores in items
        ]
        groups["all"] = [scores for items in self.by_category.values() for scores in items]
        return {name: (len(items), _mean(items)) for name, items in groups.items()}


def _mean(items: Sequence[dict[str, float]]) -> dict[str, float]:
    if not items:
        return dict.fromkeys(METRICS, 0.0)
    return {metric: sum(item[metric] for item in items) / len(items) for metric in METRICS}


def percentile(values: Sequence[float], share: float) -> float:
    """Return the value below which ``share`` (0 to 1) of the values fall, by nearest rank."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
    return ordered[index]
