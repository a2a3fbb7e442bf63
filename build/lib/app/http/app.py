"""``create_app(settings)``: the Litestar application factory.

Long-lived parts (models, vector store, language-model client) live in the lifespan and are
closed in ``finally``. Prompts are loaded and validated here, before anything is served.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from app.core.ports import ImageTextEmbedder, TextEmbedder
from app.core.prompts import load_prompts
from app.http.controllers import (
    AssetController,
    CollectionController,
    SearchController,
    health,
    provide_service,
    ready,
)
from app.http.problems import EXCEPTION_HANDLERS
from app.http.service import QueryService
from app.settings import Settings
from app.wiring import (
    build_answerer,
    build_clip,
    build_llm,
    build_retriever,
    build_store,
    build_text,
)

log = logging.getLogger(__name__)

_BODY_SLACK = 64 * 1024  # multipart framing around the largest allowed upload


@dataclass(frozen=True, slots=True)
class Models:
    """Already-loaded embedders, for callers that share them between apps (tests, the demo)."""

    clip: ImageTextEmbedder
    text: TextEmbedder


def create_app(
    settings: Settings,
    *,
    models: Models | None = None,
    llm_transport: httpx.AsyncBaseTransport | None = None,
) -> Litestar:
    load_prompts(settings.prompts_dir, settings.prompt_version)  # refuse to start on a bad one

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        loaded = models
        if loaded is None:
            loaded = await anyio.to_thread.run_sync(
                lambda: Models(clip=build_clip(settings), text=build_text(settings))
            )
        store = build_store(settings)
        llm = build_llm(settings, transport=llm_transport)
        service = QueryService(
            settings,
            clip=loaded.clip,
            text=loaded.text,
            store=store,
            retriever=build_retriever(settings, loaded.clip, loaded.text),
            answerer=build_answerer(settings, llm),
            llm=llm,
        )
        app.state.service = service
        log.info(
            "ready: collection %r under %s, llm=%s",
            settings.collection,
            settings.data_dir,
            settings.llm.provider,
        )
        try:
            yield
        finally:
            app.state.service = None
            await service.aclose()

    return Litestar(
        route_handlers=[SearchController, AssetController, CollectionController, health, ready],
        dependencies={"service": Provide(provide_service, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="mmrag",
            version="0.1.0",
            description="Multimodal retrieval and grounded answers over your media.",
            path="/schema",
        ),
        request_max_body_size=settings.http.max_upload_bytes + _BODY_SLACK,
        state=State({"max_upload_bytes": settings.http.max_upload_bytes}),
        debug=settings.http.debug,
    )
