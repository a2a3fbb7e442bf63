"""API keys: every route but ``/health`` and ``/ready`` needs one when keys are configured.

A key travels as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. It is compared with every
configured key in constant time (``hmac.compare_digest``, no early exit), so neither timing nor
the order of keys tells an attacker anything.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

PUBLIC_PATHS = ("/health", "/ready")
WWW_AUTHENTICATE = 'Bearer realm="mmrag"'


def presented_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def key_matches(presented: str, keys: Sequence[bytes]) -> bool:
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    return matched


class ApiKeyMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)
    exclude_path_pattern = tuple(f"^{p}$" for p in PUBLIC_PATHS)

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = tuple(k.encode() for k in keys)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = presented_key(headers)
        if key is None:
            raise NotAuthorizedException(
                "an API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                headers={"WWW-Authenticate": WWW_AUTHENTICATE},
            )
        if not key_matches(key, self._keys):
            raise NotAuthorizedException(
                "the API key is not valid",
                headers={"WWW-Authenticate": f'{WWW_AUTHENTICATE}, error="invalid_token"'},
            )
        await next_app(scope, receive, send)
