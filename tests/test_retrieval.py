"""Retrieval end to end on the real engine and models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from app.adapters.edge_store import EdgeCollection, EdgeVectorStore
from app.adapters.openclip import OpenClipEmbedder
from app.adapters.text_embedder import SentenceTextEmbedder
from app.core.models import Modality, SearchFilters, Signal
from app.core.retrieval import QueryKind, RetrievalOptions, Retriever
from app.wiring import collection_spec
from ingestion.pipeline import IngestionPipeline, IngestRequest
from ingestion.readers import read_options_for
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def library_collection(
    clip: OpenClipEmbedder,
    text_model: SentenceTextEmbedder,
    sample_library: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EdgeCollection]:
    """The sample library ingested once for the module's read-only tests."""
    yield from ingested_collection(clip, text_model, sample_library, tmp_path_factory.mktemp("r"))


def ingested_collection(
    clip: OpenClipEmbedder, text_model: SentenceTextEmbedder, library: Path, root: Path
) -> Iterator[EdgeCollection]:
    store = EdgeVectorStore(root / "collections")
    settings = make_settings(root)
    collection = store.open(collection_spec(settings, "lib", clip, text_model), create=True)
    report = IngestionPipeline(collection, clip, text_model, read_options_for(settings, "lib")).run(
        IngestRequest(paths=(library,))
    )
    assert report.ok
    yield collection
    store.close()


@pytest.fixture
def retriever(clip: OpenClipEmbedder, text_model: SentenceTextEmbedder) -> Retriever:
    return Retriever(clip, text_model, RetrievalOptions())


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("a ginger cat looking up", "chelsea.jpg"),
        ("cup of coffee with latte art", "coffee.jpg"),
        ("rocket lifting off from the launch pad", "rocket.jpg"),
        ("Grace Hopper in navy uniform", "grace_hopper.jpg"),
        ("distant galaxies", "hubble_deep_field.jpg"),
    ],
)
def test_caption_query_returns_the_captioned_photo_first(
    library_collection: EdgeCollection, retriever: Retriever, question: str, expected: str
) -> None:
    result = retriever.search_text(library_collection, question, top_k=3)
    assert Path(result.hits[0].segment.asset.source).name == expected
    assert result.relevant[0] is True
    # Random CLIP weights align nothing, so the text query leaves the clip signal out.
    assert result.signals == (Signal.TEXT, Signal.BM25)


def test_uploaded_image_returns_the_same_image_first(
    library_collection: EdgeCollection, retriever: Retriever, sample_library: Path
) -> None:
    image = Image.open(sample_library / "photos" / "space" / "moon.png")
    result = retriever.search_image(library_collection, image, top_k=5)
    top = result.hits[0]
    assert result.kind is QueryKind.IMAGE
    assert Path(top.segment.asset.source).name == "moon.png"
    assert top.signal_scores[Signal.CLIP] == pytest.approx(1.0, abs=1e-3)
    assert result.relevant[0] is True


def test_one_hit_per_asset_and_filters(
    library_collection: EdgeCollection, retriever: Retriever
) -> None:
    result = retriever.search_text(library_collection, "coffee", top_k=10)
    ids = [h.segment.asset.asset_id for h in result.hits]
    assert len(ids) == len(set(ids))
    only_text = retriever.search_text(
        library_collection, "coffee", top_k=10, filters=SearchFilters(modalities=(Modality.TEXT,))
    )
    assert {h.segment.asset.modality for h in only_text.hits} == {Modality.TEXT}
    assert only_text.hits[0].segment.asset.title == "Coffee brewing notes"


def test_unrelated_question_has_no_relevant_hit(
    library_collection: EdgeCollection, retriever: Retriever
) -> None:
    result = retriever.search_text(library_collection, "quarterly tax filing deadline", top_k=5)
    assert result.hits  # something is always nearest...
    assert result.relevant_hits == ()  # ...but nothing is close enough to answer from


def test_aligned_collections_fuse_both_signals(
    text_model: SentenceTextEmbedder, small_library: Path, clip_checkpoint: Path, tmp_path: Path
) -> None:
    """With aligned CLIP weights a text query searches clip and text, fused in one query."""
    aligned = OpenClipEmbedder(
        "ViT-B-32", pretrained="none", checkpoint=clip_checkpoint, aligned=True, device="cpu"
    )
    for collection in ingested_collection(aligned, text_model, small_library, tmp_path):
        note = next(a for a in collection.indexed_assets() if a.source.endswith(".md"))
        first = collection.asset_segments(note.asset_id)[0]
        assert set(first.asset.title.split()) >= {"Coffee", "brewing"}
        result = Retriever(aligned, text_model, RetrievalOptions()).search_text(
            collection, "espresso machine pressure", top_k=3
        )
        assert collection.spec.clip.aligned is True
        assert result.signals == (Signal.CLIP, Signal.TEXT, Signal.BM25)
        assert result.hits[0].segment.asset.asset_id == note.asset_id
        assert set(result.hits[0].signal_scores) == {Signal.CLIP, Signal.TEXT, Signal.BM25}
