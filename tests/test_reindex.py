"""Zero-downtime re-index on the embedded engine: build a new collection, switch the name."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.adapters.edge_store import EdgeVectorStore
from ingestion import cli


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("MMRAG_DATA_DIR", str(data))
    monkeypatch.setenv("MMRAG_CLIP__PRETRAINED", "none")
    monkeypatch.setenv("MMRAG_INGESTION__OCR", "off")
    monkeypatch.setenv("MMRAG_INGESTION__SPEECH", "off")
    return data


def test_reindex_switches_the_name_while_a_reader_holds_the_old_collection(
    small_library: Path, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    collections = env / "collections"
    assert cli.main(["ingest", str(small_library), "--quiet"]) == 0
    reader = EdgeVectorStore(collections)  # a running service, holding "default" (and its lock)
    try:
        before = reader.open_stored("default").stats()
        assert cli.main(["reindex", str(small_library), "--quiet"]) == 0
        out = capsys.readouterr().out
        physical = reader.resolve("default")
        assert physical.startswith("default-") and physical in out
        assert "still open in the running service" in out
        # The reader's next open by name reads the new collection, complete.
        after = reader.open_stored("default").stats()
        assert (after.points, after.assets) == (before.points, before.assets)
        assert reader.names() == ["default"]
        current = reader.open_stored("default")
        thumbnails = [
            current.asset_segments(a.asset_id)[0].asset.thumbnail for a in current.indexed_assets()
        ]
        pictures = [t for t in thumbnails if t is not None]
        assert pictures and all(t.startswith(f"thumbnails/{physical}/") for t in pictures)
    finally:
        reader.close()
    assert (collections / "default").is_dir()  # held, so kept (and said so)

    # With nobody holding it, the next re-index drops the collection it replaces.
    assert cli.main(["reindex", str(small_library), "--quiet"]) == 0
    store = EdgeVectorStore(collections)
    try:
        newest = store.resolve("default")
        assert newest != physical
        assert store.names() == ["default"]
        assert store.open_stored("default").stats().points == before.points
    finally:
        store.close()
    assert not (collections / physical).exists()
    assert not (env / "thumbnails" / physical).exists()
    assert (env / "thumbnails" / newest).is_dir()


def test_a_failed_rebuild_switches_nothing(
    small_library: Path, env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["ingest", str(small_library), "--quiet"]) == 0
    assert cli.main(["reindex", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "nothing switched" in capsys.readouterr().out
    store = EdgeVectorStore(env / "collections")
    try:
        assert store.resolve("default") == "default"
        assert store.names() == ["default"]
    finally:
        store.close()
