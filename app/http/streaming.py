"""Server-sent events for answers: ``hits`` first (a client shows thumbnails at once), then
text ``delta``s, then the final ``answer`` (citations, status). A failure after the stream
began cannot change the status code any more: it becomes one ``error`` event carrying the
problem details the same failure gets on a plain request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from litestar.response import ServerSentEvent, ServerSentEventMessage

from app.core.answering import Delta
from app.core.errors import MMRagError
from app.core.models import Answer
from app.core.qa import QAEvent, Retrieved
from app.http.problems import status_of, title
from app.http.schemas import search_out


class EventStream(ServerSentEvent):
    """Server-sent events from a route that answers JSON otherwise: Litestar would label the
    stream with the route's JSON media type, so this one keeps its own."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = "text/event-stream"
        return super().to_asgi_response(*args, **kwargs)


def sse_events(
    events: AsyncIterator[QAEvent],
    collection: str,
    *,
    final: Callable[[Answer, Retrieved], Any],
    dashboard: str | None = None,
) -> AsyncIterator[ServerSentEventMessage]:
    async def generate() -> AsyncIterator[ServerSentEventMessage]:
        retrieved: Retrieved | None = None
        try:
            async for event in events:
                if isinstance(event, Retrieved):
                    retrieved = event
                    hits = search_out(event.retrieval, collection, dashboard=dashboard)
                    yield _message("hits", hits)
                elif isinstance(event, Delta):
                    yield _message("delta", {"text": event.text})
                else:
                    assert retrieved is not None  # the flow always retrieves first
                    yield _message("answer", final(event, retrieved))
        except MMRagError as exc:
            yield _message("error", stream_problem(exc))

    return generate()


def _message(event: str, data: Any) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=event, data=msgspec.json.encode(data).decode())


def stream_problem(exc: MMRagError) -> dict[str, Any]:
    status, slug = status_of(exc)
    return {
        "type": f"/problems/{slug}",
        "title": title(status),
        "status": status,
        "detail": str(exc) if status != 500 else "internal error",
    }
