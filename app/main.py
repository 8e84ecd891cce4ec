"""The Litestar application factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from litestar import Litestar, asgi
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.plugins.problem_details import ProblemDetailsPlugin

from app import __version__
from app.api.chat import ChatController
from app.api.deps import (
    provide_audit,
    provide_caller,
    provide_chat,
    provide_service,
    provide_users,
)
from app.api.health import health, ready
from app.api.memories import MemoryController
from app.api.metrics import metrics, prometheus_config
from app.api.middleware import RequestContext, add_security_headers
from app.api.problems import internal_error_handler, problem_config
from app.api.ratelimit import rate_limit_middleware, register_rate_limit_stores
from app.api.sessions import SessionController
from app.api.tools import ToolController
from app.api.users import UserController
from app.api.web import index, web_assets
from app.auth import build_jwt_auth
from app.chat import ChatService
from app.llm import LLMGateway
from app.logging import configure_logging, get_logger
from app.mcp_server import build_http_app
from app.observability import (
    log_processors,
    name_span_after_route,
    start_error_reporting,
    wrap_in_tracing,
)
from app.privacy import UserDataService
from app.runtime import Runtime, open_runtime
from app.service import MemoryService
from app.settings import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar.types import Receive, Scope, Send
    from opentelemetry.sdk.trace import TracerProvider

    from embeddings import Embedder

log = get_logger("app")

WORKER_STOP_TIMEOUT_S = 10.0


def create_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    embedder: Embedder | None = None,
    tracer_provider: TracerProvider | None = None,
    *,
    freeze_startup_objects: bool = False,
) -> Litestar:
    """Build the app; it opens its own runtime at start-up unless one is passed in.

    ``embedder`` lets several apps in one process share a loaded model.
    ``tracer_provider`` replaces the OTLP exporter when tracing is on.
    ``freeze_startup_objects`` keeps the objects alive after start-up out of
    later garbage collections (see ``_freeze_startup_objects``).
    """
    settings = settings or (runtime.settings if runtime else load_settings())
    logging_config = configure_logging(settings.server, log_processors(settings))
    start_error_reporting(settings.sentry)
    jwt_auth = build_jwt_auth(settings.auth)

    # MCP over streamable HTTP; its handlers read the state attach_runtime fills in.
    mcp_app = build_http_app(settings, lambda: app.state)

    @asgi("/mcp", is_mount=True, copy_scope=True)
    async def mcp_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await mcp_app(scope, receive, send)  # type: ignore[arg-type]

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        owned = runtime is None
        active = runtime or await open_runtime(settings, embedder=embedder)
        attach_runtime(app, active)
        if freeze_startup_objects:
            _freeze_startup_objects()
        async with (
            mcp_app.router.lifespan_context(mcp_app),
            _serving(app, settings, active, owned),
        ):
            yield

    app = Litestar(
        route_handlers=[
            SessionController,
            MemoryController,
            UserController,
            ChatController,
            ToolController,
            mcp_endpoint,
            index,
            web_assets,
            health,
            ready,
            metrics,
        ],
        dependencies={
            "service": Provide(provide_service, sync_to_thread=False),
            "caller": Provide(provide_caller, sync_to_thread=False),
            "audit": Provide(provide_audit, sync_to_thread=False),
            "users": Provide(provide_users, sync_to_thread=False),
            "chat": Provide(provide_chat, sync_to_thread=False),
        },
        lifespan=[lifespan],
        before_request=name_span_after_route if settings.tracing.enabled else None,
        state=State({"settings": settings}),
        middleware=[prometheus_config().middleware, *rate_limit_middleware(settings.server)],
        before_send=[add_security_headers],
        cors_config=(
            CORSConfig(
                allow_origins=settings.server.cors_origins,
                allow_headers=[
                    "authorization",
                    "content-type",
                    "x-request-id",
                    "x-engram-user-id",
                    "x-engram-session-id",
                ],
                expose_headers=["x-request-id", "retry-after", "x-engram-memory-ids"],
            )
            if settings.server.cors_origins
            else None
        ),
        plugins=[ProblemDetailsPlugin(problem_config())],
        on_app_init=[jwt_auth.on_app_init] if jwt_auth else [],
        exception_handlers={Exception: internal_error_handler},
        logging_config=logging_config,
        request_max_body_size=settings.server.max_request_bytes,
        openapi_config=OpenAPIConfig(
            title="Engram",
            version=__version__,
            description="Memory for AI agents and chatbots.",
            path="/docs",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
    )
    # Outside routing, so that requests no handler serves are logged with an id too.
    app.asgi_handler = RequestContext(app.asgi_handler)
    if settings.tracing.enabled:
        app.asgi_handler = wrap_in_tracing(app.asgi_handler, settings.tracing, tracer_provider)
    return app


def create_served_app() -> Litestar:
    """Build the app that ``engram serve`` runs, the only app in its process."""
    return create_app(freeze_startup_objects=True)


def _freeze_startup_objects() -> None:
    """Move every object alive now into the collector's permanent generation.

    With all-MiniLM-L6-v2 loaded, the collector tracked about 660,000
    objects, and each full collection paused the event loop for 230 to 300 ms
    (Python 3.11, 2 vCPU), which set the p99 of every route under load.
    Frozen objects are never collected, so garbage is collected first, and
    start-up objects that become garbage later stay in memory.
    """
    gc.collect()
    gc.freeze()
    log.info("app.startup_objects_frozen", objects=gc.get_freeze_count())


@asynccontextmanager
async def _serving(
    app: Litestar, settings: Settings, active: Runtime, owned: bool
) -> AsyncIterator[None]:
    """Run the in-process worker while the app serves; close what this app opened."""
    stop = asyncio.Event()
    worker_task: asyncio.Task[None] | None = None
    if settings.worker_in_process:
        worker_task = asyncio.create_task(active.new_worker().run(stop), name="promotion")
    log.info(
        "app.started",
        host=settings.server.host,
        port=settings.server.port,
        llm_model=settings.llm.model or "none (offline replies)",
        llm_base_url=settings.llm.base_url or ("default" if settings.llm.model else None),
    )
    try:
        yield
    finally:
        stop.set()
        if worker_task is not None:
            await _stop_worker(worker_task)
        await app.state.chat_gateway.close()
        if owned:
            await active.close()
        log.info("app.stopped")


def attach_runtime(app: Litestar, runtime: Runtime, gateway: LLMGateway | None = None) -> None:
    """Make a runtime's stores and services available to the handlers.

    ``gateway`` defaults to a client for the model in the runtime's settings.
    """
    app.state.runtime = runtime
    app.state.service = MemoryService(runtime)
    app.state.chat_gateway = gateway or LLMGateway(runtime.settings.llm)
    app.state.chat = ChatService(runtime, app.state.service, app.state.chat_gateway)
    app.state.users = UserDataService(runtime)
    register_rate_limit_stores(app, runtime.redis, runtime.settings.redis.key_prefix)


async def _stop_worker(task: asyncio.Task[None]) -> None:
    """Let the worker finish its batch; cancel it after a timeout (nothing unstored is acked)."""
    try:
        await asyncio.wait_for(task, timeout=WORKER_STOP_TIMEOUT_S)
    except TimeoutError:
        log.warning("app.worker_cancelled", timeout_s=WORKER_STOP_TIMEOUT_S)
    except Exception:
        log.exception("app.worker_failed")
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
