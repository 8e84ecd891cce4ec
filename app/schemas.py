"""Request and response bodies of the v1 API.

Static rules (types, roles, id formats, empty text) live on the models, so a
violation becomes a 422 naming the field. Limits that come from settings
(content bytes, batch size, metadata bytes) are checked by the services.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

Role = Literal["user", "assistant", "system", "tool"]
MemoryKind = Literal["turn", "fact", "preference", "event", "summary"]
FactKind = Literal["fact", "preference", "event"]
SearchMode = Literal["semantic", "keyword", "hybrid"]

SCOPE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+=-]{0,127}$"
TURN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,127}$"

ScopeId = Annotated[str, StringConstraints(pattern=SCOPE_ID_PATTERN)]
"""A user or session id: 1-128 characters of letters, digits and ``. _ @ + = -``."""
TurnId = Annotated[str, StringConstraints(pattern=TURN_ID_PATTERN)]
"""A client turn id: like a scope id, and ``:`` is allowed too."""


def check_text(value: str) -> str:
    """Reject text that Postgres or Redis would corrupt or refuse."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("must be valid Unicode (no unpaired surrogates)") from error
    return value


def check_json_value(value: Any) -> Any:
    """Apply ``check_text`` to every key and string inside a JSON value."""
    if isinstance(value, str):
        return check_text(value)
    if isinstance(value, dict):
        for key, item in value.items():
            check_text(key)
            check_json_value(item)
    elif isinstance(value, list):
        for item in value:
            check_json_value(item)
    return value


def check_has_text(value: str) -> str:
    """Reject blank text, then apply ``check_text``."""
    if not value.strip():
        raise ValueError("must contain text, not only whitespace")
    return check_text(value)


NonBlankText = Annotated[str, AfterValidator(check_has_text)]
"""Text that is not empty or only whitespace, and safe to store."""
JsonObject = Annotated[dict[str, Any], AfterValidator(check_json_value)]
"""A free-form JSON object whose keys and strings are safe to store."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TurnIn(StrictModel):
    """One conversation turn as a client sends it."""

    role: Role
    content: NonBlankText = Field(
        min_length=1, description="The text of the turn; not empty or blank."
    )
    occurred_at: AwareDatetime | None = Field(
        None, description="When the turn happened, with a timezone; defaults to the time accepted."
    )
    metadata: JsonObject = Field(default_factory=dict, description="Free-form JSON object.")
    turn_id: TurnId | None = Field(
        None, description="Client id that makes retries idempotent; generated when absent."
    )


class AppendTurnsRequest(StrictModel):
    """A batch of turns for one user's session."""

    user_id: ScopeId
    turns: list[TurnIn] = Field(min_length=1, description="One or more turns, oldest first.")


class AcceptedTurn(BaseModel):
    turn_id: str
    duplicate: bool = Field(description="True when this turn id was already stored; kept once.")


class AppendTurnsResponse(BaseModel):
    user_id: str
    session_id: str
    turns: list[AcceptedTurn]


class TurnOut(BaseModel):
    """A turn in a session window."""

    turn_id: str
    role: Role
    content: str
    occurred_at: datetime
    metadata: dict[str, Any]


class TurnPage(BaseModel):
    user_id: str
    session_id: str
    turns: list[TurnOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end.")


class SessionSummary(BaseModel):
    """A session of a user, from the window in Redis and from long-term memory."""

    session_id: str
    window_turns: int = Field(description="Turns in the short-term window (0 once it expired).")
    stored_turns: int = Field(description="Turns promoted to long-term memory.")
    last_activity_at: datetime | None
    active: bool = Field(description="Whether the short-term window still exists.")


class SessionList(BaseModel):
    user_id: str
    sessions: list[SessionSummary]
    next_cursor: str | None


class SearchRequest(StrictModel):
    """A search over one user's long-term memory."""

    user_id: ScopeId
    query: str = Field(min_length=1, max_length=4096)
    limit: int | None = Field(None, ge=1, description="Hits to return; capped by a setting.")
    mode: SearchMode | None = Field(
        None,
        description="`semantic` (meaning), `keyword` (shared words) or `hybrid` (both, fused); "
        "defaults to MEMORY_SEARCH_DEFAULT_MODE.",
    )
    session_id: ScopeId | None = None
    after: AwareDatetime | None = Field(None, description="Only memories that happened after this.")
    before: AwareDatetime | None = Field(None, description="Only memories that happened before.")
    kind: MemoryKind | None = Field(None, description="Only memories of this kind.")
    role: Role | None = Field(None, description="Only memories with this role.")
    metadata: JsonObject | None = Field(
        None, description="Only memories whose metadata contains this JSON object."
    )
    recency_half_life_days: float | None = Field(
        None,
        gt=0,
        description="Favour recent memories: a memory this many days old counts half as much "
        "in the recency part of its score. Unset turns recency off.",
    )
    recency_weight: float = Field(
        0.5, ge=0, le=1, description="Share of the score that recency can take away (0 to 1)."
    )
    diversity: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Maximal marginal relevance: 0 ranks by relevance alone, higher values push "
        "near-duplicates of higher hits down. Unset turns it off.",
    )
    as_of: AwareDatetime | None = Field(
        None,
        description="Search memory as it stood at this time: facts that held then, including "
        "those superseded since. Unset searches current memories only.",
    )
    include_superseded: bool = Field(
        False, description="Also return facts and summaries that were superseded."
    )

    @field_validator("query")
    @classmethod
    def _query_has_text(cls, value: str) -> str:
        return check_has_text(value)


