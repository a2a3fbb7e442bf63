"""Real ingestion killed with SIGKILL at chosen points, then run again: the collection must end
exactly as a clean run leaves it (same assets, segments, vectors indexed, thumbnails), with no
duplicates, nothing missing and no orphan thumbnail.

The kill happens in a real ``python -m ingestion`` process: a small launcher replaces one method
with a version that kills the process at the chosen moment, then runs the CLI's ``main``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.adapters.edge_store import EdgeVectorStore
from app.settings import PROJECT_ROOT, Settings
from app.wiring import collection_spec
from ingestion.pipeline import IngestionPipeline, IngestRequest
from ingestion.readers import read_options_for
from tests.conftest import make_settings

LAUNCHER = r"""
import os, signal, sys, threading, time
from app.adapters.edge_store import EdgeCollection
from ingestion.cli import main
from ingestion.pipeline import IngestionPipeline

point = sys.argv[1]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "mid-upsert":  # the second batch: half its segments written, then killed
    real_upsert = EdgeCollection.upsert
    calls = []
    def upsert(self, segments):
        calls.append(1)
        if len(calls) == 2:
            real_upsert(self, segments[: len(segments) // 2])
            die()
        real_upsert(self, segments)
    EdgeCollection.upsert = upsert
elif point == "after-new-before-old":  # a changed file: new version written, old not deleted
    real_delete = EdgeCollection.delete_assets
    def delete_assets(self, asset_ids):
        if asset_ids:
            die()
        real_delete(self, asset_ids)
    EdgeCollection.delete_assets = delete_assets
elif point == "after-asset-before-thumbnail":  # --sync: points deleted, thumbnail not yet
    real_drop = IngestionPipeline._drop_thumbnails
    def drop(self, asset_ids):
        ids = list(asset_ids)
        if ids:
            die()
        real_drop(self, ids)
    IngestionPipeline._drop_thumbnails = drop
elif point == "during-optimize":  # the engine is building its index when the kill comes
    real_optimize = EdgeCollection.optimize
    def optimize(self):
        shard = self._shard
        class Killing:
            def __getattr__(self, name):
                return getattr(shard, name)
            def optimize(self):
                threading.Thread(target=shard.optimize, daemon=True).start()
                time.sleep(0.05)
                die()
        self._shard = Killing()
        real_optimize(self)
    EdgeCollection.optimize = optimize
else:
    raise SystemExit(f"unknown point {point}")
sys.exit(main(sys.argv[2:]))
"""

LONG_NOTE = "\n\n".join(
    f"Section {n}. The greenhouse log records humidity, light and watering for bed {n}. "
    + "Seedlings are moved outside once the nights stay above ten degrees. " * 6
    for n in range(1, 6)
)


@pytest.fixture
def library(small_library: Path) -> Path:
    """The shared small library, plus two notes long enough to make several chunks."""
    (small_library / "notes" / "greenhouse.md").write_text(LONG_NOTE)
    (small_library / "notes" / "garden.md").write_text(LONG_NOTE.replace("greenhouse", "garden"))
    return small_library


@pytest.fixture
def run_pipeline(clip: Any, text_model: Any) -> Callable[..., None]:
    """Runs ingestion in this process (setting up, and the repairing run), then closes."""

    def _run(settings: Settings, *paths: Path, sync: bool = False) -> None:
        store = EdgeVectorStore(settings.collections_dir)
        try:
            spec = collection_spec(settings, "default", clip, text_model)
            pipeline = IngestionPipeline(
                store.open(spec, create=True),
                clip,
                text_model,
                read_options_for(settings, "default"),
                write_batch_assets=2,
            )
            report = pipeline.run(IngestRequest(paths=paths, sync=sync))
            assert report.ok, report.failed
        finally:
            store.close()

    return _run


def state(settings: Settings, clip: Any, text_model: Any, root: Path) -> dict[str, Any]:
    """What a collection holds, with library paths relative so two libraries compare."""
    store = EdgeVectorStore(settings.collections_dir)
    try:
        collection = store.open(
            collection_spec(settings, "default", clip, text_model), create=False
        )
        assets = collection.indexed_assets()
        stats = collection.stats()
        pending = collection.optimize_pending
    finally:
        store.close()
    thumbs = settings.thumbnails_dir / "default"
    by_id = {a.asset_id: a for a in assets}
    return {
        "assets": sorted(
            (str(Path(a.source).relative_to(root)), a.segment_count, a.stored_segments)
            for a in assets
        ),
        "sources_unique": len({a.source for a in assets}) == len(assets),
        "points": stats.points,
        "indexed_vectors": stats.indexed_vectors,
        "optimize_pending": pending,
        "thumbnails": sorted(
            str(Path(by_id[t.stem].source).relative_to(root)) if t.stem in by_id else t.name
            for t in thumbs.iterdir()
        )
        if thumbs.is_dir()
        else [],
    }


def crash(settings: Settings, point: str, *args: str) -> None:
    env = {
        **os.environ,
        "MMRAG_DATA_DIR": str(settings.data_dir),
        "MMRAG_CLIP__PRETRAINED": "none",
        "MMRAG_INGESTION__WRITE_BATCH_ASSETS": "2",
    }
    run = subprocess.run(
        [sys.executable, "-c", LAUNCHER, point, "ingest", "--quiet", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == -signal.SIGKILL, run.stdout + run.stderr


@pytest.mark.parametrize(
    "point",
    ["mid-upsert", "after-new-before-old", "after-asset-before-thumbnail", "during-optimize"],
)
def test_a_killed_run_is_repaired_by_running_again(
    point: str,
    library: Path,
    tmp_path: Path,
    run_pipeline: Callable[..., None],
    clip: Any,
    text_model: Any,
) -> None:
    settings = make_settings(tmp_path / "data")
    sync = point == "after-asset-before-thumbnail"
    if point == "after-new-before-old":
        run_pipeline(settings, library)
        note = library / "notes" / "greenhouse.md"
        note.write_text(note.read_text().replace("humidity", "moisture"))
    elif sync:
        run_pipeline(settings, library)
        (library / "photos" / "food" / "coffee.jpg").unlink()

    crash(settings, point, str(library), *(["--sync"] if sync else []))
    broken = state(settings, clip, text_model, library)
    run_pipeline(settings, library, sync=sync)  # the repair: the same command again
    repaired = state(settings, clip, text_model, library)

    clean_settings = make_settings(tmp_path / "clean")
    run_pipeline(clean_settings, library)
    clean = state(clean_settings, clip, text_model, library)

    indexed, clean_indexed = repaired.pop("indexed_vectors"), clean.pop("indexed_vectors")
    if point in {"mid-upsert", "during-optimize"}:
        assert indexed == clean_indexed > 0  # every vector indexed, as after a clean run
    else:  # deleted points stay counted as indexed until the engine vacuums their segment
        assert indexed >= clean_indexed > 0
    assert repaired == clean
    assert repaired["sources_unique"]
    assert not repaired["optimize_pending"]
    assert all(total == stored for _, total, stored in repaired["assets"])
    # The kill really left something to repair.
    if point == "mid-upsert":
        assert len(broken["assets"]) < len(clean["assets"]) or any(
            total != stored for _, total, stored in broken["assets"]
        )
    elif point == "after-new-before-old":
        assert len(broken["assets"]) == len(clean["assets"]) + 1  # old and new greenhouse.md
    elif sync:
        assert len(broken["thumbnails"]) == len(clean["thumbnails"]) + 1  # an orphan
    else:
        assert broken["optimize_pending"]
