"""Calibrated relevance thresholds: the rule, the labelling, and their use by the retriever."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.adapters.edge_store import EdgeVectorStore
from app.core.models import (
    Asset,
    CollectionTuning,
    Modality,
    RelevanceThresholds,
    SearchHit,
    Segment,
    SegmentKind,
    Signal,
)
from app.core.retrieval import QueryKind, RetrievalOptions, is_relevant
from app.http.app import Models
from app.wiring import build_retriever, collection_spec
from ingestion import cli
from ingestion.calibrate import THRESHOLDS, Labelled, choose, label_hits
from tests.conftest import make_settings
from tests.test_http import ingest_into


def test_every_threshold_of_the_settings_is_calibrated() -> None:
    assert set(THRESHOLDS) == {f.name for f in fields(RelevanceThresholds)}


def test_the_threshold_keeps_the_asked_share_of_relevant_hits() -> None:
    relevant = [Labelled(s, True) for s in (0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.1)]
    other = [Labelled(s, False) for s in (0.5, 0.3, 0.2, 0.1, 0.05)]
    c = choose("min_text_score", relevant + other, keep=0.9)
    assert c.threshold == 0.3  # 9 of the 10 relevant scores are >= 0.3
    assert c.recall == pytest.approx(0.9)
    assert c.precision == pytest.approx(9 / 11)  # 0.5 and 0.3 of the others pass too
    strict = choose("min_text_score", relevant + other, keep=0.5)
    assert strict.threshold == 0.5
    assert strict.recall == pytest.approx(0.5)


def test_too_few_relevant_hits_choose_nothing() -> None:
    c = choose("min_clip_image_score", [Labelled(0.9, True), Labelled(0.2, False)], keep=0.95)
    assert c.threshold is None
    assert "only 1 relevant" in c.reason


def _hit(asset_id: str, **scores: float) -> SearchHit:
    asset = Asset(
        asset_id=asset_id,
        source=f"/l/{asset_id}.jpg",
        modality=Modality.IMAGE,
        mime="image/jpeg",
        size_bytes=1,
        content_sha256="0",
        ingested_at=datetime.now(UTC),
        title=asset_id,
    )
    segment = Segment(asset=asset, index=0, count=1, kind=SegmentKind.IMAGE)
    return SearchHit(segment, 1.0, {Signal(k): v for k, v in scores.items()})


def test_hits_are_labelled_by_the_query_kind_and_signal() -> None:
    hits = [_hit("a", text=0.7, clip=0.3, bm25=1.0), _hit("b", text=0.2)]
    text = label_hits(QueryKind.TEXT, hits, {"a"})
    assert text["min_text_score"] == [Labelled(0.7, True), Labelled(0.2, False)]
    assert text["min_clip_text_score"] == [Labelled(0.3, True)]
    assert text["min_bm25_coverage"] == [Labelled(1.0, True)]
    assert text["min_clip_image_score"] == []
    image = label_hits(QueryKind.IMAGE, hits, {"b"})
    assert image["min_clip_image_score"] == [Labelled(0.3, False)]
    assert image["min_text_score"] == []


def test_calibrated_thresholds_apply_unless_set_explicitly() -> None:
    hit = _hit("a", text=0.25)
    defaults = RetrievalOptions()
    assert not is_relevant(hit, QueryKind.TEXT, defaults)  # 0.25 < 0.30
    calibrated = RelevanceThresholds(min_text_score=0.2)
    assert is_relevant(hit, QueryKind.TEXT, defaults.with_thresholds(calibrated))
    pinned = RetrievalOptions(explicit=frozenset({"min_text_score"}))
    assert not is_relevant(hit, QueryKind.TEXT, pinned.with_thresholds(calibrated))
    assert CollectionTuning().thresholds == RelevanceThresholds()


QUERIES = (
    ("a ginger cat looking up", "photos/animals/chelsea.jpg"),
    ("cup of coffee with latte art", "photos/food/coffee.jpg"),
    ("rocket lifting off from the launch pad", "photos/space/rocket.jpg"),
    ("Grace Hopper in navy uniform", "photos/people/grace_hopper.jpg"),
    ("distant galaxies", "photos/space/hubble_deep_field.jpg"),
    ("a horse", "photos/animals/horse.png"),
    ("a motorcycle", "photos/objects/motorcycle.jpg"),
)


def test_calibrate_writes_thresholds_the_service_then_uses(
    sample_library: Path,
    models: Models,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(tmp_path / "data")
    ingest_into(settings, models, sample_library)
    queries = tmp_path / "queries.jsonl"
    lines = [
        json.dumps({"text": text, "relevant": [str(sample_library / path)]})
        for text, path in QUERIES
    ]
    queries.write_text("\n".join([*lines, '{"text": "no relevant set"}']) + "\n")
    monkeypatch.setenv("MMRAG_CLIP__PRETRAINED", "none")
    monkeypatch.setenv("MMRAG_DATA_DIR", str(settings.data_dir))
    code = cli.main(["calibrate", str(queries), "--keep", "0.8", "--write"])
    assert code == 1  # one line was skipped, and said so
    store = EdgeVectorStore(settings.collections_dir)
    try:
        collection = store.open(
            collection_spec(settings, settings.collection, models.clip, models.text), create=False
        )
        chosen = collection.tuning.thresholds
        assert chosen.min_text_score is not None
        assert 0 < chosen.min_text_score < 1
        assert chosen.min_clip_image_score is None  # no image query: left to the default
        assert "calibrate" in collection.tuning.notes[-1]
        # The retriever judges hits of this collection by the calibrated threshold.
        retriever = build_retriever(settings, models.clip, models.text)
        found = retriever.search_text(collection, QUERIES[0][0], top_k=10)
        assert found.relevant == tuple(
            (h.signal_scores.get(Signal.TEXT) or 0) >= chosen.min_text_score
            or (h.signal_scores.get(Signal.BM25) or 0) >= RetrievalOptions().min_bm25_coverage
            for h in found.hits
        )
    finally:
        store.close()
