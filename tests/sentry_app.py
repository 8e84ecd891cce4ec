"""Report errors of a small Litestar app to Sentry and print each event as a JSON line.

``test_observability`` runs this module in a process of its own, because
Sentry's Litestar integration patches Litestar for the rest of the process.
The DSN names a loopback address, but the transport below keeps the events
and sends nothing.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import sentry_sdk
from litestar import Litestar, get, post
from litestar.plugins.problem_details import ProblemDetailsPlugin
from litestar.testing import TestClient
from pydantic import SecretStr
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from app.api.problems import internal_error_handler, problem_config
from app.errors import NotFoundError
from app.logging import configure_logging, get_logger
from app.observability import log_processors, start_error_reporting
from app.settings import SentrySettings, ServerSettings, Settings


class PrintingTransport(Transport):
    """Print each event to stdout instead of sending it."""

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            event = item.get_event()
            if event is not None:
                sys.stdout.write(json.dumps(event, default=str) + "\n")


@post("/boom")
async def boom(data: dict[str, Any]) -> None:
    raise RuntimeError("handler failed")


@get("/missing")
async def missing() -> None:
    raise NotFoundError("memory", "m-1")


def main() -> None:
    settings = Settings(sentry=SentrySettings(dsn=SecretStr("http://public@127.0.0.1:9/1")))
    configure_logging(ServerSettings(log_format="json"), log_processors(settings))
    start_error_reporting(settings.sentry, PrintingTransport)
    app = Litestar(
        [boom, missing],
        exception_handlers={Exception: internal_error_handler},
        plugins=[ProblemDetailsPlugin(problem_config())],
    )
    with TestClient(app) as client:
        # Built at run time, so that the source lines Sentry attaches to frames do not contain it.
        content = " ".join(["allergic", "to", "peanuts"])
        headers = {"authorization": "Bearer not-a-real-token"}
        response = client.post("/boom", json={"content": content}, headers=headers)
        assert response.status_code == 500
        assert client.get("/missing").status_code == 404

    log = get_logger("worker")
    log.error("worker.batch_failed", exc_info=RuntimeError("database write failed"))
    log.error("worker.dead_lettered", entry_id="1-0")
    log.warning("worker.retrying")
    sentry_sdk.flush()


if __name__ == "__main__":
    main()
