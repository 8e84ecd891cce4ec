"""Memory tools for LLM agents: definitions a model can call, and their execution.

Each tool has a name, a description written for a model, an argument model
whose JSON Schema is what the model sees, the scope it needs, and a runner
that calls ``MemoryService``. The HTTP tool API serves these definitions in
the OpenAI and Anthropic formats, and ``app.mcp_server`` serves them over
MCP. Results come back twice:
as ``content``, text sized for a model's context, and as ``data``, the full
structured response.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, ValidationError, field_validator

from app import schemas
from app.auth import DELETE, READ, WRITE
from app.errors import InvalidInputError, NotFoundError
from app.schemas import JsonObject, NonBlankText, ScopeId, SearchMode, StrictModel, check_has_text

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from app.service import MemoryService
    from retrieval.tokens import TiktokenCounter

ToolFormat = Literal["openai", "anthropic"]


class SearchMemoryArguments(StrictModel):
    query: str = Field(
        min_length=1, max_length=4096, description="What to look for, in natural language."
    )
    limit: int = Field(5, ge=1, le=20, description="How many memories to return.")
    mode: SearchMode | None = Field(
        None, description="`hybrid` (default), `semantic` (meaning) or `keyword` (exact words)."
    )
    session_id: ScopeId | None = Field(None, description="Only memories of this session.")
    after: AwareDatetime | None = Field(
        None, description="Only memories after this time (ISO 8601 with timezone)."
    )
    before: AwareDatetime | None = Field(
        None, description="Only memories before this time (ISO 8601 with timezone)."
    )

    @field_validator("query")
    @classmethod
    def _query_has_text(cls, value: str) -> str:
        return check_has_text(value)


class RememberArguments(StrictModel):
    content: NonBlankText = Field(
        min_length=1, description="The fact or message to remember, as one self-contained text."
    )
    session_id: ScopeId = Field(
        "agent-notes", description="Session to store it in; related notes can share one."
    )
    role: Literal["user", "assistant"] = Field(
        "user", description="`user` for what the user said or is, `assistant` for your own notes."
    )
    metadata: JsonObject = Field(default_factory=dict, description="Optional JSON labels.")


class GetContextArguments(StrictModel):
    query: str | None = Field(
        None, max_length=4096, description="Topic to find memories for; defaults to the session."
    )
    session_id: ScopeId | None = Field(None, description="Session whose recent turns to include.")
    token_budget: int | None = Field(
        None, ge=100, le=8000, description="Most tokens the context may use (default 1000)."
    )


class ForgetMemoryArguments(StrictModel):
    memory_id: UUID = Field(description="The `id` of a memory from search_memory.")


class ListSessionsArguments(StrictModel):
    limit: int = Field(10, ge=1, le=50, description="How many sessions, most recent first.")


@dataclass(frozen=True, slots=True)
class ToolResult:
    content: str
    data: Any
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    arguments: type[StrictModel]
    scope: str
    run: Callable[[MemoryService, str, str, Any], Awaitable[tuple[list[str], Any]]]

    def parameters(self) -> dict[str, Any]:
        """Return the JSON Schema of the arguments, without pydantic's titles."""
        schema: dict[str, Any] = _strip_titles(self.arguments.model_json_schema())
        return schema

    def definition(self, tool_format: ToolFormat) -> dict[str, Any]:
        if tool_format == "anthropic":
            return {
                "name": self.name,
                "description": self.description,
                "input_schema": self.parameters(),
            }
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters(),
            },
        }


def _strip_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: _strip_titles(value)
            for key, value in schema.items()
            if not (key == "title" and isinstance(value, str))
        }
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    return schema


