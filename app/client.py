"""A small synchronous HTTP client for the CLI, with retries on overload and outages."""

from __future__ import annotations

import time
from typing import Any, Self

import httpx

RETRY_STATUSES = {429, 502, 503, 504}
HTTP_UNAUTHORIZED = 401


class ServiceError(Exception):
    """Raised when the service rejects a request or cannot be reached after retries."""


class EngramHTTP:
    """Calls a running Engram service and returns decoded JSON bodies."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 5,
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)
        self._retries = retries
        self.base_url = base_url
        self.retried_requests = 0
        """Attempts repeated after a 429, 5xx or connection error, over the client's life."""
        self.retry_wait_s = 0.0
        """Seconds spent waiting before those attempts."""
        self.last_attempt_ms = 0.0
        """Duration of the last request's final attempt, without retries and waits."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, json=body)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        delay = 0.5
        for attempt in range(self._retries + 1):
            last_try = attempt == self._retries
            started = time.perf_counter()
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.TransportError as error:
                if last_try:
                    raise ServiceError(
                        f"cannot reach {self.base_url}: {error}; is `engram serve` running?"
                    ) from error
            else:
                self.last_attempt_ms = (time.perf_counter() - started) * 1000
                if response.status_code not in RETRY_STATUSES or last_try:
                    return _decode(response)
                delay = max(delay, float(response.headers.get("retry-after", delay)))
            self.retried_requests += 1
            self.retry_wait_s += delay
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")  # pragma: no cover


def _decode(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    try:
        problem = response.json()
        detail = problem.get("detail") or problem.get("title")
        fields = [f"{item['field']} {item['message']}" for item in problem.get("errors") or []]
        if fields:
            detail = f"{detail} ({'; '.join(fields)})"
        if response.status_code == HTTP_UNAUTHORIZED:
            detail = f"{detail} Set ENGRAM_TOKEN or pass --token; `make token SUB=name` makes one."
    except (ValueError, KeyError, TypeError, AttributeError):
        detail = response.text[:200]
    raise ServiceError(
        f"{response.request.method} {response.request.url.path} "
        f"returned {response.status_code}: {detail}"
    )
