"""The ingestion pipeline: plan → read → embed → write, each stage timed; reading runs one
batch ahead of embedding in a worker thread.

Idempotent (deterministic ids; unchanged files are skipped without re-embedding), incremental
(a changed file's new points are written before its old ones are deleted, so a crash in
between leaves the old version findable and the next run tidies up), and repairing (an asset
whose stored segment count falls short of what it should have is written again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from app.core.errors import InputError
from app.core.ids import asset_id_for, sha256_file
from app.core.indexing import PreparedAsset, embed_segments
from app.core.models import IndexedAsset, Modality
from app.core.ports import ImageTextEmbedder, TextEmbedder, VectorCollection
from ingestion.discovery import CaptionIndex, Discovered, Discovery, discover
from ingestion.media import read_audio, read_video
from ingestion.pdf import read_pdf
from ingestion.readers import AssetReadError, ReadOptions, read_image, read_text

log = logging.getLogger(__name__)

# ``<asset_id>.jpg`` for an asset, ``<asset_id>-<segment>.jpg`` for a frame or a page.
_FIRST_BATCH = 4
_LIGHT = frozenset({Modality.IMAGE, Modality.TEXT})  # one segment or a few small ones a file
_THUMBNAIL = re.compile(r"([0-9a-f]{32})(-\d+)?\.jpg(\.tmp)?")


class Outcome(StrEnum):
    INGESTED = "ingested"
    REPLACED = "replaced"  # the file changed; its old points were removed
    REPAIRED = "repaired"  # a half-written or duplicated asset from an interrupted run, fixed
    UNCHANGED = "unchanged"
    REMOVED = "removed"  # the file is gone and --sync removed its points
    FAILED = "failed"
    PLANNED = "planned"  # --dry-run: would be (re)ingested


@dataclass(frozen=True, slots=True)
class FileResult:
    path: str
    outcome: Outcome
    reason: str | None = None
    segments: int = 0
    asset_id: str | None = None  # the asset written, for outcomes that write one


@dataclass(slots=True)
class IngestReport:
    results: list[FileResult] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    decoded: int = 0  # video frames, PDF pages and recordings decoded in this run
    stopped: bool = False  # asked to stop: the files after the last written batch wait

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.outcome is Outcome.FAILED]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.missing_roots


@dataclass(frozen=True, slots=True)
class IngestRequest:
    paths: tuple[Path, ...]
    sync: bool = False
    dry_run: bool = False
    verify: bool = False  # hash every file even when its size and mtime are unchanged
    exclude: tuple[Path, ...] = ()  # folders never descended (the data directory)


@dataclass(frozen=True, slots=True)
class _Job:
    file: Discovered
    sha256: str
    stale: tuple[IndexedAsset, ...]  # this file's other stored versions, removed after writing
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class _Deletion:
    """Stored assets of one source to delete without reading anything."""

    source: str
    assets: tuple[IndexedAsset, ...]
    outcome: Outcome  # REMOVED: the file is gone (--sync) or outside its library; REPAIRED: old
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    jobs: list[_Job]
    deletions: list[_Deletion]
    stored_ids: frozenset[str]  # every asset stored before the run
    touched: list[tuple[str, int]]  # (asset id, new mtime_ns) of unchanged content


class ProgressSink(Protocol):
    """Where the pipeline reports progress (the CLI draws a bar from it)."""

    def start(self, total: int) -> None: ...

    def advance(self, done: int, description: str) -> None: ...


class _NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, done: int, description: str) -> None:
        pass


def _touched(path: Path, sha: str, stored: list[IndexedAsset]) -> list[tuple[str, int]]:
    """The stored asset of this very content whose recorded mtime is not the file's."""
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError:
        return []
    return [
        (a.asset_id, mtime_ns)
        for a in stored
        if a.content_sha256 == sha and a.complete and a.mtime_ns != mtime_ns
    ]


def _looks_unchanged(path: Path, stored: list[IndexedAsset]) -> bool:
    """Same size and modification time as the one complete stored version: skip hashing.

    The same trade-off rsync makes; ``--verify`` hashes anyway.
    """
    if len(stored) != 1 or not stored[0].complete or stored[0].mtime_ns is None:
        return False
    if stored[0].root is None:
        return False  # stored before library roots were recorded: read again to record it
    try:
        stat = path.stat()
    except OSError:
        return False
    return stat.st_size == stored[0].size_bytes and stat.st_mtime_ns == stored[0].mtime_ns


