"""Turn search candidates into the final order, and explain each position.

- ``semantic`` ranks by cosine similarity, ``keyword`` by the text score.
- ``hybrid`` fuses both rankings with reciprocal rank fusion: each ranking
  adds ``weight / (k + rank)``, so a memory found by both rises, and scores
  on different scales need no calibration. k defaults to 10, the middle of
  the range that scored best on LoCoMo (see docs/evaluation.md).
- An optional recency decay multiplies the score by
  ``(1 - w) + w * 0.5 ** (age / half_life)``, where ``age`` is the time since
  the memory happened.
- Optional maximal marginal relevance then picks, one at a time, the
  candidate with the best balance of relevance and difference from those
  already picked, so near-duplicates do not fill the top.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from retrieval.search import Candidate, Mode

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class RankingOptions:
    mode: Mode
    limit: int
    rrf_k: int = 10
    semantic_weight: float = 1.0
    keyword_weight: float = 1.0
    half_life_days: float | None = None
    recency_weight: float = 0.5
    mmr_lambda: float | None = None
    now: datetime | None = None


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a memory got its position: each component and the result."""

    mode: str
    similarity: float | None
    vector_rank: int | None
    text_score: float | None
    text_rank: int | None
    relevance: float
    age_days: float
    recency_factor: float
    score: float
    rank: int
    diversity_penalty: float | None
    diversity_score: float | None


@dataclass(frozen=True, slots=True)
class Ranked:
    candidate: Candidate
    explanation: Explanation


def _relevance(candidate: Candidate, options: RankingOptions) -> float:
    if options.mode == "semantic":
        return candidate.similarity or 0.0
    if options.mode == "keyword":
        return candidate.text_score or 0.0
    fused = 0.0
    if candidate.vector_rank is not None:
        fused += options.semantic_weight / (options.rrf_k + candidate.vector_rank)
    if candidate.text_rank is not None:
        fused += options.keyword_weight / (options.rrf_k + candidate.text_rank)
    return fused


def _recency(candidate: Candidate, options: RankingOptions, now: datetime) -> tuple[float, float]:
    """Return the memory's age in days and the factor its score is multiplied by."""
    age_days = max(0.0, (now - candidate.occurred_at).total_seconds() / SECONDS_PER_DAY)
    if options.half_life_days is None:
        return age_days, 1.0
    decay = 0.5 ** (age_days / options.half_life_days)
    return age_days, (1.0 - options.recency_weight) + options.recency_weight * decay


def _similarity(a: Candidate, b: Candidate) -> float:
    """Cosine similarity of two candidates' vectors, or 0 when either was not read."""
    if a.embedding is None or b.embedding is None:
        return 0.0
    # Stored vectors are normalised, so the dot product is the cosine similarity.
    return sum(x * y for x, y in zip(a.embedding, b.embedding, strict=True))


def rank(candidates: Sequence[Candidate], options: RankingOptions) -> list[Ranked]:
    """Order candidates for the mode and return the top ``limit`` with explanations."""
    now = options.now or datetime.now(UTC)
    scored = []
    for candidate in candidates:
        relevance = _relevance(candidate, options)
        age_days, factor = _recency(candidate, options, now)
        scored.append((relevance * factor, relevance, age_days, factor, candidate))
    scored.sort(key=lambda item: (-item[0], str(item[4].id)))

    penalties: dict[int, tuple[float, float]] = {}
    if options.mmr_lambda is not None:
        scored, penalties = _diversify(scored, options.mmr_lambda, options.limit)

    results = []
    for position, (score, relevance, age_days, factor, candidate) in enumerate(
        scored[: options.limit], start=1
    ):
        explanation = Explanation(
            mode=options.mode,
            similarity=candidate.similarity,
            vector_rank=candidate.vector_rank,
            text_score=candidate.text_score,
            text_rank=candidate.text_rank,
            relevance=relevance,
            age_days=round(age_days, 3),
            recency_factor=factor,
            score=score,
            rank=position,
            diversity_penalty=penalties.get(id(candidate), (None, None))[0],
            diversity_score=penalties.get(id(candidate), (None, None))[1],
        )
        results.append(Ranked(candidate, explanation))
    return results


Scored = tuple[float, float, float, float, "Candidate"]


def _diversify(
    scored: list[Scored], mmr_lambda: float, limit: int
) -> tuple[list[Scored], dict[int, tuple[float, float]]]:
    """Reorder by maximal marginal relevance.

    Returns the order, and for each pick its penalty (highest similarity to an
    earlier pick) and the value it was picked by:
    ``lambda * score / best score - (1 - lambda) * penalty``.
    """
    if not scored:
        return scored, {}
    best = scored[0][0] or 1.0
    remaining = list(scored)
    picked: list[Scored] = []
    penalties: dict[int, tuple[float, float]] = {}
    while remaining and len(picked) < limit:
        choice, choice_value, choice_penalty = 0, float("-inf"), 0.0
        for index, item in enumerate(remaining):
            penalty = max(
                (_similarity(item[4], chosen[4]) for chosen in picked),
                default=0.0,
            )
            value = mmr_lambda * (item[0] / best) - (1 - mmr_lambda) * penalty
            if value > choice_value:
                choice, choice_value, choice_penalty = index, value, penalty
        item = remaining.pop(choice)
        penalties[id(item[4])] = (round(choice_penalty, 4), round(choice_value, 4))
        picked.append(item)
    return picked + remaining, penalties
