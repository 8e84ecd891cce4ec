"""The memory tools over the Model Context Protocol, with the official ``mcp`` SDK.

Two transports offer the same tools as ``GET /v1/tools``:

- **Streamable HTTP**, mounted in the service at ``/mcp``. Bearer tokens are
  verified with the service's own key ring through the SDK's token verifier.
  The user comes from the ``X-Engram-User-Id`` header or a user token's
  subject, and tools run in the service process.
- **stdio**, for desktop clients: ``engram mcp`` runs as a small process that
  forwards each call to a running service's ``/v1/tools`` API with the
  configured token. It needs no database or model of its own.

A tool error (bad arguments, a missing scope, an unknown memory) is returned
as a result with ``is_error`` set, so the model can read it and try again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import mcp_types as types
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings as McpAuthSettings
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

from app import __version__
from app.auth import Principal, TokenVerifier, dev_principal
from app.errors import InvalidInputError, NotFoundError
from app.logging import get_logger
from app.tools import TOOLS, get_tool, parse_arguments, run_tool

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar.datastructures import State
    from mcp.server.context import ServerRequestContext
    from starlette.applications import Starlette

    from app.settings import Settings

log = get_logger("mcp")

SERVER_NAME = "engram"
INSTRUCTIONS = (
    "Engram is the user's long-term memory. Search it before answering questions about the "
    "user's life, preferences or earlier conversations, and remember what is worth keeping."
)
USER_HEADER = "x-engram-user-id"


async def _list_tools(
    _context: ServerRequestContext[Any, Any], _params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(
        tools=[
            types.Tool(name=tool.name, description=tool.description, input_schema=tool.parameters())
            for tool in TOOLS.values()
        ]
    )


def _result(text: str, *, error: bool = False, data: Any = None) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=data if isinstance(data, dict) else None,
        is_error=error,
    )


class KeyRingVerifier:
    """The SDK's token verifier protocol, on the service's own key ring."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        principal = self._verifier.principal(token)
        if principal is None:
            return None
        return AccessToken(
            token=token,
            client_id=principal.subject,
            scopes=sorted(principal.scopes),
            subject=principal.subject,
            claims={"tid": principal.tenant_id, "kind": principal.kind, "jti": principal.token_id},
        )


def _principal_from(token: AccessToken) -> Principal:
    claims = token.claims or {}
    return Principal(
        tenant_id=str(claims["tid"]),
        subject=token.subject or token.client_id,
        kind="user" if claims.get("kind") == "user" else "service",
        scopes=frozenset(token.scopes),
        token_id=claims.get("jti"),
    )


def _requested_user(context: ServerRequestContext[Any, Any], principal: Principal) -> str | None:
    request = context.request
    headers = getattr(request, "headers", None)
    header = headers.get(USER_HEADER) if headers is not None else None
    if header:
        return str(header)
    return principal.subject if principal.kind == "user" else None


def build_http_server(settings: Settings, state: Callable[[], State]) -> Server[Any]:
    """Return the MCP server that runs tools in this process; ``state`` gives the app's state."""

    async def call_tool(
        context: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        token = get_access_token()
        if token is not None:
            principal = _principal_from(token)
        elif settings.auth.dev_mode:
            principal = dev_principal(settings)
        else:
            return _result("a bearer token is required", error=True)
        user = _requested_user(context, principal)
        current = state()
        try:
            tool = get_tool(params.name)
            if not principal.allows(tool.scope):
                return _result(f"the tool {tool.name} needs the scope {tool.scope}", error=True)
            if user is None:
                return _result(
                    "name the user the agent acts for in the X-Engram-User-Id header", error=True
                )
            if principal.kind == "user" and user != principal.subject:
                return _result("this token acts for its own user only", error=True)
            arguments = parse_arguments(tool, params.arguments)
            result = await run_tool(
                current.service,
                current.runtime.counter,
                tool,
                principal.tenant_id,
                user,
                arguments,
                settings.tools.result_max_tokens,
            )
        except (InvalidInputError, NotFoundError) as error:
            log.info("mcp.tool_failed", tool=params.name, user_id=user, error=str(error))
            return _result(str(error), error=True)
        await current.runtime.audit.record(principal, f"tool.{tool.name}", user_id=user)
        log.info("mcp.tool_called", tool=tool.name, user_id=user, truncated=result.truncated)
        return _result(result.content, data=result.data)

    return Server(
        SERVER_NAME,
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=_list_tools,
        on_call_tool=call_tool,
    )


def build_http_app(settings: Settings, state: Callable[[], State]) -> Starlette:
    """Return the streamable HTTP app to mount at ``/mcp``, verifying tokens unless in dev mode."""
    server = build_http_server(settings, state)
    base = f"http://{settings.server.host}:{settings.server.port}"
    verifier = None if settings.auth.dev_mode else KeyRingVerifier(TokenVerifier(settings.auth))
    auth = (
        None
        if verifier is None
        else McpAuthSettings(
            issuer_url=base,
            # No OAuth metadata is served, so a 401 must not point clients at it.
            resource_server_url=None,
            # The key ring checks the audience itself, when AUTH_AUDIENCE is set.
            validate_token_resource=False,
        )
    )
    return server.streamable_http_app(
        streamable_http_path="/",
        stateless_http=True,
        json_response=True,
        host=settings.server.host,
        token_verifier=verifier,
        auth=auth,
    )


def build_stdio_server(base_url: str, token: str | None, user_id: str | None) -> Server[Any]:
    """Return an MCP server that forwards tool calls to a running service's tool API."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    if user_id:
        headers[USER_HEADER] = user_id

    async def call_tool(
        _context: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
            try:
                response = await client.post(
                    f"/v1/tools/{params.name}/call", json={"arguments": params.arguments or {}}
                )
            except httpx.TransportError as error:
                return _result(f"cannot reach Engram at {base_url}: {error}", error=True)
        body = response.json() if response.content else {}
        if response.is_success:
            return _result(str(body.get("content", "")), data=body.get("data"))
        return _result(str(body.get("detail") or body.get("title") or response.text), error=True)

    return Server(
        SERVER_NAME,
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=_list_tools,
        on_call_tool=call_tool,
    )


class StdioSetupError(Exception):
    """Raised when ``engram mcp`` cannot use the service it forwards to."""


async def check_service(base_url: str, token: str | None, user_id: str | None) -> None:
    """Fail early when the service is unreachable or rejects the token or user."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    if user_id:
        headers[USER_HEADER] = user_id
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
        try:
            response = await client.post("/v1/tools/list_sessions/call", json={"arguments": {}})
        except httpx.TransportError as error:
            raise StdioSetupError(
                f"cannot reach Engram at {base_url} ({error}); start it or pass --url"
            ) from error
    if response.status_code == httpx.codes.UNAUTHORIZED:
        raise StdioSetupError(
            "the token was rejected; set ENGRAM_TOKEN or --token to a valid token "
            "(`engram token --lifetime` makes one that lasts longer than an hour)"
        )
    if response.status_code == httpx.codes.UNPROCESSABLE_ENTITY and not user_id:
        raise StdioSetupError("a service token needs --user (or ENGRAM_USER) to name the user")
    if not response.is_success:
        detail = response.json().get("detail", response.text) if response.content else ""
        raise StdioSetupError(f"Engram rejected the token or user: {detail}")


async def serve_stdio(base_url: str, token: str | None, user_id: str | None) -> None:
    """Check the service, then serve the tools over stdin and stdout until the client closes."""
    await check_service(base_url, token, user_id)
    server = build_stdio_server(base_url, token, user_id)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
