"""The ``engram`` command: run the service and worker, migrate, import, and query."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.client import EngramHTTP, ServiceError

console = Console()
err_console = Console(stderr=True)

JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True, help="Print the service's JSON response instead of a table."
)
URL_OPTION = click.option(
    "--url",
    envvar="ENGRAM_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="Base URL of a running Engram service (env ENGRAM_URL).",
)
TOKEN_OPTION = click.option(
    "--token",
    envvar="ENGRAM_TOKEN",
    default=None,
    help="Bearer token for the service (env ENGRAM_TOKEN); see `engram token`.",
)

T = TypeVar("T")


@click.group()
@click.version_option(package_name="engram")
def main() -> None:
    """Engram: memory for AI agents and chatbots."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@main.command()
@click.option("--host", envvar="ENGRAM_HOST", default=None, help="Interface to bind.")
@click.option("--port", envvar="ENGRAM_PORT", type=int, default=None, help="TCP port.")
def serve(host: str | None, port: int | None) -> None:
    """Run the HTTP API (embedded Redis and Postgres unless REDIS_URL/DATABASE_URL are set)."""
    import uvicorn  # noqa: PLC0415  (only this command needs the server)

    from app.settings import load_settings  # noqa: PLC0415

    # The app factory reads its settings from the environment again, so the
    # options go there too and its start-up log names the address in use.
    if host is not None:
        os.environ["ENGRAM_HOST"] = host
    if port is not None:
        os.environ["ENGRAM_PORT"] = str(port)
    settings = _settings_or_exit(load_settings)
    uvicorn.run(
        "app.main:create_served_app",
        factory=True,
        host=host or settings.server.host,
        port=port or settings.server.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )


def _settings_or_exit(build: Callable[[], T]) -> T:
    """Return ``build()``, turning a configuration error into a one-line CLI error."""
    from app.errors import ConfigurationError  # noqa: PLC0415

    try:
        return build()
    except ConfigurationError as error:
        raise click.ClickException(str(error)) from None


@main.command()
def worker() -> None:
    """Run a promotion worker as its own process (external mode)."""
    from app.errors import ConfigurationError  # noqa: PLC0415
    from app.logging import configure_logging, get_logger  # noqa: PLC0415
    from app.metrics import serve_worker_metrics  # noqa: PLC0415
    from app.observability import log_processors, start_error_reporting  # noqa: PLC0415
    from app.runtime import open_runtime  # noqa: PLC0415
    from app.settings import load_settings  # noqa: PLC0415

    settings = _settings_or_exit(load_settings)
    configure_logging(settings.server, log_processors(settings))
    start_error_reporting(settings.sentry)
    # Checked before the model loads, so a wrong setting fails at once.
    _settings_or_exit(lambda: settings.worker.owned_partitions(settings.redis.stream_partitions))
    if settings.embedded:
        raise click.UsageError(
            "engram worker needs REDIS_URL (or REDIS_SENTINELS) and DATABASE_URL; "
            "in embedded mode `engram serve` runs the worker itself"
        )

    host, port = settings.worker.metrics_host, settings.worker.metrics_port
    if port:
        try:
            serve_worker_metrics(host, port)
        except OSError as error:
            raise click.ClickException(
                f"cannot serve worker metrics on {host}:{port}: {error}; set "
                "WORKER_METRICS_HOST to an address of this machine and WORKER_METRICS_PORT "
                "to a free port, or WORKER_METRICS_PORT to 0 to turn the metrics server off"
            ) from error
        get_logger("worker").info("worker.metrics_serving", host=host, port=port)

    async def run() -> None:
        try:
            runtime = await open_runtime(settings)
        except ConfigurationError as error:
            raise click.ClickException(str(error)) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await runtime.new_worker().run(stop)
        finally:
            await runtime.close()

    asyncio.run(run())


@main.command()
def migrate() -> None:
    """Apply pending database migrations and exit."""
    from app.logging import configure_logging  # noqa: PLC0415
    from app.runtime import open_runtime  # noqa: PLC0415
    from app.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    settings.database.auto_migrate = True
    configure_logging(settings.server)

    async def run() -> None:
        runtime = await open_runtime(settings)
        await runtime.close()

    asyncio.run(run())
    console.print("The database schema is current.")


@main.group(name="import")
def import_group() -> None:
    """Import conversations through the API."""


