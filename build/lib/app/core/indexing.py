"""Which vectors each segment gets (the ingestion "mapper"), shared by every ingestion path.

- image segment: CLIP image vector on ``clip``; the words next to it (caption, sidecar, EXIF)
  on ``text``.
- text segment: sentence vector on ``text``; CLIP text vector on ``clip`` only when the CLIP
  weights are aligned (random weights would put noise into the joint space).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.core.models import Asset, EmbeddedSegment, FloatVector, Segment, SegmentKind, Signal
from app.core.ports import ImageTextEmbedder, TextEmbedder

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True, slots=True, eq=False)
class PreparedAsset:
    """A file read and cut into segments, before embedding."""

    asset: Asset
    segments: tuple[Segment, ...]
    image: Image | None = field(default=None, repr=False)


def embed_segments(
    items: Sequence[PreparedAsset], clip: ImageTextEmbedder, text: TextEmbedder
) -> list[EmbeddedSegment]:
    """Embed every segment of ``items`` in as few model calls as possible."""
    vectors: list[dict[Signal, FloatVector]] = []
    segments: list[Segment] = []
    image_jobs: list[tuple[int, Image]] = []
    text_jobs: list[tuple[int, str]] = []
    clip_text_jobs: list[tuple[int, str]] = []
    for item in items:
        for segment in item.segments:
            slot = len(segments)
            segments.append(segment)
            vectors.append({})
            if segment.kind is SegmentKind.IMAGE and item.image is not None:
                image_jobs.append((slot, item.image))
            words = (segment.text or "").strip()
            if words:
                text_jobs.append((slot, words))
                if segment.kind is SegmentKind.TEXT_CHUNK and clip.info.aligned:
                    clip_text_jobs.append((slot, words))

    if image_jobs:
        matrix = clip.embed_images([img for _, img in image_jobs])
        for (slot, _), row in zip(image_jobs, matrix, strict=True):
            vectors[slot][Signal.CLIP] = row
    if clip_text_jobs:
        matrix = clip.embed_texts([t for _, t in clip_text_jobs])
        for (slot, _), row in zip(clip_text_jobs, matrix, strict=True):
            vectors[slot][Signal.CLIP] = row
    if text_jobs:
        matrix = text.embed_texts([t for _, t in text_jobs])
        for (slot, _), row in zip(text_jobs, matrix, strict=True):
            vectors[slot][Signal.TEXT] = row
    # A segment with no vector at all could never be found: leave it out.
    return [
        EmbeddedSegment(segment=seg, vectors=vecs)
        for seg, vecs in zip(segments, vectors, strict=True)
        if vecs
    ]