class IngestionPipeline:
    def __init__(
        self,
        collection: VectorCollection | None,
        clip: ImageTextEmbedder,
        text: TextEmbedder,
        read_options: ReadOptions,
        *,
        write_batch_assets: int = 32,
    ) -> None:
        self._collection = collection  # None: nothing stored yet (a dry run before the first run)
        self._clip = clip
        self._text = text
        self._read = read_options
        self._batch = write_batch_assets

    def plan(self, request: IngestRequest, report: IngestReport) -> _Plan:
        """Which files to (re)ingest and which stored assets to delete."""
        found = discover(request.paths, exclude=request.exclude)
        report.unsupported = [str(p) for p in found.unsupported]
        report.missing_roots = [str(p) for p in found.missing]
        report.results.extend(
            FileResult(str(r.path), Outcome.FAILED, r.reason) for r in found.refused
        )
        report.warnings.extend(
            f"did not descend into {d}: it holds the data directory (collections, thumbnails)"
            for d in found.skipped_dirs
        )
        with self._timed(report, "plan"):
            by_source: dict[str, list[IndexedAsset]] = defaultdict(list)
            for item in self._collection.indexed_assets() if self._collection else []:
                by_source[item.source].append(item)
            jobs: list[_Job] = []
            deletions: list[_Deletion] = []
            touched: list[tuple[str, int]] = []
            present: set[str] = set()
            for file in found.files:
                source = str(file.path)
                present.add(source)
                stored = by_source.get(source, [])
                if not request.verify and _looks_unchanged(file.path, stored):
                    report.results.append(FileResult(source, Outcome.UNCHANGED))
                    continue
                try:
                    sha = sha256_file(file.path)
                except OSError as exc:
                    reason = f"cannot read file: {exc.strerror or exc}"
                    report.results.append(FileResult(source, Outcome.FAILED, reason))
                    continue
                job = self._job_for(file, sha, stored)
                if job is None or isinstance(job, _Deletion):
                    # Same content, touched: the stored mtime must follow, or the service
                    # would refuse to serve the file as changed.
                    touched.extend(_touched(file.path, sha, stored))
                if job is None:
                    report.results.append(FileResult(source, Outcome.UNCHANGED))
                elif isinstance(job, _Deletion):
                    deletions.append(job)
                else:
                    jobs.append(job)
            deletions.extend(self._escaped(found, by_source, present))
            if request.sync:
                gone, unsure = self._gone(request.paths, by_source.keys(), present)
                deletions.extend(
                    _Deletion(source, tuple(by_source[source]), Outcome.REMOVED) for source in gone
                )
                report.warnings.extend(
                    f"kept {source}: cannot tell whether it still exists ({why})"
                    for source, why in unsure
                )
        stored_ids = frozenset(a.asset_id for items in by_source.values() for a in items)
        return _Plan(jobs, deletions, stored_ids, touched)

    @staticmethod
    def _escaped(
        found: Discovery, by_source: dict[str, list[IndexedAsset]], present: set[str]
    ) -> Iterator[_Deletion]:
        """What an escaping link let in before links were checked goes, whatever --sync says.

        Only copies stored without a library root (or outside it): a file that another library
        holds in its own right is not touched because some link points at it.
        """
        for refused in found.refused:
            target = str(refused.target) if refused.target else None
            if target is None or target in present or target not in by_source:
                continue
            escaped = tuple(
                a
                for a in by_source[target]
                if a.root is None or not Path(a.source).is_relative_to(a.root)
            )
            if escaped:
                reason = f"stored through {refused.path}, which leads outside the library"
                yield _Deletion(target, escaped, Outcome.REMOVED, reason)
                by_source[target] = [a for a in by_source[target] if a not in escaped]

    @staticmethod
    def _job_for(file: Discovered, sha: str, stored: list[IndexedAsset]) -> _Job | _Deletion | None:
        asset_id = asset_id_for(sha, str(file.path))
        current = [a for a in stored if a.asset_id == asset_id]
        stale = tuple(a for a in stored if a.asset_id != asset_id)
        if current and current[0].complete and current[0].root is not None:
            # Stored and whole: at most old versions left by an interrupted run to delete.
            return _Deletion(str(file.path), stale, Outcome.REPAIRED) if stale else None
        if current:
            outcome = Outcome.REPAIRED
        elif stale:
            outcome = Outcome.REPLACED
        else:
            outcome = Outcome.INGESTED
        return _Job(file, sha, stale, outcome)

    @staticmethod
    def _gone(
        roots: Sequence[Path], stored: Iterable[str], present: set[str]
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """Stored sources under the scanned roots whose files no longer exist, and those whose
        existence cannot be checked (an unreadable folder on the way: they are kept)."""
        prefixes = []
        for root in roots:
            with contextlib.suppress(OSError, RuntimeError):
                prefixes.append(str(root.resolve()))
        gone: list[str] = []
        unsure: list[tuple[str, str]] = []
        for source in sorted(stored):
            if source in present or not any(
                source == p or source.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes
            ):
                continue
            try:
                Path(source).stat()
            except (FileNotFoundError, NotADirectoryError):
                gone.append(source)
            except OSError as exc:
                unsure.append((source, exc.strerror or str(exc)))
        return gone, unsure

    def run(
        self,
        request: IngestRequest,
        progress: ProgressSink | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> IngestReport:
        """Ingest what ``request`` names. ``stop``, once set, ends the run after the batch being
        written (``report.stopped``); running the same request again finishes it."""
        report = IngestReport()
        plan = self.plan(request, report)
        jobs, deletions = plan.jobs, plan.deletions
        if request.dry_run or self._collection is None:
            report.results.extend(
                FileResult(str(j.file.path), Outcome.PLANNED, j.outcome.value) for j in jobs
            )
            report.results.extend(
                FileResult(d.source, Outcome.REMOVED, d.reason or "would be removed")
                if d.outcome is Outcome.REMOVED
                else FileResult(d.source, Outcome.PLANNED, d.outcome.value)
                for d in deletions
            )
            return report
        if plan.touched:
            with self._timed(report, "write"):
                self._writable().set_mtimes(dict(plan.touched))
        sink = progress or _NoProgress()
        sink.start(len(jobs))
        captions = CaptionIndex()
        batches = self._batches(jobs)
        # Files are read (decoded, thumbnailed) one batch ahead in a worker thread while the
        # model embeds the current batch: decoding releases the GIL, and the model is never
        # left waiting for the next batch. Writes stay in this thread, in order.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-read") as reader:
            ahead = [
                reader.submit(self._read_batch, b, captions, report, sink) for b in batches[:1]
            ]
            for n in range(len(batches)):
                if stop is not None and stop.is_set():
                    report.stopped = True
                    break
                prepared = ahead.pop().result()
                if n + 1 < len(batches):
                    ahead.append(
                        reader.submit(self._read_batch, batches[n + 1], captions, report, sink)
                    )
                self._embed_and_write(prepared, report, sink)
        report.warnings.extend(captions.problems)
        if report.stopped:  # removals and the index wait for the run that finishes
            return report
        if deletions:
            self._delete(deletions, report)
        self._sweep_thumbnails(plan, report)
        if jobs or deletions or self._writable().optimize_pending:
            with self._timed(report, "optimize"):
                self._writable().optimize()
        return report

    def _batches(self, jobs: Sequence[_Job]) -> list[list[_Job]]:
        """Photos and documents in batches of ``write_batch_assets`` (the first one small, so
        the model starts after a few files); each video, recording and PDF a batch of its own,
        so memory holds one long file's frames or pages at a time, not a batch of them."""
        light = [j for j in jobs if j.file.modality in _LIGHT]
        first = min(_FIRST_BATCH, self._batch)
        batches = [light[:first]] if light else []
        batches += [light[i : i + self._batch] for i in range(first, len(light), self._batch)]
        batches += [[j] for j in jobs if j.file.modality not in _LIGHT]
        return batches

    def _writable(self) -> VectorCollection:
        if self._collection is None:  # pragma: no cover - run() returns before writing
            raise RuntimeError("a pipeline without a collection can only plan")
        return self._collection

    def _read_batch(
        self,
        batch: Sequence[_Job],
        captions: CaptionIndex,
        report: IngestReport,
        sink: ProgressSink,
    ) -> list[tuple[_Job, PreparedAsset]]:
        prepared: list[tuple[_Job, PreparedAsset]] = []
        with self._timed(report, "read"):
            for job in batch:
                try:
                    item = self._prepare(job, captions)
                    prepared.append((job, item))
                    report.decoded += item.decoded
                except InputError as exc:
                    report.results.append(FileResult(str(job.file.path), Outcome.FAILED, str(exc)))
                    sink.advance(1, job.file.path.name)
        return prepared

    def _embed_and_write(
        self,
        prepared: list[tuple[_Job, PreparedAsset]],
        report: IngestReport,
        sink: ProgressSink,
    ) -> None:
        if not prepared:
            return
        with self._timed(report, "embed"):
            embedded = embed_segments([p for _, p in prepared], self._clip, self._text)
        with self._timed(report, "write"):
            self._writable().upsert(embedded)
            stale = [a for job, _ in prepared for a in job.stale]
            self._writable().delete_assets([a.asset_id for a in stale])
            self._drop_thumbnails(a.asset_id for a in stale)
        written: dict[str, int] = defaultdict(int)
        for item in embedded:
            written[item.segment.asset.asset_id] += 1
        for job, asset in prepared:
            asset_id = asset.asset.asset_id
            report.results.append(
                FileResult(
                    str(job.file.path), job.outcome, segments=written[asset_id], asset_id=asset_id
                )
            )
            sink.advance(1, job.file.path.name)

    def _prepare(self, job: _Job, captions: CaptionIndex) -> PreparedAsset:
        file = job.file
        match file.modality:
            case Modality.IMAGE:
                return read_image(file.path, job.sha256, self._read, captions, root=file.root)
            case Modality.VIDEO:
                return read_video(file.path, job.sha256, self._read, root=file.root)
            case Modality.AUDIO:
                return read_audio(file.path, job.sha256, self._read, root=file.root)
            case Modality.PDF:
                return read_pdf(file.path, job.sha256, self._read, root=file.root)
            case Modality.TEXT:
                return read_text(file.path, job.sha256, self._read, root=file.root)

    def _delete(self, deletions: Sequence[_Deletion], report: IngestReport) -> None:
        asset_ids = [a.asset_id for d in deletions for a in d.assets]
        with self._timed(report, "write"):
            self._writable().delete_assets(asset_ids)
            self._drop_thumbnails(asset_ids)
        report.results.extend(FileResult(d.source, d.outcome, d.reason) for d in deletions)

    def _drop_thumbnails(self, asset_ids: Iterable[str]) -> None:
        folder = self._read.thumbnails_dir
        for asset_id in asset_ids:
            (folder / f"{asset_id}.jpg").unlink(missing_ok=True)
            if folder.is_dir():
                for thumb in folder.glob(f"{asset_id}-*.jpg"):
                    thumb.unlink(missing_ok=True)

    def _sweep_thumbnails(self, plan: _Plan, report: IngestReport) -> None:
        """Remove thumbnails no stored asset owns (left by a run killed mid-way)."""
        folder = self._read.thumbnails_dir
        if not folder.is_dir():
            return
        deleted = {a.asset_id for d in plan.deletions for a in d.assets}
        deleted |= {a.asset_id for j in plan.jobs for a in j.stale}
        written = {r.asset_id for r in report.results if r.asset_id}
        owned = (plan.stored_ids - deleted) | written
        for thumb in folder.iterdir():
            match = _THUMBNAIL.fullmatch(thumb.name)
            if match and match.group(1) not in owned:
                thumb.unlink(missing_ok=True)

    @staticmethod
    @contextlib.contextmanager
    def _timed(report: IngestReport, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            report.timings_s[stage] += time.perf_counter() - t0


__all__ = [
    "AssetReadError",
    "FileResult",
    "IngestReport",
    "IngestRequest",
    "IngestionPipeline",
    "Outcome",
    "ProgressSink",
]
