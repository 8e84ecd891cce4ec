"""A user's data as a whole: export and erasure; and the tenant's audit log."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from litestar import Controller, delete, get
from litestar.params import QueryParameter

from app import schemas
from app.api.deps import (
    PROBLEM_RESPONSES,
    Audit,
    Caller,
    CursorQuery,
    LimitQuery,
    UserIdPath,
    Users,
)
from app.audit import AuditQuery
from app.auth import ADMIN, DELETE, READ, require
from app.errors import InvalidInputError
from app.schemas import SCOPE_ID_PATTERN
from app.shortterm import decode_cursor, encode_cursor

AUDIT_PAGE_MAX = 1000


class UserController(Controller):
    path = "/v1"
    tags = ("users",)

    @get("/users/{user_id:str}/export", responses=PROBLEM_RESPONSES, guards=[require(READ)])
    async def export_user(
        self, caller: Caller, audit: Audit, user_id: UserIdPath, users: Users
    ) -> schemas.UserExport:
        """Return everything held about a user: session windows, memories, audit entries."""
        user = caller.user_for(user_id)
        document = await users.export(caller.tenant_id, user)
        await audit("user.export", user)
        return schemas.UserExport.model_validate(document)

    @delete(
        "/users/{user_id:str}",
        status_code=200,
        responses=PROBLEM_RESPONSES,
        guards=[require(DELETE)],
    )
    async def erase_user(
        self, caller: Caller, audit: Audit, user_id: UserIdPath, users: Users
    ) -> schemas.ErasureResult:
        """Erase a user everywhere: windows, pending events, memories. The erasure is audited."""
        user = caller.user_for(user_id)
        counts = await users.erase(caller.tenant_id, user)
        await audit("user.erase", user)
        return schemas.ErasureResult(
            user_id=user,
            memories_deleted=counts.memories,
            redis_keys_deleted=counts.redis_keys,
            stream_events_deleted=counts.stream_events,
        )

    @get("/audit", responses=PROBLEM_RESPONSES, guards=[require(ADMIN)], tags=["audit"])
    async def audit_log(
        self,
        caller: Caller,
        audit: Audit,
        users: Users,
        user_id: Annotated[
            str | None, QueryParameter(pattern=SCOPE_ID_PATTERN, description="Only this user.")
        ] = None,
        action: Annotated[
            str | None,
            QueryParameter(pattern=r"^[a-z][a-z._]{0,63}$", description="Only this action."),
        ] = None,
        subject: Annotated[
            str | None,
            QueryParameter(
                pattern=r"^[^\x00-\x1f\x7f]{1,256}$",
                description="Only this caller (a token's sub).",
            ),
        ] = None,
        after: Annotated[datetime | None, QueryParameter(description="Only later.")] = None,
        before: Annotated[datetime | None, QueryParameter(description="Only earlier.")] = None,
        limit: LimitQuery = None,
        cursor: CursorQuery = None,
    ) -> schemas.AuditPage:
        """Return the tenant's audit entries, newest first (admin scope)."""
        page_size = limit or 100
        if page_size > AUDIT_PAGE_MAX:
            raise InvalidInputError(
                "limit", f"limit is {page_size}; the maximum is {AUDIT_PAGE_MAX}"
            )
        try:
            before_id = decode_cursor(cursor) if cursor else None
        except ValueError as error:
            raise InvalidInputError(
                "cursor", "cursor is invalid; pass the next_cursor of the previous page unchanged"
            ) from error
        entries = await users.audit(
            AuditQuery(
                tenant_id=caller.tenant_id,
                user_id=user_id,
                action=action,
                subject=subject,
                after=after,
                before=before,
                limit=page_size + 1,
                before_id=before_id,
            )
        )
        has_more = len(entries) > page_size
        entries = entries[:page_size]
        next_cursor = encode_cursor(entries[-1].id) if has_more else None
        await audit("audit.read", user_id)
        return schemas.AuditPage(
            entries=[schemas.AuditEntryOut(**asdict(entry)) for entry in entries],
            next_cursor=next_cursor,
        )
