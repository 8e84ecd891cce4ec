"""Import LoCoMo conversations through the service's own API."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.progress import Progress

from app.client import ServiceError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from app.client import EngramHTTP
    from app.locomo import LocomoConversation, LocomoSession

POLL_INTERVAL_S = 1.0


@dataclass
class ImportSummary:
    posted: dict[str, int] = field(default_factory=dict)
    """Turns posted per user."""
    new: int = 0
    duplicates: int = 0


def session_batches(session: LocomoSession, batch_size: int) -> list[list[dict[str, Any]]]:
    """Turn a LoCoMo session into request bodies' ``turns`` lists of at most ``batch_size``."""
    turns = [
        {
            "role": "user",
            "content": turn.memory_text,
            "occurred_at": turn.occurred_at.isoformat(),
            "turn_id": turn.dia_id,
            "metadata": {"source": "locomo", "dia_id": turn.dia_id, "speaker": turn.speaker},
        }
        for turn in session.turns
        if turn.text.strip()
    ]
    return [turns[start : start + batch_size] for start in range(0, len(turns), batch_size)]


def import_conversations(
    client: EngramHTTP,
    conversations: Sequence[LocomoConversation],
    *,
    batch_size: int,
    wait: bool,
    timeout_s: float,
) -> ImportSummary:
    """Post every turn, oldest first, and count new and already stored turns."""
    summary = ImportSummary()
    posted = summary.posted
    total = sum(conversation.turn_count for conversation in conversations)
    with Progress() as progress:
        task = progress.add_task("Importing turns", total=total)
        for conversation in conversations:
            user_id = conversation.sample_id
            posted[user_id] = 0
            for session in conversation.sessions:
                for turns in session_batches(session, batch_size):
                    response = client.post(
                        f"/v1/sessions/{session.session_id}/turns",
                        {"user_id": user_id, "turns": turns},
                    )
                    duplicates = sum(bool(item["duplicate"]) for item in response["turns"])
                    summary.duplicates += duplicates
                    summary.new += len(turns) - duplicates
                    posted[user_id] += len(turns)
                    progress.advance(task, len(turns))
        if wait:
            wait_until_promoted(client, posted, timeout_s, progress)
    return summary


def wait_until_promoted(
    client: EngramHTTP, expected: dict[str, int], timeout_s: float, progress: Progress
) -> None:
    """Poll each user's sessions until the stored turns reach the posted count."""
    task = progress.add_task("Waiting for long-term memory", total=sum(expected.values()))
    deadline = time.monotonic() + timeout_s
    remaining = dict(expected)
    while remaining:
        stored_total = 0
        for user_id in list(remaining):
            stored = _stored_turns(client, user_id)
            if stored >= remaining[user_id]:
                del remaining[user_id]
            stored_total += stored
        done = sum(expected.values()) - sum(remaining.values())
        progress.update(task, completed=max(done, stored_total))
        if not remaining:
            break
        if time.monotonic() > deadline:
            raise ServiceError(
                f"{len(remaining)} users still have unpromoted turns after {timeout_s:.0f} s; "
                "check the worker's logs and the dead-letter stream"
            )
        time.sleep(POLL_INTERVAL_S)


def _stored_turns(client: EngramHTTP, user_id: str) -> int:
    stored = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"/v1/users/{user_id}/sessions", params=params)
        stored += sum(int(session["stored_turns"]) for session in page["sessions"])
        cursor = page["next_cursor"]
        if not cursor:
            return stored
