"""What the service does around every request: request ids, logs, rate limits and CORS.

- **Request ids.** Each request gets one: the client's ``X-Request-ID`` when it is a sane token
  (letters, digits, ``.``, ``_``, ``:``, ``-``; up to 128), else a new one. It is kept in the
  request's scope state, sent back as ``X-Request-ID`` on every response (a ``before_send``
  hook, so unrouted 404s and CORS preflights get it too), put in every problem-details body
  (app/http/problems.py) and on every log line written while the request is handled.
- **Logs**: readable lines, or JSON lines with ``log_format=json``; one access line per request
  (method, route, status, time), and the request-latency metric, by
  ``RequestContextMiddleware``, the outermost middleware.
- **Rate limits** (Litestar's ``RateLimitMiddleware``): per API key when the request carries a
  valid one, else per client address; outside the middleware, ahead of the key check, so a
  client guessing keys is limited too. A 429 is a problem with ``Retry-After`` (problems.py).
- **CORS** (Litestar's ``CORSConfig``): none unless origins are configured.

May import litestar, app.settings and app.http (auth, metrics).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from litestar.config.cors import CORSConfig
from litestar.connection import Request
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.logging.config import LoggingConfig
from litestar.middleware import ASGIMiddleware, DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address
from litestar.types import ASGIApp, Message, Middleware, Receive, Scope, Send

from app.http.auth import METRICS_PATH, PUBLIC_PATHS, ApiKeyMiddleware, ApiKeys, presented_key
from app.http.metrics import Metrics
from app.settings import HttpSettings, Settings

access_log = logging.getLogger("app.http.access")

REQUEST_ID = "X-Request-ID"
_REQUEST_ID_KEY = "request_id"  # in the scope's state
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Probes and scrapes come every few seconds: their access lines are DEBUG.
_QUIET_PATHS = frozenset((*PUBLIC_PATHS, METRICS_PATH))
_current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# -- request ids -------------------------------------------------------------------------------


def request_id(scope: Scope) -> str:
    """The request's id: the one already given, the client's sane ``X-Request-ID``, or new."""
    state: dict[str, Any] = scope.setdefault("state", {})
    found = state.get(_REQUEST_ID_KEY)
    if isinstance(found, str):
        return found
    sent = next((v for k, v in scope.get("headers", ()) if k.lower() == b"x-request-id"), b"")
    given = sent.decode("latin-1").strip()
    chosen = given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex
    state[_REQUEST_ID_KEY] = chosen
    return chosen


async def send_request_id(message: Message, scope: Scope) -> None:
    """``before_send`` hook: every HTTP response says which request it answers."""
    if message["type"] == "http.response.start":
        MutableScopeHeaders.from_message(message)[REQUEST_ID] = request_id(scope)


class RequestContextMiddleware(ASGIMiddleware):
    """Outermost: the request id on the log lines written meanwhile, then the access line and
    the latency metric. Errors raised by the middlewares inside it (429, 401) are answered
    outside it, so their status is read from the exception."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, metrics: Metrics, *, log_requests: bool) -> None:
        self._metrics = metrics
        self._log_requests = log_requests

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        token = _current_request_id.set(request_id(scope))
        started = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self._metrics.in_flight.inc()
        try:
            await next_app(scope, receive, observed)
        except HTTPException as exc:
            status = exc.status_code
            raise
        finally:
            self._metrics.in_flight.dec()
            self._done(scope, status, time.perf_counter() - started)
            _current_request_id.reset(token)

    def _done(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("path_template") or "unmatched"  # never the raw path: cardinality
        method = str(scope.get("method", "GET"))
        self._metrics.observe_request(method, route, status, seconds)
        if not self._log_requests:
            return
        path = scope["path"]
        access_log.log(
            logging.DEBUG if path in _QUIET_PATHS else logging.INFO,
            "%s %s %d %.1f ms",
            method,
            path,
            status,
            seconds * 1000,
            extra={
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
            },
        )


# -- logs --------------------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Puts the id of the request being handled (or None) on every record, as it is written:
    handlers may format later, in another thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _current_request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """Readable lines: time, level, logger, ``[request id]`` when there is one, message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        found = getattr(record, "request_id", None)
        record.request = f" [{found}]" if found else ""
        return super().formatMessage(record)


_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request",
    "request_id",
}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, request_id, the fields a
    line was given (``extra=``), and the exception's traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if found := getattr(record, "request_id", None):
            entry["request_id"] = found
        entry.update(
            (k, v) for k, v in vars(record).items() if k not in _RECORD_FIELDS and k[:1] != "_"
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def logging_config(settings: Settings) -> LoggingConfig:
    """Every logger through one stderr handler, at ``log_level``, in ``log_format``. Lines are
    written as they are logged, as uvicorn writes its own."""
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    config = LoggingConfig(
        formatters={"mmrag": {"()": formatter}},
        filters={"request_id": {"()": RequestIdFilter}},
        handlers={
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "mmrag",
                "filters": ["request_id"],
            }
        },
        root={"handlers": ["console"], "level": settings.log_level},
        loggers={"litestar": {"level": settings.log_level, "propagate": True}},
    )
    config.handlers.pop("queue_listener", None)  # Litestar's default, used by nothing here
    return config


# -- the middleware stack ----------------------------------------------------------------------


def middleware(http: HttpSettings, metrics: Metrics) -> list[Middleware]:
    """Outermost first: request context (ids, access log, latency), the rate limit, the keys."""
    keys = ApiKeys([k.get_secret_value() for k in http.api_keys])
    public = (*PUBLIC_PATHS, METRICS_PATH) if http.metrics_public else PUBLIC_PATHS
    stack: list[Middleware] = [RequestContextMiddleware(metrics, log_requests=http.access_log)]
    if (limit := rate_limit(http, keys)) is not None:
        stack.append(limit)
    if keys:
        stack.append(ApiKeyMiddleware(keys, public=public))
    return stack


# -- rate limits -------------------------------------------------------------------------------


def rate_limit(http: HttpSettings, keys: ApiKeys) -> DefineMiddleware | None:
    """The rate-limit middleware, or None when the limit is off."""
    per_minute = http.requests_per_minute
    if per_minute == 0:
        return None
    exempt = re.compile("|".join(f"{re.escape(p)}(?:/|$)" for p in http.rate_limit_exempt) or "$^")

    def limited(request: Request[Any, Any, Any]) -> bool:
        return not exempt.match(request.scope["path"])

    def identity(request: Request[Any, Any, Any]) -> str:
        """A valid key's number (never the key), or the client's address."""
        key = presented_key(request.headers)
        number = keys.index(key) if key is not None and keys else None
        return f"key:{number}" if number is not None else f"address:{get_remote_address(request)}"

    config = RateLimitConfig(
        rate_limit=("minute", per_minute),
        identifier_for_request=identity,
        check_throttle_handler=limited,
    )
    return config.middleware


# -- CORS --------------------------------------------------------------------------------------

CORS_METHODS = ["GET", "HEAD", "POST", "DELETE", "OPTIONS"]
CORS_HEADERS = ["authorization", "x-api-key", "content-type", "x-request-id", "range"]
CORS_EXPOSED = [
    REQUEST_ID,
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "Content-Range",
    "Content-Disposition",
    "Location",
]


def cors(http: HttpSettings) -> CORSConfig | None:
    """CORS for the configured origins; None (no CORS headers at all) without any. Keys travel
    in headers, never cookies, so credentials stay off."""
    if not http.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(http.cors_origins),
        allow_methods=CORS_METHODS,  # type: ignore[arg-type]
        allow_headers=CORS_HEADERS,
        expose_headers=CORS_EXPOSED,
        allow_credentials=False,
    )


__all__ = [
    "REQUEST_ID",
    "RequestContextMiddleware",
    "cors",
    "logging_config",
    "middleware",
    "rate_limit",
    "request_id",
    "send_request_id",
]