def _date(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


async def _search_memory(
    service: MemoryService, tenant_id: str, user_id: str, arguments: SearchMemoryArguments
) -> tuple[list[str], Any]:
    request = schemas.SearchRequest(
        user_id=user_id,
        query=arguments.query,
        limit=arguments.limit,
        mode=arguments.mode,
        session_id=arguments.session_id,
        after=arguments.after,
        before=arguments.before,
    )
    response = await service.search(tenant_id, request)
    lines = [
        f"{index}. [{_date(hit.occurred_at)}] {hit.role or hit.kind}: {hit.content} "
        f"(id {hit.id}, session {hit.session_id}, score {hit.score:.3f})"
        for index, hit in enumerate(response.hits, start=1)
    ]
    if not lines:
        lines = ["No memory matches this query."]
    return lines, response.model_dump(mode="json")


async def _remember(
    service: MemoryService, tenant_id: str, user_id: str, arguments: RememberArguments
) -> tuple[list[str], Any]:
    request = schemas.AppendTurnsRequest(
        user_id=user_id,
        turns=[
            schemas.TurnIn(
                role=arguments.role, content=arguments.content, metadata=arguments.metadata
            )
        ],
    )
    response = await service.append_turns(tenant_id, arguments.session_id, request)
    turn_id = response.turns[0].turn_id
    line = (
        f"Stored as turn {turn_id} in session {arguments.session_id}. "
        "It can be found with search_memory within a few seconds."
    )
    return [line], response.model_dump(mode="json")


async def _get_context(
    service: MemoryService, tenant_id: str, user_id: str, arguments: GetContextArguments
) -> tuple[list[str], Any]:
    request = schemas.ContextRequest(
        user_id=user_id,
        session_id=arguments.session_id,
        query=arguments.query,
        token_budget=arguments.token_budget or 1000,
    )
    response = await service.context(tenant_id, request)
    lines = [f"[{message.role}] {message.content}" for message in response.messages]
    if not lines:
        lines = ["No memories or recent turns are relevant."]
    return lines, response.model_dump(mode="json")


async def _forget_memory(
    service: MemoryService, tenant_id: str, user_id: str, arguments: ForgetMemoryArguments
) -> tuple[list[str], Any]:
    await service.delete_memory(tenant_id, user_id, arguments.memory_id)
    return [f"Forgot memory {arguments.memory_id}."], {"deleted": str(arguments.memory_id)}


async def _list_sessions(
    service: MemoryService, tenant_id: str, user_id: str, arguments: ListSessionsArguments
) -> tuple[list[str], Any]:
    response = await service.list_sessions(tenant_id, user_id, arguments.limit, None)
    lines = []
    for session in response.sessions:
        turns = max(session.window_turns, session.stored_turns)
        active = _date(session.last_activity_at) if session.last_activity_at else "never"
        noun = "turn" if turns == 1 else "turns"
        lines.append(f"- {session.session_id}: {turns} {noun}, last active {active}")
    if not lines:
        lines = ["This user has no sessions yet."]
    return lines, response.model_dump(mode="json")


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            "search_memory",
            "Search the user's long-term memory of earlier conversations. Use it before "
            "answering questions about the user's life, preferences, plans or past "
            "conversations. Returns the best matching memories with their dates and ids.",
            SearchMemoryArguments,
            READ,
            _search_memory,
        ),
        Tool(
            "remember",
            "Store something worth remembering about the user for later conversations, "
            "such as a preference, a fact about their life, or a decision. Write it as one "
            "self-contained sentence.",
            RememberArguments,
            WRITE,
            _remember,
        ),
        Tool(
            "get_context",
            "Get prompt-ready context: the memories relevant to a topic plus the recent "
            "turns of a session, within a token budget.",
            GetContextArguments,
            READ,
            _get_context,
        ),
        Tool(
            "forget_memory",
            "Delete one memory for good, by the id that search_memory returned. Use it when "
            "the user asks you to forget something or a memory is wrong.",
            ForgetMemoryArguments,
            DELETE,
            _forget_memory,
        ),
        Tool(
            "list_sessions",
            "List the user's conversation sessions, most recent first, with turn counts.",
            ListSessionsArguments,
            READ,
            _list_sessions,
        ),
    )
}


def tool_definitions(tool_format: ToolFormat) -> list[dict[str, Any]]:
    return [tool.definition(tool_format) for tool in TOOLS.values()]


class UnknownToolError(NotFoundError):
    """Raised for a tool name that is not one of ``TOOLS``; the message lists the tools."""

    def __str__(self) -> str:
        return f"there is no tool {self.object_id!r}; the tools are {', '.join(TOOLS)}"


def get_tool(name: str) -> Tool:
    tool = TOOLS.get(name)
    if tool is None:
        raise UnknownToolError("tool", name)
    return tool


def parse_arguments(tool: Tool, raw: str | dict[str, Any] | None) -> StrictModel:
    """Validate arguments given as a JSON string or object; errors name each argument."""
    if raw is None or raw == "":
        raw = {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise InvalidInputError(
                "arguments",
                f"arguments for {tool.name} are not valid JSON ({error.msg} at character "
                f"{error.pos}); send a JSON object that matches the tool's parameters",
            ) from error
    if not isinstance(raw, dict):
        raise InvalidInputError(
            "arguments",
            f"arguments for {tool.name} must be a JSON object, not {type(raw).__name__}",
        )
    try:
        return tool.arguments.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'arguments'}: {item['msg']}"
            for item in error.errors()
        )
        first = error.errors()[0]
        field = ".".join(["arguments", *(str(part) for part in first["loc"])])
        raise InvalidInputError(
            field,
            f"invalid arguments for {tool.name}: {problems}. Call the tool again with "
            "arguments that match its parameters.",
        ) from error


async def run_tool(
    service: MemoryService,
    counter: TiktokenCounter,
    tool: Tool,
    tenant_id: str,
    user_id: str,
    arguments: StrictModel,
    max_tokens: int,
) -> ToolResult:
    """Run a tool and fit its text result into ``max_tokens``, dropping whole lines."""
    lines, data = await tool.run(service, tenant_id, user_id, arguments)
    kept: list[str] = []
    for index, line in enumerate(lines):
        trial = "\n".join([*kept, line])
        if kept and counter.count(trial) > max_tokens:
            left = len(lines) - index
            kept.append(f"({left} more left out to fit the result size.)")
            return ToolResult(content="\n".join(kept), data=data, truncated=True)
        kept.append(line)
    content = "\n".join(kept)
    if counter.count(content) > max_tokens:
        # A single line longer than the budget is cut by tokens.
        content = counter.truncate(content, max_tokens) + " (cut to fit the result size.)"
        return ToolResult(content=content, data=data, truncated=True)
    return ToolResult(content=content, data=data)
