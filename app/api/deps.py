"""Dependencies that handlers receive through Litestar's injection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from litestar.params import Parameter

from app.schemas import SCOPE_ID_PATTERN
from app.service import MemoryService

if TYPE_CHECKING:
    from litestar.datastructures import State

UserIdQuery = Annotated[
    str,
    Parameter(
        query="user_id",
        pattern=SCOPE_ID_PATTERN,
        description="The user whose data to read: 1-128 letters, digits or `. _ @ + = -`.",
    ),
]
SessionIdPath = Annotated[
    str,
    Parameter(pattern=SCOPE_ID_PATTERN, description="Session id, in the same format as user ids."),
]
LimitQuery = Annotated[int | None, Parameter(ge=1, description="Items per page.")]
CursorQuery = Annotated[
    str | None, Parameter(max_length=256, description="The `next_cursor` of the previous page.")
]


def provide_service(state: State) -> MemoryService:
    service: MemoryService = state.service
    return service


def provide_tenant(state: State) -> str:
    """Return the caller's tenant; one configured tenant serves every request for now."""
    tenant: str = state.settings.server.default_tenant
    return tenant
