"""Chat endpoints: Engram's own streaming chat and the OpenAI-compatible completions API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Response, get, post
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import HeaderParameter, JSONBody
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from litestar.status_codes import HTTP_200_OK

from app import schemas
from app.api.deps import CHAT_RESPONSES, PROBLEM_RESPONSES, Audit, Caller, Chat
from app.auth import READ, WRITE, require
from app.chat import OFFLINE_MODEL
from app.errors import InvalidInputError
from app.schemas import SCOPE_ID_PATTERN

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from app.chat import ChatEvent

USER_HEADER = "x-engram-user-id"
SESSION_HEADER = "x-engram-session-id"
MEMORY_IDS_HEADER = "x-engram-memory-ids"

UserHeader = Annotated[
    str | None,
    HeaderParameter(
        name=USER_HEADER,
        pattern=SCOPE_ID_PATTERN,
        description="The Engram user; overrides the `user` field.",
    ),
]
SessionHeader = Annotated[
    str | None,
    HeaderParameter(
        name=SESSION_HEADER,
        pattern=SCOPE_ID_PATTERN,
        description="The session to store the exchange in; defaults to CHAT_DEFAULT_SESSION.",
    ),
]


async def _chat_events(events: AsyncIterator[ChatEvent]) -> AsyncIterator[ServerSentEventMessage]:
    async for item in events:
        data = json.dumps(item.data, ensure_ascii=False)
        yield ServerSentEventMessage(event=item.event, data=data)


async def _completion_events(
    chunks: AsyncIterator[dict[str, Any]],
) -> AsyncIterator[ServerSentEventMessage]:
    async for chunk in chunks:
        yield ServerSentEventMessage(data=json.dumps(chunk, ensure_ascii=False))
    yield ServerSentEventMessage(data="[DONE]")


# One Server-Sent Event as clients parse it; `data` is a JSON document in every event sent.
SSE_EVENT_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "event": Schema(type=OpenAPIType.STRING),
        "data": Schema(type=OpenAPIType.STRING),
        "id": Schema(type=OpenAPIType.STRING),
        "retry": Schema(type=OpenAPIType.INTEGER),
    },
    required=["data"],
)


def _ok_response(operation: Operation) -> OpenAPIResponse | None:
    ok = (operation.responses or {}).get("200")
    return ok if isinstance(ok, OpenAPIResponse) else None


@dataclass
class EventStreamOperation(Operation):
    """An operation whose 200 response is a stream of Server-Sent Events."""

    def __post_init__(self) -> None:
        ok = _ok_response(self)
        if ok is not None:
            ok.content = {"text/event-stream": OpenAPIMediaType(schema=SSE_EVENT_SCHEMA)}


@dataclass
class StreamOrJSONOperation(Operation):
    """An operation whose 200 response is JSON, or Server-Sent Events when `stream` is true."""

    def __post_init__(self) -> None:
        ok = _ok_response(self)
        if ok is not None:
            content = ok.content or {}
            content["text/event-stream"] = OpenAPIMediaType(schema=SSE_EVENT_SCHEMA)
            ok.content = content


class ChatController(Controller):
    path = "/v1"
    tags = ("chat",)

    @post(
        "/chat",
        status_code=HTTP_200_OK,
        operation_class=EventStreamOperation,
        responses=CHAT_RESPONSES,
        guards=[require(READ), require(WRITE)],
    )
    async def chat(
        self, chat: Chat, caller: Caller, audit: Audit, data: JSONBody[schemas.ChatRequest]
    ) -> ServerSentEvent:
        """Send a message and stream the reply as Server-Sent Events.

        The user's turn is stored first. Events, in order: `context` (the
        memories used, with scores), `delta` (a piece of the reply's text,
        repeated), then `done` (the ids of the stored turns and of the
        memories used) or `error` (a problem object; the user's turn stays
        stored). Errors before the first piece of text are problem responses.
        """
        caller.user_for(data.user_id)
        exchange = await chat.start(caller.tenant_id, data)
        await audit("chat.message", data.user_id, data.session_id, *exchange.memory_ids)
        return ServerSentEvent(_chat_events(chat.events(exchange)))

    @post(
        "/chat/completions",
        status_code=HTTP_200_OK,
        operation_class=StreamOrJSONOperation,
        responses=CHAT_RESPONSES,
        guards=[require(READ), require(WRITE)],
    )
    async def completions(
        self,
        chat: Chat,
        caller: Caller,
        audit: Audit,
        data: JSONBody[schemas.CompletionRequest],
        user_header: UserHeader = None,
        session_header: SessionHeader = None,
    ) -> Response[Any]:
        """Create a chat completion, OpenAI-compatible, with the user's memories added.

        Point an OpenAI client's base URL at `/v1` and use an Engram token as
        the API key. The user comes from `X-Engram-User-Id`, the `user`
        field, or a user token's subject. The last user message is stored,
        a system message of relevant memories is added after the client's
        own instructions, and the reply is stored once complete. The memory
        ids are in the `X-Engram-Memory-Ids` header and, without streaming,
        in the `engram` field of the body.
        """
        user = user_header or data.user or (caller.subject if caller.kind == "user" else None)
        if user is None:
            raise InvalidInputError(
                "user",
                "name the Engram user in the `user` field or the X-Engram-User-Id header",
            )
        caller.user_for(user)
        session = session_header or chat.default_session
        exchange = await chat.start_completion(caller.tenant_id, user, session, data)
        await audit("chat.completion", user, session, *exchange.memory_ids)
        headers = {MEMORY_IDS_HEADER: ",".join(exchange.memory_ids)}
        if data.stream:
            return ServerSentEvent(
                _completion_events(chat.completion_chunks(exchange)), headers=headers
            )
        body = await chat.complete(exchange, data)
        return Response(body, headers=headers)

    @get("/models", responses=PROBLEM_RESPONSES, guards=[require(READ)])
    async def models(self, chat: Chat) -> schemas.ModelList:
        """List the models that `/v1/chat/completions` accepts, in the OpenAI format."""
        names = chat.models or [OFFLINE_MODEL]
        return schemas.ModelList(data=[schemas.ModelOut(id=name) for name in names])
