"""A local OpenAI-compatible HTTP server for tests, on 127.0.0.1.

It serves ``POST /v1/embeddings`` the way the hosted API does (request and
response shapes, error bodies, status codes), with deterministic vectors so
tests can check ordering and batching. Tests steer it through attributes:
``fail_with`` makes the next requests return that status code.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def fake_vector(text: str, dimension: int) -> list[float]:
    """A deterministic, not normalised vector derived from the text."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [float(digest[i % len(digest)]) - 127.5 for i in range(dimension)]


class OpenAICompatibleServer:
    def __init__(self, dimension: int = 8) -> None:
        self.dimension = dimension
        self.fail_with: int | None = None
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
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

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Keep test output quiet."""

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                owner.requests.append(body)
                if self.path != "/v1/embeddings":
                    self._send(404, _error("Unknown request URL", "invalid_request_error"))
                    return
                if owner.fail_with is not None:
                    self._send(owner.fail_with, _error("The server had an error", "server_error"))
                    return
                inputs = body.get("input")
                if isinstance(inputs, str):
                    inputs = [inputs]
                if not inputs:
                    self._send(400, _error("'input' must not be empty", "invalid_request_error"))
                    return
                dimension = int(body.get("dimensions") or owner.dimension)
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

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
