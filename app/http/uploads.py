"""Receiving uploaded files: a multipart body streamed part by part straight into a folder.

Litestar's ``request.form()`` spools every file to the system's temporary folder and hands the
form over only once the whole body has arrived. An ingest upload may be gigabytes, so here each
file part is written, as it arrives, to its place in the job's folder under ``<data dir>/
uploads/``, and a per-job limit (files, bytes) stops the upload the moment it is crossed (413),
not after the body has been read. The parser is the one Litestar itself uses (``multipart``).

File names are the client's and so untrusted: each is reduced to safe path parts (no folder
above the job's, no hidden file, no separators or control characters), and a name given twice
gets a numbered twin. A relative folder in the name (``animals/cat.jpg``) is kept, so sidecar
captions and ``captions.csv`` stay beside the pictures they describe. May import anyio,
multipart and app.core.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import anyio
from multipart import (  # type: ignore[import-untyped]
    MultipartSegment,
    ParserError,
    ParserLimitReached,
    PushMultipartParser,
)

from app.core.errors import InputError, InvalidFieldError, PayloadTooLargeError

MAX_FIELD_BYTES = 32 * 1024  # a text field beside the files (32 tags in 4-byte characters)
MAX_NAME_BYTES = 200  # each part of a file name, in UTF-8 (file systems allow 255)
MAX_DEPTH = 8  # folders kept from a file name
# Separators, characters Windows refuses, and control characters; the rest is kept.
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]')


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_files: int  # http.max_ingest_files
    max_bytes: int  # http.max_ingest_bytes: all files of one upload together


@dataclass(slots=True)
class ReceivedForm:
    files: list[str] = field(default_factory=list)  # as stored, relative to the folder
    bytes: int = 0
    fields: dict[str, list[str]] = field(default_factory=dict)  # the text fields


def safe_name(filename: str) -> str:
    """A client's file name as a safe relative path: ``../../etc/passwd`` → ``etc/passwd``,
    ``C:\\photos\\.cat.jpg`` → ``C_/photos/cat.jpg``; "upload" when nothing usable is left."""
    text = unicodedata.normalize("NFC", filename).replace("\\", "/")
    parts = []
    for raw in text.split("/"):
        part = _UNSAFE.sub("_", raw).strip().lstrip(".").rstrip(". ")
        if part:
            parts.append(_shortened(part))
    return "/".join(parts[-MAX_DEPTH - 1 :]) or "upload"


def _shortened(part: str) -> str:
    if len(part.encode()) <= MAX_NAME_BYTES:
        return part
    suffix = PurePosixPath(part).suffix
    suffix = suffix if len(suffix.encode()) <= 16 else ""
    stem = part[: len(part) - len(suffix)]
    while len((stem + suffix).encode()) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem + suffix


def _free(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2.ext``, ``name-3.ext``… when this upload already holds it."""
    candidate, n = name, 1
    while candidate.casefold() in taken:
        n += 1
        path = PurePosixPath(name)
        candidate = str(path.with_name(f"{path.stem}-{n}{path.suffix}"))
    taken.add(candidate.casefold())
    return candidate


def _create(target: Path, filename: str) -> BinaryIO:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.open("xb")
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        # "a" and "a/b.jpg" in one upload: a file and a folder cannot share a name.
        msg = f"{filename!r} clashes with another file or folder of this upload"
        raise InvalidFieldError("files", msg) from exc


