"""EdgeVectorStore on the real embedded engine: binary quantization, filters, spec checks."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.adapters.edge_store import EdgeCollection, EdgeVectorStore
from app.core.errors import CollectionMismatchError, CollectionNotFoundError, StoreLockedError
from app.core.models import (
    Asset,
    BinaryEncoding,
    CollectionSpec,
    CollectionTuning,
    EmbeddedSegment,
    EmbeddingModelInfo,
    Fusion,
    Locator,
    Modality,
    QuantizationSpec,
    QueryEncoding,
    RelevanceThresholds,
    SearchFilters,
    SearchTuning,
    Segment,
    SegmentKind,
    Signal,
    TimeRange,
    VectorQuery,
)
from ingestion.pipeline import IngestReport

SPEC = CollectionSpec(
    name="unit",
    clip=EmbeddingModelInfo("clip-test", 8, "none", aligned=True),
    text=EmbeddingModelInfo("text-test", 4, "w", aligned=True),
    quantization=QuantizationSpec(
        encoding=BinaryEncoding.ONE_AND_HALF_BITS,
        query_encoding=QueryEncoding.SCALAR4,
        always_ram=True,
        hnsw_m=8,
        hnsw_ef_construct=32,
    ),
)
TUNING = SearchTuning(oversampling=3.0, hnsw_ef=48)


def test_collection_really_has_binary_quantization(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path)
    try:
        collection = store.open(SPEC, create=True)
        config = collection.engine_config()
    finally:
        store.close()
    for name, dim in (("clip", 8), ("text", 4)):
        vector = config["vectors"][name]
        assert vector["size"] == dim
        assert vector["distance"] == "Cosine"
        assert vector["quantization_config"] == {
            "binary": {
                "always_ram": True,
                "encoding": "one_and_half_bits",
                "query_encoding": "scalar4bits",
            }
        }
    assert config["hnsw_config"]["m"] == 8
    assert config["hnsw_config"]["ef_construct"] == 32
    # Small collections must still be indexed, or 1.5/2-bit codes silently act as 1-bit.
    assert config["optimizers"]["indexing_threshold"] == 1


class RecordingShard:
    """Passes every call to the real shard and keeps the query requests it saw."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard
        self.queries: list[Any] = []  # searches
        self.scorings: list[Any] = []  # per-signal scores of a search's hits

    def query(self, request: Any) -> Any:
        (self.queries if request.with_payload else self.scorings).append(request)
        return self._shard.query(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)


