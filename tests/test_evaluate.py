"""``eval``: the ranking metrics by hand, the query file, and a whole run on the sample library
(real engine, real MiniLM, seeded random CLIP)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from app.adapters.edge_store import EdgeVectorStore
from app.adapters.openclip import OpenClipEmbedder
from app.adapters.text_embedder import SentenceTextEmbedder
from app.core.errors import CollectionNotFoundError, InputError
from app.core.models import (
    CollectionSpec,
    CollectionTuning,
    EmbeddingModelInfo,
    Modality,
    SearchTuning,
    VectorQuery,
)
from app.core.retrieval import RetrievalOptions, Retriever
from app.settings import Settings
from app.wiring import collection_spec
from ingestion import evaluate as ev
from ingestion.metrics import average_precision, ndcg_at_k, overlap_at_k, recall_at_k
from ingestion.pipeline import IngestionPipeline, IngestRequest
from ingestion.readers import read_options_for
from tests.conftest import make_settings

# --------------------------------------------------------------------------- metrics


def test_recall_at_k_counts_relevant_ids_in_the_first_k() -> None:
    ranked = ["a", "x", "b", "y", "c"]
    assert recall_at_k(ranked, {"a", "b", "c", "d"}, 1) == 0.25
    assert recall_at_k(ranked, {"a", "b", "c", "d"}, 3) == 0.5
    assert recall_at_k(ranked, {"a", "b", "c", "d"}, 10) == 0.75
    assert recall_at_k(ranked, {"z"}, 5) == 0.0
    assert recall_at_k(ranked, set(), 5) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(ranked, {"a"}, 0)


def test_average_precision_by_hand() -> None:
    # relevant at ranks 1 and 3 of 2 relevant: (1/1 + 2/3) / 2
    assert average_precision(["a", "x", "b"], {"a", "b"}, 10) == pytest.approx(5 / 6)
    # one of two relevant found, at rank 2: (1/2) / 2
    assert average_precision(["x", "a", "y"], {"a", "b"}, 10) == pytest.approx(0.25)
    # more relevant than k: divided by k, so a perfect top-2 scores 1
    assert average_precision(["a", "b", "x"], {"a", "b", "c"}, 2) == 1.0
    assert average_precision(["x", "y"], {"a"}, 10) == 0.0


def test_ndcg_by_hand() -> None:
    # relevant at ranks 2 and 3; ideal has them at 1 and 2
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at_k(["x", "a", "b"], {"a", "b"}, 10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(["a", "b", "x"], {"a", "b"}, 10) == 1.0
    assert ndcg_at_k(["x", "a"], {"a"}, 1) == 0.0  # beyond the cut-off
    assert ndcg_at_k(["x"], set(), 10) == 0.0


def test_overlap_of_two_lists() -> None:
    assert overlap_at_k(["a", "b", "c"], ["a", "c", "d", "e"], 10) == 0.5
    assert overlap_at_k(["a", "b"], ["b", "a"], 2) == 1.0
    assert overlap_at_k(["a"], [], 10) == 1.0


# --------------------------------------------------------------------------- the query file


def _catalogue(root: Path) -> ev.Catalogue:
    lib = root / "lib"

    def asset(asset_id: str, rel: str, modality: Modality, *tags: str) -> ev._StoredAsset:
        return ev._StoredAsset(asset_id, str(lib / rel), f"lib/{rel}", modality, frozenset(tags))

    assets = [
        asset("cat", "photos/cat.jpg", Modality.IMAGE, "animals", "pets"),
        asset("dog", "photos/dog.jpg", Modality.IMAGE, "animals"),
        asset("note", "notes/cat.txt", Modality.TEXT, "pets"),
        asset("film", "media/cat.mp4", Modality.VIDEO, "animals"),
    ]
    return ev.Catalogue({a.asset_id: a for a in assets})


def test_relevant_entries_resolve_every_way(tmp_path: Path) -> None:
    catalogue = _catalogue(tmp_path)
    (tmp_path / "q.png").write_bytes(b"not really a png")
    lines = [
        {"text": "cat", "relevant": ["cat"]},  # asset id
        {"text": "cat", "relevant": ["lib/photos/cat.jpg"]},  # library path
        {"text": "cat", "relevant": ["lib/photos/dog.jpg", str(tmp_path / "lib/notes/cat.txt")]},
        {"id": 7, "text": "a note", "relevant": ["lib/notes/cat.txt"]},
        {"image": "q.png", "relevant_tags": ["animals"]},
        {"text": "pets", "relevant_tags": ["animals", "pets"]},
    ]
    path = tmp_path / "queries.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    raw, problems = ev.read_query_file(path)
    assert problems == []
    queries, unresolved = ev.resolve_queries(raw, catalogue, tmp_path)
    assert unresolved == []
    got = [(q.line, q.query_id, sorted(q.relevant_ids), q.kind) for q in queries]
    assert got == [
        (1, "line-1", ["cat"], "text->image"),
        (2, "line-2", ["cat"], "text->image"),
        (3, "line-3", ["dog", "note"], "text->any"),
        (4, "7", ["note"], "text->text"),
        (5, "line-5", ["cat", "dog", "film"], "image->image"),  # video counts as image
        (6, "line-6", ["cat"], "text->image"),
    ]
    assert queries[4].image == (tmp_path / "q.png").resolve()


def test_bad_lines_are_reported_with_their_numbers(tmp_path: Path) -> None:
    lines = [
        '{"text": "fine", "relevant": ["cat"]}',
        "not json",
        "",  # blank lines are skipped silently
        '["a list"]',
        '{"text": "both", "image": "x.png", "relevant": ["cat"]}',
        '{"text": "none"}',
        '{"text": "empty", "relevant": []}',
        '{"image": "missing.png", "relevant": ["cat"]}',
        '{"text": "typo", "relevent": ["cat"]}',
        '{"text": "unknown", "relevant": ["cat", "lib/photos/zebra.jpg"]}',
        '{"text": "no such tag", "relevant_tags": ["zebras"]}',
    ]
    path = tmp_path / "queries.jsonl"
    path.write_text("\n".join(lines) + "\n")
    raw, problems = ev.read_query_file(path)
    queries, unresolved = ev.resolve_queries(raw, _catalogue(tmp_path), tmp_path)
    assert [q.line for q in queries] == [1]
    messages = {p.line: p.message for p in [*problems, *unresolved]}
    assert sorted(messages) == [2, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "not JSON" in messages[2]
    assert "JSON object" in messages[4]
    assert 'exactly one of "text" and "image"' in messages[5]
    assert 'exactly one of "relevant" and "relevant_tags"' in messages[6]
    assert "relevant set is empty" in messages[7]
    assert "missing.png" in messages[8] and "not found" in messages[8]
    assert "relevent" in messages[9]
    assert "'lib/photos/zebra.jpg' not in the collection" in messages[10]
    assert "zebras" in messages[11]
    assert str(problems[0]).startswith("line 2: ")


def test_top_k_below_ten_is_refused() -> None:
    parser = argparse.ArgumentParser()
    ev.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "q.jsonl", "--collection", "lib", "--top-k", "20"])
    assert (args.top_k, args.collection, args.out) == (20, "lib", None)
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "q.jsonl", "--top-k", "5"])


# --------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def library_data(
    clip: OpenClipEmbedder,
    text_model: SentenceTextEmbedder,
    sample_library: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    """The sample library ingested into collection ``lib``; the store is closed again, as
    ``eval`` opens it itself."""
    root = tmp_path_factory.mktemp("eval")
    settings = make_settings(root / "data", collection="lib", ingestion={"ocr": "off"})
    store = EdgeVectorStore(settings.collections_dir)
    collection = store.open(collection_spec(settings, "lib", clip, text_model), create=True)
    report = IngestionPipeline(collection, clip, text_model, read_options_for(settings, "lib")).run(
        IngestRequest(paths=(sample_library,))
    )
    store.close()
    assert report.ok
    return settings


def _write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _queries(sample_library: Path) -> list[dict[str, Any]]:
    lib = sample_library.name
    photos = sample_library / "photos"
    return [
        {
            "id": "cat",
            "text": "a ginger cat looking up",
            "relevant": [f"{lib}/photos/animals/chelsea.jpg"],
        },
        {
            "text": "coffee",
            "relevant": [f"{lib}/photos/food/coffee.jpg", f"{lib}/notes/coffee-brewing.md"],
        },
        {"text": "pictures of space", "relevant_tags": ["space"]},
        {
            "text": "how often to feed the cat",
            "relevant": [str(sample_library / "notes/cat-care.txt")],
        },
        {"image": str(photos / "space/rocket.jpg"), "relevant": [f"{lib}/photos/space/rocket.jpg"]},
        {"image": str(photos / "people/astronaut.png"), "relevant_tags": ["people"]},
    ]


def _run(
    settings: Settings,
    queries: Path,
    out: Path,
    models: tuple[OpenClipEmbedder, SentenceTextEmbedder],
) -> tuple[int, str]:
    console = Console(record=True, width=160)
    code = ev.evaluate(settings, ev.EvalOptions(queries, out=out), console, models=models)
    return code, console.export_text()


def test_eval_reports_quality_fidelity_and_latency(
    library_data: Settings,
    sample_library: Path,
    clip: OpenClipEmbedder,
    text_model: SentenceTextEmbedder,
    tmp_path: Path,
) -> None:
    lines = [*_queries(sample_library), {"text": "unknown", "relevant": ["nowhere.jpg"]}]
    queries = _write(tmp_path / "queries.jsonl", lines)
    queries.write_text(queries.read_text() + "{broken\n")
    out = tmp_path / "report"
    code, text = _run(library_data, queries, out, (clip, text_model))

    assert code == 1  # two bad lines, reported; the rest evaluated
    assert "skipped line 7: relevant 'nowhere.jpg' not in the collection" in text
    assert "skipped line 8: not JSON" in text
    assert "Retrieval quality: lib (6 queries, top 10)" in text
    assert {p.name for p in out.iterdir()} == {
        "report.json",
        "report.md",
        "recall_vs_oversampling.png",
        "latency_vs_recall.png",
    }
    assert (out / "recall_vs_oversampling.png").read_bytes()[:4] == b"\x89PNG"

    report = json.loads((out / "report.json").read_text())
    assert set(report) == {
        "version", "collection", "created_at", "queries_file", "top_k", "search", "queries",
        "quality", "fidelity", "latency_ms", "sweep", "plots", "per_query",
    }  # fmt: skip
    assert report["collection"] == "lib"
    assert report["search"] == {
        "encoding": "2bit",
        "query_encoding": "4bit",
        "rescore": True,
        "oversampling": 4.0,
        "hnsw_ef": 128,
        "tuned": False,
    }
    assert report["queries"]["lines"] == 8
    assert report["queries"]["evaluated"] == 6
    assert [s["line"] for s in report["queries"]["skipped"]] == [7, 8]
    types = {"text->image", "text->any", "text->text", "image->image", "all"}
    for mode in ("exact", "quantized"):
        assert set(report["quality"][mode]) == types
        assert report["quality"][mode]["all"]["queries"] == 6
        for metrics in report["quality"][mode].values():
            assert set(metrics) == {
                "queries",
                "recall@1",
                "recall@5",
                "recall@10",
                "map",
                "ndcg@10",
            }
            assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k != "queries")
    exact, quantized = report["quality"]["exact"]["all"], report["quality"]["quantized"]["all"]
    for name in ("recall@10", "map", "ndcg@10"):
        assert exact[name] >= quantized[name] - 0.05  # within noise
    assert 0.0 <= report["fidelity"]["quantized"]["all"] <= 1.0
    # the image queries find their own picture first
    by_id = {q["line"]: q for q in report["per_query"]}
    assert by_id[5]["exact"]["recall@1"] == 1.0
    assert by_id[5]["type"] == "image->image"
    assert by_id[1]["id"] == "cat"
    assert [s["oversampling"] for s in report["sweep"]] == [1.0, 2.0, 4.0, 8.0]
    assert all(s["hnsw_ef"] == 128 for s in report["sweep"])
    lat = report["latency_ms"]
    assert lat["encode"]["p50"] > 0 and lat["search"]["exact"]["p50"] > 0
    assert lat["encode"]["p95"] >= lat["encode"]["p50"]
    assert report["plots"] == ["recall_vs_oversampling.png", "latency_vs_recall.png"]

    md = (out / "report.md").read_text()
    for section in (
        "## What was measured",
        "## Quality",
        "## Quantization fidelity",
        "## Latency",
        "## Oversampling sweep",
        "## Plots",
        "## How to read this",
        "## Skipped lines",
    ):
        assert section in md
    assert "| exact | image->image | 2 |" in md
    assert "![recall_vs_oversampling.png](recall_vs_oversampling.png)" in md


def test_exact_search_finds_every_asset_of_its_own_top_10(
    library_data: Settings,
    sample_library: Path,
    clip: OpenClipEmbedder,
    text_model: SentenceTextEmbedder,
    tmp_path: Path,
) -> None:
    first = _write(tmp_path / "first.jsonl", _queries(sample_library))
    code, _ = _run(library_data, first, tmp_path / "first", (clip, text_model))
    assert code == 0
    report = json.loads((tmp_path / "first" / "report.json").read_text())
    # Relevant = what exact search ranked in its top 10: exact recall@10 must then be 1.
    relabelled = [
        {**line, "relevant": q["exact"]["ranked"]}
        for line, q in zip(_queries(sample_library), report["per_query"], strict=True)
    ]
    for line in relabelled:
        line.pop("relevant_tags", None)
    assert all(len(line["relevant"]) == 10 for line in relabelled)
    second = _write(tmp_path / "second.jsonl", relabelled)
    code, _ = _run(library_data, second, tmp_path / "second", (clip, text_model))
    assert code == 0
    again = json.loads((tmp_path / "second" / "report.json").read_text())
    exact = again["quality"]["exact"]["all"]
    assert exact["recall@10"] == 1.0
    assert exact["map"] == 1.0
    assert exact["ndcg@10"] == 1.0
    assert exact["recall@1"] == pytest.approx(0.1)  # 1 of 10 relevant in the first hit


def test_the_command_fails_before_loading_models(library_data: Settings, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    ev.add_parser(parser.add_subparsers(dest="command"))
    console = Console(record=True, width=160)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("not json\n")
    data = str(library_data.data_dir)
    args = parser.parse_args(["eval", str(empty), "--data-dir", data, "--collection", "lib"])
    assert ev.run(args, console) == 2
    text = console.export_text()
    assert "skipped line 1: not JSON" in text
    assert f"no usable query in {empty}" in text

    good = _write(tmp_path / "good.jsonl", [{"text": "x", "relevant": ["a"]}])
    args = parser.parse_args(["eval", str(good), "--data-dir", data, "--collection", "nope"])
    with pytest.raises(CollectionNotFoundError, match="'nope' does not exist"):
        ev.run(args, console)
    with pytest.raises(InputError, match="cannot read the query file"):
        ev.read_query_file(tmp_path / "absent.jsonl")
    assert not (library_data.data_dir / "eval").exists()


def test_the_catalogue_reads_the_same_through_the_port_alone(library_data: Settings) -> None:
    store = EdgeVectorStore(library_data.collections_dir)
    try:
        collection = store.open_stored("lib")
        fast = ev.Catalogue.of(collection)  # one scroll of payload fields
        slow = ev.Catalogue.of(ev._TimedCollection(collection))  # port methods only
    finally:
        store.close()
    assert fast == slow
    assert len(fast.assets) == 17
    space = fast.tagged(["space"])
    assert {fast.assets[i].library_path.split("/", 1)[1] for i in space} == {
        "photos/people/astronaut.png",
        "photos/space/rocket.jpg",
        "photos/space/hubble_deep_field.jpg",
        "photos/space/moon.png",
    }


class _Embedder:
    info = EmbeddingModelInfo("fake", 4, "none", aligned=True)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 4), dtype=np.float32) / 2

    def embed_images(self, images: list[Any]) -> np.ndarray:
        return np.ones((len(images), 4), dtype=np.float32) / 2


class _Recorder:
    """A collection that records the queries it is asked and finds nothing."""

    def __init__(self) -> None:
        info = _Embedder.info
        quantization = Settings(_env_file=None).quantization.spec()  # type: ignore[call-arg]
        self.spec = CollectionSpec("fake", info, info, quantization)
        self.tuning = CollectionTuning()
        self.queries: list[VectorQuery] = []

    def search(self, query: VectorQuery) -> list[Any]:
        self.queries.append(query)
        return []


def test_the_retriever_passes_exact_and_tuning_to_every_store_query() -> None:
    retriever = Retriever(_Embedder(), _Embedder(), RetrievalOptions())
    recorder = _Recorder()
    tuning = SearchTuning(oversampling=2.0, hnsw_ef=64)
    retriever.search_text(recorder, "words", top_k=3)  # type: ignore[arg-type]
    retriever.search_text(recorder, "words", top_k=3, exact=True)  # type: ignore[arg-type]
    retriever.search_image(recorder, object(), top_k=3, tuning=tuning)  # type: ignore[arg-type]
    # each search: the coarse video query (CLIP is aligned here), then the main one
    default = SearchTuning()  # the options' knobs, the collection having none of its own
    assert [(q.exact, q.tuning) for q in recorder.queries] == [
        (False, default),
        (False, default),
        (True, default),
        (True, default),
        (False, tuning),
        (False, tuning),
    ]


def test_a_collections_tuned_knobs_ride_on_its_queries_unless_set_on_purpose() -> None:
    tuned = SearchTuning(oversampling=2.0, hnsw_ef=64)
    recorder = _Recorder()
    recorder.tuning = CollectionTuning(search=tuned)
    configured = SearchTuning(oversampling=6.0, hnsw_ef=256)
    Retriever(_Embedder(), _Embedder(), RetrievalOptions(tuning=configured)).search_text(
        recorder,  # type: ignore[arg-type]
        "words",
        top_k=3,
    )
    pinned = RetrievalOptions(tuning=configured, explicit=frozenset({"oversampling"}))
    Retriever(_Embedder(), _Embedder(), pinned).search_text(
        recorder,  # type: ignore[arg-type]
        "words",
        top_k=3,
    )
    assert [q.tuning for q in recorder.queries] == [
        tuned,
        tuned,
        SearchTuning(oversampling=6.0, hnsw_ef=64),  # oversampling was set on purpose
        SearchTuning(oversampling=6.0, hnsw_ef=64),
    ]


def test_the_report_is_written_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = ev.EvalQuery(1, "q", "words", None, frozenset({"a", "b"}), "text->image")
    run = ev.QueryRun(query, encode_ms=2.0)
    spec = _Recorder().spec
    tuning = SearchTuning()
    modes = ev.modes_for(tuning)
    for i, mode in enumerate(modes):
        run.ranked[mode.name] = ["a", "b", "c"] if mode.exact else ["a", "c", "b"]
        run.search_ms[mode.name] = 1.0 + i
    report = ev.build_report(
        [run],
        modes,
        spec=spec,
        tuning=tuning,
        tuned=False,
        queries_file=tmp_path / "q.jsonl",
        top_k=10,
        lines=1,
        problems=[],
    )
    assert report["quality"]["exact"]["all"]["map"] == 1.0
    assert report["quality"]["quantized"]["all"]["map"] == round((1 + 2 / 3) / 2, 4)
    assert report["quality"]["quantized"]["all"]["recall@1"] == 0.5
    assert report["fidelity"]["quantized"] == {"text->image": 1.0, "all": 1.0}
    assert report["sweep"][0]["search_p50_ms"] == 3.0  # oversampling 1, the third mode
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    console = Console(record=True, width=160)
    ev.write_report(report, tmp_path / "out", console)
    assert "matplotlib is not installed: plots skipped" in console.export_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "report.md"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["plots"] == []
    assert "## Plots" not in (tmp_path / "out" / "report.md").read_text()
