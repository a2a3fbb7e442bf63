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

from app.core.errors import ConfigurationError
from app.core.ports import ImageTextEmbedder, TextEmbedder, VectorStore
from app.core.prompts import load_prompts
from app.http.auth import ApiKeyMiddleware
from app.http.chat import ChatController, OpenAIController
from app.http.controllers import (
    AssetController,
    CollectionController,
    SearchController,
    health,
    provide_service,
    ready,
)
from app.http.openapi import openapi_config
from app.http.problems import EXCEPTION_HANDLERS
from app.http.service import QueryService
from app.settings import Settings
from app.wiring import (
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


def check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond loopback without API keys: every ingested file would be public."""
    if not settings.http.loopback_only and not settings.http.api_keys:
        msg = (
            f"refusing to listen on {settings.http.host} without API keys: anyone who can reach "
            "the port could read every ingested file. Set MMRAG_HTTP__API_KEYS (one or more "
            "comma-separated keys of 16+ characters), or bind to 127.0.0.1."
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

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        loaded = models
        if loaded is None:
            loaded = await anyio.to_thread.run_sync(lambda: load_models(settings))
        llm = build_llm(settings, transport=llm_transport)
        service = QueryService(
            settings,
            clip=loaded.clip,
            text=loaded.text,
            store=store or build_store(settings),
            retriever=build_retriever(settings, loaded.clip, loaded.text),
            llm=llm,
        )
        app.state.service = service
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
            app.state.service = None
            await service.aclose()

    keys = [k.get_secret_value() for k in settings.http.api_keys]
    return Litestar(
        route_handlers=[
            SearchController,
            AssetController,
            CollectionController,
            ChatController,
            OpenAIController,
            health,
            ready,
        ],
        dependencies={"service": Provide(provide_service, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        middleware=[ApiKeyMiddleware(keys)] if keys else [],
        openapi_config=openapi_config(settings),
        request_max_body_size=settings.http.max_upload_bytes + _BODY_SLACK,
        state=State({"max_upload_bytes": settings.http.max_upload_bytes}),
        debug=settings.http.debug,
    )
