"""The web chat: one page at ``/`` and its assets under ``/static``, no build step."""

from __future__ import annotations

from pathlib import Path

from litestar import get
from litestar.response import File
from litestar.static_files import create_static_files_router

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


@get("/", include_in_schema=False, security=[{}], cache_control=None)
async def index() -> File:
    """Serve the chat page; it signs in with a token in the browser, so it needs none."""
    return File(WEB_DIR / "index.html", content_disposition_type="inline", media_type="text/html")


web_assets = create_static_files_router(
    path="/static", directories=[WEB_DIR], name="web", security=[{}]
)