@import_group.command(name="locomo")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@URL_OPTION
@TOKEN_OPTION
@click.option("--batch-size", type=int, default=50, show_default=True, help="Turns per request.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until every imported turn is in long-term memory.",
)
@click.option("--timeout", type=float, default=900, show_default=True, help="Wait limit, s.")
def import_locomo(
    path: Path, url: str, token: str | None, batch_size: int, wait: bool, timeout: float
) -> None:
    """Load a LoCoMo file: one user per conversation, one session per LoCoMo session."""
    from app.importer import import_conversations  # noqa: PLC0415
    from app.locomo import LocomoFormatError, load_locomo  # noqa: PLC0415

    try:
        conversations = load_locomo(path)
    except LocomoFormatError as error:
        raise click.ClickException(str(error)) from error
    with EngramHTTP(url, token=token) as client:
        summary = _fail_on_service_error(
            lambda: import_conversations(
                client, conversations, batch_size=batch_size, wait=wait, timeout_s=timeout
            )
        )
    console.print(
        f"Imported {len(summary.posted)} conversations: {summary.new} new turns, "
        f"{summary.duplicates} already stored."
    )


@main.group(name="eval")
def eval_group() -> None:
    """Measure retrieval quality and speed through the API."""


@eval_group.command(name="locomo")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@URL_OPTION
@TOKEN_OPTION
@click.option(
    "--mode",
    "modes",
    multiple=True,
    type=click.Choice(["semantic", "keyword", "hybrid"]),
    default=("semantic", "keyword", "hybrid"),
    show_default=True,
    help="Ranking modes to score; repeat the option for several.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/eval"),
    show_default=True,
    help="Folder for locomo-eval.md and locomo-eval.json.",
)
@click.option("--conversations", type=int, default=None, help="Only the first N conversations.")
@click.option(
    "--ingest/--no-ingest",
    default=True,
    show_default=True,
    help="Post the conversations first; --no-ingest scores what is already stored.",
)
@click.option("--concurrency", type=int, default=8, show_default=True, help="Parallel searches.")
@click.option(
    "--embedding-speed/--no-embedding-speed",
    default=True,
    show_default=True,
    help="Also time the local embedding model in this process.",
)
@click.option(
    "--timeout",
    type=float,
    default=1800,
    show_default=True,
    help="Longest wait, in seconds, for the imported turns to become searchable.",
)
def eval_locomo(
    path: Path,
    url: str,
    token: str | None,
    modes: tuple[str, ...],
    out: Path,
    conversations: int | None,
    ingest: bool,
    concurrency: int,
    embedding_speed: bool,
    timeout: float,
) -> None:
    """Score retrieval on a LoCoMo file: Recall@k, Hit, All, MRR and nDCG per category.

    Run the service with its rate limits off or raised for this token
    (ENGRAM_RATE_LIMIT_PER_TOKEN_PER_MINUTE=0); the report counts retried
    requests, and search latency leaves out the waits before retries.
    """
    from app.eval_locomo import (  # noqa: PLC0415
        LocomoEvaluation,
        measure_embedding,
        run_context,
        write_reports,
    )
    from app.locomo import LocomoFormatError, load_locomo  # noqa: PLC0415

    try:
        loaded = load_locomo(path)
    except LocomoFormatError as error:
        raise click.ClickException(str(error)) from error
    if conversations is not None:
        loaded = loaded[:conversations]
    with EngramHTTP(url, token=token) as client:
        evaluation = LocomoEvaluation(client, loaded, modes=modes)
        if ingest:
            _fail_on_service_error(lambda: evaluation.ingest(timeout))
        report = _fail_on_service_error(lambda: evaluation.run(concurrency))
    options = {
        "data": path.name,
        "conversations": len(loaded),
        "ingested_in_this_run": ingest,
        "concurrency": concurrency,
    }
    context = run_context(url, modes, options)
    if embedding_speed:
        from app.settings import load_settings  # noqa: PLC0415
        from embeddings import create_embedder  # noqa: PLC0415

        embedder = create_embedder(load_settings().embeddings)
        texts = [turn.memory_text for c in loaded for s in c.sessions for turn in s.turns]
        report.timings["embedding_alone"] = measure_embedding(embedder, texts)
        context["embedding_model"] = embedder.model_name
    for written in write_reports(report, context, out):
        console.print(f"Wrote {written}")
    headline = report.rankings.get(modes[-1], {}).get("1-4")
    if headline:
        count, scores = headline
        console.print(
            f"{modes[-1]}: Recall@10 {100 * scores['recall@10']:.1f} over {count} questions "
            "of categories 1-4"
        )


@main.command(name="mcp")
@URL_OPTION
@TOKEN_OPTION
@click.option(
    "--user",
    "user_id",
    envvar="ENGRAM_USER",
    default=None,
    help="User the tools act for (env ENGRAM_USER); a user token names its own.",
)
def mcp_command(url: str, token: str | None, user_id: str | None) -> None:
    """Serve Engram's memory tools over MCP on stdin and stdout, for desktop clients.

    Each tool call is forwarded to the service at --url with the token.
    """
    import anyio  # noqa: PLC0415

    from app.mcp_server import StdioSetupError, serve_stdio  # noqa: PLC0415

    try:
        anyio.run(serve_stdio, url, token, user_id)
    except StdioSetupError as error:
        # stdout carries the protocol, so the reason goes to stderr.
        raise click.ClickException(str(error)) from error


