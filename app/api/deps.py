"""Dependencies that handlers receive through Litestar's injection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import structlog
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from app.audit import AuditLog
from app.auth import Principal, current_principal
from app.chat import ChatService
from app.privacy import UserDataService
from app.schemas import SCOPE_ID_PATTERN, Problem
from app.service import MemoryService

if TYPE_CHECKING:
    from litestar import Request

UserIdQuery = Annotated[
    str,
    QueryParameter(
        pattern=SCOPE_ID_PATTERN,
        description="The user whose data to read: 1-128 letters, digits or `. _ @ + = -`.",
    ),
]
SessionIdPath = Annotated[
    str,
    PathParameter(
        pattern=SCOPE_ID_PATTERN, description="Session id, in the same format as user ids."
    ),
]
UserIdPath = Annotated[
    str,
    PathParameter(pattern=SCOPE_ID_PATTERN, description="User id, as in `user_id` elsewhere."),
]
LimitQuery = Annotated[int | None, QueryParameter(ge=1, description="Items per page.")]
CursorQuery = Annotated[
    str | None,
    QueryParameter(max_length=256, description="The `next_cursor` of the previous page."),
]


Service = NamedDependency[MemoryService]
"""The memory service, injected by name as ``service``."""
Caller = NamedDependency[Principal]
"""The authenticated caller, injected by name as ``caller``."""


def provide_users(state: State) -> UserDataService:
    users: UserDataService = state.users
    return users


Chat = NamedDependency[ChatService]
"""The chat service, injected by name as ``chat``."""


def provide_chat(state: State) -> ChatService:
    chat: ChatService = state.chat
    return chat


def provide_service(state: State) -> MemoryService:
    service: MemoryService = state.service
    return service


def provide_caller(request: Request[Any, Any, Any]) -> Principal:
    return current_principal(request)


@dataclass(frozen=True, slots=True)
class RequestAudit:
    """Records the actions of one request in the audit log."""

    log: AuditLog
    caller: Principal
    client_address: str | None
    request_id: str | None

    async def __call__(self, action: str, user_id: str | None, *object_ids: str) -> None:
        await self.log.record(
            self.caller,
            action,
            user_id=user_id,
            object_ids=list(object_ids),
            client_address=self.client_address,
            request_id=self.request_id,
        )


Users = NamedDependency[UserDataService]
"""Export and erasure of users, injected by name as ``users``."""
Audit = NamedDependency[RequestAudit]
"""The request's audit recorder, injected by name as ``audit``."""


def provide_audit(request: Request[Any, Any, Any], state: State) -> RequestAudit:
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    return RequestAudit(
        log=state.runtime.audit,
        caller=current_principal(request),
        client_address=request.client.host if request.client else None,
        request_id=request_id,
    )


def _problem_spec(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem, description=description, media_type="application/problem+json"
    )


PROBLEM_RESPONSES = {
    400: _problem_spec("The body is not valid JSON."),
    401: _problem_spec("The bearer token is missing, invalid or expired."),
    403: _problem_spec("The token lacks the scope, or acts for another user."),
    404: _problem_spec("The object does not exist for this user."),
    413: _problem_spec("A field, the batch or the body is over its size limit."),
    422: _problem_spec("A field is invalid; `errors` names each one."),
    429: _problem_spec("Over the rate limit; retry after `Retry-After` seconds."),
    503: _problem_spec("Redis or Postgres is unavailable; retry after `Retry-After` seconds."),
}
"""Problem responses every v1 route can return, for the OpenAPI schema."""

FACT_RESPONSES = {
    **PROBLEM_RESPONSES,
    409: _problem_spec("The text repeats another current fact of the user."),
}
"""Problem responses of the routes that write a fact's text."""

CHAT_RESPONSES = {
    **PROBLEM_RESPONSES,
    429: _problem_spec("Over Engram's rate limit, or the model server is over its own."),
    502: _problem_spec("The model server failed, refused the call, or sent a malformed reply."),
    504: _problem_spec("The model did not answer within LLM_TIMEOUT_S."),
}
"""Problem responses of the chat routes, which also call a model."""
