"""Reading PDFs with pypdfium2: every page a segment with its picture and its words.

A page's rendered image goes on ``clip`` (and is its thumbnail); its text layer (or, for a
scanned page without one, what OCR reads) goes on ``text`` and BM25. A long page is chunked;
the chunks after the first are text segments that keep the page number.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
from PIL import Image

from app.core.ids import asset_id_for
from app.core.indexing import PreparedAsset
from app.core.models import Asset, Locator, Modality, Segment, SegmentKind
from ingestion.readers import (
    WORKING_SIDE,
    AssetReadError,
    ReadOptions,
    check_size,
    chunk_text,
    reduced,
    title_from,
    write_thumbnail,
)

_POINTS_PER_INCH = 72
# pdfium is not thread-safe: one document at a time in this process.
_PDFIUM = threading.Lock()


def _open(path: Path) -> Any:
    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        text = str(exc)
        if "password" in text.lower():
            raise AssetReadError("encrypted PDF: it needs a password") from exc
        raise AssetReadError(f"not a readable PDF: {text}") from exc


def _render(page: Any, dpi: int) -> Image.Image:
    image: Image.Image = page.render(scale=dpi / _POINTS_PER_INCH).to_pil()
    return image.convert("RGB")


def read_pdf(path: Path, sha256: str, options: ReadOptions, *, root: Path) -> PreparedAsset:
    size, mtime_ns = check_size(path, options)
    with _PDFIUM:
        doc = _open(path)
        try:
            return _read(doc, path, sha256, options, root=root, size=size, mtime_ns=mtime_ns)
        except pdfium.PdfiumError as exc:
            raise AssetReadError(f"broken PDF: {exc}") from exc
        finally:
            doc.close()


def _read(
    doc: Any,
    path: Path,
    sha256: str,
    options: ReadOptions,
    *,
    root: Path,
    size: int,
    mtime_ns: int,
) -> PreparedAsset:
    pages = len(doc)
    if pages == 0:
        raise AssetReadError("the PDF has no pages")
    if pages > options.max_pages:
        msg = f"{pages} pages, over ingestion.max_pages={options.max_pages}"
        raise AssetReadError(msg)
    meta = doc.get_metadata_dict(skip_empty=True)
    asset_id = asset_id_for(sha256, str(path))
    words: list[str] = []
    pictures: list[Image.Image] = []
    width = height = None
    for number in range(pages):
        page = doc[number]
        try:
            if number == 0:
                w, h = page.get_size()
                width, height = round(w), round(h)
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_range().replace("\r\n", "\n").strip()
            finally:
                textpage.close()
            picture = _render(page, options.pdf_render_dpi)
            if not text and options.ocr is not None:
                text = options.ocr.read_text(_render(page, options.pdf_ocr_dpi)).strip()
        finally:
            page.close()
        words.append(text)
        pictures.append(reduced(picture, WORKING_SIDE))
    asset = Asset(
        asset_id=asset_id,
        source=str(path),
        modality=Modality.PDF,
        mime="application/pdf",
        size_bytes=size,
        content_sha256=sha256,
        ingested_at=datetime.now(UTC),
        title=str(meta.get("Title") or "").strip() or title_from(path),
        tags=options.tags,
        width=width,
        height=height,
        thumbnail=write_thumbnail(pictures[0], asset_id, options),
        mtime_ns=mtime_ns,
        root=str(root),
        pages=pages,
    )
    # (kind, page number, text, char span within the page)
    units: list[tuple[SegmentKind, int, str | None, tuple[int, int] | None]] = []
    for number, text in enumerate(words, start=1):
        chunks = chunk_text(text, options.chunk_size, options.chunk_overlap) if text else []
        first = chunks[0] if chunks else None
        units.append(
            (
                SegmentKind.PAGE,
                number,
                first[0] if first else None,
                (first[1], first[1] + len(first[0])) if first and first[1] >= 0 else None,
            )
        )
        units.extend(
            (
                SegmentKind.TEXT_CHUNK,
                number,
                chunk,
                (start, start + len(chunk)) if start >= 0 else None,
            )
            for chunk, start in chunks[1:]
        )
    segments: list[Segment] = []
    images: dict[int, Image.Image] = {}
    for index, (kind, number, text, span) in enumerate(units):
        thumbnail = None
        if kind is SegmentKind.PAGE:
            images[index] = pictures[number - 1]
            thumbnail = write_thumbnail(pictures[number - 1], asset_id, options, segment=index)
        segments.append(
            Segment(
                asset=asset,
                index=index,
                count=len(units),
                kind=kind,
                text=text,
                locator=Locator(
                    page=number,
                    char_start=span[0] if span else None,
                    char_end=span[1] if span else None,
                ),
                thumbnail=thumbnail,
            )
        )
    return PreparedAsset(asset=asset, segments=tuple(segments), images=images, decoded=pages)
