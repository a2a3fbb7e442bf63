"""Ingestion through the running service: what ``POST /v1/ingest`` and ``/v1/jobs`` call.

A job ingests either files uploaded with the request (streamed into
``<data dir>/uploads/<job id>/``, the library folder they are then served from) or files and
folders the service reads itself, named by path, which must lie under a folder the
configuration allows (``http.ingest_roots``): a path is checked as written (no ``..`` out of a
root) and again once resolved (no symbolic link out of one), and once more when its job runs.
Jobs run the ingestion pipeline with the service's own store and loaded models, so the
collection a search reads is the one the job writes: no second engine, no lock to fight over.
May import app.core, app.http and the ingestion pipeline.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import anyio

from app.core.collections import COLLECTION_NAME_PATTERN
from app.core.errors import (
    ConfigurationError,
    ForbiddenError,
    InvalidFieldError,
    NotFoundError,
)
from app.core.models import CollectionSpec
from app.core.ports import ImageTextEmbedder, TextEmbedder, VectorCollection, VectorStore
from app.http.jobs import IngestJobs, JobSource, new_job_id
from app.http.schemas import JobKind, JobOut
from app.http.uploads import UploadLimits, receive_form
from ingestion.discovery import discover, library_root
from ingestion.pipeline import IngestionPipeline, IngestReport, IngestRequest, ProgressSink
from ingestion.readers import ReadOptions

FILES_FIELD = "files"
MAX_TAGS = 32
MAX_TAG_CHARS = 128
_INCOMING = ".incoming"  # uploads still arriving: hidden, so no walk ever descends into them
_COLLECTION_NAME = re.compile(COLLECTION_NAME_PATTERN)

# (read options for a collection and tags, notices to pass on: "OCR is off…")
ReadSetup = Callable[[str, tuple[str, ...]], tuple[ReadOptions, list[str]]]


class AllowedRoots:
    """The server folders jobs may name paths under (``http.ingest_roots``)."""

    def __init__(self, roots: Sequence[Path]) -> None:
        # A root is compared as written (made absolute) and resolved: either may be how a
        # client names it, and a root may itself be a link (/media -> /mnt/media).
        self._written = [Path(os.path.normpath(r.absolute())) for r in roots]
        self._resolved = [r.resolve() for r in roots]

    def __bool__(self) -> bool:
        return bool(self._resolved)

    def contains(self, resolved: Path) -> bool:
        return any(resolved.is_relative_to(root) for root in self._resolved)

    def resolve(self, given: str, where: str) -> Path:
        """``given`` (as the client wrote it) resolved, when it may be ingested. Raises 403 for
        a path outside every root, lexically or through a link, and 404 for one that does not
        exist inside a root (outside them the file system is never looked at)."""
        if not self:
            msg = (
                "ingestion by path is off: this service may read no folder of its own. Set "
                "MMRAG_HTTP__INGEST_ROOTS to the folders it may ingest from, or upload the files "
                f"(multipart '{FILES_FIELD}')"
            )
            raise ForbiddenError(msg)
        written = Path(os.path.normpath(given))
        if not any(written.is_relative_to(r) for r in (*self._written, *self._resolved)):
            msg = (
                f"{where} {given!r} is outside the folders this service may ingest from "
                "(MMRAG_HTTP__INGEST_ROOTS)"
            )
            raise ForbiddenError(msg)
        try:
            resolved = Path(given).resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFoundError(f"{where} {given!r} does not exist on the server") from exc
        except (OSError, RuntimeError, ValueError) as exc:  # a loop of links, a NUL byte…
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ForbiddenError(f"{where} {given!r} cannot be read: {reason}") from exc
        if not self.contains(resolved):
            msg = (
                f"{where} {given!r} leads outside the folders this service may ingest from "
                "through a symbolic link; refused"
            )
            raise ForbiddenError(msg)
        return resolved


class PipelineRunner:
    """Runs a job's ingestion with the service's own store and models (``JobRunner``)."""

    def __init__(
        self,
        *,
        store: VectorStore,
        spec_for: Callable[[str], CollectionSpec],
        clip: ImageTextEmbedder,
        text: TextEmbedder,
        read_setup: ReadSetup,
        roots: AllowedRoots,
        data_dir: Path,
        write_batch_assets: int,
        require_index_settings: bool,
    ) -> None:
        """``require_index_settings``: build-time index settings were set explicitly, so an
        existing collection built otherwise is refused (as the CLI refuses it)."""
        self._store = store
        self._spec_for = spec_for
        self._clip = clip
        self._text = text
        self._read_setup = read_setup
        self._roots = roots
        self._data_dir = data_dir
        self._batch = write_batch_assets
        self._require_index_settings = require_index_settings

    def __call__(
        self, job: JobOut, source: JobSource, progress: ProgressSink, stop: threading.Event
    ) -> IngestReport:
        paths = tuple(Path(p) for p in source.paths)
        exclude: tuple[Path, ...] = ()
        if job.kind is JobKind.PATHS:
            # The configuration may have changed since the job was submitted (a resumed job).
            for path, given in zip(paths, source.given, strict=True):
                if not self._roots.contains(path):
                    msg = f"{given!r} is no longer under MMRAG_HTTP__INGEST_ROOTS; not ingested"
                    raise ConfigurationError(msg)
            exclude = (self._data_dir,)  # never the data directory, even inside a root
        name = job.collection
        collection: VectorCollection | None = None
        # A collection is created only when there is something to put in it: an upload of
        # nothing but unsupported files leaves no empty collection behind.
        if self._store.exists(name) or discover(paths, exclude=exclude).files:
            collection = self._store.open(
                self._spec_for(name),
                create=True,
                require_index_settings=self._require_index_settings,
            )
        options, notices = self._read_setup(name, tuple(job.tags))
        pipeline = IngestionPipeline(
            collection, self._clip, self._text, options, write_batch_assets=self._batch
        )
        request = IngestRequest(paths=paths, sync=job.sync, exclude=exclude)
        report = pipeline.run(request, progress, stop=stop)
        report.warnings.extend(notices)
        return report


class IngestService:
    """Submits jobs (an upload, or paths) and reports on them."""

    def __init__(
        self,
        jobs: IngestJobs,
        *,
        uploads_dir: Path,
        roots: AllowedRoots,
        limits: UploadLimits,
        default_collection: str,
    ) -> None:
        self._jobs = jobs
        self._uploads = uploads_dir.resolve()
        self._roots = roots
        self.limits = limits
        self._default_collection = default_collection

    @property
    def paths_allowed(self) -> bool:
        return bool(self._roots)

    def start(self) -> None:
        """Drop uploads a previous process was still receiving, then start the jobs."""
        shutil.rmtree(self._uploads / _INCOMING, ignore_errors=True)
        self._jobs.start()

    def stop(self) -> None:
        self._jobs.stop()

    async def upload(self, chunks: AsyncIterator[bytes], boundary: str) -> JobOut:
        """A job for the files of a multipart body (``files``, with optional ``collection``
        and comma-separated ``tags``), written to disk as they arrive."""
        job_id = new_job_id()
        incoming = self._uploads / _INCOMING / job_id
        folder = self._uploads / job_id
        try:
            form = await receive_form(
                chunks,
                boundary,
                incoming,
                self.limits,
                file_field=FILES_FIELD,
                text_fields=("collection", "tags"),
            )
            collection = self._collection(_single(form.fields, "collection"))
            tags = _tags(form.fields.get("tags", []))
            if not form.files:
                raise InvalidFieldError(FILES_FIELD, "send at least one file")
            await anyio.to_thread.run_sync(incoming.rename, folder)
            source = JobSource(paths=[str(folder)], roots=[str(folder)], given=[])
            return await anyio.to_thread.run_sync(
                lambda: self._jobs.submit(
                    job_id,
                    JobKind.UPLOAD,
                    collection=collection,
                    tags=tags,
                    sync=False,
                    source=source,
                )
            )
        except BaseException:
            with anyio.CancelScope(shield=True):  # a client that went away leaves nothing
                for leftover in (incoming, folder):
                    await anyio.to_thread.run_sync(shutil.rmtree, leftover, True)
            raise

    async def from_paths(
        self, paths: Sequence[str], *, collection: str | None, tags: Sequence[str], sync: bool
    ) -> JobOut:
        """A job for files and folders on the server, each checked against the allowed roots."""
        name = self._collection(collection)

        def submit() -> JobOut:
            resolved = [str(self._roots.resolve(p, f"paths[{i}]")) for i, p in enumerate(paths)]
            roots = [str(library_root(Path(p))) for p in resolved]
            source = JobSource(paths=resolved, roots=roots, given=list(paths))
            unique_tags = list(dict.fromkeys(tags))
            return self._jobs.submit(
                new_job_id(),
                JobKind.PATHS,
                collection=name,
                tags=unique_tags,
                sync=sync,
                source=source,
            )

        return await anyio.to_thread.run_sync(submit)

    def job(self, job_id: str) -> JobOut:
        return self._jobs.get(job_id)

    def recent(self, limit: int) -> list[JobOut]:
        return self._jobs.recent(limit)

    def _collection(self, name: str | None) -> str:
        if name is None:
            return self._default_collection
        if not _COLLECTION_NAME.fullmatch(name):
            msg = "use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
            raise InvalidFieldError("collection", msg)
        return name


def _single(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name, [])
    if len(values) > 1:
        raise InvalidFieldError(name, "send this field once")
    return values[0] if values else None


def _tags(values: Sequence[str]) -> list[str]:
    """Tags from form fields: comma-separated, and the field may be repeated."""
    tags = list(dict.fromkeys(t.strip() for v in values for t in v.split(",") if t.strip()))
    if len(tags) > MAX_TAGS:
        raise InvalidFieldError("tags", f"at most {MAX_TAGS} tags")
    for tag in tags:
        if len(tag) > MAX_TAG_CHARS:
            raise InvalidFieldError("tags", f"a tag has at most {MAX_TAG_CHARS} characters")
    return tags


__all__ = ["FILES_FIELD", "AllowedRoots", "IngestService", "PipelineRunner", "ReadSetup"]
