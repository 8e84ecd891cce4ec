"""Reader for LoCoMo conversation files (Maharana et al., 2024, CC BY-NC 4.0).

A file contains conversations (``sample_id``) of numbered sessions, each a list
of turns (``speaker``, ``dia_id``, ``text``, sometimes ``blip_caption``) with
a ``session_<n>_date_time`` such as ``1:56 pm on 8 May, 2023``. Times carry
no timezone and are read as UTC. A date key without a session is skipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

_SESSION_KEY = re.compile(r"^session_(\d+)$")
_DATE_FORMAT = "%I:%M %p on %d %B, %Y"


class LocomoFormatError(ValueError):
    """Raised when a file is not valid JSON or not laid out as LoCoMo conversations."""


@dataclass(frozen=True, slots=True)
class LocomoTurn:
    dia_id: str
    speaker: str
    text: str
    caption: str | None
    occurred_at: datetime

    @property
    def memory_text(self) -> str:
        """The text the LoCoMo paper retrieves over: who said what, plus a shared image."""
        text = f'{self.speaker} said, "{self.text}"'
        if self.caption:
            text += f" and shared {self.caption}"
        return text


@dataclass(frozen=True, slots=True)
class LocomoSession:
    number: int
    started_at: datetime
    turns: list[LocomoTurn]

    @property
    def session_id(self) -> str:
        return f"session_{self.number}"


@dataclass(frozen=True, slots=True)
class LocomoConversation:
    sample_id: str
    sessions: list[LocomoSession]
    questions: list[dict[str, Any]]

    @property
    def turn_count(self) -> int:
        return sum(len(session.turns) for session in self.sessions)


def parse_session_time(value: str) -> datetime:
    """Parse ``1:56 pm on 8 May, 2023`` as a UTC time."""
    return datetime.strptime(value.strip(), _DATE_FORMAT).replace(tzinfo=UTC)


def _session(number: int, raw_turns: list[dict[str, Any]], started_at: datetime) -> LocomoSession:
    # Turns of one session share its start time; one second apart keeps their order.
    turns = [
        LocomoTurn(
            dia_id=str(raw["dia_id"]),
            speaker=str(raw["speaker"]),
            text=str(raw.get("text", "")),
            caption=raw.get("blip_caption") or None,
            occurred_at=started_at + timedelta(seconds=index),
        )
        for index, raw in enumerate(raw_turns)
    ]
    return LocomoSession(number=number, started_at=started_at, turns=turns)


def _conversation(raw: dict[str, Any]) -> LocomoConversation:
    body = raw["conversation"]
    sessions = []
    for key, value in body.items():
        match = _SESSION_KEY.match(key)
        if match is None or not isinstance(value, list):
            continue
        number = int(match.group(1))
        started_at = parse_session_time(body[f"session_{number}_date_time"])
        sessions.append(_session(number, value, started_at))
    sessions.sort(key=lambda session: session.number)
    return LocomoConversation(
        sample_id=str(raw["sample_id"]), sessions=sessions, questions=list(raw.get("qa", []))
    )


def load_locomo(path: Path) -> list[LocomoConversation]:
    """Read every conversation of a LoCoMo JSON file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LocomoFormatError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, list):
        raise LocomoFormatError(f"{path} is not a LoCoMo file: expected a list of conversations")

    conversations = []
    for index, item in enumerate(data):
        try:
            conversations.append(_conversation(item))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise LocomoFormatError(
                f"{path}: conversation {index} is not in the LoCoMo layout "
                f"({type(error).__name__}: {error}); expected sample_id, conversation "
                "with session_<n> and session_<n>_date_time"
            ) from error
    return conversations
