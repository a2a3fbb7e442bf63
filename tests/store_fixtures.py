"""Helpers for the vector-store contract and wire tests: a small library of segments with
deterministic vectors, and the stores under test (embedded, server over qdrant-client's local
mode, a real server).

The vectors are seeded random unit vectors: the store is what is tested, not the models.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from app.adapters.edge_store import EdgeVectorStore
from app.adapters.qdrant_server import QdrantServerStore
from app.core.models import (
    Asset,
    BinaryEncoding,
    CollectionSpec,
    EmbeddedSegment,
    EmbeddingModelInfo,
    FloatVector,
    Locator,
    Modality,
    QuantizationSpec,
    QueryEncoding,
    Segment,
    SegmentKind,
    Signal,
)
from app.core.ports import VectorStore

CLIP_DIM = 16
TEXT_DIM = 8
SPEC = CollectionSpec(
    name="lib",
    clip=EmbeddingModelInfo("clip-test", CLIP_DIM, "none", aligned=True),
    text=EmbeddingModelInfo("text-test", TEXT_DIM, "w", aligned=True),
    quantization=QuantizationSpec(
        encoding=BinaryEncoding.ONE_AND_HALF_BITS,
        query_encoding=QueryEncoding.SCALAR4,
        always_ram=True,
        hnsw_m=8,
        hnsw_ef_construct=32,
    ),
)
LIVE_SKIP = "set QDRANT_URL to run against a real Qdrant server"
INGESTED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def unit_vector(seed: int, dim: int) -> FloatVector:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def asset_id(i: int) -> str:
    return f"{i:032x}"


def make_segment(
    i: int,
    folder: str,
    modality: Modality,
    kind: SegmentKind,
    *,
    index: int = 0,
    count: int = 1,
    text: str | None = None,
    tags: tuple[str, ...] = (),
    span: tuple[float, float] | None = None,
) -> Segment:
    """Segment ``index`` of asset ``i``, a file under ``/data/lib/<folder>/`` (the library
    path clients see is ``lib/<folder>/<i>``)."""
    asset = Asset(
        asset_id=asset_id(i),
        source=f"/data/lib/{folder}/{i}",
        root="/data/lib",
        modality=modality,
        mime="application/octet-stream",
        size_bytes=100 + i,
        content_sha256=f"{i:064x}",
        ingested_at=INGESTED_AT,
        title=f"asset {i}",
        tags=tags,
        mtime_ns=1_000 + i,
    )
    locator = Locator(start_s=span[0], end_s=span[1]) if span else Locator()
    return Segment(asset=asset, index=index, count=count, kind=kind, text=text, locator=locator)


def embedded(segment: Segment, *signals: Signal) -> EmbeddedSegment:
    """The segment with one seeded vector per signal (the same segment, the same vectors)."""
    seed = int(segment.asset.asset_id, 16) * 100 + segment.index
    dims = {Signal.CLIP: CLIP_DIM, Signal.TEXT: TEXT_DIM}
    return EmbeddedSegment(
        segment, {s: unit_vector(seed * 10 + i, dims[s]) for i, s in enumerate(signals)}
    )


def library() -> list[EmbeddedSegment]:
    """15 segments of 12 assets: pictures (two folders whose names share a prefix), notes,
    a video's frames and a recording's transcript, with the vectors each kind really has."""
    items: list[EmbeddedSegment] = []
    for i in range(6):
        seg = make_segment(
            i,
            "photos",
            Modality.IMAGE,
            SegmentKind.IMAGE,
            text=f"photo number {i} of a red lighthouse" if i == 2 else f"photo number {i}",
            tags=("cat",) if i % 2 == 0 else ("dog",),
        )
        items.append(embedded(seg, Signal.CLIP, Signal.TEXT))
    for i in (6, 7):
        seg = make_segment(i, "photos2", Modality.IMAGE, SegmentKind.IMAGE, tags=("cat",))
        items.append(embedded(seg, Signal.CLIP))
    notes = {8: "the lighthouse keeper kept a diary", 9: "order part XJ-4417-B from the shop"}
    for i, words in notes.items():
        seg = make_segment(i, "notes", Modality.TEXT, SegmentKind.TEXT_CHUNK, text=words)
        items.append(embedded(seg, Signal.TEXT))
    for n, span in enumerate(((0.0, 4.0), (4.0, 9.5), (9.5, 12.0))):
        seg = make_segment(
            10, "videos", Modality.VIDEO, SegmentKind.FRAME, index=n, count=3, span=span
        )
        items.append(embedded(seg, Signal.CLIP))
    for n, (span, words) in enumerate((((0.0, 5.0), "hello there"), ((5.0, 10.0), "goodbye"))):
        seg = make_segment(
            11,
            "audio",
            Modality.AUDIO,
            SegmentKind.TRANSCRIPT,
            index=n,
            count=2,
            span=span,
            text=words,
        )
        items.append(embedded(seg, Signal.TEXT))
    return items


@dataclass
class Backend:
    """One engine under test: ``make()`` opens another store over the same data (as a restart
    would), ``name(base)`` a collection name of this test's own (unique on a shared server)."""

    kind: str
    factory: Callable[[], VectorStore]
    prefix: str = ""
    stores: list[VectorStore] = field(default_factory=list)

    def make(self) -> VectorStore:
        store = self.factory()
        self.stores.append(store)
        return store

    def name(self, base: str) -> str:
        return self.prefix + base

    def close(self) -> None:
        for store in self.stores:
            store.close()


@contextmanager
def embedded_backend(root: Path) -> Iterator[Backend]:
    backend = Backend("embedded", lambda: EdgeVectorStore(root))
    yield backend
    backend.close()


@contextmanager
def memory_backend() -> Iterator[Backend]:
    """The server adapter over qdrant-client's local mode: every call the adapter makes, run by
    the client's own engine (brute force, no quantization: its results are exact)."""
    client = QdrantClient(":memory:")
    backend = Backend("server", lambda: QdrantServerStore(":memory:", client=client))
    yield backend
    backend.close()
    client.close()


@contextmanager
def live_backend() -> Iterator[Backend]:
    """A real server at QDRANT_URL; everything a test made there is deleted afterwards."""
    url = os.environ["QDRANT_URL"]
    api_key = os.environ.get("QDRANT_API_KEY") or None
    prefix = f"mmrag-test-{uuid.uuid4().hex[:8]}-"
    backend = Backend("live", lambda: QdrantServerStore(url, api_key=api_key), prefix=prefix)
    yield backend
    backend.close()
    client = QdrantClient(url=url, api_key=api_key)
    try:
        for alias in client.get_aliases().aliases:
            if alias.alias_name.startswith(prefix):
                drop = qm.DeleteAlias(alias_name=alias.alias_name)
                client.update_collection_aliases(
                    change_aliases_operations=[qm.DeleteAliasOperation(delete_alias=drop)]
                )
        for collection in client.get_collections().collections:
            if collection.name.startswith(prefix):
                client.delete_collection(collection.name)
    finally:
        client.close()
