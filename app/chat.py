"""Chat with memory: store the user's turn, add context, call the model, store the reply.

Two front doors share this module. ``/v1/chat`` is Engram's own chat: the
service owns the conversation and builds the whole prompt from the session
window and long-term memory. ``/v1/chat/completions`` speaks the OpenAI API:
the client owns the conversation and sends it whole, and Engram adds one
system message of memories and stores both sides of the exchange.

The user's turn is stored before the model is called, so it is kept
whatever the model does. The reply is stored only once it is complete.
Without a configured model, replies are built offline and show the context
that would have been sent; those replies are not stored as memories.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app import schemas
from app.errors import InvalidInputError
from app.llm import LLMError
from app.logging import get_logger
from retrieval.tokens import REPLY_PRIMER_TOKENS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from openai.types.chat import ChatCompletionChunk

    from app.llm import LLMGateway
    from app.runtime import Runtime
    from app.service import MemoryService

log = get_logger("chat")

OFFLINE_MODEL = "engram-offline"


@dataclass(slots=True)
class ChatEvent:
    """One Server-Sent Event of ``/v1/chat``."""

    event: str
    data: dict[str, Any]


@dataclass(slots=True)
class Exchange:
    """The prepared state of one chat request: stored turn, prompt, memories and model stream."""

    tenant_id: str
    user_id: str
    session_id: str
    user_turn_id: str | None
    messages: list[dict[str, Any]]
    memories: list[schemas.SearchHit]
    token_count: int
    model: str
    offline: bool
    chunks: AsyncIterator[ChatCompletionChunk] | None = None
    reply: list[str] = field(default_factory=list)

    @property
    def memory_ids(self) -> list[str]:
        return [str(hit.id) for hit in self.memories]


class ChatService:
    """Runs chat exchanges for the chat endpoints."""

    def __init__(self, runtime: Runtime, memory: MemoryService, gateway: LLMGateway) -> None:
        self._runtime = runtime
        self._memory = memory
        self._gateway = gateway
        self._settings = runtime.settings.chat

    @property
    def models(self) -> list[str]:
        return self._gateway.models

    @property
    def default_session(self) -> str:
        return self._settings.default_session

    # /v1/chat

    async def start(self, tenant_id: str, request: schemas.ChatRequest) -> Exchange:
        """Store the user's turn, assemble context and open the model stream."""
        budget = self._chat_budget(request.token_budget)
        system = self._runtime.prompts["chat_system"].render(
            now=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        )
        counter = self._runtime.counter
        room = budget - counter.message_tokens(system)
        self._check_message_fits(request.message, room)

        user_turn_id = await self._store(
            tenant_id,
            request.user_id,
            request.session_id,
            schemas.TurnIn(
                role="user",
                content=request.message,
                turn_id=request.turn_id,
                metadata=request.metadata,
            ),
        )
        context = await self._memory.context(
            tenant_id,
            schemas.ContextRequest(
                user_id=request.user_id,
                session_id=request.session_id,
                query=request.message,
                token_budget=room,
            ),
        )
        messages = [{"role": "system", "content": system}]
        messages.extend({"role": m.role, "content": m.content} for m in context.messages)
        exchange = Exchange(
            tenant_id=tenant_id,
            user_id=request.user_id,
            session_id=request.session_id,
            user_turn_id=user_turn_id,
            messages=messages,
            memories=context.memories,
            token_count=context.token_count + counter.message_tokens(system),
            model=self._gateway.default_model or OFFLINE_MODEL,
            offline=not self._gateway.configured,
        )
        await self._open_stream(exchange, self._gateway.reply_options())
        log.info(
            "chat.started",
            tenant_id=tenant_id,
            user_id=request.user_id,
            session_id=request.session_id,
            turn_id=user_turn_id,
            memories=len(exchange.memories),
            prompt_tokens=exchange.token_count,
            offline=exchange.offline,
        )
        return exchange

    async def events(self, exchange: Exchange) -> AsyncIterator[ChatEvent]:
        """Yield the context, the reply in pieces, and a closing event."""
        yield ChatEvent(
            "context",
            {
                "user_turn_id": exchange.user_turn_id,
                "model": exchange.model,
                "offline": exchange.offline,
                "token_count": exchange.token_count,
                "memories": [hit.model_dump(mode="json") for hit in exchange.memories],
            },
        )
        finish_reason: str | None = "stop"
        try:
            if exchange.chunks is None:
                text = self.offline_text(exchange.messages, exchange.token_count)
                exchange.reply.append(text)
                yield ChatEvent("delta", {"text": text})
            else:
                async for chunk in exchange.chunks:
                    for choice in chunk.choices[:1]:
                        finish_reason = choice.finish_reason or finish_reason
                        if choice.delta.content:
                            exchange.reply.append(choice.delta.content)
                            yield ChatEvent("delta", {"text": choice.delta.content})
        except LLMError as error:
            yield ChatEvent("error", _error_data(error, exchange.user_turn_id))
            return
        assistant_turn_id = await self._store_reply(exchange)
        yield ChatEvent(
            "done",
            {
                "user_turn_id": exchange.user_turn_id,
                "assistant_turn_id": assistant_turn_id,
                "memory_ids": exchange.memory_ids,
                "model": exchange.model,
                "offline": exchange.offline,
                "finish_reason": finish_reason,
            },
        )

    # /v1/chat/completions

    async def start_completion(
        self, tenant_id: str, user_id: str, session_id: str, request: schemas.CompletionRequest
    ) -> Exchange:
        """Store the last user message, add memories, and call the model as the client asked."""
        model = self._gateway.resolve_model(request.model)
        messages = [message.model_dump(exclude_unset=True) for message in request.messages]
        last = request.messages[-1]
        query = _text_of(last.content) if last.role == "user" else None
        if last.role == "user" and not (query and query.strip()):
            raise InvalidInputError(
                f"messages.{len(request.messages) - 1}.content",
                "the last user message has no text; send the user's words as content",
            )

        user_turn_id = None
        if query is not None:
            user_turn_id = await self._store(
                tenant_id, user_id, session_id, schemas.TurnIn(role="user", content=query)
            )
        else:
            query = next(
                (_text_of(m.content) for m in reversed(request.messages) if m.role == "user"), None
            )

        memories: list[schemas.SearchHit] = []
        if query and query.strip() and self._settings.memory_tokens > 0:
            context = await self._memory.context(
                tenant_id,
                schemas.ContextRequest(
                    user_id=user_id, query=query, token_budget=self._settings.memory_tokens
                ),
            )
            memories = context.memories
            if context.messages:
                insert_at = _after_leading_instructions(messages)
                memory_message = {"role": "system", "content": context.messages[0].content}
                messages.insert(insert_at, memory_message)

        exchange = Exchange(
            tenant_id=tenant_id,
            user_id=user_id,
            session_id=session_id,
            user_turn_id=user_turn_id,
            messages=messages,
            memories=memories,
            token_count=sum(
                self._runtime.counter.message_tokens(_text_of(m.get("content"))) for m in messages
            )
            + REPLY_PRIMER_TOKENS,
            model=model if self._gateway.configured else OFFLINE_MODEL,
            offline=not self._gateway.configured,
        )
        options = dict(request.model_extra or {})
        if request.stream:
            await self._open_stream(exchange, options)
        log.info(
            "chat.completion_started",
            tenant_id=tenant_id,
            user_id=user_id,
            session_id=session_id,
            turn_id=user_turn_id,
            memories=len(memories),
            stream=request.stream,
            offline=exchange.offline,
        )
        return exchange

    async def complete(
        self, exchange: Exchange, request: schemas.CompletionRequest
    ) -> dict[str, Any]:
        """Return a whole completion in the OpenAI format, with the memories used."""
        if exchange.offline:
            body = _offline_completion(
                self.offline_text(exchange.messages, exchange.token_count), exchange.token_count
            )
        else:
            try:
                completion = await self._gateway.complete(
                    exchange.messages, exchange.model, dict(request.model_extra or {})
                )
            except LLMError as error:
                error.turn_id = exchange.user_turn_id
                raise
            body = completion.model_dump(mode="json", exclude_unset=True)
            for choice in completion.choices[:1]:
                exchange.reply.append(choice.message.content or "")
        assistant_turn_id = await self._store_reply(exchange)
        body["engram"] = {
            "user_turn_id": exchange.user_turn_id,
            "assistant_turn_id": assistant_turn_id,
            "memory_ids": exchange.memory_ids,
        }
        return body

    async def completion_chunks(self, exchange: Exchange) -> AsyncIterator[dict[str, Any]]:
        """Yield the completion's chunks in the OpenAI format; a failure becomes an error chunk."""
        if exchange.chunks is None:
            text = self.offline_text(exchange.messages, exchange.token_count)
            exchange.reply.append(text)
            for offline_chunk in _offline_chunks(text):
                yield offline_chunk
        else:
            try:
                async for chunk in exchange.chunks:
                    for choice in chunk.choices[:1]:
                        if choice.delta.content:
                            exchange.reply.append(choice.delta.content)
                    yield chunk.model_dump(mode="json", exclude_unset=True)
            except LLMError as error:
                yield {"error": {"message": error.detail, "type": error.slug, "code": error.status}}
                return
        await self._store_reply(exchange)

    # Shared steps

    def offline_text(self, messages: Sequence[dict[str, Any]], token_count: int) -> str:
        """Render the offline reply: the messages that would have been sent, in Markdown."""
        prompts = self._runtime.prompts
        rendered = [
            prompts["offline_message"].render(
                role=str(message.get("role", "")), content=_text_of(message.get("content"))
            )
            for message in messages
        ]
        return prompts["offline_reply"].render(
            count=str(len(messages)), tokens=str(token_count), messages="\n\n".join(rendered)
        )

    async def _open_stream(self, exchange: Exchange, options: dict[str, Any]) -> None:
        if not self._gateway.configured:
            return
        try:
            exchange.chunks = await self._gateway.stream(exchange.messages, exchange.model, options)
        except LLMError as error:
            error.turn_id = exchange.user_turn_id
            raise

    async def _store(
        self, tenant_id: str, user_id: str, session_id: str, *turns: schemas.TurnIn
    ) -> str:
        """Append turns to the session window; return the first one's id."""
        result = await self._memory.append_turns(
            tenant_id, session_id, schemas.AppendTurnsRequest(user_id=user_id, turns=list(turns))
        )
        return result.turns[0].turn_id

    async def _store_reply(self, exchange: Exchange) -> str | None:
        """Store a complete model reply as the assistant's turn; offline replies are not kept."""
        text = "".join(exchange.reply)
        if exchange.offline or not text.strip():
            return None
        started = time.perf_counter()
        metadata: dict[str, Any] = {
            "model": exchange.model,
            "memories": [
                {
                    "id": str(hit.id),
                    "score": round(hit.score, 4),
                    "kind": hit.kind,
                    "pinned": hit.pinned,
                }
                for hit in exchange.memories
            ],
        }
        parts = _split_bytes(text, self._runtime.settings.memory.max_content_bytes)
        turns = [
            schemas.TurnIn(
                role="assistant",
                content=part,
                metadata=metadata if len(parts) == 1 else {**metadata, "part": index + 1},
            )
            for index, part in enumerate(parts)
        ]
        turn_id = await self._store(
            exchange.tenant_id, exchange.user_id, exchange.session_id, *turns
        )
        log.info(
            "chat.reply_stored",
            tenant_id=exchange.tenant_id,
            user_id=exchange.user_id,
            session_id=exchange.session_id,
            turn_id=turn_id,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return turn_id

    def _chat_budget(self, requested: int | None) -> int:
        budget = requested or self._settings.context_tokens
        most = self._runtime.settings.memory.context_max_tokens
        if budget > most:
            raise InvalidInputError(
                "token_budget",
                f"token_budget is {budget}; the maximum is {most} (MEMORY_CONTEXT_MAX_TOKENS)",
            )
        return budget

    def _check_message_fits(self, message: str, room: int) -> None:
        share = self._runtime.settings.memory.context_window_share
        allowed = int((room - REPLY_PRIMER_TOKENS) * share)
        cost = self._runtime.counter.message_tokens(message)
        if cost > allowed:
            raise InvalidInputError(
                "message",
                f"message is {cost} tokens; this chat's budget leaves room for {allowed}, so "
                "send a shorter message or a larger token_budget (default CHAT_CONTEXT_TOKENS)",
            )


def _error_data(error: LLMError, user_turn_id: str | None) -> dict[str, Any]:
    from app.api.problems import PROBLEM_BASE  # noqa: PLC0415  (the API owns problem types)

    return {
        "type": PROBLEM_BASE + error.slug,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "user_turn_id": user_turn_id,
    }


def _text_of(content: object) -> str:
    """Return the text of a message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        ]
        return "\n".join(parts)
    return ""


def _after_leading_instructions(messages: Sequence[dict[str, Any]]) -> int:
    """Index after the client's own leading system and developer messages."""
    for index, message in enumerate(messages):
        if message.get("role") not in ("system", "developer"):
            return index
    return len(messages)


def _split_bytes(text: str, limit: int) -> list[str]:
    """Split text into parts of at most ``limit`` UTF-8 bytes, never inside a character."""
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for character in text:
        width = len(character.encode("utf-8"))
        if size + width > limit and current:
            parts.append("".join(current))
            current, size = [], 0
        current.append(character)
        size += width
    parts.append("".join(current))
    return [part for part in parts if part.strip()] or [text]


def _completion_id() -> str:
    return f"chatcmpl-engram-{uuid.uuid4().hex}"


def _offline_completion(text: str, prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": OFFLINE_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 0,
            "total_tokens": prompt_tokens,
        },
    }


def _offline_chunks(text: str) -> list[dict[str, Any]]:
    base = {
        "id": _completion_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": OFFLINE_MODEL,
    }
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": ""}, None),
        ({"content": text}, None),
        ({}, "stop"),
    ]
    return [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        for delta, finish in deltas
    ]
