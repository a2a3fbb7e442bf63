"""``autotune`` on the sample library (real engine), and the store helpers it reads with."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from app.adapters.edge_store import EdgeVectorStore
from app.adapters.openclip import OpenClipEmbedder
from app.adapters.text_embedder import SentenceTextEmbedder
from app.core.errors import ConflictError
from app.core.models import BinaryEncoding, QueryEncoding, Signal, VectorQuery
from app.wiring import collection_spec, retrieval_options
from ingestion import autotune as at
from ingestion.pipeline import IngestionPipeline, IngestRequest
from ingestion.readers import read_options_for
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def ingested(
    clip: OpenClipEmbedder,
    text_model: SentenceTextEmbedder,
    sample_library: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A data dir holding the sample library as collection ``lib`` (store closed)."""
    data = tmp_path_factory.mktemp("autotune") / "data"
    settings = make_settings(data, ingestion={"ocr": "off"})
    store = EdgeVectorStore(settings.collections_dir)
    collection = store.open(collection_spec(settings, "lib", clip, text_model), create=True)
    report = IngestionPipeline(collection, clip, text_model, read_options_for(settings, "lib")).run(
        IngestRequest(paths=(sample_library,))
    )
    store.close()
    assert report.ok
    return data


@pytest.fixture
def data_dir(ingested: Path, tmp_path: Path) -> Path:
    """A private copy of the ingested data dir (autotune may write to it)."""
    return Path(shutil.copytree(ingested, tmp_path / "data"))


