"""Segment <-> point payload. Shared by every vector-store adapter; no library types.

Payloads are meant to read well in the Qdrant dashboard: flat, human-readable fields, no blobs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import PurePath
from typing import Any

from app.core.models import Asset, IndexedAsset, Locator, Modality, Segment, SegmentKind

# Fields with a payload index: what filters and incremental ingestion look up.
KEYWORD_FIELDS = ("asset_id", "modality", "kind", "tags")
# ``source`` (absolute) for ingestion; ``library_path`` (what clients see) for filters.
PREFIX_FIELDS = ("source", "library_path")
INTEGER_FIELDS = ("segment_index",)
# Time-range filters on videos and recordings.
FLOAT_FIELDS = ("start_s", "end_s")

# What planning an ingest run reads of every stored point (``indexed_assets``).
INDEX_FIELDS = (
    "asset_id",
    "source",
    "content_sha256",
    "segment_count",
    "size_bytes",
    "mtime_ns",
    "root",
)
_LOCATOR_FIELDS = ("page", "start_s", "end_s", "char_start", "char_end")
_MEDIA_FIELDS = ("duration_s", "fps", "codec", "pages")
TEXT_PREVIEW_CHARS = 4000


def thumbnail_url(public_url: str, collection: str, segment: Segment) -> str | None:
    """The absolute URL of a segment's picture (its own frame or page, else its asset's)."""
    asset = segment.asset
    base = f"{public_url.rstrip('/')}/v1/assets/{asset.asset_id}/thumbnail?collection={collection}"
    if segment.thumbnail:
        return f"{base}&segment={segment.index}"
    return base if asset.thumbnail else None


def to_payload(
    segment: Segment, *, public_url: str | None = None, collection: str | None = None
) -> dict[str, Any]:
    """``public_url``: the service as users reach it; with it (and the collection's name), the
    payload carries ``thumbnail_url``, which the Qdrant dashboard shows as a link."""
    asset = segment.asset
    payload: dict[str, Any] = {
        "asset_id": asset.asset_id,
        "segment_index": segment.index,
        "segment_count": segment.count,
        "kind": segment.kind.value,
        "modality": asset.modality.value,
        "title": asset.title,
        "source": asset.source,
        "root": asset.root,
        "library_path": asset.library_path,
        "file_name": PurePath(asset.source).name,
        "caption": asset.caption,
        "text": (segment.text or "")[:TEXT_PREVIEW_CHARS] or None,
        "tags": list(asset.tags),
        "mime": asset.mime,
        "size_bytes": asset.size_bytes,
        "width": asset.width,
        "height": asset.height,
        "content_sha256": asset.content_sha256,
        "ingested_at": asset.ingested_at.isoformat(),
        "thumbnail": asset.thumbnail,
        "mtime_ns": asset.mtime_ns,
        "segment_thumbnail": segment.thumbnail,
    }
    if public_url and collection:
        link = thumbnail_url(public_url, collection, segment)
        if link:
            payload["thumbnail_url"] = link
    for name in _MEDIA_FIELDS:
        value = getattr(asset, name)
        if value is not None:
            payload[name] = value
    for name in _LOCATOR_FIELDS:
        value = getattr(segment.locator, name)
        if value is not None:
            payload[name] = value
    return payload


def from_payload(payload: Mapping[str, Any]) -> Segment:
    asset = Asset(
        asset_id=str(payload["asset_id"]),
        source=str(payload["source"]),
        modality=Modality(payload["modality"]),
        mime=str(payload.get("mime") or "application/octet-stream"),
        size_bytes=int(payload.get("size_bytes") or 0),
        content_sha256=str(payload.get("content_sha256") or ""),
        ingested_at=datetime.fromisoformat(str(payload["ingested_at"])),
        title=str(payload.get("title") or ""),
        caption=payload.get("caption"),
        tags=tuple(payload.get("tags") or ()),
        width=payload.get("width"),
        height=payload.get("height"),
        thumbnail=payload.get("thumbnail"),
        mtime_ns=payload.get("mtime_ns"),
        root=payload.get("root"),
        **{name: payload[name] for name in _MEDIA_FIELDS if payload.get(name) is not None},
    )
    locator = Locator(**{name: payload[name] for name in _LOCATOR_FIELDS if name in payload})
    return Segment(
        asset=asset,
        index=int(payload["segment_index"]),
        count=int(payload.get("segment_count") or 1),
        kind=SegmentKind(payload["kind"]),
        text=payload.get("text"),
        locator=locator,
        thumbnail=payload.get("segment_thumbnail"),
    )


def indexed_assets(payloads: Iterable[Mapping[str, Any]]) -> list[IndexedAsset]:
    """The stored assets, from the ``INDEX_FIELDS`` of every stored point (one per segment)."""
    stored: dict[str, int] = defaultdict(int)
    first: dict[str, Mapping[str, Any]] = {}
    for payload in payloads:
        asset_id = str(payload["asset_id"])
        stored[asset_id] += 1
        first.setdefault(asset_id, payload)
    return [
        IndexedAsset(
            asset_id=asset_id,
            source=str(p["source"]),
            content_sha256=str(p["content_sha256"]),
            segment_count=int(p["segment_count"]),
            stored_segments=stored[asset_id],
            size_bytes=int(p.get("size_bytes") or 0),
            mtime_ns=p.get("mtime_ns"),
            root=p.get("root"),
        )
        for asset_id, p in first.items()
    ]
