"""Ingesting through a running service: ``python -m ingestion ingest --via URL PATH...``.

The embedded engine lets one process at a time open a collection's directory, and a running
service holds it; a local run would fail with "locked". This client hands the work to the
service instead (``POST /v1/ingest``) and follows the job (``GET /v1/jobs/{id}``), turning its
state into the same ``ProgressSink`` calls and the same ``IngestReport`` a local run produces:
the CLI draws the same bar, prints the same summary and exits with the same codes.

Two ways to hand over the files:

- paths (the default), absolute and resolved, for a service that reads the same folders (the
  compose one-shot job shares the media folder with it); the service refuses paths outside the
  folders it allows (``MMRAG_HTTP__INGEST_ROOTS``);
- uploads (``--upload``), for a service elsewhere: the files found here, with the captions
  beside them (``photo.jpg.txt``, ``talk.srt``, ``captions.csv``), in as many jobs as the
  service's per-upload limits (``GET /v1/ingest/limits``) require.

May import httpx, msgspec, app.core and ingestion; never app.http (this is a client of it).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from app.core.errors import ConfigurationError, InputError
from ingestion.discovery import (
    AUDIO_SUFFIXES,
    MANIFEST_NAMES,
    SIDECAR_SUFFIX,
    TRANSCRIPT_SUFFIXES,
    VIDEO_SUFFIXES,
    discover,
)
from ingestion.pipeline import FileResult, IngestReport, Outcome, ProgressSink

API_KEY_ENV = "MMRAG_API_KEY"
_FINISHED = frozenset({"succeeded", "failed", "interrupted"})


class _FileResult(msgspec.Struct):
    path: str
    outcome: str
    reason: str | None = None
    asset_id: str | None = None
    segments: int = 0


class Job(msgspec.Struct):
    """The parts of the service's job this client reads (unknown fields are ignored)."""

    id: str
    status: str
    collection: str
    files_total: int | None = None
    files_done: int = 0
    current_file: str | None = None
    results: list[_FileResult] = []
    unsupported: list[str] = []
    missing: list[str] = []
    warnings: list[str] = []
    timings_s: dict[str, float] = {}
    error: str | None = None


class Limits(msgspec.Struct):
    max_files: int
    max_bytes: int
    paths: bool


class _Problem(msgspec.Struct):
    status: int
    detail: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class Upload:
    name: str  # as sent: the library folder's name and the path below it
    path: Path
    size: int


@dataclass(slots=True)
class UploadPlan:
    batches: list[list[Upload]]  # one job each, within the service's limits
    report: IngestReport  # what was decided here: unsupported, missing, refused, too large


