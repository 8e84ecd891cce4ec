"""Typed results of the Engram API, read from its JSON responses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _frame(rows: Sequence[Any]) -> pd.DataFrame:
    """Build a DataFrame from dataclass rows; pandas is imported only when it is needed."""
    try:
        import pandas as pd  # noqa: PLC0415
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "to_dataframe() needs pandas: pip install 'engram-client[pandas]'"
        ) from error
    return pd.DataFrame([asdict(row) for row in rows])


@dataclass(frozen=True, slots=True)
class Turn:
    turn_id: str
    role: str
    content: str
    occurred_at: datetime | None
    metadata: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Turn:
        return cls(
            turn_id=data["turn_id"],
            role=data["role"],
            content=data["content"],
            occurred_at=_time(data.get("occurred_at")),
            metadata=data.get("metadata") or {},
        )


@dataclass(frozen=True, slots=True)
class TurnPage:
    turns: list[Turn]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AcceptedTurn:
    turn_id: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    window_turns: int
    stored_turns: int
    last_activity_at: datetime | None
    active: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Session:
        return cls(
            session_id=data["session_id"],
            window_turns=data["window_turns"],
            stored_turns=data["stored_turns"],
            last_activity_at=_time(data.get("last_activity_at")),
            active=data["active"],
        )


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: list[Session]
    next_cursor: str | None

    def to_dataframe(self) -> pd.DataFrame:
        return _frame(self.sessions)


@dataclass(frozen=True, slots=True)
class Hit:
    """A search hit; ``explanation`` contains the parts of its score."""

    id: str
    content: str
    role: str | None
    kind: str
    session_id: str | None
    turn_id: str | None
    occurred_at: datetime | None
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    explanation: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hit:
        return cls(
            id=data["id"],
            content=data["content"],
            role=data.get("role"),
            kind=data["kind"],
            session_id=data.get("session_id"),
            turn_id=data.get("turn_id"),
            occurred_at=_time(data.get("occurred_at")),
            score=data["score"],
            metadata=data.get("metadata") or {},
            explanation=data.get("explanation") or {},
        )


@dataclass(frozen=True, slots=True)
class SearchResults:
    hits: list[Hit]
    mode: str
    timings: dict[str, float]

    def to_dataframe(self) -> pd.DataFrame:
        """Return one row per hit, with the explanation's parts as columns."""
        frame = _frame(self.hits)
        if not frame.empty:
            parts = frame.pop("explanation").apply(lambda value: value or {})
            import pandas as pd  # noqa: PLC0415

            frame = frame.join(pd.json_normalize(parts.tolist()).add_prefix("explanation."))
        return frame


@dataclass(frozen=True, slots=True)
class Memory:
    id: str
    user_id: str
    session_id: str | None
    kind: str
    role: str | None
    content: str
    turn_id: str | None
    occurred_at: datetime | None
    created_at: datetime | None
    metadata: dict[str, Any]
    embedding_model: str
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    supersedes: str | None = None
    superseded_by: str | None = None
    pinned: bool = False
    source_turn_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Memory:
        return cls(
            id=data["id"],
            user_id=data["user_id"],
            session_id=data.get("session_id"),
            kind=data["kind"],
            role=data.get("role"),
            content=data["content"],
            turn_id=data.get("turn_id"),
            occurred_at=_time(data.get("occurred_at")),
            created_at=_time(data.get("created_at")),
            metadata=data.get("metadata") or {},
            embedding_model=data["embedding_model"],
            valid_from=_time(data.get("valid_from")),
            valid_to=_time(data.get("valid_to")),
            supersedes=data.get("supersedes"),
            superseded_by=data.get("superseded_by"),
            pinned=bool(data.get("pinned", False)),
            source_turn_ids=list(data.get("source_turn_ids") or []),
        )


@dataclass(frozen=True, slots=True)
class MemoryList:
    """A user's long-term memories: oldest first from an export, newest first from a listing."""

    memories: list[Memory]
    next_cursor: str | None = None

    def to_dataframe(self) -> pd.DataFrame:
        return _frame(self.memories)


@dataclass(frozen=True, slots=True)
class Context:
    messages: list[dict[str, str]]
    memories: list[Hit]
    token_count: int
    token_budget: int


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool: str
    tool_call_id: str | None
    content: str
    truncated: bool
    data: Any


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """One Server-Sent Event of ``/v1/chat``: context, delta, done or error."""

    event: str
    data: dict[str, Any]
