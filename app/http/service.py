"""``QueryService``: what the controllers call for searches, answers and assets.

It is given everything it works with, already built (by ``create_app``): the question-answering
use case, the retriever, the store and a factory of collection specs, its limits, the data
files it may serve, and two ``Offload``s that move blocking work off the event loop (one for
model and engine calls, a smaller one for decoding uploaded images). It opens collections,
checks request limits and calls the core; it builds nothing and reads no settings.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

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
    CollectionSpec,
    CollectionStats,
    SearchFilters,
    SearchHit,
    SearchTuning,
    Segment,
)
from app.core.ports import ChatMessage, ImagePart, VectorCollection, VectorStore
from app.core.qa import QAEvent, QAResult, QuestionAnswering
from app.core.retrieval import Retrieval, Retriever

T = TypeVar("T")


class Offload:
    """Runs blocking calls in worker threads, at most ``threads`` at once: CPU-heavy work leaves
    the event loop, and a burst of requests waits its turn instead of piling up in memory."""

    def __init__(self, threads: int) -> None:
        self._limiter = CapacityLimiter(threads)

    async def __call__(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)


@dataclass(frozen=True, slots=True)
class QueryLimits:
    default_top_k: int
    max_top_k: int  # retrieval.max_top_k
    max_upload_bytes: int  # http.max_upload_bytes: a query image
    max_image_pixels: int  # http.max_image_pixels


class DataFiles:
    """The data directory's own files that stored payloads name (thumbnails, frames, pages) and
    the uploads folder; a name that leads anywhere else is never followed."""

    def __init__(self, data_dir: Path, *, thumbnails_dir: Path, uploads_dir: Path) -> None:
        self._root = data_dir.resolve()
        self._thumbnails = thumbnails_dir.resolve()
        self._uploads = uploads_dir.resolve()

    def path(self, relative: str) -> Path | None:
        """The file a stored payload names relative to the data dir, or None outside it."""
        path = (self._root / relative).resolve()
        return path if path.is_relative_to(self._root) else None

    def picture(self, hit: SearchHit) -> ImagePart | None:
        """The picture behind a source, for models that can see: the frame or page cited, or
        the asset's thumbnail."""
        thumb = hit.segment.thumbnail or hit.segment.asset.thumbnail
        path = self.path(thumb) if thumb else None
        if path is None:
            return None
        try:
            return ImagePart("image/jpeg", path.read_bytes())
        except OSError:
            return None

    def remove_thumbnail(self, relative: str) -> None:
        """Delete a thumbnail a payload names; only JPEGs under the thumbnails folder."""
        path = self.path(relative)
        if path is not None and path.is_relative_to(self._thumbnails) and path.suffix == ".jpg":
            path.unlink(missing_ok=True)

    def remove_upload(self, source: str) -> None:
        """Delete ``source`` when it is a file uploaded to the service (and its folders, once
        empty); a library file elsewhere is never touched."""
        path = Path(source)
        if path == self._uploads or not path.is_relative_to(self._uploads):
            return
        path.unlink(missing_ok=True)
        folder = path.parent
        while folder != self._uploads:
            try:
                folder.rmdir()
            except OSError:  # not empty (another upload of the job, a caption file)
                return
            folder = folder.parent


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
        *,
        qa: QuestionAnswering,
        retriever: Retriever,
        store: VectorStore,
        spec_for: Callable[[str], CollectionSpec],
        default_collection: str,
        limits: QueryLimits,
        files: DataFiles,
        offload: Offload,
        decode: Offload,
        dashboard: str | None = None,
    ) -> None:
        """``spec_for(name)``: the spec a collection must match (this service's models);
        ``offload`` runs model and engine calls, ``decode`` the decoding of query images."""
        self.qa = qa
        self.default_collection = default_collection
        self._retriever = retriever
        self._store = store
        self._spec_for = spec_for
        self._limits = limits
        self._files = files
        self._run = offload
        self._decode = decode
        self._dashboard = dashboard.rstrip("/") if dashboard else None

    def _top_k(self, top_k: int | None) -> int:
        limit = self._limits.max_top_k
        if top_k is None:
            return min(self._limits.default_top_k, limit)
        if top_k > limit:
            raise InvalidFieldError("top_k", f"must be at most {limit} (retrieval.max_top_k)")
        return top_k

    def collection_name(self, name: str | None) -> str:
        return validate_collection_name(name or self.default_collection)

    def _collection(self, name: str) -> VectorCollection:
        return self._store.open(self._spec_for(name), create=False)

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
        limits = self._limits
        if len(data) > limits.max_upload_bytes:
            limit = limits.max_upload_bytes
            raise PayloadTooLargeError(f"image is {len(data)} bytes; the limit is {limit}")
        target = await self._run(lambda: self._collection(collection))  # 404 before decoding
        # Decoding has its own, smaller limiter: memory stays flat under a burst of uploads.
        image = await self._decode(
            lambda: decode_query_image(data, max_pixels=limits.max_image_pixels)
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
        path = self._files.path(thumbnail)
        if path is None or not await self._run(path.is_file):
            raise AssetNotFoundError(asset_id, f"the thumbnail of {label} is missing")
        name = f"{asset_id}.jpg" if segment is None else f"{asset_id}-{segment}.jpg"
        return AssetFile(path=path, media_type="image/jpeg", filename=name)

    async def delete_asset(self, asset_id: str, *, collection: str) -> None:
        """Remove an asset's points and thumbnails, and its file when it was uploaded here."""

        def work() -> None:
            target = self._collection(collection)
            segments = target.asset_segments(asset_id)
            if not segments:
                raise AssetNotFoundError(asset_id)
            target.delete_assets([asset_id])
            asset = segments[0].asset
            for thumbnail in {asset.thumbnail, *(s.thumbnail for s in segments)}:
                if thumbnail:
                    self._files.remove_thumbnail(thumbnail)
            self._files.remove_upload(asset.source)

        await self._run(work)

    async def dashboard_url(self, name: str) -> str | None:
        """The collection's page in the Qdrant dashboard (server mode; None embedded): the
        physical collection behind the name, which the dashboard lists."""
        if self._dashboard is None:
            return None
        physical = await self._run(lambda: self._store.resolve(name))
        return f"{self._dashboard}#/collections/{quote(physical, safe='')}"

    async def collection_names(self) -> list[str]:
        return await self._run(self._store.names)

    async def check_ready(self) -> None:
        """Raise unless requests can be served: the default collection, when it exists, opens."""
        name = self.default_collection
        if await self._run(lambda: self._store.exists(name)):
            await self._run(lambda: self._collection(name))

    async def stats(self, name: str) -> tuple[CollectionStats, SearchTuning]:
        """The collection's figures and the query-time knobs its searches carry."""

        def work() -> tuple[CollectionStats, SearchTuning]:
            collection = self._collection(self.collection_name(name))
            return collection.stats(), self._retriever.tuning_for(collection)

        return await self._run(work)