class ServiceClient:
    """The ingest routes of a running service, over HTTP."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        """``api_key``: None takes it from ``$MMRAG_API_KEY``."""
        api_key = api_key or os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, transport=transport, timeout=timeout_s
        )

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def limits(self) -> Limits:
        return msgspec.json.decode(self._call("GET", "/v1/ingest/limits").content, type=Limits)

    def submit_paths(
        self, paths: Sequence[Path], *, collection: str, tags: Sequence[str], sync: bool
    ) -> Job:
        body = {
            "paths": [str(p) for p in paths],
            "collection": collection,
            "tags": list(tags),
            "sync": sync,
        }
        return self._job(self._call("POST", "/v1/ingest", json=body))

    def submit_upload(
        self, uploads: Sequence[Upload], *, collection: str, tags: Sequence[str]
    ) -> Job:
        with contextlib.ExitStack() as files:
            parts = [
                (
                    "files",
                    (u.name, files.enter_context(u.path.open("rb")), "application/octet-stream"),
                )
                for u in uploads
            ]
            fields = {"collection": collection, **({"tags": ",".join(tags)} if tags else {})}
            return self._job(self._call("POST", "/v1/ingest", data=fields, files=parts))

    def job(self, job_id: str) -> Job:
        return self._job(self._call("GET", f"/v1/jobs/{job_id}"))

    def collection_stats(self, name: str) -> dict[str, Any]:
        stats: dict[str, Any] = self._call("GET", f"/v1/collections/{name}").json()
        return stats

    def follow(self, job: Job, progress: ProgressSink | None, *, poll_s: float = 0.5) -> Job:
        """Poll ``job`` until it finishes, reporting its progress to ``progress``."""
        started, done = False, 0
        while True:
            if progress is not None and job.files_total is not None and not started:
                progress.start(job.files_total)
                started = True
            if progress is not None and started and job.files_done > done:
                progress.advance(job.files_done - done, job.current_file or "")
                done = job.files_done
            if job.status in _FINISHED:
                break
            time.sleep(poll_s)
            job = self.job(job.id)
        if job.status == "failed":
            raise InputError(f"job {job.id} could not run: {job.error}")
        if job.status == "interrupted":
            msg = (
                f"the service stopped during job {job.id}; it goes on when the service starts "
                f"again (GET {self.base_url}/v1/jobs/{job.id})"
            )
            raise InputError(msg)
        return job

    def _job(self, response: httpx.Response) -> Job:
        return msgspec.json.decode(response.content, type=Job)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            msg = f"cannot reach the service at {self.base_url}: {exc} (is it running?)"
            raise ConfigurationError(msg) from exc
        if response.is_success:
            return response
        detail = _detail(response)
        if response.status_code == httpx.codes.UNAUTHORIZED:
            msg = f"the service refused the API key ({detail}); pass --api-key or set {API_KEY_ENV}"
            raise ConfigurationError(msg)
        raise InputError(f"the service refused {method} {path} ({response.status_code}): {detail}")


def _detail(response: httpx.Response) -> str:
    try:
        return msgspec.json.decode(response.content, type=_Problem).detail
    except (msgspec.DecodeError, msgspec.ValidationError):
        return response.text[:200] or response.reason_phrase


# The CLI's progress bar around a run: ``show(run)`` calls ``run(sink)`` (sink None: quiet).
Show = Callable[[Callable[[ProgressSink | None], IngestReport]], IngestReport]
Say = Callable[[str], None]


def ingest_paths(
    client: ServiceClient,
    paths: Sequence[Path],
    *,
    collection: str,
    tags: Sequence[str],
    sync: bool,
    show: Show,
    say: Say,
) -> IngestReport:
    """One job for the paths, given absolute and resolved (the service reads them itself)."""
    job = client.submit_paths(
        [p.resolve() for p in paths], collection=collection, tags=tags, sync=sync
    )
    say(f"job {job.id} on {client.base_url}")
    return show(_followed(client, job, {}))


def ingest_uploads(
    client: ServiceClient,
    paths: Sequence[Path],
    *,
    collection: str,
    tags: Sequence[str],
    exclude: Sequence[Path],
    show: Show,
    say: Say,
) -> IngestReport:
    """The files found under ``paths``, uploaded in as many jobs as the limits require, one
    after the other; results name the files by their paths here."""
    plan = plan_uploads(paths, client.limits(), exclude=exclude)
    reports = [plan.report]
    for n, batch in enumerate(plan.batches, 1):
        size = sum(u.size for u in batch)
        say(f"uploading {len(batch)} files ({size / 1e6:.1f} MB), job {n} of {len(plan.batches)}")
        job = client.submit_upload(batch, collection=collection, tags=tags)
        say(f"job {job.id} on {client.base_url}")
        here = {f"{job.id}/{u.name}": str(u.path) for u in batch}
        reports.append(show(_followed(client, job, here)))
    return merge(reports)


def _followed(
    client: ServiceClient, job: Job, here: dict[str, str]
) -> Callable[[ProgressSink | None], IngestReport]:
    """Following ``job`` to its report; ``here`` maps its paths to this side's (uploads)."""
    return lambda sink: report_of(client.follow(job, sink), lambda p: here.get(p, p))


def report_of(job: Job, local: Callable[[str], str] = str) -> IngestReport:
    """A finished job as the report a local run would have made; ``local`` maps the job's
    library paths back to what this side knows them as (an uploaded file's own path)."""
    return IngestReport(
        results=[
            FileResult(local(r.path), Outcome(r.outcome), r.reason, r.segments, r.asset_id)
            for r in job.results
        ],
        unsupported=list(job.unsupported),
        missing_roots=list(job.missing),
        warnings=list(job.warnings),
        timings_s=dict(job.timings_s),
    )


