"""Memory tools for LLM agents: their definitions, and calls as a model made them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK
from pydantic import BaseModel, Field

from app.api.deps import PROBLEM_RESPONSES, Audit, Caller, Service
from app.auth import READ, require
from app.errors import InvalidInputError
from app.schemas import SCOPE_ID_PATTERN, StrictModel
from app.tools import get_tool, parse_arguments, run_tool, tool_definitions

UserHeader = Annotated[
    str | None,
    HeaderParameter(
        name="x-engram-user-id",
        pattern=SCOPE_ID_PATTERN,
        description="The user the agent acts for; a user token names its own.",
    ),
]

UserQuery = Annotated[
    str | None,
    QueryParameter(pattern=SCOPE_ID_PATTERN, description="The user, when no header names one."),
]


class ToolList(BaseModel):
    tools: list[dict[str, Any]]


class ToolCall(StrictModel):
    """A tool call as the model produced it."""

    arguments: str | dict[str, Any] | None = Field(
        None, description="The arguments, as the JSON string a model produces or as an object."
    )
    tool_call_id: str | None = Field(
        None, max_length=256, description="The model's id of this call, echoed back."
    )


class ToolResultOut(BaseModel):
    tool: str
    tool_call_id: str | None
    content: str = Field(description="The result as text for the model, within the size limit.")
    truncated: bool = Field(description="Whether lines were left out of `content` to fit.")
    data: Any = Field(description="The full structured result.")


class ToolController(Controller):
    path = "/v1/tools"
    tags = ("tools",)

    @get("/", responses=PROBLEM_RESPONSES, guards=[require(READ)])
    async def list_tools(
        self,
        tool_format: Annotated[
            Literal["openai", "anthropic"],
            QueryParameter(name="format", description="`openai` function tools or `anthropic`."),
        ] = "openai",
    ) -> ToolList:
        """List the memory tools with JSON Schemas, ready to pass to a model."""
        return ToolList(tools=tool_definitions(tool_format))

    @post(
        "/{name:str}/call",
        status_code=HTTP_200_OK,
        responses=PROBLEM_RESPONSES,
    )
    async def call_tool(
        self,
        service: Service,
        caller: Caller,
        audit: Audit,
        state: State,
        name: Annotated[str, PathParameter(description="A tool name from GET /v1/tools.")],
        data: JSONBody[ToolCall],
        user_header: UserHeader = None,
        user_id: UserQuery = None,
    ) -> ToolResultOut:
        """Run a tool call for the user; invalid arguments get a 422 a model can act on.

        The user comes from `X-Engram-User-Id`, the `user_id` query
        parameter or a user token's subject, never from the model's
        arguments. Each tool needs the scope of the API route it stands for.
        """
        tool = get_tool(name)
        if not caller.allows(tool.scope):
            raise PermissionDeniedException(detail=f"the tool {name} needs the scope {tool.scope}")
        user = user_header or user_id or (caller.subject if caller.kind == "user" else None)
        if user is None:
            raise InvalidInputError(
                "x-engram-user-id",
                "name the user the agent acts for in the X-Engram-User-Id header "
                "or the user_id query parameter",
            )
        caller.user_for(user)
        arguments = parse_arguments(tool, data.arguments)
        settings = state.runtime.settings
        result = await run_tool(
            service,
            state.runtime.counter,
            tool,
            caller.tenant_id,
            user,
            arguments,
            settings.tools.result_max_tokens,
        )
        await audit(f"tool.{name}", user)
        return ToolResultOut(
            tool=name,
            tool_call_id=data.tool_call_id,
            content=result.content,
            truncated=result.truncated,
            data=result.data,
        )
