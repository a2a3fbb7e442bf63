"""Ingest jobs: queued, run one at a time in a worker thread, their state kept on disk.

Ingestion is CPU-heavy (decoding, OCR, the models), so one job runs at a time and the rest
wait their turn; the event loop never runs any of it. Every state change and every progress
step is written to ``<data dir>/jobs/<id>.json`` (written aside, then renamed over: a reader
never sees half a file), so a job outlives the request that submitted it and the client that
polls it.

A job left queued, running or interrupted by a previous process is queued again when the
service starts, and its record counts the resumption: ingestion is idempotent (deterministic
ids; unchanged files are skipped; a half-written asset is repaired), so running it again
finishes it without duplicates. When the service stops, the running job stops after the batch
it is writing (``interrupted``) and the queued ones stay queued.

What a job reads is recorded as server paths (``JobSource``); what clients see (``JobOut``)
names library paths only, as hits do. May import app.core, app.http.schemas and the ingestion
pipeline's report types.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path, PurePath
from typing import Any, Protocol

import msgspec

from app.core.errors import MMRagError, NotFoundError
from app.core.models import library_path
from app.http.schemas import FileResultOut, JobKind, JobOut, JobStatus, job_links
from ingestion.pipeline import IngestReport, Outcome, ProgressSink

log = logging.getLogger(__name__)

_UNFINISHED = frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.INTERRUPTED})


class JobSource(msgspec.Struct, kw_only=True, frozen=True):
    """What a job reads, in server paths (never sent to a client)."""

    paths: list[str]  # resolved, as the pipeline gets them
    roots: list[str]  # the library folders they stand for: results name paths below them
    given: list[str]  # the paths as the client named them (a missing one is shown so)


class JobRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A job's file: what clients see, and what it reads."""

    job: JobOut
    source: JobSource


class JobRunner(Protocol):
    """Runs a job's ingestion, reporting progress to ``progress`` and ending early once
    ``stop`` is set (the report says so). Raises MMRagError when the job cannot run at all
    (its message is the job's ``error``)."""

    def __call__(
        self, job: JobOut, source: JobSource, progress: ProgressSink, stop: threading.Event
    ) -> IngestReport:
        """The report of the run."""
        ...