@main.command()
@click.argument("query")
@click.option("--user", "user_id", required=True, help="User whose memories to search.")
@click.option("--session", "session_id", default=None, help="Only this session's memories.")
@click.option("--limit", type=int, default=10, show_default=True, help="Hits to show.")
@JSON_OPTION
@URL_OPTION
@TOKEN_OPTION
def search(
    query: str,
    user_id: str,
    session_id: str | None,
    limit: int,
    as_json: bool,
    url: str,
    token: str | None,
) -> None:
    """Search a user's long-term memory from the shell."""
    body: dict[str, Any] = {"user_id": user_id, "query": query, "limit": limit}
    if session_id:
        body["session_id"] = session_id
    with EngramHTTP(url, token=token) as client:
        result = _fail_on_service_error(lambda: client.post("/v1/memories/search", body))
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return

    table = Table(title=f"Memories of {user_id} for: {query}")
    for column in ("rank", "score", "session", "occurred", "content"):
        table.add_column(column)
    for rank, hit in enumerate(result["hits"], start=1):
        table.add_row(
            str(rank),
            f"{hit['score']:.3f}",
            hit["session_id"] or "",
            hit["occurred_at"][:16],
            hit["content"],
        )
    console.print(table)


@main.command()
@click.argument("query", required=False)
@click.option("--user", "user_id", required=True, help="User to build context for.")
@click.option("--session", "session_id", default=None, help="Session whose window to include.")
@click.option("--budget", type=int, default=None, help="Token budget (default: the service's).")
@JSON_OPTION
@URL_OPTION
@TOKEN_OPTION
def context(
    query: str | None,
    user_id: str,
    session_id: str | None,
    budget: int | None,
    as_json: bool,
    url: str,
    token: str | None,
) -> None:
    """Show the prompt-ready context the service would hand an LLM."""
    body: dict[str, Any] = {"user_id": user_id}
    if query:
        body["query"] = query
    if session_id:
        body["session_id"] = session_id
    if budget:
        body["token_budget"] = budget
    with EngramHTTP(url, token=token) as client:
        result = _fail_on_service_error(lambda: client.post("/v1/context", body))
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return

    for message in result["messages"]:
        console.rule(f"[bold]{message['role']}")
        console.print(message["content"], markup=False, highlight=False)
    console.rule()
    console.print(
        f"{len(result['memories'])} memories, {result['token_count']} of "
        f"{result['token_budget']} tokens"
    )


def _fail_on_service_error(call: Any) -> Any:
    try:
        return call()
    except ServiceError as error:
        message = escape(str(error))
        err_console.print(f"[red]error:[/] {message}", soft_wrap=True, highlight=False)
        raise SystemExit(1) from error


@main.command()
@click.option("--tenant", default="default", show_default=True, help="Tenant claim (tid).")
@click.option("--sub", "subject", required=True, help="Subject: the end user, or a service name.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="Scope to grant (memory:read, memory:write, memory:delete, admin); repeatable. "
    "Without scopes the token is an end-user token for --sub.",
)
@click.option("--lifetime", type=int, default=3600, show_default=True, help="Lifetime, s.")
@click.option(
    "--secret-file",
    envvar="AUTH_HS256_SECRET_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File with the HS256 secret (env AUTH_HS256_SECRET_FILE; or set AUTH_HS256_SECRET).",
)
def token(
    tenant: str, subject: str, scopes: tuple[str, ...], lifetime: int, secret_file: Path | None
) -> None:
    """Mint an HS256 token for development and tests."""
    from datetime import timedelta  # noqa: PLC0415

    from app.auth import mint_token  # noqa: PLC0415

    secret = os.environ.get("AUTH_HS256_SECRET")
    if secret is None and secret_file is not None:
        if not secret_file.is_file():
            raise click.UsageError(
                f"the secret file {secret_file} does not exist; start the service once with "
                "`make run` (it creates the file) or set AUTH_HS256_SECRET"
            )
        secret = secret_file.read_text(encoding="utf-8").strip()
    if not secret:
        raise click.UsageError(
            "set AUTH_HS256_SECRET or AUTH_HS256_SECRET_FILE, or pass --secret-file"
        )
    click.echo(
        mint_token(
            secret,
            tenant_id=tenant,
            subject=subject,
            scopes=scopes,
            lifetime=timedelta(seconds=lifetime),
            audience=os.environ.get("AUTH_AUDIENCE"),
            issuer=os.environ.get("AUTH_ISSUER"),
        )
    )


@main.command(name="init-secret")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def init_secret(path: Path) -> None:
    """Write a random HS256 secret to PATH (mode 600) unless the file exists."""
    import secrets  # noqa: PLC0415

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secrets.token_urlsafe(48), encoding="utf-8")
    click.echo(f"Wrote a new token secret to {path}")


if __name__ == "__main__":
    main()
