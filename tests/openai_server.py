"""A local OpenAI-compatible HTTP server for tests, on 127.0.0.1.

It serves ``POST /v1/embeddings`` and ``POST /v1/chat/completions`` the way
the hosted API does: request and response shapes, streamed chunks as
Server-Sent Events ending in ``[DONE]``, tool calls, error bodies and status
codes. Embeddings are deterministic vectors derived from the text. Chat
replies come from ``responder`` (a function of the request body, for
replies that depend on the prompt), else from ``replies`` (a queue of
scripted ``Reply`` objects), else echo the last user message.

Tests steer failures through attributes:

- ``fail_with``: the next ``fail_times`` requests (all, when ``None``) get
  this status code, with ``retry_after`` as the Retry-After header.
- ``delay_s``: wait this long before answering, to provoke timeouts.
- ``break_stream_after``: send this many chunks, then a line that is not JSON.
- ``error_in_stream_after``: send this many chunks, then an error event.

Every request body is kept in ``requests`` (embeddings) or
``chat_requests`` (chat), so tests can check the prompt the model received.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


def fake_vector(text: str, dimension: int) -> list[float]:
    """A deterministic, not normalised vector derived from the text."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [float(digest[i % len(digest)]) - 127.5 for i in range(dimension)]


@dataclass
class Reply:
    """A scripted chat reply: text, tool calls, or both."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


class OpenAICompatibleServer:
    def __init__(self, dimension: int = 8) -> None:
        self.dimension = dimension
        self.fail_with: int | None = None
        self.fail_times: int | None = None
        self.retry_after: str | None = None
        self.delay_s = 0.0
        self.break_stream_after: int | None = None
        self.error_in_stream_after: int | None = None
        self.replies: deque[Reply] = deque()
        self.responder: Callable[[dict[str, Any]], Reply] | None = None
        # Bumped by reset(), so a slow request of an earlier test cannot take a later
        # test's scripted failure or reply.
        self.generation = 0
        self.requests: list[dict[str, Any]] = []
        self.chat_requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.owner = self  # type: ignore[attr-defined]
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.generation += 1
            self.fail_with = self.fail_times = self.retry_after = None
            self.delay_s = 0.0
            self.break_stream_after = self.error_in_stream_after = None
            self.replies.clear()
            self.responder = None
            self.requests.clear()
            self.chat_requests.clear()

    def take_failure(self) -> int | None:
        with self._lock:
            if self.fail_with is None:
                return None
            if self.fail_times is not None:
                if self.fail_times <= 0:
                    return None
                self.fail_times -= 1
            return self.fail_with

    def next_reply(self, body: dict[str, Any]) -> Reply:
        responder = self.responder
        if responder is not None:
            return responder(body)
        with self._lock:
            if self.replies:
                return self.replies.popleft()
        return Reply(text=f"You said: {_last_user_text(body.get('messages', []))}")


class _Handler(BaseHTTPRequestHandler):
    """Handle one request for the ``OpenAICompatibleServer`` that owns the socket."""

    def handle(self) -> None:
        # A client that timed out closes the socket before a slow reply is written.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()

    @property
    def owner(self) -> OpenAICompatibleServer:
        owner: OpenAICompatibleServer = self.server.owner  # type: ignore[attr-defined]
        return owner

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Keep test output quiet."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/v1/embeddings":
            self.owner.requests.append(body)
            self._embeddings(body)
        elif self.path == "/v1/chat/completions":
            self.owner.chat_requests.append(body)
            self._chat(body)
        else:
            self._send(404, _error("Unknown request URL", "invalid_request_error"))

    def _fail_if_told(self) -> bool:
        status = self.owner.take_failure()
        if status is None:
            return False
        headers = {"retry-after": self.owner.retry_after} if self.owner.retry_after else {}
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        self._send(status, _error(f"Scripted failure {status}", kind), headers)
        return True

    def _embeddings(self, body: dict[str, Any]) -> None:
        if self._fail_if_told():
            return
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not inputs:
            self._send(400, _error("'input' must not be empty", "invalid_request_error"))
            return
        dimension = int(body.get("dimensions") or self.owner.dimension)
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": fake_vector(text, dimension),
            }
            for index, text in enumerate(inputs)
        ]
        # The real API may return items out of order; clients must sort by index.
        data.reverse()
        tokens = sum(len(text.split()) for text in inputs)
        self._send(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model", ""),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _chat(self, body: dict[str, Any]) -> None:
        generation = self.owner.generation
        if self.owner.delay_s:
            time.sleep(self.owner.delay_s)
            if self.owner.generation != generation:
                return
        if self._fail_if_told():
            return
        if not body.get("messages"):
            self._send(400, _error("'messages' must not be empty", "invalid_request_error"))
            return
        reply = self.owner.next_reply(body)
        if body.get("stream"):
            self._stream(body, reply)
        else:
            self._send(200, self._completion(body, reply))

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        completion_tokens = len(reply.text.split())
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _stream(self, body: dict[str, Any], reply: Reply) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        for index, chunk in enumerate(_chunks(body.get("model", ""), reply)):
            if self.owner.break_stream_after == index:
                self._event("{this is not json")
                return
            if self.owner.error_in_stream_after == index:
                self._event(json.dumps(_error("Scripted stream failure", "server_error")))
                return
            self._event(json.dumps(chunk))
            time.sleep(0.005)
        self._event("[DONE]")

    def _event(self, data: str) -> None:
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()

    def _send(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)


def _chunks(model: str, reply: Reply) -> list[dict[str, Any]]:
    """The chunks of a streamed reply: role, the text word by word, tool calls, finish."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    words = reply.text.split(" ") if reply.text else []
    deltas.extend(
        {"content": word if index == 0 else f" {word}"} for index, word in enumerate(words)
    )
    for index, call in enumerate(reply.tool_calls):
        deltas.append({"tool_calls": [{"index": index, **call}]})
    finish = "tool_calls" if reply.tool_calls else "stop"
    chunks = [
        {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        for delta in deltas
    ]
    chunks.append(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
        }
    )
    return chunks
