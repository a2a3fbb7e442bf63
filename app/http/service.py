"""``QueryService``: what the controllers call. It owns the long-lived parts (models, store,
language model), opens collections, checks request limits, runs the core's question-answering
flow, and moves CPU-heavy work off the event loop through capacity limiters (one for model and
engine calls, a smaller one for decoding uploaded images)."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
from anyio import CapacityLimiter

from app.adapters.images import decode_query_image
from app.core.collections import validate_collection_name
from app.core.errors import (
    AssetChangedError,
    AssetNotFoundError,
    InvalidFieldError,
    PayloadTooLargeError,
)
from app.core.models import (
    Asset,
    CollectionStats,
    SearchFilters,
    SearchHit,
    SearchTuning,
    Segment,
)
from app.core.ports import (
    ChatMessage,
    ImagePart,
    ImageTextEmbedder,
    LanguageModel,
    TextEmbedder,
    VectorCollection,
    VectorStore,
)
from app.core.qa import QAEvent, QAResult
from app.core.retrieval import Retrieval, Retriever
from app.settings import Settings
from app.wiring import build_qa, collection_spec

T = TypeVar("T")
# Query images are reduced to this shorter side before embedding: CLIP sees 224 px crops.
QUERY_IMAGE_SIDE = 448


@dataclass(frozen=True, slots=True)
class AssetFile:
    path: Path
    media_type: str
    filename: str


@dataclass(frozen=True, slots=True)
class OpenedFile:
    fd: int
    size: int
    mtime: float
    media_type: str
    filename: str


def open_verified(asset: Asset) -> OpenedFile:
    """The ingested file of ``asset``, opened, only if it is still the very file ingested.

    Served files stay inside the library: the path must lie under the root it was found in, no
    link may stand anywhere on it (the file swapped for a link to ``/etc/shadow``, or a folder
    on the way for a link elsewhere), and the open descriptor's size and modification time must
    be the ingested ones: what is served is what was checked. Details name the library path,
    never the server's absolute paths. The caller owns (and closes) ``fd``.
    """
    shown = asset.library_path
    if asset.root is None:
        detail = f"{shown} was ingested by an older version; run ingestion again to serve it"
        raise AssetChangedError(detail)
    path = Path(asset.source)
    if not path.is_relative_to(asset.root):
        raise AssetChangedError(f"{shown} lies outside its library folder; it is not served")
    gone = f"{shown} no longer exists; run ingestion with --sync to drop it"
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise AssetNotFoundError(asset.asset_id, gone) from exc
    if real != path:
        raise AssetChangedError(f"{shown} was replaced by a link since it was ingested")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise AssetNotFoundError(asset.asset_id, gone) from exc
    except OSError as exc:  # ELOOP: it became a link between the check and the open
        raise AssetChangedError(f"{shown} was replaced by a link since it was ingested") from exc
    st = os.fstat(fd)
    if (
        not stat.S_ISREG(st.st_mode)
        or st.st_size != asset.size_bytes
        or (asset.mtime_ns is not None and st.st_mtime_ns != asset.mtime_ns)
    ):
        os.close(fd)
        raise AssetChangedError(f"{shown} changed since it was ingested; run ingestion again")
    return OpenedFile(fd, st.st_size, st.st_mtime, asset.mime, path.name)


class QueryService:
    def __init__(
        self,
        settings: Settings,
        *,
        clip: ImageTextEmbedder,
        text: TextEmbedder,
        store: VectorStore,
        retriever: Retriever,
        llm: LanguageModel | None,
    ) -> None:
        self.settings = settings
        self._clip = clip
        self._text = text
        self._store = store
        self._retriever = retriever
        self._llm = llm
        self._limiter = CapacityLimiter(settings.http.worker_threads)
        self._decode_limiter = CapacityLimiter(settings.http.image_decodes)
        self.qa = build_qa(settings, retriever, llm, offload=self._run, images=self._thumbnail)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    def _thumbnail(self, hit: SearchHit) -> ImagePart | None:
        """The picture behind a source, for models that can see: the frame or page cited, or
        the asset's thumbnail."""
        thumb = hit.segment.thumbnail or hit.segment.asset.thumbnail
        if not thumb:
            return None
        path = self._data_file(thumb)
        if path is None:
            return None
        try:
            return ImagePart("image/jpeg", path.read_bytes())
        except OSError:
            return None

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
        if len(data) > self.settings.http.max_upload_bytes:
            limit = self.settings.http.max_upload_bytes
            raise PayloadTooLargeError(f"image is {len(data)} bytes; the limit is {limit}")
        target = await self._run(lambda: self._collection(collection))  # 404 before decoding
        http = self.settings.http
        # Decoding has its own, smaller limiter: memory stays flat under a burst of uploads.
        image = await anyio.to_thread.run_sync(
            lambda: decode_query_image(
                data, max_pixels=http.max_image_pixels, min_side=QUERY_IMAGE_SIDE
            ),
            limiter=self._decode_limiter,
        )
        return await self._run(
            lambda: self._retriever.search_image(target, image, top_k=k, filters=filters)
        )

    async def open(self, name: str) -> VectorCollection:
        return await self._run(lambda: self._collection(name))

    async def ask(
        self,
        question: str,
        *,
        collection: str,
        top_k: int | None,
        filters: SearchFilters,
        history: Sequence[ChatMessage] = (),
    ) -> QAResult:
        k = self._top_k(top_k)
        target = await self.open(collection)
        return await self.qa.ask(target, question, top_k=k, filters=filters, history=history)

    async def stream(
        self,
        question: str,
        *,
        collection: str,
        top_k: int | None,
        filters: SearchFilters,
        history: Sequence[ChatMessage] = (),
    ) -> AsyncIterator[QAEvent]:
        """Checks (limits, collection) happen before the first event, so they stay 4xx."""
        k = self._top_k(top_k)
        target = await self.open(collection)
        return self.qa.stream(target, question, top_k=k, filters=filters, history=history)

    async def asset(self, asset_id: str, *, collection: str) -> list[Segment]:
        segments = await self._run(lambda: self._collection(collection).asset_segments(asset_id))
        if not segments:
            raise AssetNotFoundError(asset_id)
        return segments

    async def asset_content(self, asset_id: str, *, collection: str) -> OpenedFile:
        """The ingested file, opened and checked; the caller owns (and closes) ``fd``."""
        asset = (await self.asset(asset_id, collection=collection))[0].asset
        return await self._run(lambda: open_verified(asset))

    async def asset_thumbnail(
        self, asset_id: str, *, collection: str, segment: int | None = None
    ) -> AssetFile:
        segments = await self.asset(asset_id, collection=collection)
        asset = segments[0].asset
        thumbnail, label = asset.thumbnail, f"asset {asset_id} ({asset.modality})"
        if segment is not None:
            found = next((s for s in segments if s.index == segment), None)
            if found is None:
                msg = f"asset {asset_id} has no segment {segment} (it has {len(segments)})"
                raise AssetNotFoundError(asset_id, msg)
            thumbnail, label = found.thumbnail, f"segment {segment} ({found.kind}) of {asset_id}"
        if not thumbnail:
            raise AssetNotFoundError(asset_id, f"{label} has no thumbnail")
        path = self._data_file(thumbnail)
        if path is None or not await self._run(path.is_file):
            raise AssetNotFoundError(asset_id, f"the thumbnail of {label} is missing")
        name = f"{asset_id}.jpg" if segment is None else f"{asset_id}-{segment}.jpg"
        return AssetFile(path=path, media_type="image/jpeg", filename=name)

    def _data_file(self, relative: str) -> Path | None:
        """A file under the data dir named by a stored payload (never anywhere else)."""
        root = self.settings.data_dir.resolve()
        path = (root / relative).resolve()
        return path if path.is_relative_to(root) else None

    async def collection_names(self) -> list[str]:
        return await self._run(self._store.names)

    async def check_ready(self) -> None:
        """Raise unless requests can be served: the default collection, when it exists, opens."""
        name = self.settings.collection
        if await self._run(lambda: self._store.exists(name)):
            await self._run(lambda: self._collection(name))

    async def stats(self, name: str) -> tuple[CollectionStats, SearchTuning]:
        """The collection's figures and the query-time knobs its searches carry."""

        def work() -> tuple[CollectionStats, SearchTuning]:
            collection = self._collection(self.collection_name(name))
            return collection.stats(), self._retriever.tuning_for(collection)

        return await self._run(work)

    async def aclose(self) -> None:
        try:
            if self._llm is not None:
                await self._llm.aclose()
        finally:
            await self._run(self._store.close)
