"""Sessions and their short-term turn windows."""

from __future__ import annotations

from litestar import Controller, delete, get, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from app import schemas
from app.api.deps import (
    PROBLEM_RESPONSES,
    Audit,
    Caller,
    CursorQuery,
    LimitQuery,
    Service,
    SessionIdPath,
    UserIdPath,
    UserIdQuery,
)
from app.auth import DELETE, READ, WRITE, require


class SessionController(Controller):
    path = "/v1"
    tags = ("sessions",)

    @post(
        "/sessions/{session_id:str}/turns",
        status_code=HTTP_202_ACCEPTED,
        responses=PROBLEM_RESPONSES,
        guards=[require(WRITE)],
    )
    async def append_turns(
        self,
        service: Service,
        caller: Caller,
        audit: Audit,
        session_id: SessionIdPath,
        data: JSONBody[schemas.AppendTurnsRequest],
    ) -> schemas.AppendTurnsResponse:
        """Append turns to a session window and queue them for long-term memory.

        A turn id sent again is stored once and reported as a duplicate.
        """
        caller.user_for(data.user_id)
        result = await service.append_turns(caller.tenant_id, session_id, data)
        await audit("turns.append", data.user_id, session_id)
        return result

    @get("/sessions/{session_id:str}/turns", responses=PROBLEM_RESPONSES, guards=[require(READ)])
    async def list_turns(
        self,
        service: Service,
        caller: Caller,
        audit: Audit,
        session_id: SessionIdPath,
        user_id: UserIdQuery,
        limit: LimitQuery = None,
        cursor: CursorQuery = None,
    ) -> schemas.TurnPage:
        """Return the session window, oldest turn first, one page at a time."""
        user = caller.user_for(user_id)
        page = await service.list_turns(caller.tenant_id, user, session_id, limit, cursor)
        await audit("turns.read", user, session_id)
        return page

    @delete("/sessions/{session_id:str}", responses=PROBLEM_RESPONSES, guards=[require(DELETE)])
    async def delete_session(
        self,
        service: Service,
        caller: Caller,
        audit: Audit,
        session_id: SessionIdPath,
        user_id: UserIdQuery,
    ) -> None:
        """Delete a session: its window, its long-term memories and its unpromoted turns."""
        user = caller.user_for(user_id)
        await service.delete_session(caller.tenant_id, user, session_id)
        await audit("session.delete", user, session_id)

    @get("/users/{user_id:str}/sessions", responses=PROBLEM_RESPONSES, guards=[require(READ)])
    async def list_sessions(
        self,
        service: Service,
        caller: Caller,
        audit: Audit,
        user_id: UserIdPath,
        limit: LimitQuery = None,
        cursor: CursorQuery = None,
    ) -> schemas.SessionList:
        """Return a user's sessions with turn counts and last activity, newest first."""
        user = caller.user_for(user_id)
        sessions = await service.list_sessions(caller.tenant_id, user, limit, cursor)
        await audit("sessions.list", user)
        return sessions
