"""The one client for every language-model call, on the official ``openai`` package.

Any OpenAI-compatible server works: OpenAI, Azure OpenAI (its ``/openai/v1``
endpoint), Ollama, vLLM, LM Studio. The client retries timeouts, 429 and 5xx
itself (``LLM_MAX_RETRIES``, with back-off; each retry is logged by the
``openai`` logger). What still fails becomes an ``LLMError`` whose status and
problem type say what went wrong, so callers never see the client's own
exception classes.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, cast

import openai
from openai import AsyncOpenAI

from app.errors import EngramError, InvalidInputError
from app.logging import get_logger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from openai import AsyncStream
    from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

    from app.settings import LLMSettings

log = get_logger("llm")

# Local servers (Ollama, vLLM, LM Studio) accept any key, but the client requires one.
_NO_KEY = "no-key-configured"


class LLMError(EngramError):
    """A model call failed after the client's retries; ``status`` is the HTTP status to return."""

    status = 502
    slug = "llm-unavailable"
    title = "Model unavailable"

    def __init__(self, detail: str, retry_after: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        # The user's turn stored before the call failed, for the problem response.
        self.turn_id: str | None = None


class LLMTimeoutError(LLMError):
    status = 504
    slug = "llm-timeout"
    title = "Model timed out"


class LLMRateLimitedError(LLMError):
    status = 429
    slug = "llm-rate-limited"
    title = "Model rate limited"


class LLMRejectedError(LLMError):
    """The model server refused the request itself (a bad parameter or too long a prompt)."""

    status = 400
    slug = "llm-rejected"
    title = "Model rejected the request"


class LLMStreamError(LLMError):
    """The model server reported an error inside a stream that had started."""

    slug = "llm-stream-error"
    title = "Model error"


class LLMBadResponseError(LLMError):
    slug = "llm-bad-response"
    title = "Malformed model response"


def _upstream_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return error.message


def _status_error(error: openai.APIStatusError) -> LLMError:
    status = error.status_code
    message = _upstream_message(error)
    if status in (400, 413, 422):
        return LLMRejectedError(f"the model server rejected the request ({status}): {message}")
    if status in (401, 403, 404):
        return LLMError(
            f"the model server returned {status} ({message}); "
            "check LLM_API_KEY, LLM_BASE_URL and LLM_MODEL"
        )
    return LLMError(f"the model server failed with {status}: {message}", retry_after="5")


def translate_error(error: Exception, timeout_s: float) -> LLMError:
    """Turn an ``openai`` client exception into the matching ``LLMError``."""
    if isinstance(error, openai.APITimeoutError):
        return LLMTimeoutError(
            f"the model did not answer within {timeout_s:g} s (LLM_TIMEOUT_S), "
            "including retries; try again or raise the timeout"
        )
    if isinstance(error, openai.RateLimitError):
        return LLMRateLimitedError(
            "the model server is over its rate limit; retry after the seconds in Retry-After",
            retry_after=error.response.headers.get("retry-after") or "5",
        )
    if isinstance(error, openai.APIStatusError):
        return _status_error(error)
    if isinstance(error, openai.APIConnectionError):
        return LLMError(
            "the model server cannot be reached; check LLM_BASE_URL and that the server is up",
            retry_after="5",
        )
    if isinstance(error, openai.APIError):
        return LLMStreamError(f"the model server reported an error mid-stream: {error.message}")
    return LLMBadResponseError(
        f"the model server sent a response that is not valid ({type(error).__name__})"
    )


# Exceptions a call or a stream can raise that ``translate_error`` understands.
CALL_ERRORS = (openai.OpenAIError, json.JSONDecodeError, ValueError, KeyError, TypeError)


class LLMGateway:
    """Chat completions against the configured server, streamed or whole."""

    def __init__(self, settings: LLMSettings) -> None:
        self._settings = settings
        self._client: AsyncOpenAI | None = None
        if settings.model is not None:
            key = settings.api_key.get_secret_value() if settings.api_key else _NO_KEY
            self._client = AsyncOpenAI(
                api_key=key,
                base_url=settings.base_url,
                timeout=settings.timeout_s,
                max_retries=settings.max_retries,
            )

    @property
    def configured(self) -> bool:
        """Whether a model is configured; without one, chat runs offline."""
        return self._client is not None

    @property
    def default_model(self) -> str | None:
        return self._settings.model

    @property
    def models(self) -> list[str]:
        """The models callers may name, the configured one first."""
        if self._settings.model is None:
            return []
        extra = [name for name in self._settings.allowed_models if name != self._settings.model]
        return [self._settings.model, *extra]

    def resolve_model(self, requested: str | None) -> str:
        """Return the model to call for a request that names ``requested``."""
        if requested is None or requested in ("", "engram"):
            return self._settings.model or "engram-offline"
        if self.configured and requested not in self.models:
            raise InvalidInputError(
                "model",
                f"model {requested!r} is not offered here; use one of {self.models} "
                "or add it to LLM_ALLOWED_MODELS",
            )
        return requested

    def reply_options(self) -> dict[str, Any]:
        """Sampling options from settings, for the service's own chat."""
        options: dict[str, Any] = {}
        if self._settings.max_reply_tokens is not None:
            options["max_tokens"] = self._settings.max_reply_tokens
        if self._settings.temperature is not None:
            options["temperature"] = self._settings.temperature
        return options

    def _require_client(self) -> AsyncOpenAI:
        if self._client is None:
            raise LLMError("no model is configured; set LLM_MODEL")
        return self._client

    async def complete(
        self, messages: Sequence[dict[str, Any]], model: str, options: dict[str, Any]
    ) -> ChatCompletion:
        """Return one whole completion."""
        client = self._require_client()
        started = time.perf_counter()
        try:
            completion = cast(
                "ChatCompletion",
                await client.chat.completions.create(
                    model=model, messages=_as_params(messages), stream=False, **options
                ),
            )
        except CALL_ERRORS as error:
            raise self._failed(error, model, started) from error
        usage = completion.usage
        log.info(
            "llm.completed",
            model=model,
            duration_ms=_elapsed_ms(started),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )
        return completion

    async def stream(
        self, messages: Sequence[dict[str, Any]], model: str, options: dict[str, Any]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Open a streamed completion; errors before the first chunk raise here.

        The returned iterator yields that first chunk again, then the rest;
        errors later in the stream raise ``LLMError`` from the iterator.
        """
        client = self._require_client()
        started = time.perf_counter()
        try:
            upstream = cast(
                "AsyncStream[ChatCompletionChunk]",
                await client.chat.completions.create(
                    model=model, messages=_as_params(messages), stream=True, **options
                ),
            )
            chunks = aiter(upstream)
            first = await anext(chunks, None)
        except CALL_ERRORS as error:
            raise self._failed(error, model, started) from error
        return self._relay(first, chunks, model, started)

    async def _relay(
        self,
        first: ChatCompletionChunk | None,
        chunks: AsyncIterator[ChatCompletionChunk],
        model: str,
        started: float,
    ) -> AsyncIterator[ChatCompletionChunk]:
        if first is None:
            log.info("llm.streamed", model=model, duration_ms=_elapsed_ms(started), chunks=0)
            return
        yield first
        count = 1
        try:
            async for chunk in chunks:
                count += 1
                yield chunk
        except CALL_ERRORS as error:
            raise self._failed(error, model, started) from error
        log.info("llm.streamed", model=model, duration_ms=_elapsed_ms(started), chunks=count)

    def _failed(self, error: Exception, model: str, started: float) -> LLMError:
        translated = translate_error(error, self._settings.timeout_s)
        log.warning(
            "llm.failed",
            model=model,
            duration_ms=_elapsed_ms(started),
            error_type=type(error).__name__,
            problem=translated.slug,
            status=getattr(error, "status_code", None),
        )
        return translated

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _as_params(messages: Sequence[dict[str, Any]]) -> list[ChatCompletionMessageParam]:
    """Messages are passed on as the caller sent them; the server validates their shape."""
    return cast("list[ChatCompletionMessageParam]", list(messages))
