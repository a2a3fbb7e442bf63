"""Which vectors each segment gets (the ingestion "mapper"), shared by every ingestion path.

- a segment with a picture (photo, video frame, PDF page): CLIP image vector on ``clip``; its
  words (caption, sidecar, EXIF, OCR, page text) on ``text``.
- a segment of words only (text chunk, transcript): sentence vector on ``text``; CLIP text
  vector on ``clip`` only when the CLIP weights are aligned (random weights would put noise
  into the joint space).
- a whole-video segment: the normalised mean of its frames' ``clip`` vectors (coarse search).
- every segment with words also gets a BM25 vector; the store makes it from ``segment.text``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from app.core.models import Asset, EmbeddedSegment, FloatVector, Segment, SegmentKind, Signal
from app.core.ports import FloatMatrix, ImageTextEmbedder, TextEmbedder

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True, slots=True, eq=False)
class PreparedAsset:
    """A file read and cut into segments, before embedding."""

    asset: Asset
    segments: tuple[Segment, ...]
    images: Mapping[int, Image] = field(default_factory=dict, repr=False)  # by segment index
    decoded: int = 0  # media frames or pages decoded to make it (counted by tests and benches)


def embed_segments(
    items: Sequence[PreparedAsset], clip: ImageTextEmbedder, text: TextEmbedder
) -> list[EmbeddedSegment]:
    """Embed every segment of ``items`` in as few model calls as possible."""
    vectors: list[dict[Signal, FloatVector]] = []
    segments: list[Segment] = []
    image_jobs: list[tuple[int, Image]] = []
    text_jobs: list[tuple[int, str]] = []
    clip_text_jobs: list[tuple[int, str]] = []
    pooled: list[tuple[int, list[int]]] = []  # (whole-video slot, its frames' slots)
    for item in items:
        first = len(segments)
        for segment in item.segments:
            slot = len(segments)
            segments.append(segment)
            vectors.append({})
            image = item.images.get(segment.index)
            if image is not None:
                image_jobs.append((slot, image))
            words = (segment.text or "").strip()
            if words and not segment.kind.coarse:
                text_jobs.append((slot, words))
                if image is None and clip.info.aligned:
                    clip_text_jobs.append((slot, words))
        pooled.extend(_pooled_slots(item, first))

    _fill(vectors, Signal.CLIP, image_jobs, clip.embed_images)
    _fill(vectors, Signal.CLIP, clip_text_jobs, clip.embed_texts)
    _fill(vectors, Signal.TEXT, text_jobs, text.embed_texts)
    for slot, frames in pooled:
        mean = _normalised_mean(
            [vectors[f][Signal.CLIP] for f in frames if Signal.CLIP in vectors[f]]
        )
        if mean is not None:
            vectors[slot][Signal.CLIP] = mean
    # A segment with no vector at all could never be found: leave it out.
    return [
        EmbeddedSegment(segment=seg, vectors=vecs)
        for seg, vecs in zip(segments, vectors, strict=True)
        if vecs
    ]


def _fill(
    vectors: list[dict[Signal, FloatVector]],
    signal: Signal,
    jobs: Sequence[tuple[int, Any]],
    embed: Callable[[Sequence[Any]], FloatMatrix],
) -> None:
    """Run one model call over ``jobs`` and put each row in its slot under ``signal``."""
    if not jobs:
        return
    matrix = embed([value for _, value in jobs])
    for (slot, _), row in zip(jobs, matrix, strict=True):
        vectors[slot][signal] = row


def _pooled_slots(item: PreparedAsset, first: int) -> list[tuple[int, list[int]]]:
    """(slot of each whole-video segment, slots of the frames it pools)."""
    frames = [
        first + i
        for i, s in enumerate(item.segments)
        if s.kind is SegmentKind.FRAME and s.index in item.images
    ]
    return [(first + i, frames) for i, s in enumerate(item.segments) if s.kind is SegmentKind.VIDEO]


def _normalised_mean(rows: Sequence[FloatVector]) -> FloatVector | None:
    if not rows:
        return None
    mean = np.mean(np.stack(rows), axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm).astype(np.float32) if norm > 0 else None