def _unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    m = rng.normal(size=(n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_search_requests_carry_rescore_and_oversampling(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from app.core.models import Asset, EmbeddedSegment, Segment, SegmentKind

    store = EdgeVectorStore(tmp_path)
    try:
        collection = store.open(SPEC, create=True)
        rng = np.random.default_rng(7)
        clips, texts = _unit_vectors(rng, 40, 8), _unit_vectors(rng, 40, 4)
        items = []
        for i in range(40):
            asset = Asset(
                asset_id=f"{i:032x}",
                source=f"/x/{i}.jpg",
                modality=Modality.IMAGE,
                mime="image/jpeg",
                size_bytes=1,
                content_sha256="0",
                ingested_at=datetime.now(UTC),
                title=str(i),
            )
            seg = Segment(asset=asset, index=0, count=1, kind=SegmentKind.IMAGE, text="t")
            items.append(EmbeddedSegment(seg, {Signal.CLIP: clips[i], Signal.TEXT: texts[i]}))
        collection.upsert(items)
        collection.optimize()
        spy = RecordingShard(collection._shard)
        collection._shard = spy  # type: ignore[assignment]

        fused = collection.search(
            VectorQuery({Signal.CLIP: clips[3], Signal.TEXT: texts[3]}, limit=5, tuning=TUNING)
        )
        single = collection.search(VectorQuery({Signal.CLIP: clips[5]}, limit=5, tuning=TUNING))
        ranked = collection.search(
            VectorQuery(
                {Signal.CLIP: clips[3], Signal.TEXT: texts[3]},
                limit=5,
                fusion=Fusion.RRF,
                tuning=TUNING,
            )
        )
    finally:
        store.close()

    assert fused[0].segment.asset.asset_id == f"{3:032x}"
    assert fused[0].signal_scores[Signal.CLIP] == pytest.approx(1.0, abs=1e-5)
    assert fused[0].signal_scores[Signal.TEXT] == pytest.approx(1.0, abs=1e-5)
    assert single[0].segment.asset.asset_id == f"{5:032x}"

    fused_request, single_request, ranked_request = spy.queries
    # Each dense signal's score of the hits comes from the engine: exact, over just those points.
    assert len(spy.scorings) == 2 + 1 + 2
    for scoring in spy.scorings:
        assert scoring.params.exact is True
        assert "HasId" in repr(scoring.filter)
    assert ranked[0].segment.asset.asset_id == f"{3:032x}"
    assert "Rrf" in repr(ranked_request.query)
    assert "Dbsf" in repr(fused_request.query)  # the default
    assert len(fused_request.prefetches) == 2
    for prefetch in fused_request.prefetches:
        q = prefetch.params.quantization
        assert (q.rescore, q.oversampling, q.ignore) == (True, 3.0, False)
        assert prefetch.params.hnsw_ef == 48
        assert prefetch.params.exact is False
    q = single_request.params.quantization
    assert (q.rescore, q.oversampling) == (True, 3.0)


def test_opening_with_other_models_fails_clearly(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path)
    store.open(SPEC, create=True)
    store.close()
    other = dataclasses.replace(SPEC, text=EmbeddingModelInfo("other-model", 4, "w", aligned=True))
    store = EdgeVectorStore(tmp_path)
    with pytest.raises(CollectionMismatchError, match=r"text.name: collection has 'text-test'"):
        store.open(other, create=True)
    # Build-time settings stay the collection's own...
    relaxed = dataclasses.replace(
        SPEC,
        quantization=dataclasses.replace(SPEC.quantization, encoding=BinaryEncoding.ONE_BIT),
    )
    collection = store.open(relaxed, create=False)
    assert collection.spec.quantization.encoding is BinaryEncoding.ONE_AND_HALF_BITS
    store.close()
    # ...unless the caller asks for them on purpose.
    store = EdgeVectorStore(tmp_path)
    with pytest.raises(
        CollectionMismatchError, match=r"quantization\.encoding: collection has 1\.5bit"
    ):
        store.open(relaxed, create=False, require_index_settings=True)
    store.close()


def test_unknown_collection_and_second_opener(tmp_path: Path) -> None:
    first = EdgeVectorStore(tmp_path)
    with pytest.raises(CollectionNotFoundError, match="'unit' does not exist"):
        first.open(SPEC, create=False)
    first.open(SPEC, create=True)
    second = EdgeVectorStore(tmp_path)
    with pytest.raises(StoreLockedError, match="Stop the service"):
        second.open(SPEC, create=False)
    first.close()
    assert second.open(SPEC, create=False).stats().points == 0
    second.close()


def test_half_created_collection_is_repaired_on_next_open(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path)
    store.open(SPEC, create=True)
    store.close()
    # As if the process died after writing the spec but before the engine made its files.
    import shutil

    shutil.rmtree(tmp_path / "unit" / "shard")
    store = EdgeVectorStore(tmp_path)
    assert store.open(SPEC, create=True).engine_config()["vectors"]["clip"]["size"] == 8
    store.close()


def test_payload_indexes_and_filters(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    sample_library: Path,
    text_model: Any,
) -> None:
    report = ingest(sample_library)
    assert report.ok
    collection = open_collection("default")
    schema = collection._shard.info().payload_schema
    assert {"asset_id", "modality", "source", "tags", "kind", "segment_index"} <= set(schema)

    query = text_model.embed_texts(["photos of space"])[0]

    def titles(filters: SearchFilters) -> set[str]:
        hits = collection.search(VectorQuery({Signal.TEXT: query}, limit=50, filters=filters))
        return {h.segment.asset.title for h in hits}

    assert titles(SearchFilters(modalities=(Modality.TEXT,))) == {
        "Coffee brewing notes",
        "Visit to the space museum",
        "cat care",
    }
    assert titles(SearchFilters(tags=("astronomy",))) == {"hubble deep field", "moon"}
    # Prefixes apply to the library path clients see: the root folder's name, then below it.
    prefix = f"{sample_library.name}/photos/animals/"
    assert titles(SearchFilters(source_prefix=prefix)) == {"chelsea", "horse"}
    assert titles(SearchFilters(source_prefix=str(sample_library))) == set()


def _segment(i: int, text: str, **asset_fields: Any) -> Segment:
    asset = Asset(
        asset_id=f"{i:032x}",
        source=f"/x/{i}.mp4",
        modality=Modality.VIDEO,
        mime="video/mp4",
        size_bytes=1,
        content_sha256="0",
        ingested_at=datetime.now(UTC),
        title=str(i),
        **asset_fields,
    )
    return Segment(asset=asset, index=0, count=1, kind=SegmentKind.TRANSCRIPT, text=text)


def test_a_collection_built_before_bm25_gains_it_on_open(tmp_path: Path) -> None:
    """Shards written by earlier versions have no sparse vector: opening adds one, and the
    points written from then on are found by their words."""
    import qdrant_edge as qe

    from app.adapters.edge_store import edge_config_for
    from app.core.collections import spec_to_dict

    folder = tmp_path / "unit"
    (folder / "shard").mkdir(parents=True)
    (folder / "collection.json").write_text(json.dumps(spec_to_dict(SPEC)))
    old = qe.EdgeShard.create(
        str(folder / "shard"),
        edge_config_for(
            {"clip": 8, "text": 4}, SPEC.quantization, max_search_threads=1, bm25=False
        ),
    )
    old.close()
    store = EdgeVectorStore(tmp_path)
    try:
        collection = store.open(SPEC, create=False)
        rng = np.random.default_rng(3)
        texts = _unit_vectors(rng, 2, 4)
        collection.upsert(
            [
                EmbeddedSegment(_segment(0, "the lighthouse keeper"), {Signal.TEXT: texts[0]}),
                EmbeddedSegment(_segment(1, "order part XJ-4417-B"), {Signal.TEXT: texts[1]}),
            ]
        )
        hits = collection.search(
            VectorQuery({Signal.TEXT: texts[0]}, limit=2, keywords="XJ-4417-B")
        )
    finally:
        store.close()
    assert hits[0].segment.text == "order part XJ-4417-B"
    assert hits[0].signal_scores[Signal.BM25] == 1.0
    config = json.loads((folder / "shard" / "edge_config.json").read_text())
    assert "bm25" in config["sparse_vectors"]


def test_media_fields_locators_and_time_filters_round_trip(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path)
    try:
        collection = store.open(SPEC, create=True)
        rng = np.random.default_rng(5)
        texts = _unit_vectors(rng, 3, 4)
        items = []
        for i, (start, end) in enumerate(((0.0, 4.0), (4.0, 9.5), (9.5, 12.0))):
            seg = dataclasses.replace(
                _segment(7, f"part {i}", duration_s=12.0, fps=25.0, codec="h264"),
                index=i,
                count=3,
                locator=Locator(start_s=start, end_s=end),
                thumbnail=f"thumbnails/unit/{7:032x}-{i}.jpg",
            )
            items.append(EmbeddedSegment(seg, {Signal.TEXT: texts[i]}))
        collection.upsert(items)
        query = texts[0]

        def spans(time_range: TimeRange) -> list[tuple[float | None, float | None]]:
            hits = collection.search(
                VectorQuery(
                    {Signal.TEXT: query}, limit=5, filters=SearchFilters(time_range=time_range)
                )
            )
            return sorted((h.segment.locator.start_s, h.segment.locator.end_s) for h in hits)

        assert spans(TimeRange(5.0, 6.0)) == [(4.0, 9.5)]
        assert spans(TimeRange(start_s=9.0)) == [(4.0, 9.5), (9.5, 12.0)]
        assert spans(TimeRange(end_s=4.0)) == [(0.0, 4.0), (4.0, 9.5)]
        stored = collection.asset_segments(f"{7:032x}")
    finally:
        store.close()
    assert [s.thumbnail for s in stored] == [i.segment.thumbnail for i in items]
    assert stored[1].asset.duration_s == 12.0
    assert (stored[1].asset.fps, stored[1].asset.codec) == (25.0, "h264")
    assert stored[1].locator == Locator(start_s=4.0, end_s=9.5)


@pytest.mark.parametrize("two_signals", [False, True])
def test_focused_assets_join_the_candidates_scored_alike(tmp_path: Path, two_signals: bool) -> None:
    """The fine step of coarse-to-fine: a focused asset's segments join every signal's
    candidates, and are scored like the rest (never counted twice)."""
    store = EdgeVectorStore(tmp_path)
    try:
        collection = store.open(SPEC, create=True)
        rng = np.random.default_rng(11)
        clips, texts = _unit_vectors(rng, 40, 8), _unit_vectors(rng, 40, 4)
        collection.upsert(
            [
                EmbeddedSegment(
                    _segment(i, f"t{i}"), {Signal.CLIP: clips[i], Signal.TEXT: texts[i]}
                )
                for i in range(40)
            ]
        )
        collection.optimize()
        vectors = {Signal.CLIP: clips[3], **({Signal.TEXT: texts[3]} if two_signals else {})}
        everything = VectorQuery(vectors, limit=40, candidates_per_signal=40)
        plain = collection.search(everything)
        spy = RecordingShard(collection._shard)
        collection._shard = spy  # type: ignore[assignment]
        far = plain[-1].segment.asset.asset_id
        focused = collection.search(dataclasses.replace(everything, focus_assets=(far,)))
    finally:
        store.close()
    # Every candidate was already in the pool: focusing changes no rank and no score.
    assert [h.segment.asset.asset_id for h in focused] == [h.segment.asset.asset_id for h in plain]
    assert [h.score for h in focused] == pytest.approx([h.score for h in plain], abs=1e-4)
    # ...and the request pooled, per signal, the collection's best and the focused asset's.
    (request,) = spy.queries
    stages = request.prefetches if two_signals else [request]
    for stage in stages:
        pooled = stage.prefetches
        assert len(pooled) == 2
        assert far in repr(pooled[1].filter)
        assert far not in repr(pooled[0].filter)


def test_tuning_is_saved_beside_the_collection_and_read_at_once(tmp_path: Path) -> None:
    store = EdgeVectorStore(tmp_path)
    try:
        collection = store.open(SPEC, create=True)
        assert collection.tuning == CollectionTuning()
        tuning = CollectionTuning(
            thresholds=RelevanceThresholds(min_text_score=0.21),
            search=SearchTuning(oversampling=2.0, hnsw_ef=64),
            notes=("autotune: test",),
        )
        store.save_tuning("unit", tuning)
        assert collection.tuning == tuning  # the open collection reads it at once
        with pytest.raises(CollectionNotFoundError):
            store.save_tuning("absent", tuning)
    finally:
        store.close()
    reopened = EdgeVectorStore(tmp_path)
    try:
        again = reopened.open(SPEC, create=False)
        assert again.tuning == tuning
        assert again.spec == SPEC  # the build-time spec, untouched by the tuning
    finally:
        reopened.close()
    (tmp_path / "unit" / "tuning.json").write_text("{not json")
    broken = EdgeVectorStore(tmp_path)
    try:
        with pytest.raises(CollectionMismatchError, match=r"tuning\.json"):
            broken.open(SPEC, create=False)
    finally:
        broken.close()


def test_a_collection_saved_with_query_time_knobs_in_its_spec_still_opens(tmp_path: Path) -> None:
    """collection.json files written before the split carried rescore, oversampling, hnsw_ef."""
    store = EdgeVectorStore(tmp_path)
    store.open(SPEC, create=True)
    store.close()
    spec_file = tmp_path / "unit" / "collection.json"
    data = json.loads(spec_file.read_text())
    data["quantization"].update(rescore=True, oversampling=3.0, hnsw_ef=48)
    spec_file.write_text(json.dumps(data))
    store = EdgeVectorStore(tmp_path)
    try:
        assert store.open(SPEC, create=False).spec == SPEC
    finally:
        store.close()


def test_payloads_carry_absolute_thumbnail_links_when_the_public_url_is_set(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime

    from app.core.models import Asset, EmbeddedSegment, Segment, SegmentKind

    asset = Asset(
        asset_id="a" * 32,
        source="/lib/talk.mp4",
        modality=Modality.VIDEO,
        mime="video/mp4",
        size_bytes=1,
        content_sha256="0",
        ingested_at=datetime.now(UTC),
        title="talk",
        thumbnail="thumbnails/unit/a.jpg",
    )
    frame = Segment(asset, 1, 2, SegmentKind.FRAME, thumbnail="thumbnails/unit/a-1.jpg")
    speech = Segment(asset, 0, 2, SegmentKind.TRANSCRIPT, text="hello")
    rng = np.random.default_rng(3)
    clips, texts = _unit_vectors(rng, 2, 8), _unit_vectors(rng, 2, 4)
    store = EdgeVectorStore(tmp_path, public_url="https://rag.example.com/")
    try:
        collection = store.open(SPEC, create=True)
        collection.upsert(
            [
                EmbeddedSegment(frame, {Signal.CLIP: clips[0]}),
                EmbeddedSegment(speech, {Signal.TEXT: texts[1]}),
            ]
        )
        points, after = collection.export_points(None, 10)
    finally:
        store.close()
    assert after is None
    links = {p.payload["segment_index"]: p.payload["thumbnail_url"] for p in points}
    base = f"https://rag.example.com/v1/assets/{'a' * 32}/thumbnail?collection=unit"
    assert links == {1: f"{base}&segment=1", 0: base}  # the frame's own picture, else the asset's
    speech_point = next(p for p in points if p.payload["segment_index"] == 0)
    assert set(speech_point.dense) == {"text"} and set(speech_point.sparse) == {"bm25"}
