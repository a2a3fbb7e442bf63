"""Prometheus metrics at ``/metrics``, in a registry of the app's own.

What is measured, and where:

- every routed request: ``mmrag_http_request_duration_seconds{method, route, status}`` (the
  route as declared, ``/v1/assets/{asset_id}``, never the raw path) and the requests in
  flight, by ``ops.RequestContextMiddleware``;
- the stages of a question, ``mmrag_stage_duration_seconds{stage}``: ``encode`` and ``search``
  told by the retriever (``app.core.retrieval.StageTimer``, which this class implements), and
  ``first_token``, ``generation`` (the whole streamed answer) and ``completion`` (a model call
  that does not stream: chat follow-ups rewritten) by ``TimedLanguageModel`` around the model.
  Extractive answers call no model, so they add nothing there;
- ingestion through the service: files by outcome and jobs by how they ended, counted by
  ``CountedJobRunner`` around the jobs' runner;
- collection sizes, points and assets, read when scraped, for the default collection and each
  one a job of this service wrote to (opening any other could take the lock of a collection
  a command-line ingest is writing);
- the process (memory, CPU, open files) and Python's garbage collector.

Litestar's Prometheus plugin keeps its metrics in class attributes on the process-wide registry:
two apps in one process (the tests, the demo) would share, and collide on, every series. A
registry per app keeps ``create_app(settings)`` free of global state. May import
prometheus_client, litestar, app.core, app.http (jobs, schemas, service) and the ingestion
pipeline's report types.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from litestar.handlers import HTTPRouteHandler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from app.core.errors import MMRagError
from app.core.ports import GenerationRequest, LanguageModel
from app.core.retrieval import Stage
from app.http.auth import METRICS_PATH
from app.http.jobs import JobRunner, JobSource
from app.http.schemas import JobOut, JobStatus
from app.http.service import QueryService
from ingestion.pipeline import IngestReport, Outcome, ProgressSink

log = logging.getLogger(__name__)


class ModelStage(StrEnum):
    """The timed stages of a language model's call (``TimedLanguageModel``)."""

    FIRST = "first_token"  # the call until the model's first piece of text
    GENERATION = "generation"  # a streamed answer, start to last piece
    COMPLETION = "completion"  # a whole completion, not streamed


STAGES = (*(s.value for s in Stage), *(s.value for s in ModelStage))
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.INTERRUPTED)

