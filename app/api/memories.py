"""Long-term memories: search, list, read, write facts, edit, delete, history, and context."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from uuid import UUID

from litestar import Controller, Response, delete, get, patch, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from app import schemas
from app.api.deps import (
    FACT_RESPONSES,
    PROBLEM_RESPONSES,
    Audit,
    Caller,
    CursorQuery,
    LimitQuery,
    Service,
    UserIdQuery,
)
from app.auth import DELETE, READ, WRITE, require

if TYPE_CHECKING:
    from app.auth import Principal
    from app.history import Cause

KindQuery = Annotated[
    schemas.MemoryKind | None, QueryParameter(description="Only memories of this kind.")
]
SupersededQuery = Annotated[
    bool, QueryParameter(description="Also list facts and summaries that were superseded.")
]
PinnedQuery = Annotated[
    bool | None, QueryParameter(description="Only pinned (true) or unpinned (false) memories.")
]
PurgeHistoryQuery = Annotated[
    bool,
    QueryParameter(
        description="Also remove the memory's change history, so no copy of its text is kept."
    ),
]


def _cause(caller: Principal) -> Cause:
    """A change by an end user's own token is the user's; one by a service token is the API's."""
    return "user" if caller.kind == "user" else "api"


class MemoryController(Controller):
    path = "/v1"
    tags = ("memories",)

    @post(
        "/memories/search",
        status_code=HTTP_200_OK,
        responses=PROBLEM_RESPONSES,
        guards=[require(READ)],
    )
    async def search(
        self, service: Service, caller: Caller, audit: Audit, data: JSONBody[schemas.SearchRequest]
    ) -> schemas.SearchResponse:
        """Find a user's memories nearest in meaning to a query."""
        caller.user_for(data.user_id)
        result = await service.search(caller.tenant_id, data)
        await audit("memories.search", data.user_id, *(str(hit.id) for hit in result.hits))
        return result

    @get("/memories", responses=PROBLEM_RESPONSES, guards=[require(READ)])
    async def list_memories(
        self,
        service: Service,
        caller: Caller,
        audit: Audit,
        user_id: UserIdQuery,
        kind: KindQuery = None,
        include_superseded: SupersededQuery = False,
        pinned: PinnedQuery = None,
        limit: LimitQuery = None,
        cursor: CursorQuery = None,
    ) -> schemas.MemoryList:
        """List a user's long-term memories, newest first; current ones unless asked otherwise."""
        user = caller.user_for(user_id)
        page = await service.list_memories(
            caller.tenant_id,
            user,
            kind=kind,
            include_superseded=include_superseded,
            pinned=pinned,
            limit=limit,
            cursor=cursor,
        )
        await audit("memories.list", user, *(str(memory.id) for memory in page.memories))
        return page

    @post(
        "/memories",
        status_code=HTTP_201_CREATED,
        responses={
            **FACT_RESPONSES,
            200: ResponseSpec(
                data_container=schemas.MemoryOut,
                description="The user already has this fact; the stored one is returned.",
            ),
        },
        guards=[require(WRITE)],
    )
    async def create_memory(
        self, service: Service, caller: Caller, audit: Audit, data: JSONBody[schemas.MemoryCreate]
    ) -> Response[schemas.MemoryOut]:
        """Remember a fact, preference or event for a user.

        Returns 201 with the new memory, or 200 with the current one when the
        user already has the same fact. With `supersedes`, the named fact gets
        a `valid_to` and links to the new one.
        """
        caller.user_for(data.user_id)
        memory, created = await service.create_memory(
            caller.tenant_id, data, cause=_cause(caller), actor=caller.subject
        )
        await audit("memory.create", data.user_id, str(memory.id))
        return Response(memory, status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @patch("/memories/{memory_id:uuid}", responses=FACT_RESPONSES, guards=[require(WRITE)])
    async def update_memory(
        self,
        service: Service,
        caller: Caller,
        audit: Audit,
        memory_id: FromPath[UUID],
        data: JSONBody[schemas.MemoryUpdate],
    ) -> schemas.MemoryOut:
        """Edit a fact's text, or pin, unpin or re-tag any memory; the change is recorded."""
        caller.user_for(data.user_id)
        memory = await service.update_memory(
            caller.tenant_id, memory_id, data, cause=_cause(caller), actor=caller.subject
        )
        await audit("memory.update", data.user_id, str(memory_id))
        return memory

    @get("/memories/{memory_id:uuid}/history", responses=PROBLEM_RESPONSES, guards=[require(READ)])
    async def memory_history(
        self,
        service: Service,
        caller: Caller,
        audit: Audit,
        memory_id: FromPath[UUID],
        user_id: UserIdQuery,
    ) -> schemas.MemoryHistoryOut:
        """Return every recorded change of a memory, oldest first, also after its deletion."""
        user = caller.user_for(user_id)
        result = await service.memory_history(caller.tenant_id, user, memory_id)
        await audit("memory.history", user, str(memory_id))
        return result

    @get("/memories/{memory_id:uuid}", responses=PROBLEM_RESPONSES, guards=[require(READ)])
    async def get_memory(
        self,
        service: Service,
        caller: Caller,
        audit: Audit,
        memory_id: FromPath[UUID],
        user_id: UserIdQuery,
    ) -> schemas.MemoryOut:
        """Return one memory of the user."""
        user = caller.user_for(user_id)
        memory = await service.get_memory(caller.tenant_id, user, memory_id)
        await audit("memory.read", user, str(memory_id))
        return memory

    @delete("/memories/{memory_id:uuid}", responses=PROBLEM_RESPONSES, guards=[require(DELETE)])
    async def delete_memory(
        self,
        service: Service,
        caller: Caller,
        audit: Audit,
        memory_id: FromPath[UUID],
        user_id: UserIdQuery,
        purge_history: PurgeHistoryQuery = False,
    ) -> None:
        """Delete one memory of the user.

        The deletion is recorded in the memory's history with the deleted
        text, unless `purge_history` removes that history as well.
        """
        user = caller.user_for(user_id)
        await service.delete_memory(
            caller.tenant_id,
            user,
            memory_id,
            cause=_cause(caller),
            actor=caller.subject,
            purge_history=purge_history,
        )
        await audit("memory.delete", user, str(memory_id))

    @post(
        "/context",
        status_code=HTTP_200_OK,
        tags=["context"],
        responses=PROBLEM_RESPONSES,
        guards=[require(READ)],
    )
    async def context(
        self, service: Service, caller: Caller, audit: Audit, data: JSONBody[schemas.ContextRequest]
    ) -> schemas.ContextResponse:
        """Return messages for an LLM call: relevant memories, then the recent window."""
        caller.user_for(data.user_id)
        result = await service.context(caller.tenant_id, data)
        await audit("context.build", data.user_id, *(str(hit.id) for hit in result.memories))
        return result
