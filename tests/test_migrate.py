"""``python -m ingestion migrate``: an embedded collection copied to a server, resumably, and
checked point by point. The server side is the server adapter over qdrant-client's local mode."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from rich.console import Console

from app.adapters.edge_store import EdgeVectorStore
from app.adapters.qdrant_server import QdrantServerCollection, QdrantServerStore
from app.core.errors import StoreError
from app.core.models import (
    CollectionTuning,
    RelevanceThresholds,
    SearchTuning,
    Signal,
    VectorQuery,
)
from ingestion import cli
from ingestion.migrate import Checkpoint, compare, migrate
from tests.store_fixtures import SPEC, library, unit_vector

pytestmark = [
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact .brute-force. search"),
]
TUNING = CollectionTuning(
    thresholds=RelevanceThresholds(min_text_score=0.4),
    search=SearchTuning(oversampling=2.0, hnsw_ef=64),
    notes=("calibrated",),
)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EdgeVectorStore]:
    store = EdgeVectorStore(tmp_path / "collections")
    collection = store.open(SPEC, create=True)
    collection.upsert(library())
    collection.optimize()
    store.save_tuning(SPEC.name, TUNING)
    yield store
    store.close()


@pytest.fixture
def server() -> Iterator[QdrantServerStore]:
    client = QdrantClient(":memory:")
    store = QdrantServerStore(":memory:", client=client)
    yield store
    store.close()
    client.close()


def _quiet() -> Console:
    return Console(file=io.StringIO())


def test_everything_is_copied_and_checked(
    embedded: EdgeVectorStore, server: QdrantServerStore, tmp_path: Path
) -> None:
    checkpoint = Checkpoint(tmp_path / "migrations" / "lib.json", key="k")
    result = migrate(
        embedded,
        server,
        "lib",
        target_name="lib",
        checkpoint=checkpoint,
        batch=4,
        sample=100,
        console=_quiet(),
    )
    assert result.ok
    assert (result.copied, result.source_points, result.target_points) == (15, 15, 15)
    assert result.checked == 15  # fewer points than the sample: every one compared
    assert not (tmp_path / "migrations" / "lib.json").exists()  # done: nothing to resume
    target = server.open(SPEC, create=False, require_index_settings=True)
    assert target.tuning == TUNING
    source = embedded.open_stored("lib")
    query = VectorQuery(
        {Signal.CLIP: unit_vector(5, 16), Signal.TEXT: unit_vector(6, 8)}, limit=8, exact=True
    )
    ranked = [h.segment.asset.asset_id for h in source.search(query)]
    assert [h.segment.asset.asset_id for h in target.search(query)] == ranked


def test_a_stopped_migration_goes_on_from_where_it_stopped(
    embedded: EdgeVectorStore,
    server: QdrantServerStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checkpoint = Checkpoint(tmp_path / "lib.json", key="k")
    real = QdrantServerCollection.import_points
    pages: list[int] = []

    def failing(self: QdrantServerCollection, points: list[object]) -> None:
        pages.append(len(points))
        if len(pages) == 3:
            raise StoreError("server went away")
        real(self, points)  # type: ignore[arg-type]

    monkeypatch.setattr(QdrantServerCollection, "import_points", failing)
    with pytest.raises(StoreError, match="went away"):
        migrate(
            embedded,
            server,
            "lib",
            target_name="lib",
            checkpoint=checkpoint,
            batch=4,
            console=_quiet(),
        )
    offset, copied = checkpoint.load()
    assert offset is not None and copied == 8  # two pages of 4 were written
    monkeypatch.setattr(QdrantServerCollection, "import_points", real)
    result = migrate(
        embedded, server, "lib", target_name="lib", checkpoint=checkpoint, batch=4, console=_quiet()
    )
    assert result.ok
    assert result.copied == 7  # the rest only
    assert result.target_points == 15  # and nothing twice


def test_differences_are_found_and_named(
    embedded: EdgeVectorStore, server: QdrantServerStore, tmp_path: Path
) -> None:
    migrate(
        embedded,
        server,
        "lib",
        target_name="copy",
        checkpoint=Checkpoint(tmp_path / "c.json", key="k"),
        console=_quiet(),
    )
    source = embedded.open_stored("lib")
    target = server.open_stored("copy")
    target.set_mtimes({f"{3:032x}": 42})
    ids = [p.id for p in source.export_points(None, 100)[0]]
    problems = compare(source, target, ids)
    assert len(problems) == 1 and "payload differs in ['mtime_ns']" in problems[0]


def test_the_command_reports_and_points_at_the_settings(
    embedded: EdgeVectorStore,
    server: QdrantServerStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    embedded.close()  # the command opens the embedded collection itself
    monkeypatch.setenv("MMRAG_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("app.wiring.build_server_store", lambda settings: server)
    code = cli.main(["migrate", "--to", "http://qdrant.example:6333", "--collection", "lib"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "15 in the source, 15 on the server" in out
    assert "MMRAG_STORE__BACKEND=server MMRAG_STORE__URL=http://qdrant.example:6333" in out
    assert cli.main(["migrate", "--to", "http://x", "--collection", "absent"]) == 2
