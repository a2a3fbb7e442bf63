"""Ingestion speed: the whole pipeline against the bare model, per medium.

Writes ``--n`` 12-megapixel JPEGs (4000x3000, real sample photos scaled up, quality 90) under
``bench/.cache/ingest/``, then measures, on 2 cores with the real open_clip code (ViT-B-32,
random weights: the speed is the same) and the real MiniLM:

* decode: one photo read for embedding, full-size decode (``Image.open().load()``) against the
  reader's DCT-scaled decode at the size the model needs, per photo;
* pipeline: ``IngestionPipeline.run`` into a fresh embedded collection (read, embed, write,
  optimize), photos per second;
* bare model: ``encode_image`` of the same photos, already decoded, at the same batch size.

The figure is pipeline / bare (issue 7's target: >= 0.9 on photos); ``--ocr`` runs the photos
again with OCR on (tesseract). ``--media`` then times a generated video (720p, narrated, one
scene change every 4 s), a PDF (text pages and scanned pages) and a spoken recording, with each
reading step measured on its own (decode, OCR, speech recognition, rendering) next to the
pipeline's stages, so the limiting stage is named with figures. Run from the repository root::

    .venv/bin/python -m bench.ingest [--n 32] [--ocr] [--media]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from PIL import Image

CACHE = Path(__file__).resolve().parent / ".cache" / "ingest"
SOURCES = ("animals/chelsea.jpg", "food/coffee.jpg", "space/rocket.jpg", "animals/horse.png")


def camera_photos(n: int) -> list[Path]:
    from app.demo.library import build_library

    library = CACHE / "library"
    build_library(library)
    folder = CACHE / f"photos-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        target = folder / f"photo-{i:03d}.jpg"
        if not target.exists():
            with Image.open(library / "photos" / SOURCES[i % len(SOURCES)]) as src:
                big = src.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
                # a different crop each time: no two files are the same
                big.rotate(i * 7 % 360).save(target, quality=90)
        paths.append(target)
    return paths


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one linear measurement
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ocr", action="store_true", help="photos again, with OCR on")
    parser.add_argument("--media", action="store_true", help="video, PDF and audio too")
    args = parser.parse_args(argv)

    from app.adapters.openclip import OpenClipEmbedder
    from app.adapters.text_embedder import SentenceTextEmbedder
    from app.wiring import build_store, collection_spec
    from ingestion.discovery import CaptionIndex
    from ingestion.pipeline import IngestionPipeline, IngestRequest
    from ingestion.readers import WORKING_SIDE, read_image, read_options_for
    from tests.conftest import make_settings

    photos = camera_photos(args.n)
    clip = OpenClipEmbedder("ViT-B-32", pretrained="none", device="cpu", batch_size=args.batch)
    text = SentenceTextEmbedder(device="cpu")

    full, scaled = [], []
    for path in photos[:8]:
        t0 = time.perf_counter()
        with Image.open(path) as img:
            img.load()
        full.append(time.perf_counter() - t0)
    work = Path(tempfile.mkdtemp(prefix="mmrag-bench-"))
    try:
        settings = make_settings(work / "data", ingestion={"write_batch_assets": args.batch})
        options = read_options_for(settings, "bench")
        decoded = []
        for path in photos:
            t0 = time.perf_counter()
            prepared = read_image(path, "0" * 64, options, CaptionIndex(), root=path.parent)
            scaled.append(time.perf_counter() - t0)
            decoded.append(prepared.images[0])
        clip.embed_images(decoded[:2])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(decoded), args.batch):
            clip.embed_images(decoded[i : i + args.batch])
        bare = len(decoded) / (time.perf_counter() - t0)

        store = build_store(settings)
        collection = store.open(collection_spec(settings, "bench", clip, text), create=True)
        pipeline = IngestionPipeline(collection, clip, text, options, write_batch_assets=args.batch)
        t0 = time.perf_counter()
        report = pipeline.run(IngestRequest(paths=(photos[0].parent,)))
        whole = len(photos) / (time.perf_counter() - t0)
        store.close()
        if args.ocr:
            with_ocr = _photos_with_ocr(settings, photos, clip, text, args.batch)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    stages = ", ".join(f"{k} {v:.1f} s" for k, v in report.timings_s.items())
    print(f"{len(photos)} photos of 4000x3000 (12 MP), batch {args.batch}, 2 cores")
    print(
        f"decode for the model: full-size {1000 * statistics.median(full):.0f} ms, "
        f"DCT-scaled to {WORKING_SIDE} px + thumbnail {1000 * statistics.median(scaled):.0f} ms "
        "(median per photo)"
    )
    print(f"bare encode_image: {bare:.2f} photos/s")
    print(f"pipeline (read, embed, write, optimize): {whole:.2f} photos/s ({stages})")
    print(f"pipeline / bare model: {whole / bare:.2f}")
    if args.ocr:
        rate, ocr_s, stages = with_ocr
        print(
            f"with OCR on: {rate:.2f} photos/s ({stages}); tesseract alone "
            f"{1000 * ocr_s:.0f} ms per photo (median): OCR is the limiting stage"
        )
    if args.media:
        from bench.ingest_media import run_media

        run_media(clip, text)
    return 0


def _photos_with_ocr(
    settings: Any, photos: list[Path], clip: Any, text: Any, batch: int
) -> tuple[float, float, str]:
    """Photos per second with OCR on, tesseract's own time per photo, and the stages."""
    from app.adapters.ocr import TesseractOCR
    from app.wiring import build_store, collection_spec
    from ingestion.pipeline import IngestionPipeline, IngestRequest
    from ingestion.readers import OCR_SIDE, read_options_for, reduced

    ocr = TesseractOCR()
    options = read_options_for(settings, "bench-ocr", ocr=ocr)
    alone = []
    for path in photos[:8]:
        with Image.open(path) as img:
            img.draft("RGB", (img.width // 2, img.height // 2))
            picture = reduced(img.convert("RGB"), OCR_SIDE)
        t0 = time.perf_counter()
        ocr.read_text(picture)
        alone.append(time.perf_counter() - t0)
    store = build_store(settings)
    try:
        collection = store.open(collection_spec(settings, "bench-ocr", clip, text), create=True)
        pipeline = IngestionPipeline(collection, clip, text, options, write_batch_assets=batch)
        t0 = time.perf_counter()
        report = pipeline.run(IngestRequest(paths=(photos[0].parent,)))
        rate = len(photos) / (time.perf_counter() - t0)
    finally:
        store.close()
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in report.timings_s.items())
    return rate, statistics.median(alone), stages


if __name__ == "__main__":
    sys.exit(main())