class MemoryOut(BaseModel):
    """A long-term memory."""

    id: UUID
    user_id: str
    session_id: str | None
    kind: MemoryKind
    role: Role | None
    content: str
    turn_id: str | None
    occurred_at: datetime
    created_at: datetime
    metadata: dict[str, Any]
    embedding_model: str
    valid_from: datetime | None = Field(None, description="When a fact started to hold.")
    valid_to: datetime | None = Field(
        None, description="When a fact stopped holding; set when it was superseded."
    )
    supersedes: UUID | None = Field(None, description="The memory this one replaced.")
    superseded_by: UUID | None = Field(None, description="The memory that replaced this one.")
    pinned: bool = Field(False, description="Pinned memories are always in context.")
    source_turn_ids: list[str] = Field(
        default_factory=list, description="Turns a fact or summary was drawn from."
    )
    updated_at: datetime | None = Field(None, description="Last edit, if any.")


class MemoryCreate(StrictModel):
    """A fact to remember, written by the user or an agent instead of extracted."""

    user_id: ScopeId
    content: NonBlankText = Field(min_length=1, max_length=2000)
    kind: FactKind = "fact"
    session_id: ScopeId | None = Field(None, description="Session the fact belongs to, if any.")
    valid_from: AwareDatetime | None = Field(
        None, description="When the fact started to hold; defaults to now."
    )
    pinned: bool = Field(False, description="Always include the fact in context.")
    metadata: JsonObject = Field(default_factory=dict)
    supersedes: UUID | None = Field(
        None, description="A current fact of the user that this one replaces."
    )


class MemoryUpdate(StrictModel):
    """Changes to one memory; fields left out stay as they are."""

    user_id: ScopeId
    content: NonBlankText | None = Field(
        None,
        min_length=1,
        max_length=2000,
        description="New text; facts and summaries only, because turns record what was said.",
    )
    pinned: bool | None = None
    metadata: JsonObject | None = None


class HistoryEntryOut(BaseModel):
    """One recorded change to a memory."""

    id: int
    memory_id: UUID
    event: Literal["create", "update", "supersede", "delete"]
    cause: str = Field(
        description="`promotion`, `extraction`, `summary`, `user` (the user's own token) or "
        "`api` (a service token)."
    )
    actor: str | None = Field(description="Token subject, or the model of an extraction run.")
    run_id: str | None = Field(description="Extraction or summary run that made the change.")
    old_content: str | None
    new_content: str | None
    changes: dict[str, Any] = Field(description="Other fields that changed, old and new.")
    occurred_at: datetime


class MemoryHistoryOut(BaseModel):
    memory_id: UUID
    user_id: str
    entries: list[HistoryEntryOut]


class MemoryList(BaseModel):
    user_id: str
    memories: list[MemoryOut]
    next_cursor: str | None


class ScoreExplanation(BaseModel):
    """The parts of a hit's score, so a client can see why it ranks where it does."""

    mode: SearchMode
    similarity: float | None = Field(description="Cosine similarity to the query, if found by it.")
    vector_rank: int | None = Field(description="Position among the vector candidates.")
    text_score: float | None = Field(
        description="Sum of the inverse document frequencies of the query words it contains."
    )
    text_rank: int | None = Field(description="Position among the text candidates.")
    relevance: float = Field(
        description="Similarity, text score, or the fused reciprocal-rank score (hybrid)."
    )
    age_days: float = Field(description="Days between the memory and the search.")
    recency_factor: float = Field(description="Multiplier from recency; 1 when recency is off.")
    score: float = Field(description="relevance times recency_factor.")
    rank: int = Field(description="Final position, from 1.")
    diversity_penalty: float | None = Field(
        description="Highest similarity to a hit ranked above it, when diversity is on."
    )
    diversity_score: float | None = Field(
        description="The value hits are ordered by when diversity is on: (1 - diversity) x "
        "score / top score - diversity x diversity_penalty."
    )


