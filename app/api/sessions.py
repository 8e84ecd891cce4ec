"""Sessions and their short-term turn windows."""

from __future__ import annotations

from litestar import Controller, delete, get, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from app import schemas
from app.api.deps import (
    PROBLEM_RESPONSES,
    CursorQuery,
    LimitQuery,
    Service,
    SessionIdPath,
    Tenant,
    UserIdPath,
    UserIdQuery,
)


class SessionController(Controller):
    path = "/v1"
    tags = ("sessions",)

    @post(
        "/sessions/{session_id:str}/turns",
        status_code=HTTP_202_ACCEPTED,
        responses=PROBLEM_RESPONSES,
    )
    async def append_turns(
        self,
        service: Service,
        tenant: Tenant,
        session_id: SessionIdPath,
        data: JSONBody[schemas.AppendTurnsRequest],
    ) -> schemas.AppendTurnsResponse:
        """Append turns to a session window and queue them for long-term memory.

        A turn id sent again is stored once and reported as a duplicate.
        """
        return await service.append_turns(tenant, session_id, data)

    @get("/sessions/{session_id:str}/turns", responses=PROBLEM_RESPONSES)
    async def list_turns(
        self,
        service: Service,
        tenant: Tenant,
        session_id: SessionIdPath,
        user_id: UserIdQuery,
        limit: LimitQuery = None,
        cursor: CursorQuery = None,
    ) -> schemas.TurnPage:
        """Return the session window, oldest turn first, one page at a time."""
        return await service.list_turns(tenant, user_id, session_id, limit, cursor)

    @delete("/sessions/{session_id:str}", responses=PROBLEM_RESPONSES)
    async def delete_session(
        self, service: Service, tenant: Tenant, session_id: SessionIdPath, user_id: UserIdQuery
    ) -> None:
        """Delete a session: its window, its long-term memories and its unpromoted turns."""
        await service.delete_session(tenant, user_id, session_id)

    @get("/users/{user_id:str}/sessions", responses=PROBLEM_RESPONSES)
    async def list_sessions(
        self,
        service: Service,
        tenant: Tenant,
        user_id: UserIdPath,
        limit: LimitQuery = None,
        cursor: CursorQuery = None,
    ) -> schemas.SessionList:
        """Return a user's sessions with turn counts and last activity, newest first."""
        return await service.list_sessions(tenant, user_id, limit, cursor)
