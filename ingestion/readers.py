"""Reading one file into a ``PreparedAsset``: decode, gather its words, chunk, thumbnail.

Every failure is an ``InputError`` with a reason a person can act on (``AssetReadError``, or
the shared image decoder's, app/adapters/images.py); the pipeline reports it and goes on with
the next file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from langchain_text_splitters import RecursiveCharacterTextSplitter
from PIL import Image

from app.adapters.images import decode_image, reduced
from app.core.errors import InputError
from app.core.ids import asset_id_for
from app.core.indexing import PreparedAsset
from app.core.models import Asset, Locator, Modality, Segment, SegmentKind
from app.core.ports import SpeechRecognizer, TextRecognizer
from app.settings import Settings
from ingestion.discovery import SIDECAR_SUFFIX, CaptionIndex


class AssetReadError(InputError):
    """A file that cannot be ingested (corrupt, empty, unreadable, too large)."""


@dataclass(frozen=True, slots=True)
class ReadOptions:
    chunk_size: int
    chunk_overlap: int
    thumbnail_px: int
    max_file_bytes: int
    thumbnails_dir: Path  # absolute; thumbnails are stored under <dir>/<asset_id>.jpg
    thumbnails_rel: str  # the same folder relative to the data dir, as stored in payloads
    tags: tuple[str, ...] = ()
    ocr: TextRecognizer | None = None  # None: OCR off
    speech: SpeechRecognizer | None = None  # None: recordings need a sidecar transcript
    scene_threshold: float = 0.12
    frame_min_interval_s: float = 1.0
    frame_max_interval_s: float = 30.0
    max_frames: int = 200
    pdf_render_dpi: int = 100
    pdf_ocr_dpi: int = 200
    max_pages: int = 2000
    transcript_chunk_s: float = 30.0


def read_options_for(
    settings: Settings,
    collection: str,
    *,
    tags: tuple[str, ...] = (),
    ocr: TextRecognizer | None = None,
    speech: SpeechRecognizer | None = None,
) -> ReadOptions:
    """Read options from the settings; thumbnails go to <data dir>/thumbnails/<collection>."""
    thumbnails_rel = f"thumbnails/{collection}"
    i = settings.ingestion
    return ReadOptions(
        chunk_size=i.chunk_size,
        chunk_overlap=i.chunk_overlap,
        thumbnail_px=i.thumbnail_px,
        max_file_bytes=i.max_file_bytes,
        thumbnails_dir=(settings.data_dir / thumbnails_rel).resolve(),
        thumbnails_rel=thumbnails_rel,
        tags=tags,
        ocr=ocr,
        speech=speech,
        scene_threshold=i.scene_threshold,
        frame_min_interval_s=i.frame_min_interval_s,
        frame_max_interval_s=i.frame_max_interval_s,
        max_frames=i.max_frames,
        pdf_render_dpi=i.pdf_render_dpi,
        pdf_ocr_dpi=i.pdf_ocr_dpi,
        max_pages=i.max_pages,
        transcript_chunk_s=i.transcript_chunk_s,
    )


def title_from(path: Path) -> str:
    return path.stem.replace("_", " ").replace("-", " ").strip() or path.name


def _unique(parts: list[str | None]) -> list[str]:
    out: list[str] = []
    for part in parts:
        text = (part or "").strip()
        if text and text not in out:
            out.append(text)
    return out


def _sidecar_words(path: Path) -> str | None:
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return None
    try:
        return sidecar.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AssetReadError(f"caption sidecar {sidecar.name} unreadable: {exc}") from exc


def check_size(path: Path, options: ReadOptions) -> tuple[int, int]:
    """(size, mtime_ns) of a file that is worth reading."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise AssetReadError(f"cannot read file: {exc.strerror or exc}") from exc
    size = stat.st_size
    if size == 0:
        raise AssetReadError("empty file")
    if size > options.max_file_bytes:
        msg = f"file is {size} bytes, over ingestion.max_file_bytes={options.max_file_bytes}"
        raise AssetReadError(msg)
    return size, stat.st_mtime_ns


# Decoded images are reduced to this shorter side at most: enough for CLIP's crop (224 px for
# ViT-B-32, 336 px for the largest common models) and the thumbnail. JPEGs are decoded straight
# at about this size (DCT scaling, ``Image.draft``): a 12-megapixel photo decodes at 1/8 scale,
# several times faster and in a fraction of the memory.
WORKING_SIDE = 336
# Shorter side photos and screenshots are read at for OCR (a 1080p screenshot stays whole).
OCR_SIDE = 1080


