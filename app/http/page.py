"""The chat page: ``GET /`` serves ``static/index.html``, ``/static/…`` its script and styles.

Hand-written files, no build step, nothing loaded from anywhere but this service, so the page
works offline. The page and its files hold no data, so they are public (``PUBLIC``, which the
API-key middleware lets through); every call the page makes to ``/v1`` carries the key.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router, get
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType
from litestar.response import File
from litestar.static_files import create_static_files_router

from app.http.auth import PUBLIC_OPT

STATIC_DIR = Path(__file__).with_name("static")
PUBLIC = {PUBLIC_OPT: True}  # the API-key middleware lets these through
# Revalidate on every load (Last-Modified/ETag): a new release's page never meets a stale script.
_REVALIDATE = CacheControlHeader(no_cache=True)
# The page builds its DOM from text only; this policy is the second line of defence: no script,
# style, frame or media from anywhere but this service, plus the blob: URLs the page makes of
# files it fetched with an API key (an <img> or <video> cannot send the key itself).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self' blob:",
        "media-src 'self' blob:",
        "frame-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)


@get(
    "/",
    include_in_schema=False,
    opt=PUBLIC,
    media_type=MediaType.HTML,
    cache_control=_REVALIDATE,
    sync_to_thread=False,
)
def index() -> File:
    return File(
        path=STATIC_DIR / "index.html",
        media_type=MediaType.HTML,
        content_disposition_type="inline",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
        },
    )


def page_router() -> Router:
    """The page at ``/`` and its files under ``/static``."""
    static = create_static_files_router(
        "/static",
        directories=[STATIC_DIR],
        opt=PUBLIC,
        cache_control=_REVALIDATE,
        include_in_schema=False,
    )
    return Router("/", route_handlers=[index, static], include_in_schema=False)