def new_job_id() -> str:
    return uuid.uuid4().hex


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class IngestJobs:
    def __init__(self, folder: Path, run: JobRunner) -> None:
        self._folder = folder
        self._run = run
        self._records: dict[str, JobRecord] = {}
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what the service calls ------------------------------------------------------------

    def start(self) -> None:
        """Load the records a previous process left, queue its unfinished jobs again (oldest
        first), and start the worker."""
        self._folder.mkdir(parents=True, exist_ok=True)
        for leftover in self._folder.glob("*.json.tmp"):
            leftover.unlink(missing_ok=True)
        for file in self._folder.glob("*.json"):
            try:
                record = msgspec.json.decode(file.read_bytes(), type=JobRecord)
            except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("ignoring the unreadable job record %s: %s", file.name, exc)
                continue
            self._records[record.job.id] = record
        unfinished = sorted(
            (r.job for r in self._records.values() if r.job.status in _UNFINISHED),
            key=lambda job: (job.created_at, job.id),
        )
        for job in unfinished:
            log.info("resuming ingest job %s (left %s by the previous process)", job.id, job.status)
            self._update(
                job.id,
                status=JobStatus.QUEUED,
                resumed=job.resumed + 1,
                files_total=None,
                files_done=0,
                current_file=None,
            )
            self._queue.put(job.id)
        self._thread = threading.Thread(target=self._work, name="ingest-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the running job after the batch it is writing, and wait for the worker (blocks)."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()

    def submit(
        self,
        job_id: str,
        kind: JobKind,
        *,
        collection: str,
        tags: Sequence[str],
        sync: bool,
        source: JobSource,
    ) -> JobOut:
        job = JobOut(
            id=job_id,
            kind=kind,
            status=JobStatus.QUEUED,
            collection=collection,
            tags=list(tags),
            sync=sync,
            created_at=_now(),
            links=job_links(job_id, collection),
        )
        record = JobRecord(job=job, source=source)
        self._save(record)
        with self._lock:
            self._records[job_id] = record
        self._queue.put(job_id)
        return job

    def get(self, job_id: str) -> JobOut:
        with self._lock:
            record = self._records.get(job_id)
        if record is None:
            raise NotFoundError(f"job {job_id!r} does not exist")
        return record.job

    def recent(self, limit: int) -> list[JobOut]:
        with self._lock:
            jobs = [r.job for r in self._records.values()]
        jobs.sort(key=lambda job: (job.created_at, job.id), reverse=True)
        return jobs[:limit]

    # -- the worker ------------------------------------------------------------------------

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None and not self._stopping.is_set():
            try:
                self._run_one(job_id)
            except Exception:  # its record could not be written (disk full…)
                log.exception("ingest job %s: its record could not be kept", job_id)

    def _run_one(self, job_id: str) -> None:
        record = self._update(
            job_id,
            status=JobStatus.RUNNING,
            started_at=_now(),
            files_total=None,
            files_done=0,
            current_file=None,
            error=None,
        )
        shown = _Shown(record.source)
        try:
            progress = _Progress(partial(self._update, job_id))
            report = self._run(record.job, record.source, progress, self._stopping)
        except MMRagError as exc:
            log.warning("ingest job %s could not run: %s", job_id, exc)
            self._finish(job_id, JobStatus.FAILED, error=shown.text(str(exc)))
            return
        except Exception:  # a bug: logged whole, the job marked failed, the worker lives on
            log.exception("ingest job %s failed", job_id)
            self._finish(job_id, JobStatus.FAILED, error="internal error; see the service log")
            return
        if report.stopped:
            log.info("ingest job %s interrupted; it resumes when the service starts", job_id)
            self._update(job_id, status=JobStatus.INTERRUPTED, current_file=None)
            return
        self._finish(
            job_id,
            JobStatus.SUCCEEDED,
            counts={o.value: n for o in Outcome if (n := report.count(o))},
            results=[
                FileResultOut(
                    path=shown.path(r.path),
                    outcome=r.outcome.value,
                    reason=shown.text(r.reason) if r.reason else None,
                    asset_id=r.asset_id,
                    segments=r.segments,
                )
                for r in report.results
            ],
            unsupported=[shown.path(p) for p in report.unsupported],
            missing=[shown.given(p) for p in report.missing_roots],
            warnings=[shown.text(w) for w in report.warnings],
            timings_s={stage: round(s, 3) for stage, s in report.timings_s.items()},
        )

    def _finish(self, job_id: str, status: JobStatus, **changes: Any) -> None:
        job = self.get(job_id)
        total = job.files_done if job.files_total is None else job.files_total
        self._update(
            job_id,
            status=status,
            finished_at=_now(),
            current_file=None,
            files_total=total,
            **changes,
        )

    def _update(self, job_id: str, **changes: Any) -> JobRecord:
        with self._lock:
            old = self._records[job_id]
            record = JobRecord(job=msgspec.structs.replace(old.job, **changes), source=old.source)
            self._records[job_id] = record
        self._save(record)  # only the worker writes a job once it is queued: no reordering
        return record

    def _save(self, record: JobRecord) -> None:
        target = self._folder / f"{record.job.id}.json"
        aside = target.with_name(target.name + ".tmp")
        aside.write_bytes(msgspec.json.encode(record))
        aside.replace(target)


class _Progress:
    """The pipeline's progress, into the job's record.

    The pipeline reports from two threads (a file that fails to read is reported by its reader
    thread), hence the lock around the count."""

    def __init__(self, update: Callable[..., object]) -> None:
        self._update = update
        self._done = 0
        self._lock = threading.Lock()

    def start(self, total: int) -> None:
        self._update(files_total=total)

    def advance(self, done: int, description: str) -> None:
        with self._lock:
            self._done += done
            self._update(files_done=self._done, current_file=description)


class _Shown:
    """Server paths as clients see them: the library folder's name and the path below it."""

    def __init__(self, source: JobSource) -> None:
        self._roots = sorted((PurePath(r) for r in source.roots), key=lambda r: -len(str(r)))
        self._given = dict(zip(source.paths, source.given, strict=False))

    def path(self, path: str) -> str:
        for root in self._roots:
            if PurePath(path).is_relative_to(root):
                return library_path(path, str(root))
        return PurePath(path).name

    def given(self, path: str) -> str:
        return self._given.get(path) or self.path(path)

    def text(self, text: str) -> str:
        for root in self._roots:
            text = text.replace(str(root), root.name)
        return text


__all__ = [
    "IngestJobs",
    "JobRecord",
    "JobRunner",
    "JobSource",
    "new_job_id",
]
