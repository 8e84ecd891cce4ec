"""Dependencies that handlers receive through Litestar's injection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter

from app.schemas import SCOPE_ID_PATTERN
from app.service import MemoryService

if TYPE_CHECKING:
    from litestar.datastructures import State

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
Tenant = NamedDependency[str]
"""The caller's tenant id, injected by name as ``tenant``."""


def provide_service(state: State) -> MemoryService:
    service: MemoryService = state.service
    return service


def provide_tenant(state: State) -> str:
    """Return the caller's tenant; one configured tenant serves every request for now."""
    tenant: str = state.settings.server.default_tenant
    return tenant
