"""Every error becomes an RFC 9457 problem-details response, mapped here and only here.

The body is always a ``ProblemDetails`` (app/http/schemas.py), the same type the OpenAPI
document names for every error response (app/http/openapi.py), so the two cannot drift, plus
the ``request_id`` a user can quote (the one in the ``X-Request-ID`` header, app/http/ops.py).
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, TooManyRequestsException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from app.core import errors as e
from app.http.ops import request_id
from app.http.schemas import ProblemDetails

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_RETRY_AFTER_FALLBACK_S = 60  # a 429 whose window end is unknown: the limit is per minute


# Most specific first: the first isinstance match wins.
_STATUS: tuple[tuple[type[e.MMRagError], int, str], ...] = (
    (e.InvalidFieldError, 422, "invalid-field"),
    (e.UnsupportedMediaError, 415, "unsupported-media-type"),
    (e.PayloadTooLargeError, 413, "payload-too-large"),
    (e.RangeNotSatisfiableError, 416, "range-not-satisfiable"),
    (e.InputError, 400, "bad-request"),
    (e.ForbiddenError, 403, "forbidden"),
    (e.CollectionNotFoundError, 404, "collection-not-found"),
    (e.AssetNotFoundError, 404, "asset-not-found"),
    (e.NotFoundError, 404, "not-found"),
    (e.CollectionMismatchError, 409, "collection-mismatch"),
    (e.StoreLockedError, 409, "collection-locked"),
    (e.AssetChangedError, 409, "asset-changed"),
    (e.ConflictError, 409, "conflict"),
    (e.LLMRateLimitedError, 429, "llm-rate-limited"),
    (e.LLMTimeoutError, 504, "llm-timeout"),
    (e.LLMOutputError, 502, "llm-bad-output"),
    (e.LLMError, 503, "llm-unavailable"),
    (e.StoreError, 503, "store-unavailable"),
    (e.ConfigurationError, 503, "misconfigured"),
)


def title(status: int) -> str:
    """The status phrase ("Unprocessable Entity"), or "Error" for a code HTTP does not name."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    request: Request[Any, Any, Any],
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    field: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[ProblemDetails]:
    body = ProblemDetails(
        type=f"/problems/{slug}" if slug else "about:blank",
        title=title(status),
        status=status,
        detail=detail,
        instance=request.url.path,
        field=field,
        errors=errors or None,
        request_id=request_id(request.scope),
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def status_of(exc: e.MMRagError) -> tuple[int, str]:
    """The HTTP status and problem slug of a domain error; (500, "internal-error") if unmapped."""
    for cls, status, slug in _STATUS:
        if isinstance(exc, cls):
            return status, slug
    return HTTP_500_INTERNAL_SERVER_ERROR, "internal-error"


def domain_error_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[ProblemDetails]:
    assert isinstance(exc, e.MMRagError)
    status, slug = status_of(exc)
    if status == HTTP_500_INTERNAL_SERVER_ERROR:
        log.error("unmapped error on %s", request.url.path, exc_info=exc)
        return problem(request, status, "internal error")
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    field = exc.field if isinstance(exc, e.InvalidFieldError) else None
    headers = None
    if isinstance(exc, e.LLMRateLimitedError) and exc.retry_after_s is not None:
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    if isinstance(exc, e.RangeNotSatisfiableError):
        headers = {"Content-Range": f"bytes */{exc.size}"}
    return problem(request, status, str(exc), slug=slug, field=field, headers=headers)


def http_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[ProblemDetails]:
    """Litestar's own errors (routing, parameters, body limits), headers kept (405's ``Allow``)."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    errors: list[dict[str, Any]] = []
    field: str | None = None
    if isinstance(exc, ValidationException):
        # A parameter that broke its rule is 422 and named; anything else Litestar could not
        # read is 400.
        errors = (
            [x for x in exc.extra if isinstance(x, dict)] if isinstance(exc.extra, list) else []
        )
        keys = [str(x["key"]) for x in errors if _is_field_error(x)]
        status = 422 if keys else 400
        field = keys[0] if len(keys) == 1 else None
    detail = exc.detail if status != 500 else "internal error"  # 503 etc. are ours
    slug = None
    headers = exc.headers
    if isinstance(exc, TooManyRequestsException):
        detail, headers = _rate_limited(exc.headers or {})
        slug = "rate-limited"
    if status == 413:
        # A route with a limit of its own (uploads to ingest) names it in ``opt``.
        limit = request.route_handler.opt.get("body_limit") or request.app.state.get(
            "max_upload_bytes"
        )
        detail = f"request body too large; uploads are limited to {limit} bytes"
        slug = "payload-too-large"
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.detail)
    return problem(request, status, detail, slug=slug, field=field, errors=errors, headers=headers)


def _rate_limited(headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The detail and headers of a 429 from the rate-limit middleware: its ``RateLimit-*``
    headers say the limit and when the window ends, which ``Retry-After`` repeats."""
    try:
        retry = max(1, int(headers.get("RateLimit-Reset", "")))
    except ValueError:
        retry = _RETRY_AFTER_FALLBACK_S
    limit = headers.get("RateLimit-Limit", "?")
    detail = (
        f"too many requests: at most {limit} a minute per API key (per client address without "
        f"one; http.rate_limit_per_minute); retry in {retry} s"
    )
    return detail, {**headers, "Retry-After": str(retry)}


def _is_field_error(item: dict[str, Any]) -> bool:
    return bool(item.get("key")) and "malformed" not in str(item.get("message", "")).lower()


def unexpected_error_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[ProblemDetails]:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(request, HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


EXCEPTION_HANDLERS = {
    e.MMRagError: domain_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "problem", "status_of", "title"]