def _autotune(data_dir: Path, *options: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    at.add_parser(parser.add_subparsers(dest="command"))
    argv = ["autotune", "--data-dir", str(data_dir), "--collection", "lib", *options]
    console = Console(record=True, width=200)
    code = at.run(parser.parse_args(argv), console)
    return code, console.export_text()


def test_store_helpers_read_vectors_and_payloads(data_dir: Path) -> None:
    store = EdgeVectorStore(data_dir / "collections")
    try:
        collection = store.open_stored("lib")
        ids, clip = collection.all_vectors(Signal.CLIP)
        assert collection.vector_count(Signal.CLIP) == len(ids) == 14  # the photos
        assert clip.shape == (14, 512)
        assert np.allclose(np.linalg.norm(clip, axis=1), 1.0, atol=1e-4)
        text_ids, text = collection.all_vectors(Signal.TEXT)
        assert text.shape == (17, 384)  # photos (captions) and notes
        some, sampled = collection.sample_vectors(Signal.TEXT, 5, seed=1)
        assert len(some) == 5 == len(set(some))
        assert set(some) <= set(text_ids)
        row = {i: r for r, i in enumerate(text_ids)}
        assert np.allclose(sampled, text[[row[i] for i in some]])
        assert collection.sample_vectors(Signal.TEXT, 5, seed=1)[0] == some  # seeded
        assert collection.sample_vectors(Signal.TEXT, 500, seed=1)[0] == text_ids
        payloads = list(collection.payloads(["library_path", "tags"]))
        assert len(payloads) == 17
        assert all(set(p) == {"library_path", "tags"} for p in payloads)
        with pytest.raises(ValueError, match="not a dense vector"):
            collection.all_vectors(Signal.BM25)
    finally:
        store.close()


def test_a_reachable_target_gets_a_winner(data_dir: Path) -> None:
    store = EdgeVectorStore(data_dir / "collections")
    try:
        collection = store.open_stored("lib")
        sample = at.sample_collection(collection, queries=200, max_vectors=1000, seed=0)
        base = collection.spec.quantization
    finally:
        store.close()
    assert [(d.signal, len(d.queries), d.k) for d in sample.signals] == [
        (Signal.CLIP, 14, 10),
        (Signal.TEXT, 17, 10),
    ]
    assert sample.points == 17 and not sample.capped
    candidates = at.grid([BinaryEncoding.ONE_BIT, BinaryEncoding.TWO_BITS], [QueryEncoding.DEFAULT])
    results = at.sweep(sample, candidates, base, rounds=1, report=lambda _: None)
    assert len(results) == 24
    # Every query's own point is its exact top-1, and with 8x oversampling the rescored
    # candidates cover this small collection: recall is exact.
    assert all(r.recall == 1.0 for r in results if r.candidate.oversampling == 8)
    winner = at.pick(results, 0.9)
    assert winner is not None and winner.recall >= 0.9
    assert at.pick(results, 1.01) is None

    assert len(at.grid()) == 108  # 3 encodings x 3 query encodings x 4 oversampling x 3 ef
    only = ("--encodings", "1.5bit", "--query-encodings", "8bit,4bit", "--rounds", "1")
    code, text = _autotune(data_dir, "--target-recall", "0.9", *only)
    assert code == 0, text
    assert "sweeping 24 settings (2 temporary builds)" in text
    assert "winner:" in text and "nothing written" in text
    assert not (data_dir / "collections" / "lib" / "tuning.json").exists()


def test_an_impossible_target_says_so(data_dir: Path) -> None:
    code, text = _autotune(
        data_dir, "--target-recall", "1.01", "--encodings", "1bit", "--query-encodings", "default"
    )
    assert code == 1
    assert "no setting reaches recall@10 1.01" in text
    assert "Best found: 1bit codes, default query encoding" in text
    assert "recall@10 1.0000" in text
    assert "cannot exceed 1.0" in text


def test_apply_saves_the_knobs_that_the_reopened_collection_uses(
    data_dir: Path, clip: OpenClipEmbedder, text_model: SentenceTextEmbedder
) -> None:
    # The collection is 2-bit codes with a 4-bit query encoding (the default settings).
    code, text = _autotune(
        data_dir,
        "--target-recall",
        "0.99",
        "--encodings",
        "2bit",
        "--query-encodings",
        "4bit",
        "--apply",
    )
    assert code == 0, text
    assert "written to collection 'lib' (tuning.json)" in text
    saved = json.loads((data_dir / "collections" / "lib" / "tuning.json").read_text())
    search = saved["search"]
    assert search["rescore"] is True
    assert search["oversampling"] in at.OVERSAMPLINGS and search["hnsw_ef"] in at.HNSW_EFS
    assert saved["notes"][0].startswith("autotune ")
    assert f"oversampling {search['oversampling']:g}, hnsw_ef {search['hnsw_ef']}" in text

    settings = make_settings(data_dir)  # query-time settings at their defaults (4.0, 128)
    store = EdgeVectorStore(settings.collections_dir)
    try:
        reopened = store.open(collection_spec(settings, "lib", clip, text_model), create=False)
        knobs = retrieval_options(settings).search_tuning(reopened.tuning.search)
        assert (knobs.oversampling, knobs.hnsw_ef) == (search["oversampling"], search["hnsw_ef"])
        assert reopened.tuning.search is not None
    finally:
        store.close()


def test_apply_refuses_another_build_without_rebuild(data_dir: Path) -> None:
    code, text = _autotune(
        data_dir,
        "--target-recall",
        "0.9",
        "--encodings",
        "1bit",
        "--query-encodings",
        "default",
        "--apply",
    )
    assert code == 1
    assert "not applied" in text and "--rebuild-into NEW" in text
    assert not (data_dir / "collections" / "lib" / "tuning.json").exists()


def test_rebuild_into_copies_every_point_into_the_winning_build(data_dir: Path) -> None:
    code, text = _autotune(
        data_dir,
        "--target-recall",
        "0.9",
        "--encodings",
        "1bit",
        "--query-encodings",
        "default",
        "--rebuild-into",
        "lib-1bit",
    )
    assert code == 0, text
    assert "rebuilt 'lib' into 'lib-1bit': 17 points copied" in text
    store = EdgeVectorStore(data_dir / "collections")
    try:
        old, new = store.open_stored("lib"), store.open_stored("lib-1bit")
        assert new.stats().points == old.stats().points == 17
        assert not new.optimize_pending
        q = new.spec.quantization
        assert (q.encoding, q.query_encoding) == (BinaryEncoding.ONE_BIT, QueryEncoding.DEFAULT)
        assert new.tuning.search is not None
        assert old.spec.quantization.encoding is BinaryEncoding.TWO_BITS  # unchanged
        # Dense vectors, payload and BM25 vectors came across as stored.
        ids, vectors = old.all_vectors(Signal.CLIP)
        new_ids, _ = new.all_vectors(Signal.CLIP)
        assert sorted(ids) == sorted(new_ids)
        hits = new.search(VectorQuery(vectors={Signal.CLIP: vectors[0]}, limit=1))
        same = new.search(
            VectorQuery(vectors={}, limit=3, keywords="latte art coffee saucer spoon")
        )
        assert hits and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert same and same[0].segment.asset.library_path.endswith("food/coffee.jpg")
        # Thumbnails: copied, and the payload points at the copy.
        thumb = hits[0].segment.asset.thumbnail
        assert thumb is not None and thumb.startswith("thumbnails/lib-1bit/")
        assert (data_dir / thumb).is_file()
        assert old.asset_segments(hits[0].segment.asset.asset_id)[0].asset.thumbnail == (
            thumb.replace("lib-1bit", "lib")
        )
    finally:
        store.close()

    again = ("--encodings", "1bit", "--query-encodings", "default", "--rebuild-into", "lib-1bit")
    with pytest.raises(ConflictError, match="'lib-1bit' exists already"):
        _autotune(data_dir, *again)
