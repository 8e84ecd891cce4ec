"""Long-term memories: search, read, delete, and prompt-ready context."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK

from app import schemas
from app.api.deps import PROBLEM_RESPONSES, Audit, Caller, Service, UserIdQuery
from app.auth import DELETE, READ, require


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
    ) -> None:
        """Delete one memory of the user."""
        user = caller.user_for(user_id)
        await service.delete_memory(caller.tenant_id, user, memory_id)
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
