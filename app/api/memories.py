"""Long-term memories: search, read, delete, and prompt-ready context."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK

from app import schemas
from app.api.deps import PROBLEM_RESPONSES, Service, Tenant, UserIdQuery


class MemoryController(Controller):
    path = "/v1"
    tags = ("memories",)

    @post("/memories/search", status_code=HTTP_200_OK, responses=PROBLEM_RESPONSES)
    async def search(
        self, service: Service, tenant: Tenant, data: JSONBody[schemas.SearchRequest]
    ) -> schemas.SearchResponse:
        """Find a user's memories nearest in meaning to a query."""
        return await service.search(tenant, data)

    @get("/memories/{memory_id:uuid}", responses=PROBLEM_RESPONSES)
    async def get_memory(
        self, service: Service, tenant: Tenant, memory_id: FromPath[UUID], user_id: UserIdQuery
    ) -> schemas.MemoryOut:
        """Return one memory of the user."""
        return await service.get_memory(tenant, user_id, memory_id)

    @delete("/memories/{memory_id:uuid}", responses=PROBLEM_RESPONSES)
    async def delete_memory(
        self, service: Service, tenant: Tenant, memory_id: FromPath[UUID], user_id: UserIdQuery
    ) -> None:
        """Delete one memory of the user."""
        await service.delete_memory(tenant, user_id, memory_id)

    @post("/context", status_code=HTTP_200_OK, tags=["context"], responses=PROBLEM_RESPONSES)
    async def context(
        self, service: Service, tenant: Tenant, data: JSONBody[schemas.ContextRequest]
    ) -> schemas.ContextResponse:
        """Return messages for an LLM call: relevant memories, then the recent window."""
        return await service.context(tenant, data)
