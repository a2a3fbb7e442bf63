"""Server mode end to end: settings choose the store; ingestion and the real app run on the
server adapter exactly as on the embedded engine (qdrant-client's local mode stands in for the
server here: tests/test_qdrant_wire.py covers what goes on the wire)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from qdrant_client import QdrantClient

from app.adapters.edge_store import EdgeVectorStore
from app.adapters.qdrant_server import QdrantServerStore
from app.core.errors import StoreError
from app.http.app import Models, create_app
from app.wiring import build_store, collection_spec
from ingestion.pipeline import IngestionPipeline, IngestRequest
from ingestion.readers import read_options_for
from tests.conftest import make_settings

pytestmark = [
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact .brute-force. search"),
]
SERVER = {"backend": "server", "url": "http://qdrant.internal:6333"}


def test_settings_alone_choose_the_store(tmp_path: Path) -> None:
    embedded = build_store(make_settings(tmp_path))
    assert isinstance(embedded, EdgeVectorStore)
    embedded.close()
    unreachable = {"backend": "server", "url": "http://127.0.0.1:9", "connect_timeout_s": 1.0}
    server = build_store(make_settings(tmp_path, store=unreachable))
    assert isinstance(server, QdrantServerStore)
    started = time.perf_counter()
    with pytest.raises(StoreError, match=r"http://127\.0\.0\.1:9.*MMRAG_STORE__URL"):
        server.hold("default")
    assert time.perf_counter() - started < 10  # fails fast, not after retries
    server.close()


@pytest.fixture(scope="module")
def server_client(
    models: Models, sample_library: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient[Any]]:
    data_dir = tmp_path_factory.mktemp("server-mode")
    settings = make_settings(data_dir, store=SERVER)
    qdrant = QdrantClient(":memory:")
    store = QdrantServerStore(":memory:", client=qdrant)
    collection = store.open(
        collection_spec(settings, settings.collection, models.clip, models.text), create=True
    )
    report = IngestionPipeline(
        collection, models.clip, models.text, read_options_for(settings, settings.collection)
    ).run(IngestRequest(paths=(sample_library,)))
    assert report.ok
    with TestClient(app=create_app(settings, models=models, store=store)) as client:
        yield client
    qdrant.close()


def test_the_service_answers_from_the_server(server_client: TestClient[Any]) -> None:
    stats = server_client.get("/v1/collections/default").json()
    assert stats["points"] > 0 and stats["quantization"]["encoding"] == "2bit"
    found = server_client.post("/v1/search", json={"query": "coffee", "top_k": 3}).json()
    assert found["hits"], found
    assert any("coffee" in (h["snippet"] or "").lower() for h in found["hits"])
    # Every hit links to its collection (the physical one behind the name) in the dashboard.
    page = "http://qdrant.internal:6333/dashboard#/collections/default-v1"
    assert {h["dashboard_url"] for h in found["hits"]} == {page}
    answer = server_client.post("/v1/ask", json={"question": "How is coffee brewed?"}).json()
    assert answer["status"] == "extractive" and answer["citations"]
    assert {c["dashboard_url"] for c in answer["citations"]} == {page}
    # The thumbnail of a picture hit is served as in embedded mode.
    picture = next(h for h in found["hits"] if h.get("thumbnail_url"))
    assert server_client.get(picture["thumbnail_url"]).status_code == 200
