"""Serving an ingested file from the descriptor that was checked, with HTTP Range requests.

The service opens the file without following a final link, checks the open descriptor's size
and modification time against what was ingested, and hands the descriptor here: what is sent
is exactly what was checked, even if the path is swapped a moment later. ``Range: bytes=a-b``
(one range, also ``a-`` and ``-n``) answers 206 with ``Content-Range``, so browsers can seek in
video and audio; an unsatisfiable range answers 416 with ``Content-Range: bytes */size``; several
ranges at once are answered with the whole file (RFC 9110 allows ignoring Range).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import anyio
from litestar.response import Stream

from app.core.errors import RangeNotSatisfiableError

_CHUNK = 256 * 1024
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte a Range header asks for; None: the whole file."""
    if not header or "," in header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None  # a range unit we do not serve: the whole file, as RFC 9110 allows
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiableError(size)
        return max(0, size - n), size - 1
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiableError(size)
    end = min(int(last), size - 1) if last else size - 1
    if end < start:
        return None  # an invalid range is ignored
    return start, end


class FileStream(Stream):
    """A stream that keeps its own media type (Litestar would use the route's)."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = self.media_type
        return super().to_asgi_response(*args, **kwargs)


def _read(fd: int, start: int, end: int) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        try:
            position = start
            while position <= end:
                size = min(_CHUNK, end - position + 1)
                block = await anyio.to_thread.run_sync(os.pread, fd, size, position)
                if not block:
                    return
                position += len(block)
                yield block
        finally:
            os.close(fd)

    return chunks()


def file_response(
    fd: int,
    *,
    size: int,
    mtime: float,
    media_type: str,
    filename: str,
    range_header: str | None,
) -> FileStream:
    """Takes over ``fd`` (closed when the body is sent or the client goes away)."""
    try:
        wanted = byte_range(range_header, size)
    except RangeNotSatisfiableError:
        os.close(fd)
        raise
    start, end = wanted if wanted is not None else (0, size - 1)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(max(0, end - start + 1)),
        "Last-Modified": formatdate(mtime, usegmt=True),
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename)}",
    }
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return FileStream(
        _read(fd, start, end),
        status_code=206 if wanted is not None else 200,
        media_type=media_type or "application/octet-stream",
        headers=headers,
    )
