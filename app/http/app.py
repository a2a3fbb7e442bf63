"""``create_app(settings)``: the Litestar application factory.

Everything the services use is built here from settings (the services themselves read none).
Long-lived parts (models, vector store, language-model client, the ingest jobs' worker) live
in the lifespan and are closed in ``finally``. Prompts are loaded and validated here, before
anything is served.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide

from app.adapters.batching import BatchingImageTextEmbedder, BatchingTextEmbedder
from app.core.errors import ConfigurationError
from app.core.models import CollectionSpec
from app.core.ports import (
    ImageTextEmbedder,
    LanguageModel,
    SpeechRecognizer,
    TextEmbedder,
    TextRecognizer,
    VectorStore,
)
from app.core.prompts import load_prompts
from app.http import ops
from app.http.chat import ChatController, OpenAIController
from app.http.controllers import (
    AssetController,
    CollectionController,
    IngestController,
    JobController,
    SearchController,
    health,
    provide_ingest,
    provide_service,
    ready,
)
from app.http.ingest import AllowedRoots, IngestService, PipelineRunner, ReadSetup
from app.http.jobs import IngestJobs
from app.http.metrics import CountedJobRunner, Metrics, TimedLanguageModel, metrics_route
from app.http.openapi import openapi_config
from app.http.page import page_router
from app.http.problems import EXCEPTION_HANDLERS
from app.http.service import DataFiles, Offload, QueryLimits, QueryService
from app.http.uploads import UploadLimits
from app.settings import HttpSettings, Settings
from app.wiring import (
    build_clip,
    build_llm,
    build_ocr,
    build_qa,
    build_retriever,
    build_speech,
    build_store,
    build_text,
    collection_spec,
)
from ingestion.readers import ReadOptions, read_options_for

log = logging.getLogger(__name__)

_BODY_SLACK = 64 * 1024  # multipart framing around the largest allowed upload
_PART_FRAMING = 8 * 1024  # the headers of one part of an upload (its file name)
UPLOADS = "uploads"  # <data dir>/uploads/<job id>/: files uploaded to ingest, served from there
JOBS = "jobs"  # <data dir>/jobs/<job id>.json


@dataclass(frozen=True, slots=True)
class Models:
    """Already-loaded embedders, for callers that share them between apps (tests, the demo)."""

    clip: ImageTextEmbedder
    text: TextEmbedder


def check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond loopback without API keys: every ingested file would be public,
    and anyone could ingest (``POST /v1/ingest``) or delete (``DELETE /v1/assets/…``)."""
    if not settings.http.loopback_only and not settings.http.api_keys:
        msg = (
            f"refusing to listen on {settings.http.host} without API keys: anyone who can reach "
            "the port could read every ingested file, and ingest or delete files. Set "
            "MMRAG_HTTP__API_KEYS (one or more comma-separated keys of 16+ characters), or bind "
            "to 127.0.0.1."
        )
        raise ConfigurationError(msg)


def load_models(settings: Settings) -> Models:
    return Models(clip=build_clip(settings), text=build_text(settings))


