"""Ingestion on the real engine and models: idempotent, incremental, repairing, honest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from app.adapters.edge_store import EdgeCollection
from app.adapters.openclip import OpenClipEmbedder
from app.adapters.text_embedder import SentenceTextEmbedder
from app.core.ids import asset_id_for, sha256_file
from app.core.models import EmbeddedSegment, SegmentKind, Signal, VectorQuery
from app.settings import Settings
from ingestion.discovery import discover
from ingestion.pipeline import IngestReport, Outcome

ROOT = Path(__file__).resolve().parent.parent


def sources(collection: EdgeCollection) -> set[str]:
    return {a.source for a in collection.indexed_assets()}


def test_same_tree_twice_adds_nothing(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    small_library: Path,
) -> None:
    first = ingest(small_library)
    assert first.count(Outcome.INGESTED) == 4
    assert first.ok
    points = open_collection("default").stats().points

    second = ingest(small_library)
    assert second.count(Outcome.UNCHANGED) == 4
    assert second.count(Outcome.INGESTED) == 0
    assert "embed" not in second.timings_s  # nothing re-embedded
    assert open_collection("default").stats().points == points


def test_modified_file_replaces_its_points(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    small_library: Path,
) -> None:
    ingest(small_library)
    note = small_library / "notes" / "coffee-brewing.md"
    old_id = asset_id_for(sha256_file(note), str(note.resolve()))
    collection = open_collection("default")
    assert collection.asset_segments(old_id)

    note.write_text("# Tea notes\n\nGreen tea is brewed at 80 degrees for two minutes.\n")
    report = ingest(small_library)
    assert [r.outcome for r in report.results if r.path == str(note.resolve())] == [
        Outcome.REPLACED
    ]
    new_id = asset_id_for(sha256_file(note), str(note.resolve()))
    assert collection.asset_segments(old_id) == []
    segments = collection.asset_segments(new_id)
    assert [s.asset.title for s in segments] == ["Tea notes"]
    assert "Green tea" in (segments[0].text or "")
    assert len([a for a in collection.indexed_assets() if a.source == str(note.resolve())]) == 1


def test_same_size_and_mtime_skips_hashing_unless_verify(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    note = folder / "note.txt"
    note.write_text("The meeting is on Monday.")
    ingest(folder)
    stat = note.stat()
    note.write_text("The meeting is on Friday.")  # same size
    os.utime(note, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime

    assert [r.outcome for r in ingest(folder).results] == [Outcome.UNCHANGED]
    assert [r.outcome for r in ingest(folder, verify=True).results] == [Outcome.REPLACED]
    (asset,) = open_collection("default").indexed_assets()
    (segment,) = open_collection("default").asset_segments(asset.asset_id)
    assert segment.text == "The meeting is on Friday."


def test_deleted_file_is_removed_only_with_sync(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    small_library: Path,
    settings: Settings,
) -> None:
    ingest(small_library)
    photo = (small_library / "photos" / "food" / "coffee.jpg").resolve()
    photo_id = asset_id_for(sha256_file(photo), str(photo))
    thumb = settings.data_dir / "thumbnails" / "default" / f"{photo_id}.jpg"
    assert thumb.is_file()
    photo.unlink()

    ingest(small_library)
    assert str(photo) in sources(open_collection("default"))

    report = ingest(small_library, sync=True)
    assert [r.path for r in report.results if r.outcome is Outcome.REMOVED] == [str(photo)]
    assert str(photo) not in sources(open_collection("default"))
    assert len(sources(open_collection("default"))) == 3
    assert not thumb.exists()


def test_sync_leaves_other_folders_alone(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    small_library: Path,
) -> None:
    ingest(small_library)
    report = ingest(small_library / "notes", sync=True)
    assert report.count(Outcome.REMOVED) == 0
    assert len(sources(open_collection("default"))) == 4


def test_corrupt_empty_and_unsupported_files_are_reported_and_skipped(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    small_library: Path,
) -> None:
    (small_library / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = Image.open(small_library / "photos" / "food" / "coffee.jpg")
    good.save(small_library / "truncated.png")
    data = (small_library / "truncated.png").read_bytes()
    (small_library / "truncated.png").write_bytes(data[: len(data) // 3])
    (small_library / "empty.txt").write_bytes(b"")
    (small_library / "binary.md").write_bytes(b"\x00\x01\x02 binary")
    (small_library / "song.mp3").write_bytes(b"ID3")  # a recording with nothing in it
    (small_library / "slides.key").write_bytes(b"PK")

    report = ingest(small_library)
    failed = {Path(r.path).name: r.reason for r in report.failed}
    assert set(failed) == {"broken.jpg", "truncated.png", "empty.txt", "binary.md", "song.mp3"}
    assert "image" in (failed["broken.jpg"] or "")
    assert failed["empty.txt"] == "empty file"
    assert report.unsupported == [str((small_library / "slides.key").resolve())]
    assert report.count(Outcome.INGESTED) == 4
    assert not report.ok
    assert len(sources(open_collection("default"))) == 4


def test_words_next_to_images_reach_the_text_vector(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    sample_library: Path,
    text_model: SentenceTextEmbedder,
) -> None:
    ingest(sample_library, tags=("demo",))
    collection = open_collection("default")
    by_name = {Path(a.source).name: a for a in collection.indexed_assets()}
    expectations = {
        "astronaut.png": "Eileen Collins",  # captions.csv
        "rocket.jpg": "lifting off",  # captions.jsonl
        "chelsea.jpg": "ginger tabby",  # sidecar chelsea.jpg.txt
        "coffee.jpg": "latte art",  # EXIF ImageDescription
        "horse.png": "Silhouette of a horse",  # PNG text chunk
    }
    for name, words in expectations.items():
        (segment,) = collection.asset_segments(by_name[name].asset_id)
        assert segment.kind is SegmentKind.IMAGE
        assert words in (segment.asset.caption or ""), name
        assert segment.asset.thumbnail == f"thumbnails/default/{segment.asset.asset_id}.jpg"
    astronaut = collection.asset_segments(by_name["astronaut.png"].asset_id)[0].asset
    assert astronaut.tags == ("demo", "people", "space")
    assert (astronaut.width, astronaut.height) == (512, 512)
    # Sidecars and manifests are descriptions, not documents of their own.
    assert not [n for n in by_name if n.endswith((".txt.txt", ".jpg.txt", ".csv", ".jsonl"))]
    query = text_model.embed_texts(["ginger tabby cat"])[0]
    hits = collection.search(VectorQuery({Signal.TEXT: query}, limit=1))
    assert Path(hits[0].segment.asset.source).name == "chelsea.jpg"


def test_exif_orientation_is_applied(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "rotated"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to display
    Image.new("RGB", (40, 20), "red").save(folder / "sideways.jpg", exif=exif)
    ingest(folder)
    (asset,) = open_collection("default").indexed_assets()
    (segment,) = open_collection("default").asset_segments(asset.asset_id)
    assert (segment.asset.width, segment.asset.height) == (20, 40)


def test_text_documents_are_chunked_with_offsets(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    paragraphs = [
        f"Paragraph {i} talks about topic number {i} in some detail." * 4 for i in range(30)
    ]
    body = "# Long guide\n\n" + "\n\n".join(paragraphs)
    (folder / "guide.md").write_text(body)
    report = ingest(folder)
    (result,) = report.results
    assert result.segments > 3
    collection = open_collection("default")
    segments = collection.asset_segments(collection.indexed_assets()[0].asset_id)
    assert [s.index for s in segments] == list(range(result.segments))
    assert all(s.count == result.segments for s in segments)
    for s in segments:
        assert s.locator.char_start is not None and s.locator.char_end is not None
        assert body[s.locator.char_start : s.locator.char_end] == s.text
    assert segments[0].asset.title == "Long guide"


def test_interrupted_asset_is_repaired_and_stale_versions_removed(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    tmp_path: Path,
) -> None:
    import qdrant_edge as qe

    from app.core.ids import point_id_for

    folder = tmp_path / "docs"
    folder.mkdir()
    doc = folder / "guide.md"
    doc.write_text("\n\n".join(f"Section {i}. " + "words " * 150 for i in range(6)))
    ingest(folder)
    collection = open_collection("default")
    (asset,) = collection.indexed_assets()
    # As if the process died after writing only part of the asset.
    collection._shard.update(
        qe.UpdateOperation.delete_points([point_id_for(asset.asset_id, asset.segment_count - 1)])
    )
    assert not collection.indexed_assets()[0].complete
    report = ingest(folder)
    assert [r.outcome for r in report.results] == [Outcome.REPAIRED]
    (repaired,) = collection.indexed_assets()
    assert repaired.complete and repaired.asset_id == asset.asset_id


def test_leftover_old_version_is_deleted_without_re_embedding(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    text_model: SentenceTextEmbedder,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    note = folder / "note.txt"
    note.write_text("Version one of the note.")
    ingest(folder)
    collection = open_collection("default")
    (old,) = collection.asset_segments(collection.indexed_assets()[0].asset_id)
    note.write_text("Version two of the note, a little longer.")
    ingest(folder)
    # As if the run had died after writing version two but before deleting version one.
    collection.upsert(
        [EmbeddedSegment(old, {Signal.TEXT: text_model.embed_texts([old.text or ""])[0]})]
    )
    assert len(collection.indexed_assets()) == 2

    report = ingest(folder)
    assert [r.outcome for r in report.results] == [Outcome.REPAIRED]
    assert "embed" not in report.timings_s  # the current version is whole: nothing re-read
    (kept,) = collection.indexed_assets()
    assert kept.asset_id != old.asset.asset_id
    assert collection.asset_segments(old.asset.asset_id) == []


def test_dry_run_writes_nothing(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    small_library: Path,
) -> None:
    report = ingest(small_library, dry_run=True)
    assert report.count(Outcome.PLANNED) == 4
    assert open_collection("default").stats().points == 0


def test_discovery_skips_hidden_files_and_sidecars(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.txt").write_text("no")
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "a.png.txt").write_text("caption")
    (tmp_path / "notes.txt").write_text("a note")
    (tmp_path / "captions.csv").write_text("file,caption\n")
    found = discover([tmp_path, tmp_path / "missing"])
    assert sorted(f.path.name for f in found.files) == ["a.png", "notes.txt"]
    assert found.missing == [tmp_path / "missing"]


def test_cli_reports_a_corrupt_image_and_exits_1(sample_library: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.jpg", "chelsea.jpg.txt"):
        (folder / name).write_bytes((sample_library / "photos" / "animals" / name).read_bytes())
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    env = {
        **os.environ,
        "MMRAG_DATA_DIR": str(tmp_path / "data"),
        "MMRAG_CLIP__PRETRAINED": "none",
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "ingestion", "ingest", str(folder), "--quiet"]
    dry = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "does not exist yet" in dry.stdout
    assert f"would ingest: {(folder / 'chelsea.jpg').resolve()}" in dry.stdout
    assert not (tmp_path / "data").exists()

    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "corrupt.png" in run.stdout and "failed" in run.stdout
    assert "ingested │     1" in run.stdout
    assert "1 assets, 1 points" in run.stdout

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1
    assert "unchanged │     1" in again.stdout
    assert "loading models" not in again.stdout  # nothing to embed: no model is loaded

    # Something new to embed, but the configured models are not the collection's: refused
    # once the models are known, before anything is written.
    (folder / "moon.png").write_bytes(
        (sample_library / "photos" / "space" / "moon.png").read_bytes()
    )
    other = {**env, "MMRAG_CLIP__MODEL": "RN50"}
    mixed = subprocess.run(cmd, cwd=ROOT, env=other, capture_output=True, text=True, timeout=300)
    assert mixed.returncode == 2, mixed.stdout + mixed.stderr
    assert "was built with other settings" in mixed.stdout
    final = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert re.search(r"ingested +│ +1 │", final.stdout)  # moon.png: not written when refused
    assert "2 assets, 2 points" in final.stdout


@pytest.mark.parametrize(
    ("name", "save"),
    [
        ("photo.jpeg", {"format": "JPEG"}),
        ("photo.png", {"format": "PNG"}),
        ("photo.webp", {"format": "WEBP"}),
        ("photo.bmp", {"format": "BMP"}),
        ("photo.tiff", {"format": "TIFF"}),
    ],
)
def test_every_image_format_is_read(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    sample_library: Path,
    tmp_path: Path,
    name: str,
    save: dict[str, str],
) -> None:
    folder = tmp_path / "formats"
    folder.mkdir()
    with Image.open(sample_library / "photos" / "animals" / "chelsea.jpg") as img:
        img.save(folder / name, **save)
    report = ingest(folder)
    assert report.ok, report.failed
    (segment,) = open_collection("default").asset_segments(
        open_collection("default").indexed_assets()[0].asset_id
    )
    assert (segment.asset.width, segment.asset.height) == (451, 300)
    assert segment.asset.mime == f"image/{save['format'].lower()}"


def test_animated_gif_uses_its_first_frame(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    clip: OpenClipEmbedder,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "gif"
    folder.mkdir()
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "green", "blue")]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    assert ingest(folder).ok
    collection = open_collection("default")
    with Image.open(folder / "anim.gif") as gif:
        first = clip.embed_images([gif.convert("RGB")])[0]
    hits = collection.search(VectorQuery({Signal.CLIP: first}, limit=1))
    assert hits[0].signal_scores[Signal.CLIP] == pytest.approx(1.0, abs=1e-3)


def test_a_touched_file_keeps_its_vectors_and_records_its_new_time(
    ingest: Callable[..., IngestReport],
    open_collection: Callable[[str], EdgeCollection],
    small_library: Path,
) -> None:
    """Same content, new mtime (a copy, a checkout): nothing is embedded again, but the stored
    time follows, or the service would refuse to serve the file as changed."""
    import os

    from app.http.service import open_verified

    assert ingest(small_library).ok
    note = small_library / "notes" / "coffee-brewing.md"
    st = note.stat()
    os.utime(note, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    report = ingest(small_library)
    assert report.count(Outcome.UNCHANGED) == len(report.results)
    collection = open_collection("default")
    (asset,) = [a for a in collection.indexed_assets() if a.source == str(note)]
    assert asset.mtime_ns == st.st_mtime_ns + 5_000_000_000
    segment = collection.asset_segments(asset.asset_id)[0]
    opened = open_verified(segment.asset)
    os.close(opened.fd)
    assert opened.size == st.st_size


def test_camera_sized_photos_decode_at_the_size_the_model_needs(
    settings: Settings, sample_library: Path, tmp_path: Path
) -> None:
    """A 12 MP JPEG is decoded straight at ~448 px (DCT scaling), yet the asset keeps its real,
    upright dimensions and a proper thumbnail."""
    from ingestion.discovery import CaptionIndex
    from ingestion.readers import WORKING_SIDE, read_image, read_options_for

    with Image.open(sample_library / "photos" / "animals" / "chelsea.jpg") as original:
        photo = original.convert("RGB")
    big = tmp_path / "camera.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # sideways, as phones store portrait shots
    photo.resize((4000, 3000)).save(big, quality=90, exif=exif)
    prepared = read_image(
        big, "0" * 64, read_options_for(settings, "default"), CaptionIndex(), root=tmp_path
    )
    assert (prepared.asset.width, prepared.asset.height) == (3000, 4000)
    assert 0 in prepared.images
    assert min(prepared.images[0].size) == WORKING_SIDE
    assert prepared.images[0].height > prepared.images[0].width  # upright
    assert prepared.asset.thumbnail is not None
    with Image.open(settings.data_dir / prepared.asset.thumbnail) as thumb:
        assert max(thumb.size) == settings.ingestion.thumbnail_px
