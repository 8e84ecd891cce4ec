"""Assemble prompt-ready context under a token budget.

A session summary, when there is one, is placed first: it stands in for
the older turns it covers. The recent window then claims up to a share of
the budget (newest turns first), long-term memories fill what is left
(pinned ones first, then the rest in rank order), and any budget still
free goes back to older window turns. Memories that are also
in the window are left out, so nothing is sent twice, and so are memories
that repeat one already chosen or are too dissimilar to the query. The
chosen memories are listed oldest first, each with its date.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from retrieval.tokens import REPLY_PRIMER_TOKENS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from app.shortterm import StoredTurn
    from retrieval.search import Hit
    from retrieval.tokens import TiktokenCounter


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class AssembledContext:
    messages: list[Message]
    memories: list[Hit]
    token_count: int
    summary_used: bool = False


@dataclass(frozen=True, slots=True)
class ContextAssembler:
    """Chooses what fits in a budget; the memory block's wording comes from a prompt template."""

    counter: TiktokenCounter
    render_memories: Callable[[Sequence[Hit]], str]
    window_share: float
    min_similarity: float = -1.0
    duplicate_similarity: float = 0.95

    def assemble(
        self,
        window: Sequence[StoredTurn],
        hits: Sequence[Hit],
        budget: int,
        *,
        pinned: Sequence[Hit] = (),
        summary: str | None = None,
    ) -> AssembledContext:
        """Choose the messages; ``pinned`` memories come before every ranked hit."""
        available = budget - REPLY_PRIMER_TOKENS
        summary_cost = self.counter.message_tokens(summary) if summary else 0
        if summary_cost > available:
            summary, summary_cost = None, 0
        available -= summary_cost
        window_ids = {turn.turn_id for turn in window}
        candidates = [*pinned] + [
            hit
            for hit in hits
            if (hit.turn_id is None or hit.turn_id not in window_ids) and self._relevant(hit)
        ]

        turn_costs = [self.counter.message_tokens(turn.content) for turn in window]
        chosen_turns = newest_that_fit(turn_costs, int(available * self.window_share))
        used = sum(turn_costs[-chosen_turns:]) if chosen_turns else 0

        memories, system_cost = self._fit_memories(candidates, available - used)
        used += system_cost

        more_turns = newest_that_fit(turn_costs[: len(window) - chosen_turns], available - used)
        chosen_turns += more_turns
        kept = list(window[len(window) - chosen_turns :]) if chosen_turns else []
        used = system_cost + sum(turn_costs[len(window) - chosen_turns :])

        messages: list[Message] = []
        if memories:
            messages.append(Message("system", self.render_memories(_by_time(memories))))
        if summary:
            messages.append(Message("system", summary))
            used += summary_cost
        messages.extend(Message(turn.role, turn.content) for turn in kept)
        token_count = used + REPLY_PRIMER_TOKENS if messages else 0
        return AssembledContext(
            messages=messages,
            memories=memories,
            token_count=token_count,
            summary_used=summary is not None,
        )

    def _relevant(self, hit: Hit) -> bool:
        """Keep a hit that shares words with the query or is similar enough in meaning."""
        explanation = hit.explanation
        if explanation is None or explanation.similarity is None:
            return True
        return explanation.text_rank is not None or explanation.similarity >= self.min_similarity

    def _repeats(self, hit: Hit, chosen: Sequence[Hit]) -> bool:
        """Return whether ``hit`` repeats a memory already chosen."""
        text = _normalised(hit.content)
        for other in chosen:
            if _normalised(other.content) == text:
                return True
            if hit.embedding is not None and other.embedding is not None:
                similarity = sum(a * b for a, b in zip(hit.embedding, other.embedding, strict=True))
                if similarity >= self.duplicate_similarity:
                    return True
        return False

    def _fit_memories(self, candidates: Sequence[Hit], room: int) -> tuple[list[Hit], int]:
        """Add memories by rank while the rendered system message fits in ``room``.

        Returns the chosen memories in rank order; the message lists them by time.
        """
        chosen: list[Hit] = []
        cost = 0
        for hit in candidates:
            if self._repeats(hit, chosen):
                continue
            trial = [*chosen, hit]
            trial_cost = self.counter.message_tokens(self.render_memories(_by_time(trial)))
            if trial_cost > room:
                continue
            chosen, cost = trial, trial_cost
        return chosen, cost


def newest_that_fit(costs: Sequence[int], room: int) -> int:
    """Return how many of the newest items fit in ``room`` when taken newest first."""
    total = 0
    count = 0
    for cost in reversed(costs):
        if total + cost > room:
            break
        total += cost
        count += 1
    return count


def _by_time(hits: Sequence[Hit]) -> list[Hit]:
    return sorted(hits, key=lambda hit: hit.occurred_at)


def _normalised(text: str) -> str:
    """Text compared for exact repeats: case-folded, with runs of whitespace collapsed."""
    return " ".join(text.casefold().split())