def create_app(
    settings: Settings,
    *,
    models: Models | None = None,
    store: VectorStore | None = None,
    llm_transport: httpx.AsyncBaseTransport | None = None,
) -> Litestar:
    """The app; ``models`` and ``store`` already built are taken over (closed at shutdown)."""
    check_exposure(settings)
    load_prompts(settings.prompts_dir, settings.prompt_version)  # refuse to start on a bad one
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        loaded = models
        if loaded is None:
            loaded = await anyio.to_thread.run_sync(lambda: load_models(settings))
        async with AsyncExitStack() as stack:
            opened = store or build_store(settings)
            stack.push_async_callback(anyio.to_thread.run_sync, opened.close)
            llm = build_llm(settings, transport=llm_transport)
            if llm is not None:
                stack.push_async_callback(llm.aclose)
            service = query_service(settings, loaded, opened, llm, metrics=metrics)
            ingest = ingest_service(settings, loaded, opened, metrics=metrics)
            await anyio.to_thread.run_sync(ingest.start)
            # Stopped before the store closes: the running job stops at its next file.
            stack.push_async_callback(anyio.to_thread.run_sync, ingest.stop)
            app.state.service, app.state.ingest = service, ingest
            strategy = service.qa.strategy
            log.info(
                "ready: collection %r under %s, answers by %s (%s)",
                settings.collection,
                settings.data_dir,
                strategy.provider,
                strategy.model,
            )
            try:
                yield
            finally:
                app.state.service = app.state.ingest = None

    # Uploads to ingest have a body limit of their own, far above a query image's.
    uploads = Router(
        "/",
        route_handlers=[IngestController],
        request_max_body_size=ingest_body_limit(settings.http),
        opt={"body_limit": settings.http.max_ingest_bytes},
    )
    return Litestar(
        route_handlers=[
            SearchController,
            AssetController,
            CollectionController,
            ChatController,
            OpenAIController,
            uploads,
            JobController,
            health,
            ready,
            page_router(),
            metrics_route(metrics),
        ],
        dependencies={
            "service": Provide(provide_service, sync_to_thread=False),
            "ingest": Provide(provide_ingest, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        middleware=ops.middleware(settings.http, metrics),
        before_send=[ops.send_request_id],
        cors_config=ops.cors(settings.http),
        logging_config=ops.logging_config(settings),
        openapi_config=openapi_config(settings),
        request_max_body_size=settings.http.max_upload_bytes + _BODY_SLACK,
        state=State({"max_upload_bytes": settings.http.max_upload_bytes}),
        debug=settings.http.debug,
    )


def ingest_body_limit(http: HttpSettings) -> int:
    """The files of one upload, plus the multipart framing around each of them."""
    return http.max_ingest_bytes + _BODY_SLACK + http.max_ingest_files * _PART_FRAMING


def spec_factory(settings: Settings, models: Models) -> Callable[[str], CollectionSpec]:
    """The spec a collection of this name must match: these models, these index settings."""
    return lambda name: collection_spec(settings, name, models.clip, models.text)


def query_service(
    settings: Settings,
    models: Models,
    store: VectorStore,
    llm: LanguageModel | None,
    *,
    metrics: Metrics,
) -> QueryService:
    """The search and answer service, with everything it uses built here from settings; its
    stages (encoding, search, the model's answers) are timed into ``metrics``."""
    if llm is not None:
        llm = TimedLanguageModel(llm, metrics)
    # Queries arriving together are encoded in one model batch (ingestion jobs keep the bare
    # models: their batches are already full).
    retriever = build_retriever(
        settings,
        BatchingImageTextEmbedder(models.clip),
        BatchingTextEmbedder(models.text),
        timer=metrics,
    )
    offload = Offload(settings.http.worker_threads)
    files = DataFiles(
        settings.data_dir,
        thumbnails_dir=settings.thumbnails_dir,
        uploads_dir=settings.data_dir / UPLOADS,
    )
    return QueryService(
        qa=build_qa(settings, retriever, llm, offload=offload, images=files.picture),
        retriever=retriever,
        store=store,
        spec_for=spec_factory(settings, models),
        default_collection=settings.collection,
        limits=QueryLimits(
            default_top_k=settings.retrieval.default_top_k,
            max_top_k=settings.retrieval.max_top_k,
            max_upload_bytes=settings.http.max_upload_bytes,
            max_image_pixels=settings.http.max_image_pixels,
        ),
        files=files,
        offload=offload,
        decode=Offload(settings.http.image_decodes),
        dashboard=settings.store.dashboard if settings.store.backend == "server" else None,
    )


def ingest_service(
    settings: Settings, models: Models, store: VectorStore, *, metrics: Metrics
) -> IngestService:
    """Ingestion through the service: jobs run with its models and its open store (and are
    counted in ``metrics``)."""
    roots = AllowedRoots(settings.http.ingest_roots)
    runner = PipelineRunner(
        store=store,
        spec_for=spec_factory(settings, models),
        clip=models.clip,
        text=models.text,
        read_setup=read_setup(settings),
        roots=roots,
        data_dir=settings.data_dir,
        write_batch_assets=settings.ingestion.write_batch_assets,
        require_index_settings=settings.quantization.index_settings_explicit,
    )
    return IngestService(
        IngestJobs(settings.data_dir / JOBS, CountedJobRunner(runner, metrics)),
        uploads_dir=settings.data_dir / UPLOADS,
        roots=roots,
        limits=UploadLimits(settings.http.max_ingest_files, settings.http.max_ingest_bytes),
        default_collection=settings.collection,
    )


def read_setup(settings: Settings) -> ReadSetup:
    """How jobs read files, as the CLI reads them. OCR and speech recognition are set up by
    the first job (speech loads its model on first use) and kept for the next ones."""

    @functools.cache
    def recognizers() -> tuple[TextRecognizer | None, SpeechRecognizer | None, list[str]]:
        ocr, ocr_notice = build_ocr(settings)
        speech, speech_notice = build_speech(settings)
        return ocr, speech, [n for n in (ocr_notice, speech_notice) if n]

    def setup(collection: str, tags: tuple[str, ...]) -> tuple[ReadOptions, list[str]]:
        ocr, speech, notices = recognizers()
        options = read_options_for(settings, collection, tags=tags, ocr=ocr, speech=speech)
        return options, list(notices)

    return setup