class SearchHit(BaseModel):
    """A memory found by a search, with its score and how the score was made."""

    id: UUID
    content: str
    role: Role | None
    kind: MemoryKind
    session_id: str | None
    turn_id: str | None
    occurred_at: datetime
    metadata: dict[str, Any]
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    pinned: bool = False
    score: float = Field(
        description="Final score: similarity (semantic), text score (keyword) or fused "
        "reciprocal-rank score (hybrid), times the recency factor."
    )
    explanation: ScoreExplanation | None = None


class SearchTimings(BaseModel):
    """Time spent in each step of one search, in milliseconds."""

    embedding_ms: float = Field(description="Embedding the query (0 in keyword mode).")
    database_ms: float = Field(description="The candidate query in Postgres.")
    ranking_ms: float = Field(description="Fusion, recency and diversity in the service.")


class SearchResponse(BaseModel):
    hits: list[SearchHit]
    mode: SearchMode
    timings: SearchTimings


class ContextRequest(StrictModel):
    """A request for prompt-ready context."""

    user_id: ScopeId
    session_id: ScopeId | None = Field(None, description="Session whose recent window to include.")
    query: str | None = Field(
        None,
        max_length=4096,
        description="What to find memories for; defaults to the last user turn of the window.",
    )
    token_budget: int | None = Field(None, ge=1, description="Most tokens the messages may use.")

    @field_validator("query")
    @classmethod
    def _query_is_clean(cls, value: str | None) -> str | None:
        return None if value is None else check_text(value)


class ChatMessage(BaseModel):
    role: Role
    content: str


class ContextResponse(BaseModel):
    messages: list[ChatMessage]
    memories: list[SearchHit] = Field(description="Long-term memories in the system message.")
    token_count: int = Field(description="Tokens of all messages, counted as the model would.")
    token_budget: int
    summary_id: UUID | None = Field(
        None,
        description="The session summary that stands in for the older turns of the window, "
        "when one was used.",
    )


class ChatRequest(StrictModel):
    """A message to Engram's own chat, which keeps the conversation itself."""

    user_id: ScopeId
    session_id: ScopeId
    message: NonBlankText = Field(
        min_length=1, description="The user's message; not empty or blank."
    )
    turn_id: TurnId | None = Field(
        None, description="Client id of the user's turn, so that a retry is stored once."
    )
    metadata: JsonObject = Field(
        default_factory=dict, description="Free-form JSON stored with the user's turn."
    )
    token_budget: int | None = Field(
        None,
        ge=256,
        description="Most tokens of the prompt sent to the model; defaults to CHAT_CONTEXT_TOKENS.",
    )


class CompletionMessage(BaseModel):
    """A message in the OpenAI chat format; fields other than role and content pass through."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _content_is_clean(cls, value: Any) -> Any:
        return check_json_value(value)


class CompletionRequest(BaseModel):
    """An OpenAI chat completion request; options Engram does not read are passed on."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(
        min_length=1, max_length=256, description="A model of GET /v1/models, or `engram`."
    )
    messages: list[CompletionMessage] = Field(min_length=1)
    stream: bool = False
    user: ScopeId | None = Field(
        None, description="The Engram user; the X-Engram-User-Id header takes precedence."
    )


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "engram"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class Problem(BaseModel):
    """An RFC 9457 problem response."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


class AuditEntryOut(BaseModel):
    """One audited action: who, what, on which ids, when and from where."""

    id: int
    occurred_at: datetime
    tenant_id: str
    subject: str
    token_id: str | None
    action: str
    user_id: str | None
    object_ids: list[str]
    client_address: str | None
    request_id: str | None


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for older entries.")


class ExportedSession(BaseModel):
    session_id: str
    last_activity_at: datetime
    turns: list[TurnOut]


class UserExport(BaseModel):
    """Everything Engram stores about one user."""

    tenant_id: str
    user_id: str
    exported_at: datetime
    sessions: list[ExportedSession] = Field(description="Session windows still in Redis.")
    memories: list[MemoryOut] = Field(description="Every long-term memory, oldest first.")
    history: list[HistoryEntryOut] = Field(
        default_factory=list,
        description="Every recorded change of the user's memories, oldest first, including "
        "the text of memories deleted without purge_history.",
    )
    audit: list[AuditEntryOut] = Field(description="Audit entries about the user, newest first.")


class ErasureResult(BaseModel):
    user_id: str
    memories_deleted: int
    redis_keys_deleted: int
    stream_events_deleted: int
