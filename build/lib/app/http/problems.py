"""Every error becomes an RFC 9457 problem-details response, mapped here and only here."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from app.core import errors as e

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# Most specific first: the first isinstance match wins.
_STATUS: tuple[tuple[type[e.MMRagError], int, str], ...] = (
    (e.InvalidFieldError, 422, "invalid-field"),
    (e.UnsupportedMediaError, 415, "unsupported-media-type"),
    (e.PayloadTooLargeError, 413, "payload-too-large"),
    (e.InputError, 400, "bad-request"),
    (e.CollectionNotFoundError, 404, "collection-not-found"),
    (e.AssetNotFoundError, 404, "asset-not-found"),
    (e.NotFoundError, 404, "not-found"),
    (e.CollectionMismatchError, 409, "collection-mismatch"),
    (e.StoreLockedError, 409, "collection-locked"),
    (e.ConflictError, 409, "conflict"),
    (e.LLMRateLimitedError, 429, "llm-rate-limited"),
    (e.LLMTimeoutError, 504, "llm-timeout"),
    (e.LLMError, 503, "llm-unavailable"),
    (e.StoreError, 503, "store-unavailable"),
    (e.ConfigurationError, 503, "misconfigured"),
)
_TITLES = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def problem(
    request: Request[Any, Any, Any],
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if extra:
        body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


def domain_error_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[dict[str, Any]]:
    assert isinstance(exc, e.MMRagError)
    for cls, status, slug in _STATUS:
        if isinstance(exc, cls):
            extra = {"field": exc.field} if isinstance(exc, e.InvalidFieldError) else None
            if status >= 500:
                log.warning("%s %s: %s", request.method, request.url.path, exc)
            return problem(request, status, str(exc), slug=slug, extra=extra)
    log.error("unmapped error on %s", request.url.path, exc_info=exc)
    return problem(request, HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


def http_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    extra: dict[str, Any] | None = None
    if isinstance(exc, ValidationException):
        # msgspec reports a malformed body and a bad field alike; a body that parsed as JSON
        # but broke a field rule is 422, one that did not parse is 400.
        errors = exc.extra if isinstance(exc.extra, list) else []
        extra = {"errors": errors} if errors else None
        status = 422 if errors and any(_is_field_error(x) for x in errors) else 400
    detail = exc.detail if status < 500 else "internal error"
    if status == 413:
        limit = request.app.state.get("max_upload_bytes")
        detail = f"request body too large; uploads are limited to {limit} bytes"
    return problem(
        request, status, detail, slug="payload-too-large" if status == 413 else None, extra=extra
    )


def _is_field_error(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and "key" in item
        and "malformed" not in str(item.get("message", "")).lower()
    )


def body_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Bodies the controllers decode themselves: malformed is 400, a bad field is 422."""
    if isinstance(exc, msgspec.ValidationError):
        return problem(request, 422, f"invalid request: {exc}", slug="invalid-field")
    return problem(request, 400, f"malformed request body: {exc}", slug="malformed-body")


def unexpected_error_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[dict[str, Any]]:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(request, HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


EXCEPTION_HANDLERS = {
    e.MMRagError: domain_error_handler,
    msgspec.DecodeError: body_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "problem"]
