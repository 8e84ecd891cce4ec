"""Shared set-up of the notebooks: connect, load a conversation, wait for long-term memory.

The notebooks read ``ENGRAM_URL`` and ``ENGRAM_TOKEN`` (a service token) from
the environment. ``ENGRAM_LOCOMO`` may name a LoCoMo file; without it, the
small conversation in ``data/sample_conversation.json`` is used. Figures are
also saved to ``ENGRAM_FIGURES`` when that names a folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from engram_client import EngramClient

from app.locomo import LocomoConversation, load_locomo

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "data" / "sample_conversation.json"


def connect() -> EngramClient:
    url = os.environ.get("ENGRAM_URL", "http://127.0.0.1:8000")
    return EngramClient(url, token=os.environ.get("ENGRAM_TOKEN"))


def conversation() -> LocomoConversation:
    """Return the first conversation of the LoCoMo file when one is given, else the sample."""
    path = Path(os.environ.get("ENGRAM_LOCOMO") or SAMPLE)
    return load_locomo(path)[0]


def load(engram: EngramClient, chat: LocomoConversation, timeout_s: float = 600) -> str:
    """Import the conversation for the user named by its sample id; return that user id."""
    user_id = chat.sample_id
    for session in chat.sessions:
        turns: list[dict[str, Any]] = [
            {
                "role": "user",
                "content": turn.memory_text,
                "occurred_at": turn.occurred_at.isoformat(),
                "turn_id": turn.dia_id,
                "metadata": {"dia_id": turn.dia_id, "speaker": turn.speaker},
            }
            for turn in session.turns
            if turn.text.strip()
        ]
        for start in range(0, len(turns), 50):
            engram.append_turns(session.session_id, user_id, turns[start : start + 50])
    expected = sum(1 for s in chat.sessions for t in s.turns if t.text.strip())
    deadline = time.monotonic() + timeout_s
    while len(engram.memories(user_id).memories) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{user_id}: turns were not in long-term memory after {timeout_s} s")
        time.sleep(0.5)
    return user_id


def save_figure(figure: Any, name: str) -> None:
    """Save a matplotlib figure to ENGRAM_FIGURES, when that is set."""
    folder = os.environ.get("ENGRAM_FIGURES")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        figure.savefig(Path(folder) / f"{name}.png", dpi=110, bbox_inches="tight")