async def receive_form(
    chunks: AsyncIterator[bytes],
    boundary: str,
    folder: Path,
    limits: UploadLimits,
    *,
    file_field: str,
    text_fields: Collection[str],
) -> ReceivedForm:
    """Write every ``file_field`` part of the body into ``folder`` (created), and collect the
    ``text_fields``. Raises PayloadTooLargeError over a limit, InvalidFieldError for a part
    that has no place in the form, InputError for a body that is not sound multipart. The
    caller removes ``folder`` when this raises."""
    form = ReceivedForm()
    writer = _Writer(folder, limits, form, file_field, frozenset(text_fields))
    await anyio.to_thread.run_sync(lambda: folder.mkdir(parents=True))
    try:
        with PushMultipartParser(
            boundary.encode("latin-1"),
            max_header_size=8192,  # a part's Content-Disposition, with its file name
            max_segment_count=limits.max_files + 64,  # the files and a few text fields
        ) as parser:
            async for chunk in chunks:
                if chunk:
                    for event in parser.parse(chunk):
                        await writer.handle(event)
                if parser.closed:
                    break
            if not parser.closed:  # the end of the body: an unfinished one fails below
                for event in parser.parse(b""):
                    await writer.handle(event)
    except ParserLimitReached as exc:
        msg = f"the multipart body is over a limit ({exc}); at most {limits.max_files} files"
        raise PayloadTooLargeError(msg) from exc
    except ParserError as exc:
        raise InputError(f"the body is not valid multipart/form-data: {exc}") from exc
    finally:
        await writer.close()
    return form


class _Writer:
    """Receives the parser's events: a part's headers, its data in pieces, its end."""

    def __init__(
        self,
        folder: Path,
        limits: UploadLimits,
        form: ReceivedForm,
        file_field: str,
        text_fields: frozenset[str],
    ) -> None:
        self._folder = folder
        self._limits = limits
        self._form = form
        self._file_field = file_field
        self._text_fields = text_fields
        self._taken: set[str] = set()
        self._part: MultipartSegment | None = None
        self._file: BinaryIO | None = None
        self._text = bytearray()

    async def handle(self, event: MultipartSegment | bytes | bytearray | None) -> None:
        if isinstance(event, MultipartSegment):
            await self._begin(event)
        elif event is None:
            await self._end()
        elif event:
            await self._data(event)

    async def _begin(self, part: MultipartSegment) -> None:
        self._part = part
        name = part.name or ""
        if name == self._file_field:
            if not part.filename:
                raise InvalidFieldError(name, "each part must be a file (with a file name)")
            if len(self._form.files) >= self._limits.max_files:
                limit = self._limits.max_files
                msg = f"more than {limit} files; at most {limit} per job (http.max_ingest_files)"
                raise PayloadTooLargeError(msg)
            stored = _free(safe_name(part.filename), self._taken)
            self._form.files.append(stored)
            target = self._folder / stored
            self._file = await anyio.to_thread.run_sync(_create, target, part.filename)
        elif name in self._text_fields:
            if part.filename:
                raise InvalidFieldError(name, "must be a text field, not a file")
            self._text.clear()
        else:
            known = ", ".join([self._file_field, *sorted(self._text_fields)])
            raise InvalidFieldError(name or "(no name)", f"is not a known field; send {known}")

    async def _data(self, data: bytes | bytearray) -> None:
        if self._file is not None:
            self._form.bytes += len(data)
            if self._form.bytes > self._limits.max_bytes:
                limit = self._limits.max_bytes
                msg = (
                    f"the files add up to more than {limit} bytes; at most {limit} per job "
                    "(http.max_ingest_bytes)"
                )
                raise PayloadTooLargeError(msg)
            await anyio.to_thread.run_sync(self._file.write, data)
            return
        self._text += data
        if len(self._text) > MAX_FIELD_BYTES:
            name = self._part.name if self._part else ""
            raise InvalidFieldError(name, f"is over {MAX_FIELD_BYTES} bytes")

    async def _end(self) -> None:
        part, self._part = self._part, None
        if self._file is not None:
            await self.close()
        elif part is not None:
            try:
                value = self._text.decode(part.charset or "utf-8")
            except (UnicodeDecodeError, LookupError) as exc:
                raise InvalidFieldError(part.name, f"cannot be decoded: {exc}") from exc
            self._form.fields.setdefault(part.name, []).append(value)

    async def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await anyio.to_thread.run_sync(file.close)


__all__ = ["ReceivedForm", "UploadLimits", "receive_form", "safe_name"]