_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The app's metrics. Every labelled series a dashboard expects exists from the start, at
    zero, so a rate over it is defined before the first event."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self._requests = Histogram(
            "mmrag_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route and status.",
            ("method", "route", "status"),
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "mmrag_http_requests_in_flight", "Requests being answered.", registry=registry
        )
        self._stages = Histogram(
            "mmrag_stage_duration_seconds",
            "Time spent in each stage of a search or answer.",
            ("stage",),
            buckets=_STAGE_BUCKETS,
            registry=registry,
        )
        self._files = Counter(
            "mmrag_ingest_files",
            "Files read by ingest jobs of this service, by outcome.",
            ("outcome",),
            registry=registry,
        )
        self._jobs = Counter(
            "mmrag_ingest_jobs",
            "Ingest jobs of this service that ended, by status.",
            ("status",),
            registry=registry,
        )
        self._points = Gauge(
            "mmrag_collection_points",
            "Points (segments) in a collection, when scraped.",
            ("collection",),
            registry=registry,
        )
        self._assets = Gauge(
            "mmrag_collection_assets",
            "Assets (files) in a collection, when scraped.",
            ("collection",),
            registry=registry,
        )
        for stage in STAGES:
            self._stages.labels(stage)
        for outcome in Outcome:
            self._files.labels(outcome.value)
        for status in FINISHED:
            self._jobs.labels(status.value)
        self._written: set[str] = set()
        self._lock = threading.Lock()

    # -- told by the parts -----------------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.labels(method, route, str(status)).observe(seconds)

    def observe(self, stage: Stage | ModelStage, seconds: float) -> None:
        """A stage's time (``StageTimer``, for the retriever; the model's stages by name)."""
        self._stages.labels(str(stage)).observe(seconds)

    def job_ended(self, job: JobOut, status: JobStatus, report: IngestReport | None) -> None:
        self._jobs.labels(status.value).inc()
        if report is not None:
            for outcome in Outcome:
                if count := report.count(outcome):
                    self._files.labels(outcome.value).inc(count)
        with self._lock:
            self._written.add(job.collection)

    # -- read when scraped -----------------------------------------------------------------

    async def refresh_collections(self, service: QueryService) -> None:
        """Sizes of the collections this service has open; one it cannot read (dropped, held
        by another process, built with other models) loses its series."""
        with self._lock:
            names = sorted({service.default_collection, *self._written})
        sizes: dict[str, tuple[int, int]] = {}
        for name in names:
            try:
                stats, _ = await service.stats(name)
            except MMRagError as exc:
                log.debug("collection %r left out of the metrics: %s", name, exc)
                continue
            sizes[name] = (stats.points, stats.assets)
        self._points.clear()
        self._assets.clear()
        for name, (points, assets) in sizes.items():
            self._points.labels(name).set(points)
            self._assets.labels(name).set(assets)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_route(metrics: Metrics) -> HTTPRouteHandler:
    """``GET /metrics``: the Prometheus text format. Left out of the API document: it is the
    operators' page, not the API's."""

    @get(METRICS_PATH, include_in_schema=False, name="metrics")
    async def scrape(state: State) -> Response[bytes]:
        service = state.get("service")
        if isinstance(service, QueryService):  # still starting: the rest is there already
            await metrics.refresh_collections(service)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return scrape


class TimedLanguageModel:
    """A language model whose calls are timed into the metrics, otherwise the model itself."""

    def __init__(self, llm: LanguageModel, metrics: Metrics) -> None:
        self._llm = llm
        self._metrics = metrics

    @property
    def provider(self) -> str:
        return self._llm.provider

    @property
    def model(self) -> str:
        return self._llm.model

    @property
    def supports_json_schema(self) -> bool:
        return self._llm.supports_json_schema

    @property
    def supports_images(self) -> bool:
        return self._llm.supports_images

    async def complete(self, request: GenerationRequest) -> str:
        started = time.perf_counter()
        text = await self._llm.complete(request)
        self._metrics.observe(ModelStage.COMPLETION, time.perf_counter() - started)
        return text

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """The model's stream; closing this one closes the model's (which stops it)."""
        started = time.perf_counter()
        pieces = self._llm.stream(request)
        first = True
        try:
            async for piece in pieces:
                if first and piece:
                    self._metrics.observe(ModelStage.FIRST, time.perf_counter() - started)
                    first = False
                yield piece
        finally:
            close: Any = getattr(pieces, "aclose", None)
            if close is not None:
                await close()
        self._metrics.observe(ModelStage.GENERATION, time.perf_counter() - started)

    async def aclose(self) -> None:
        await self._llm.aclose()


class CountedJobRunner:
    """The jobs' runner, each ending counted: a report is a success, or an interruption when
    it says it stopped (as ``IngestJobs`` reads it); an error is a failure."""

    def __init__(self, run: JobRunner, metrics: Metrics) -> None:
        self._run = run
        self._metrics = metrics

    def __call__(
        self, job: JobOut, source: JobSource, progress: ProgressSink, stop: threading.Event
    ) -> IngestReport:
        try:
            report = self._run(job, source, progress, stop)
        except Exception:
            self._metrics.job_ended(job, JobStatus.FAILED, None)
            raise
        status = JobStatus.INTERRUPTED if report.stopped else JobStatus.SUCCEEDED
        self._metrics.job_ended(job, status, report)
        return report


__all__ = [
    "STAGES",
    "CountedJobRunner",
    "Metrics",
    "ModelStage",
    "TimedLanguageModel",
    "metrics_route",
]
