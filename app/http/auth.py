"""API keys: every route but ``/health``, ``/ready`` and the page needs one when keys are
configured (``/metrics`` too, unless ``http.metrics_public``).

A key travels as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. It is compared with every
configured key in constant time (``hmac.compare_digest``, no early exit), so neither timing nor
the order of keys tells an attacker anything. A handler whose ``opt`` holds ``public`` (the page
and its files, app/http/page.py) needs no key.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping, Sequence

from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

PUBLIC_PATHS = ("/health", "/ready")
# A handler whose ``opt`` holds this key needs no API key (the page and its files).
PUBLIC_OPT = "public"
METRICS_PATH = "/metrics"
WWW_AUTHENTICATE = 'Bearer realm="mmrag"'


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries; ``headers`` by lower-case name."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


class ApiKeys:
    """The configured keys, compared in constant time."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = tuple(k.encode() for k in keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def index(self, presented: str) -> int | None:
        """Which key this is (its place in the settings), or None for none of them. Every key
        is compared, whatever matched before: the time taken tells nothing."""
        candidate = presented.encode()
        found: int | None = None
        for number, key in enumerate(self._keys):
            if hmac.compare_digest(candidate, key):
                found = number
        return found


class ApiKeyMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)
    exclude_opt_key = PUBLIC_OPT

    def __init__(
        self, keys: ApiKeys | Sequence[str], *, public: Sequence[str] = PUBLIC_PATHS
    ) -> None:
        """``public``: the paths that need no key."""
        self._keys = keys if isinstance(keys, ApiKeys) else ApiKeys(keys)
        self.exclude_path_pattern = tuple(f"^{re.escape(p)}$" for p in public)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = presented_key(headers)
        if key is None:
            raise NotAuthorizedException(
                "an API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                headers={"WWW-Authenticate": WWW_AUTHENTICATE},
            )
        if self._keys.index(key) is None:
            raise NotAuthorizedException(
                "the API key is not valid",
                headers={"WWW-Authenticate": f'{WWW_AUTHENTICATE}, error="invalid_token"'},
            )
        await next_app(scope, receive, send)