def write_thumbnail(
    img: Image.Image, asset_id: str, options: ReadOptions, *, segment: int | None = None
) -> str:
    """Save a JPEG thumbnail: ``<asset_id>.jpg`` for the asset, ``<asset_id>-<n>.jpg`` for
    segment ``n`` (a frame, a page). Returns its path relative to the data dir."""
    thumb = img.convert("RGB")
    thumb.thumbnail((options.thumbnail_px, options.thumbnail_px))
    options.thumbnails_dir.mkdir(parents=True, exist_ok=True)
    name = f"{asset_id}.jpg" if segment is None else f"{asset_id}-{segment}.jpg"
    target = options.thumbnails_dir / name
    tmp = target.with_name(name + ".tmp")
    thumb.save(tmp, format="JPEG", quality=85)
    tmp.replace(target)
    return f"{options.thumbnails_rel}/{name}"


def read_image(
    path: Path, sha256: str, options: ReadOptions, captions: CaptionIndex, *, root: Path
) -> PreparedAsset:
    size, mtime_ns = check_size(path, options)
    working_side = max(WORKING_SIDE, options.thumbnail_px)
    # OCR needs letters of ~20 px and more: decode larger when it is on, reduce for CLIP after.
    decode_side = max(working_side, OCR_SIDE) if options.ocr else working_side
    decoded = decode_image(path, min_side=decode_side)
    img = decoded.image
    ocr_text = options.ocr.read_text(img) if options.ocr else ""
    img = reduced(img, working_side)
    entry = captions.lookup(path)
    caption_parts = _unique(
        [entry.caption if entry else None, _sidecar_words(path), *decoded.words]
    )
    caption = "\n".join(caption_parts) or None
    # What the picture shows in words (OCR) is searchable and quoted, the caption first.
    words_of_segment = "\n".join(_unique([caption, ocr_text])) or None
    source = str(path)
    asset_id = asset_id_for(sha256, source)
    asset = Asset(
        asset_id=asset_id,
        source=source,
        modality=Modality.IMAGE,
        mime=decoded.mime,
        size_bytes=size,
        content_sha256=sha256,
        ingested_at=datetime.now(UTC),
        title=(entry.title if entry and entry.title else title_from(path)),
        caption=caption,
        tags=tuple(dict.fromkeys([*options.tags, *(entry.tags if entry else ())])),
        width=decoded.width,
        height=decoded.height,
        thumbnail=write_thumbnail(img, asset_id, options),
        mtime_ns=mtime_ns,
        root=str(root),
    )
    segment = Segment(asset=asset, index=0, count=1, kind=SegmentKind.IMAGE, text=words_of_segment)
    return PreparedAsset(asset=asset, segments=(segment,), images={0: img})


def _decode_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AssetReadError(f"cannot read file: {exc.strerror or exc}") from exc
    if b"\x00" in data[:8192]:
        raise AssetReadError("binary data in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _doc_title(path: Path, text: str) -> str:
    for line in text.splitlines()[:20]:
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip() or title_from(path)
    return title_from(path)


def chunk_text(text: str, chunk_size: int, chunk_overlap: int) -> list[tuple[str, int]]:
    """Chunks with their start offsets; paragraph and sentence boundaries are preferred."""
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=True
    )
    return [
        (doc.page_content, int(doc.metadata.get("start_index", -1)))
        for doc in splitter.create_documents([text])
        if doc.page_content.strip()
    ]


def read_text(path: Path, sha256: str, options: ReadOptions, *, root: Path) -> PreparedAsset:
    size, mtime_ns = check_size(path, options)
    text = _decode_text(path)
    if not text.strip():
        raise AssetReadError("no text in file")
    chunks = chunk_text(text, options.chunk_size, options.chunk_overlap)
    source = str(path)
    mime = "text/markdown" if path.suffix.lower() in {".md", ".markdown"} else "text/plain"
    asset = Asset(
        asset_id=asset_id_for(sha256, source),
        source=source,
        modality=Modality.TEXT,
        mime=mime,
        size_bytes=size,
        content_sha256=sha256,
        ingested_at=datetime.now(UTC),
        title=_doc_title(path, text),
        tags=options.tags,
        mtime_ns=mtime_ns,
        root=str(root),
    )
    segments = tuple(
        Segment(
            asset=asset,
            index=i,
            count=len(chunks),
            kind=SegmentKind.TEXT_CHUNK,
            text=chunk,
            locator=Locator(char_start=start, char_end=start + len(chunk))
            if start >= 0
            else Locator(),
        )
        for i, (chunk, start) in enumerate(chunks)
    )
    return PreparedAsset(asset=asset, segments=segments)


# ``reduced`` lives with the image decoder (app/adapters/images.py); PDF pages use it from here.
__all__ = [
    "OCR_SIDE",
    "WORKING_SIDE",
    "AssetReadError",
    "ReadOptions",
    "check_size",
    "chunk_text",
    "read_image",
    "read_options_for",
    "read_text",
    "reduced",
    "title_from",
    "write_thumbnail",
]
