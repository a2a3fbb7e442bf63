"""``QueryService``: what the controllers call. It owns the long-lived parts (models, store,
language model) and moves CPU-heavy work off the event loop through a capacity limiter."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
from anyio import CapacityLimiter
from PIL import Image, UnidentifiedImageError

from app.core.answering import Answerer
from app.core.collections import validate_collection_name
from app.core.errors import (
    AssetNotFoundError,
    InvalidFieldError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from app.core.models import Answer, CollectionStats, SearchFilters, Segment
from app.core.ports import (
    ImageTextEmbedder,
    LanguageModel,
    TextEmbedder,
    VectorCollection,
    VectorStore,
)
from app.core.retrieval import Retrieval, Retriever
from app.settings import Settings
from app.wiring import collection_spec

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AssetFile:
    path: Path
    media_type: str
    filename: str


class QueryService:
    def __init__(
        self,
        settings: Settings,
        *,
        clip: ImageTextEmbedder,
        text: TextEmbedder,
        store: VectorStore,
        retriever: Retriever,
        answerer: Answerer,
        llm: LanguageModel,
    ) -> None:
        self.settings = settings
        self._clip = clip
        self._text = text
        self._store = store
        self._retriever = retriever
        self._answerer = answerer
        self._llm = llm
        self._limiter = CapacityLimiter(settings.http.worker_threads)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    def _top_k(self, top_k: int | None) -> int:
        limit = self.settings.retrieval.max_top_k
        if top_k is None:
            return min(self.settings.retrieval.default_top_k, limit)
        if top_k > limit:
            raise InvalidFieldError("top_k", f"must be at most {limit} (retrieval.max_top_k)")
        return top_k

    def collection_name(self, name: str | None) -> str:
        return validate_collection_name(name or self.settings.collection)

    def _collection(self, name: str) -> VectorCollection:
        spec = collection_spec(self.settings, name, self._clip, self._text)
        return self._store.open(spec, create=False)

    async def search_text(
        self, query: str, *, collection: str, top_k: int | None, filters: SearchFilters
    ) -> Retrieval:
        k = self._top_k(top_k)

        def work() -> Retrieval:
            return self._retriever.search_text(
                self._collection(collection), query, top_k=k, filters=filters
            )

        return await self._run(work)

    async def search_image(
        self, data: bytes, *, collection: str, top_k: int | None, filters: SearchFilters
    ) -> Retrieval:
        k = self._top_k(top_k)

        def work() -> Retrieval:
            target = self._collection(collection)
            image = self.decode_image(data)
            return self._retriever.search_image(target, image, top_k=k, filters=filters)

        return await self._run(work)

    def decode_image(self, data: bytes) -> Image.Image:
        if len(data) > self.settings.http.max_upload_bytes:
            limit = self.settings.http.max_upload_bytes
            raise PayloadTooLargeError(f"image is {len(data)} bytes; the limit is {limit}")
        if not data:
            raise InvalidFieldError("image", "the uploaded file is empty")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                img.seek(0)
                img.load()
        except (
            UnidentifiedImageError,
            Image.DecompressionBombWarning,
            Image.DecompressionBombError,
        ) as exc:
            msg = (
                "the upload is not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)"
            )
            raise UnsupportedMediaError(msg) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise UnsupportedMediaError(f"the uploaded image is corrupt: {exc}") from exc
        return img.convert("RGB")

    async def ask(
        self, question: str, *, collection: str, top_k: int | None, filters: SearchFilters
    ) -> tuple[Answer, Retrieval]:
        retrieval = await self.search_text(
            question, collection=collection, top_k=top_k, filters=filters
        )
        answer = await self._answerer.answer(question, retrieval.relevant_hits)
        return answer, retrieval

    async def asset(self, asset_id: str, *, collection: str) -> list[Segment]:
        segments = await self._run(lambda: self._collection(collection).asset_segments(asset_id))
        if not segments:
            raise AssetNotFoundError(asset_id)
        return segments

    async def asset_content(self, asset_id: str, *, collection: str) -> AssetFile:
        asset = (await self.asset(asset_id, collection=collection))[0].asset
        path = Path(asset.source)
        try:
            size = (await self._run(path.stat)).st_size
        except OSError as exc:
            detail = f"asset {asset_id} was ingested from {path}, which no longer exists"
            raise AssetNotFoundError(asset_id, detail) from exc
        if size != asset.size_bytes:
            detail = f"{path} changed since it was ingested; run ingestion again to refresh it"
            raise AssetNotFoundError(asset_id, detail)
        return AssetFile(path=path, media_type=asset.mime, filename=path.name)

    async def asset_thumbnail(self, asset_id: str, *, collection: str) -> AssetFile:
        asset = (await self.asset(asset_id, collection=collection))[0].asset
        if not asset.thumbnail:
            raise AssetNotFoundError(
                asset_id, f"asset {asset_id} ({asset.modality}) has no thumbnail"
            )
        root = self.settings.data_dir.resolve()
        path = (root / asset.thumbnail).resolve()
        if not path.is_relative_to(root) or not await self._run(path.is_file):
            raise AssetNotFoundError(asset_id, f"the thumbnail of asset {asset_id} is missing")
        return AssetFile(path=path, media_type="image/jpeg", filename=f"{asset_id}.jpg")

    async def stats(self, name: str) -> CollectionStats:
        return await self._run(lambda: self._collection(self.collection_name(name)).stats())

    async def aclose(self) -> None:
        try:
            await self._llm.aclose()
        finally:
            await self._run(self._store.close)