def merge(reports: Sequence[IngestReport]) -> IngestReport:
    merged = IngestReport()
    for report in reports:
        merged.results.extend(report.results)
        merged.unsupported.extend(report.unsupported)
        merged.missing_roots.extend(report.missing_roots)
        merged.warnings.extend(report.warnings)
        for stage, seconds in report.timings_s.items():
            merged.timings_s[stage] += seconds
    return merged


# -- uploads ----------------------------------------------------------------------------------


def plan_uploads(paths: Sequence[Path], limits: Limits, *, exclude: Sequence[Path]) -> UploadPlan:
    """The files under ``paths`` to upload, with their captions, in batches within ``limits``.

    Files are batched in path order, each with its sidecars, and every batch that holds a file
    of a folder also holds that folder's caption manifests: the service reads captions from
    beside the files, as ingestion does here.
    """
    found = discover(paths, exclude=exclude)
    report = IngestReport(
        unsupported=[str(p) for p in found.unsupported],
        missing_roots=[str(p) for p in found.missing],
        results=[FileResult(str(r.path), Outcome.FAILED, r.reason) for r in found.refused],
    )
    names = _RootNames()
    batches: list[list[Upload]] = []
    batch: list[Upload] = []
    for file in sorted(found.files, key=lambda f: f.path):
        unit = [_upload(file.path, file.root, names), *_companions(file.path, file.root, names)]
        manifests = [_upload(m, file.root, names) for m in _manifests(file.path.parent)]
        if not _fits([*unit, *manifests], limits):
            reason = (
                f"too large to upload: the service takes {limits.max_files} files and "
                f"{limits.max_bytes} bytes in one upload (http.max_ingest_*)"
            )
            report.results.append(FileResult(str(file.path), Outcome.FAILED, reason))
            continue
        sent = {u.path for u in batch}
        extra = [*unit, *(m for m in manifests if m.path not in sent)]
        if batch and not _fits([*batch, *extra], limits):
            batches.append(batch)
            batch, extra = [], [*unit, *manifests]
        batch.extend(extra)
    if batch:
        batches.append(batch)
    return UploadPlan(batches, report)


def _fits(uploads: Sequence[Upload], limits: Limits) -> bool:
    return len(uploads) <= limits.max_files and sum(u.size for u in uploads) <= limits.max_bytes


@dataclass(slots=True)
class _RootNames:
    """A distinct top folder name per library root ("photos", "photos-2", …)."""

    by_root: dict[Path, str] = field(default_factory=dict)

    def of(self, root: Path) -> str:
        if root not in self.by_root:
            base = root.name or "library"
            name, n = base, 1
            while name in self.by_root.values():
                n += 1
                name = f"{base}-{n}"
            self.by_root[root] = name
        return self.by_root[root]


def _upload(path: Path, root: Path, names: _RootNames) -> Upload:
    name = f"{names.of(root)}/{path.relative_to(root).as_posix()}"
    return Upload(name, path, path.stat().st_size)


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _companions(path: Path, root: Path, names: _RootNames) -> Iterator[Upload]:
    """The sidecar caption and, for a recording or a video, the transcripts beside it."""
    candidates = [path.with_name(path.name + SIDECAR_SUFFIX)]
    if path.suffix.lower() in VIDEO_SUFFIXES | AUDIO_SUFFIXES:
        for suffix in sorted(TRANSCRIPT_SUFFIXES):
            candidates += [path.with_suffix(suffix), path.with_name(path.name + suffix)]
    for candidate in candidates:
        if _regular(candidate) and candidate.is_relative_to(root):
            yield _upload(candidate, root, names)


def _manifests(folder: Path) -> Iterator[Path]:
    for name in MANIFEST_NAMES:
        if _regular(folder / name):
            yield folder / name


__all__ = [
    "API_KEY_ENV",
    "Job",
    "Limits",
    "ServiceClient",
    "Upload",
    "UploadPlan",
    "ingest_paths",
    "ingest_uploads",
    "merge",
    "plan_uploads",
    "report_of",
]
