"""The vector-store contract: the same operations on the embedded engine (qdrant-edge) and on
the server adapter (qdrant-client, here over its local mode), with the same results wherever
both engines promise the same. ``tests/test_qdrant_live.py`` runs the tests in ``__all__``
against a real server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import pytest
from qdrant_client import QdrantClient

from app.adapters.bm25 import bm25_document, bm25_query, coverage
from app.adapters.edge_store import EdgeVectorStore
from app.adapters.qdrant_server import QdrantServerStore
from app.core.errors import CollectionMismatchError, CollectionNotFoundError
from app.core.models import (
    BinaryEncoding,
    CollectionSpec,
    CollectionTuning,
    EmbeddedSegment,
    EmbeddingModelInfo,
    FloatVector,
    Fusion,
    Modality,
    RelevanceThresholds,
    SearchFilters,
    SearchHit,
    SearchTuning,
    SegmentKind,
    Signal,
    TimeRange,
    VectorQuery,
)
from app.core.ports import FloatMatrix, StoredPoint, VectorCollection, VectorStore
from tests.store_fixtures import (
    CLIP_DIM,
    SPEC,
    TEXT_DIM,
    Backend,
    asset_id,
    embedded_backend,
    library,
    memory_backend,
    unit_vector,
)

__all__ = [
    "test_a_collection_is_created_found_and_checked",
    "test_aliases_move_readers_to_a_new_collection",
    "test_evaluation_reads_every_vector_and_payload",
    "test_exact_search_ranks_by_cosine",
    "test_filters_select_the_same_segments",
    "test_focused_assets_change_no_exact_result",
    "test_fused_search_scores_every_signal",
    "test_tuning_is_saved_with_the_collection",
    "test_writes_deletes_and_counts",
]

# qdrant-client's local mode keeps no payload index and ignores search parameters; the
# adapter must send them all the same (test_qdrant_wire.py checks what it sends).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact .brute-force. search"),
]

Key = tuple[str, int]


@pytest.fixture(params=["embedded", "server"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "embedded":
        with embedded_backend(tmp_path / "collections") as embedded:
            yield embedded
    else:
        with memory_backend() as server:
            yield server


class EvaluationViews(Protocol):
    """What evaluation, calibration and autotuning read besides the port (both engines)."""

    def payloads(self, fields: Sequence[str]) -> Iterator[dict[str, Any]]: ...

    def all_vectors(self, signal: Signal) -> tuple[list[str], FloatMatrix]: ...

    def vector_count(self, signal: Signal) -> int: ...

    def sample_vectors(
        self, signal: Signal, n: int, seed: int
    ) -> tuple[list[str], FloatMatrix]: ...


def spec_for(backend: Backend, base: str = "lib") -> CollectionSpec:
    return dataclasses.replace(SPEC, name=backend.name(base))


def filled(backend: Backend) -> tuple[VectorStore, VectorCollection, list[EmbeddedSegment]]:
    store = backend.make()
    collection = store.open(spec_for(backend), create=True)
    items = library()
    collection.upsert(items)
    return store, collection, items


def key(hit: SearchHit) -> Key:
    return hit.segment.asset.asset_id, hit.segment.index


def item_key(item: EmbeddedSegment) -> Key:
    return item.segment.asset.asset_id, item.segment.index


def both_vectors(item: EmbeddedSegment) -> dict[Signal, FloatVector]:
    return {s: item.vectors[s] for s in (Signal.CLIP, Signal.TEXT)}


def everything(**fields: Any) -> VectorQuery:
    """An exact query whose two signals reach every point (each holds clip or text)."""
    vectors = {Signal.CLIP: unit_vector(1, CLIP_DIM), Signal.TEXT: unit_vector(2, TEXT_DIM)}
    return VectorQuery(vectors, limit=50, candidates_per_signal=50, exact=True, **fields)


def test_a_collection_is_created_found_and_checked(backend: Backend) -> None:
    store = backend.make()
    spec = spec_for(backend)
    assert not store.exists(spec.name)
    assert spec.name not in store.names()
    store.hold(spec.name)  # nothing to hold yet: no error either
    with pytest.raises(CollectionNotFoundError, match="does not exist"):
        store.open(spec, create=False)
    with pytest.raises(CollectionNotFoundError):
        store.open_stored(spec.name)
    collection = store.open(spec, create=True)
    assert collection.spec == spec
    assert collection.stats().points == 0
    assert store.exists(spec.name)
    assert spec.name in store.names()
    assert store.open(spec, create=False) is collection
    store.close()

    again = backend.make()  # as after a restart: the spec was saved with the collection
    again.hold(spec.name)
    assert again.open_stored(spec.name).spec == spec
    other = dataclasses.replace(
        spec, text=EmbeddingModelInfo("other-model", TEXT_DIM, "w", aligned=True)
    )
    with pytest.raises(CollectionMismatchError, match=r"text\.name: collection has 'text-test'"):
        again.open(other, create=True)
    relaxed = dataclasses.replace(
        spec, quantization=dataclasses.replace(spec.quantization, encoding=BinaryEncoding.ONE_BIT)
    )
    # Build-time settings stay the collection's own unless the caller insists on them.
    opened = again.open(relaxed, create=False)
    assert opened.spec.quantization.encoding is BinaryEncoding.ONE_AND_HALF_BITS
    with pytest.raises(CollectionMismatchError, match=r"quantization\.encoding: collection has"):
        again.open(relaxed, create=False, require_index_settings=True)


def test_exact_search_ranks_by_cosine(backend: Backend) -> None:
    _, collection, items = filled(backend)
    for signal, dim in ((Signal.CLIP, CLIP_DIM), (Signal.TEXT, TEXT_DIM)):
        query = unit_vector(500 + dim, dim)
        hits = collection.search(VectorQuery({signal: query}, limit=50, exact=True))
        expected = sorted(
            ((float(i.vectors[signal] @ query), item_key(i)) for i in items if signal in i.vectors),
            reverse=True,
        )
        assert [key(h) for h in hits] == [k for _, k in expected]
        assert [h.score for h in hits] == pytest.approx([s for s, _ in expected], abs=1e-5)
        assert [h.signal_scores[signal] for h in hits] == pytest.approx(
            [h.score for h in hits], abs=1e-5
        )
    # Quantized search (the default tuning) finds a stored vector first.
    probe = items[3]
    hits = collection.search(VectorQuery({Signal.CLIP: probe.vectors[Signal.CLIP]}, limit=3))
    assert key(hits[0]) == item_key(probe)
    assert hits[0].segment == probe.segment  # the payload round trip


FRAMES = {(10, 0), (10, 1), (10, 2)}
TRANSCRIPT = {(11, 0), (11, 1)}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param(SearchFilters(modalities=(Modality.TEXT,)), {(8, 0), (9, 0)}, id="modality"),
        pytest.param(
            SearchFilters(modalities=(Modality.VIDEO, Modality.AUDIO)),
            FRAMES | TRANSCRIPT,
            id="modalities",
        ),
        pytest.param(
            SearchFilters(tags=("cat",)), {(0, 0), (2, 0), (4, 0), (6, 0), (7, 0)}, id="tag"
        ),
        # Prefixes are plain string prefixes of the library path clients see...
        pytest.param(
            SearchFilters(source_prefix="lib/photos/"),
            {(i, 0) for i in range(6)},
            id="folder prefix",
        ),
        pytest.param(
            SearchFilters(source_prefix="lib/photos"),
            {(i, 0) for i in range(8)},
            id="string prefix",
        ),
        # ...never of the absolute path on disk.
        pytest.param(SearchFilters(source_prefix="/data/lib"), set(), id="absolute prefix"),
        # Time ranges match the segments whose span overlaps them (ends included).
        pytest.param(
            SearchFilters(time_range=TimeRange(5.0, 6.0)),
            {(10, 1), (11, 0), (11, 1)},
            id="time range",
        ),
        pytest.param(
            SearchFilters(time_range=TimeRange(start_s=9.6)), {(10, 2), (11, 1)}, id="time from"
        ),
        pytest.param(
            SearchFilters(time_range=TimeRange(end_s=4.0)),
            {(10, 0), (10, 1), (11, 0)},
            id="time until",
        ),
        pytest.param(SearchFilters(time_range=TimeRange()), FRAMES | TRANSCRIPT, id="any time"),
        pytest.param(
            SearchFilters(asset_ids=(asset_id(3), asset_id(10))),
            {(3, 0)} | FRAMES,
            id="assets",
        ),
        pytest.param(SearchFilters(kinds=(SegmentKind.FRAME,)), FRAMES, id="kind"),
        pytest.param(
            SearchFilters(exclude_kinds=(SegmentKind.IMAGE,)),
            {(8, 0), (9, 0)} | FRAMES | TRANSCRIPT,
            id="excluded kind",
        ),
        pytest.param(
            SearchFilters(modalities=(Modality.IMAGE,), tags=("cat",), source_prefix="lib/photos/"),
            {(0, 0), (2, 0), (4, 0)},
            id="all at once",
        ),
    ],
)
def test_filters_select_the_same_segments(
    backend: Backend, filters: SearchFilters, expected: set[tuple[int, int]]
) -> None:
    _, collection, _ = filled(backend)
    hits = collection.search(everything(filters=filters))
    assert {key(h) for h in hits} == {(asset_id(i), n) for i, n in expected}
    assert len(hits) == len(expected)  # no segment twice


def test_fused_search_scores_every_signal(backend: Backend) -> None:
    _, collection, items = filled(backend)
    by_key = {item_key(i): i for i in items}
    target = items[2]  # "photo number 2 of a red lighthouse", with both vectors
    words = "red lighthouse"
    query = VectorQuery(both_vectors(target), limit=8, keywords=words)
    for fusion in (Fusion.DBSF, Fusion.RRF):
        hits = collection.search(dataclasses.replace(query, fusion=fusion))
        assert key(hits[0]) == item_key(target)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert hits[0].signal_scores == pytest.approx(
            {Signal.CLIP: 1.0, Signal.TEXT: 1.0, Signal.BM25: 1.0}, abs=1e-5
        )
        sparse_query = bm25_query(words)
        assert sparse_query is not None
        for hit in hits:
            stored = by_key[key(hit)]
            # Every dense signal the hit holds is scored (its cosine with the query), and
            # BM25 by the share of the query's terms it holds.
            expected = {
                s: float(stored.vectors[s] @ query.vectors[s])
                for s in (Signal.CLIP, Signal.TEXT)
                if s in stored.vectors
            }
            terms = bm25_document(stored.segment.text)
            share = coverage(terms.indices if terms else None, sparse_query)
            if share is not None:
                expected[Signal.BM25] = share
            assert hit.signal_scores == pytest.approx(expected, abs=1e-5)
    notes = collection.search(
        VectorQuery({Signal.TEXT: unit_vector(3, TEXT_DIM)}, limit=20, keywords="lighthouse")
    )
    assert {key(h): h.signal_scores.get(Signal.BM25) for h in notes}[(asset_id(8), 0)] == 1.0


@pytest.mark.parametrize("two_signals", [False, True])
def test_focused_assets_change_no_exact_result(backend: Backend, two_signals: bool) -> None:
    """Focused assets join every signal's candidates and are scored like the rest, so under
    exact search (every candidate already in the pool) focusing changes no rank and no score."""
    _, collection, items = filled(backend)
    vectors = (
        both_vectors(items[0]) if two_signals else {Signal.CLIP: items[0].vectors[Signal.CLIP]}
    )
    query = VectorQuery(vectors, limit=15, candidates_per_signal=15, exact=True)
    plain = collection.search(query)
    far = plain[-1].segment.asset.asset_id
    focused = collection.search(dataclasses.replace(query, focus_assets=(far,)))
    assert [key(h) for h in focused] == [key(h) for h in plain]
    assert [h.score for h in focused] == pytest.approx([h.score for h in plain], abs=1e-5)
    # The query's own filters still apply to the focused assets.
    images = SearchFilters(modalities=(Modality.IMAGE,))
    video = collection.search(
        dataclasses.replace(query, filters=images, focus_assets=(asset_id(10),))
    )
    assert asset_id(10) not in {h.segment.asset.asset_id for h in video}


def test_writes_deletes_and_counts(backend: Backend) -> None:
    _, collection, items = filled(backend)
    assert (collection.stats().points, collection.stats().assets) == (15, 12)
    collection.upsert(items)  # deterministic ids: writing again changes nothing
    collection.upsert([])
    assert (collection.stats().points, collection.stats().assets) == (15, 12)

    indexed = {a.asset_id: a for a in collection.indexed_assets()}
    assert set(indexed) == {asset_id(i) for i in range(12)}
    video = indexed[asset_id(10)]
    assert (video.segment_count, video.stored_segments, video.complete) == (3, 3, True)
    assert (video.source, video.root) == ("/data/lib/videos/10", "/data/lib")
    assert (video.content_sha256, video.size_bytes, video.mtime_ns) == (f"{10:064x}", 110, 1010)
    assert collection.asset_segments(asset_id(10)) == [i.segment for i in items[10:13]]
    assert collection.asset_segments("absent") == []

    collection.set_mtimes({asset_id(3): 42, asset_id(11): 43})
    collection.set_mtimes({})
    mtimes = {a.asset_id: a.mtime_ns for a in collection.indexed_assets()}
    assert mtimes == {asset_id(i): 1000 + i for i in range(12)} | {
        asset_id(3): 42,
        asset_id(11): 43,
    }
    assert [s.asset.mtime_ns for s in collection.asset_segments(asset_id(11))] == [43, 43]

    collection.delete_assets([asset_id(10), asset_id(3)])
    collection.delete_assets([])
    assert (collection.stats().points, collection.stats().assets) == (11, 10)
    assert collection.asset_segments(asset_id(10)) == []
    found = {key(h)[0] for h in collection.search(everything())}
    assert found == {asset_id(i) for i in range(12)} - {asset_id(3), asset_id(10)}


def test_tuning_is_saved_with_the_collection(backend: Backend) -> None:
    store = backend.make()
    spec = spec_for(backend)
    collection = store.open(spec, create=True)
    assert collection.tuning == CollectionTuning()
    tuning = CollectionTuning(
        thresholds=RelevanceThresholds(min_text_score=0.21, min_bm25_coverage=0.5),
        search=SearchTuning(oversampling=2.0, hnsw_ef=64, rescore=False),
        notes=("autotune: test",),
    )
    store.save_tuning(spec.name, tuning)
    assert collection.tuning == tuning  # the open collection uses it at once
    with pytest.raises(CollectionNotFoundError):
        store.save_tuning(backend.name("absent"), tuning)
    store.close()
    again = backend.make()
    reopened = again.open(spec, create=False)
    assert reopened.tuning == tuning
    assert reopened.spec == spec  # the build-time spec, untouched by the tuning
    cleared = CollectionTuning(notes=("reset",))
    again.save_tuning(spec.name, cleared)
    assert reopened.tuning == cleared
    again.close()
    assert backend.make().open_stored(spec.name).tuning == cleared


def test_aliases_move_readers_to_a_new_collection(backend: Backend) -> None:
    store = backend.make()
    spec = spec_for(backend)
    name = spec.name
    items = library()
    store.open(spec, create=True).upsert(items[:5])
    old = store.resolve(name)
    # The server keeps a collection behind an alias from the start; the embedded store names
    # a folder, until a re-index points the name elsewhere.
    assert old == (name if backend.kind == "embedded" else f"{name}-v1")

    new = backend.name("lib-v2")  # as a re-index builds it, then switches the name over
    store.open(dataclasses.replace(spec, name=new), create=True).upsert(items[5:])
    physical = store.resolve(new)
    assert store.switch_alias(name, new) == old
    assert store.resolve(name) == physical
    assert store.switch_alias(name, physical) is None  # already there
    hits = store.open(spec, create=False).search(everything())
    assert {key(h) for h in hits} == {item_key(i) for i in items[5:]}
    assert name in store.names()
    assert new not in store.names()  # users see it by the name it now serves
    assert physical not in store.names()

    with pytest.raises(CollectionMismatchError, match="switch the alias first"):
        store.drop(physical)
    store.drop(old)
    assert [n for n in store.names() if n.startswith(backend.prefix)] == [name]
    assert store.exists(name)

    newer = backend.name("lib-v3")  # the next re-index drops what the last one built
    store.open(dataclasses.replace(spec, name=newer), create=True).upsert(items[:2])
    assert store.switch_alias(name, newer) == physical
    store.drop(physical)
    assert [n for n in store.names() if n.startswith(backend.prefix)] == [name]
    hits = store.open(spec, create=False).search(everything())
    assert {key(h) for h in hits} == {item_key(i) for i in items[:2]}
    with pytest.raises(CollectionNotFoundError):
        store.switch_alias(name, backend.name("absent"))
    with pytest.raises(CollectionNotFoundError):
        store.drop(backend.name("absent"))


def test_evaluation_reads_every_vector_and_payload(backend: Backend) -> None:
    _, collection, items = filled(backend)
    views = cast("EvaluationViews", collection)
    assert views.vector_count(Signal.CLIP) == 11
    assert views.vector_count(Signal.TEXT) == 10
    ids, matrix = views.all_vectors(Signal.TEXT)
    assert len(ids) == matrix.shape[0] == 10
    assert matrix.shape[1] == TEXT_DIM
    stored = {p.id: p for p in collection.get_points(ids)}
    for point_id, row in zip(ids, matrix, strict=True):
        np.testing.assert_allclose(row, stored[point_id].dense["text"], atol=1e-6)
    sample_ids, sample = views.sample_vectors(Signal.CLIP, 4, seed=7)
    assert len(sample_ids) == len(set(sample_ids)) == sample.shape[0] == 4
    assert views.sample_vectors(Signal.CLIP, 4, seed=7)[0] == sample_ids  # seeded
    every_clip, _ = views.all_vectors(Signal.CLIP)
    assert set(sample_ids) <= set(every_clip)
    assert views.sample_vectors(Signal.CLIP, 50, seed=7)[0] == every_clip
    payloads = list(views.payloads(["asset_id", "kind"]))
    assert len(payloads) == 15
    assert {frozenset(p) for p in payloads} == {frozenset({"asset_id", "kind"})}
    assert sorted(p["asset_id"] for p in payloads) == sorted(
        i.segment.asset.asset_id for i in items
    )


# Between the engines: what the embedded engine returns, the server adapter returns too.


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Backend, Backend]]:
    with embedded_backend(tmp_path / "collections") as embedded, memory_backend() as server:
        yield embedded, server


def test_both_engines_give_the_same_exact_results(pair: tuple[Backend, Backend]) -> None:
    (_, edge, items), (_, server, _) = filled(pair[0]), filled(pair[1])
    target = items[2]
    queries = [
        VectorQuery({Signal.CLIP: unit_vector(7, CLIP_DIM)}, limit=8, exact=True),
        VectorQuery({Signal.TEXT: unit_vector(8, TEXT_DIM)}, limit=8, exact=True),
        everything(filters=SearchFilters(tags=("cat",))),
        VectorQuery(
            {Signal.CLIP: unit_vector(9, CLIP_DIM)},
            limit=8,
            filters=SearchFilters(time_range=TimeRange(3.0, 6.0)),
            exact=True,
        ),
        VectorQuery(both_vectors(target), limit=6, keywords="lighthouse diary", exact=True),
        VectorQuery(both_vectors(target), limit=6, fusion=Fusion.RRF, rrf_k=10, exact=True),
    ]
    # (Fusing two lists of two, DBSF gives equal scores, which the engines may order either way:
    # no query here has ties.)
    for query in queries:
        a, b = edge.search(query), server.search(query)
        assert [key(h) for h in a] == [key(h) for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
        for x, y in zip(a, b, strict=True):
            assert x.segment == y.segment
            assert x.signal_scores == pytest.approx(y.signal_scores, abs=1e-5)


def copy_all(source: VectorCollection, target: VectorCollection, page: int) -> int:
    """Page by page, as ``ingestion migrate`` does; returns how many pages."""
    offset: str | None = None
    pages = 0
    while True:
        points, offset = source.export_points(offset, page)
        target.import_points(points)
        pages += 1
        if offset is None:
            return pages


def assert_same_points(a: Sequence[StoredPoint], b: Sequence[StoredPoint]) -> None:
    assert [p.id for p in a] == [p.id for p in b]
    for x, y in zip(a, b, strict=True):
        assert x.payload == y.payload
        assert x.sparse.keys() == y.sparse.keys()
        for name, (indices, values) in x.sparse.items():
            assert list(indices) == list(y.sparse[name][0])
            assert list(values) == pytest.approx(list(y.sparse[name][1]))
        assert x.dense.keys() == y.dense.keys()
        for name, values in x.dense.items():
            np.testing.assert_allclose(values, y.dense[name], atol=1e-6)


@pytest.mark.parametrize("direction", ["embedded to server", "server to embedded"])
def test_points_move_between_engines_unchanged(
    pair: tuple[Backend, Backend], direction: str
) -> None:
    source_backend, target_backend = pair if direction == "embedded to server" else pair[::-1]
    _, source, items = filled(source_backend)
    target = target_backend.make().open(spec_for(target_backend), create=True)
    assert copy_all(source, target, page=4) == 4  # 15 points
    exported, _ = source.export_points(None, 100)
    ids = sorted(p.id for p in exported)
    assert len(ids) == 15
    assert_same_points(
        sorted(source.get_points(ids), key=lambda p: p.id),
        sorted(target.get_points(ids), key=lambda p: p.id),
    )
    assert target.get_points(["00000000-0000-0000-0000-000000000000"]) == []
    query = VectorQuery(both_vectors(items[4]), limit=10, keywords="lighthouse", exact=True)
    assert [key(h) for h in target.search(query)] == [key(h) for h in source.search(query)]
    assert (target.stats().points, target.stats().assets) == (15, 12)


def test_a_server_collection_keeps_one_name() -> None:
    """On a server a re-index's collection hands its name over when switched in, and its
    physical name cannot be taken again by a new collection."""
    with memory_backend() as server:
        store = server.make()
        store.open(SPEC, create=True)
        new = dataclasses.replace(SPEC, name="lib-next")
        store.open(new, create=True)
        assert store.switch_alias("lib", "lib-next") == "lib-v1"
        assert not store.exists("lib-next")
        assert store.resolve("lib") == "lib-next-v1"
        with pytest.raises(CollectionMismatchError, match="is what 'lib' reads from"):
            store.open(new, create=True)
        store.drop("lib-v1")
        assert store.names() == ["lib"]
        with pytest.raises(CollectionMismatchError, match="is an alias"):
            store.drop("lib")


def test_payloads_link_thumbnails_alike(tmp_path: Path) -> None:
    """With the service's public URL, both engines store the same ``thumbnail_url``."""
    item = library()[0]
    segment = dataclasses.replace(item.segment, thumbnail="thumbnails/lib/0-0.jpg")
    client = QdrantClient(":memory:")
    stores: list[VectorStore] = [
        EdgeVectorStore(tmp_path, public_url="https://rag.example/"),
        QdrantServerStore(":memory:", client=client, public_url="https://rag.example/"),
    ]
    links = []
    for store in stores:
        collection = store.open(SPEC, create=True)
        collection.upsert([EmbeddedSegment(segment, item.vectors)])
        (point,) = collection.export_points(None, 10)[0]
        links.append(point.payload["thumbnail_url"])
        store.close()
    client.close()
    assert (
        links
        == [f"https://rag.example/v1/assets/{asset_id(0)}/thumbnail?collection=lib&segment=0"] * 2
    )


def test_a_server_collection_not_made_here_is_refused() -> None:
    """Which models built a collection is in its metadata; without it (or with metadata
    that no longer reads) the collection is not opened, rather than guessed at."""
    client = QdrantClient(":memory:")
    store = QdrantServerStore(":memory:", client=client)
    try:
        client.create_collection("foreign")
        with pytest.raises(CollectionMismatchError, match="not made by this service"):
            store.open_stored("foreign")
        store.open(SPEC, create=True)
        client.update_collection("lib-v1", metadata={"mmrag_tuning": {"search": {"ef": 1}}})
        with pytest.raises(CollectionMismatchError, match="tuning saved with collection 'lib-v1'"):
            QdrantServerStore(":memory:", client=client).open(SPEC, create=False)
    finally:
        store.close()
        client.close()
