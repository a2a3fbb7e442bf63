"""Shared fixtures: the real embedded engine, the real open_clip code, the real MiniLM.

CLIP runs with seeded random weights (no pretrained weights can be downloaded here); the text
signal is the real all-MiniLM-L6-v2 shipped in a package. Models load once per session.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a model hub in tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.adapters.edge_store import EdgeCollection, EdgeVectorStore
from app.adapters.openclip import OpenClipEmbedder
from app.adapters.text_embedder import SentenceTextEmbedder
from app.demo.library import build_library
from app.http.app import Models
from app.settings import Settings
from app.wiring import collection_spec
from ingestion.pipeline import IngestionPipeline, IngestReport, IngestRequest
from ingestion.readers import read_options_for


@pytest.fixture(scope="session")
def clip() -> OpenClipEmbedder:
    return OpenClipEmbedder("ViT-B-32", pretrained="none", device="cpu", batch_size=16)


@pytest.fixture(scope="session")
def text_model() -> SentenceTextEmbedder:
    return SentenceTextEmbedder(device="cpu")


@pytest.fixture(scope="session")
def sample_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("library")
    build_library(root)
    return root


@pytest.fixture(scope="session")
def clip_checkpoint(clip: OpenClipEmbedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's CLIP weights written as a local checkpoint file (~600 MB, written once)."""
    import torch

    path = tmp_path_factory.mktemp("weights") / "clip-vit-b-32.pt"
    torch.save(clip.state_dict(), path)
    return path


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings as the edges build them, with the test's data dir and random CLIP weights.

    Answers are extractive unless a test asks for a model (``llm={...}``): most tests are about
    retrieval and HTTP behaviour, and the tests of the real local model say so by name.
    """
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "clip": {"pretrained": "none"},
        "llm": {"provider": "extractive"},
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> Iterator[EdgeVectorStore]:
    s = EdgeVectorStore(settings.collections_dir)
    yield s
    s.close()


@pytest.fixture
def open_collection(
    settings: Settings,
    store: EdgeVectorStore,
    clip: OpenClipEmbedder,
    text_model: SentenceTextEmbedder,
) -> Callable[[str], EdgeCollection]:
    def _open(name: str = "default") -> EdgeCollection:
        return store.open(collection_spec(settings, name, clip, text_model), create=True)

    return _open


@pytest.fixture
def ingest(
    settings: Settings,
    open_collection: Callable[[str], EdgeCollection],
    clip: OpenClipEmbedder,
    text_model: SentenceTextEmbedder,
) -> Callable[..., IngestReport]:
    """Runs the real pipeline into the test's collection."""

    def _ingest(
        *paths: Path,
        sync: bool = False,
        dry_run: bool = False,
        verify: bool = False,
        tags: tuple[str, ...] = (),
    ) -> IngestReport:
        pipeline = IngestionPipeline(
            open_collection("default"),
            clip,
            text_model,
            read_options_for(settings, "default", tags=tags),
            write_batch_assets=4,
        )
        request = IngestRequest(paths=paths, sync=sync, dry_run=dry_run, verify=verify)
        return pipeline.run(request)

    return _ingest


@pytest.fixture
def small_library(sample_library: Path, tmp_path: Path) -> Path:
    """A private copy of a few sample files that a test may change or delete."""
    return copy_sample(
        sample_library,
        tmp_path / "lib",
        (
            "photos/animals/chelsea.jpg",
            "photos/animals/chelsea.jpg.txt",
            "photos/food/coffee.jpg",
            "photos/space/rocket.jpg",
            "photos/space/captions.jsonl",
            "notes/coffee-brewing.md",
        ),
    )


# A captioned photo and a note: enough for every route to have something to serve.
CAT_FILES = ("photos/animals/chelsea.jpg", "photos/animals/chelsea.jpg.txt", "notes/cat-care.txt")


def copy_sample(sample_library: Path, root: Path, files: tuple[str, ...]) -> Path:
    """Copies some of the sample library's files (same relative paths) under ``root``."""
    for rel in files:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sample_library / rel, target)
    return root


@pytest.fixture(scope="session")
def models(clip: OpenClipEmbedder, text_model: SentenceTextEmbedder) -> Models:
    return Models(clip=clip, text=text_model)
