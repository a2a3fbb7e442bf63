"""Retrieval: a question in one modality retrieves context in every modality.

A text question searches the ``text`` vector with a sentence embedding and, when the
collection's CLIP weights are aligned, the ``clip`` vector with CLIP's text tower; the engine
fuses both lists with reciprocal-rank fusion in one query. An image question searches ``clip``
with CLIP's image tower. Hits are grouped by asset (best segment each) and marked relevant or
not from their per-signal cosine scores, so "nothing relevant" can be said honestly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from app.core.models import FloatVector, SearchFilters, SearchHit, Signal, VectorQuery
from app.core.ports import ImageTextEmbedder, TextEmbedder, VectorCollection

if TYPE_CHECKING:
    from PIL.Image import Image

_GROUPING_OVERFETCH = 4
_MAX_FETCH = 400


class QueryKind(StrEnum):
    TEXT = "text"
    IMAGE = "image"


@dataclass(frozen=True, slots=True)
class RetrievalOptions:
    candidates_per_signal: int = 64
    rrf_k: int = 60
    min_text_score: float = 0.30
    min_clip_text_score: float = 0.22
    min_clip_image_score: float = 0.80


@dataclass(frozen=True, slots=True)
class Retrieval:
    kind: QueryKind
    signals: tuple[Signal, ...]
    hits: tuple[SearchHit, ...]
    relevant: tuple[bool, ...]

    @property
    def relevant_hits(self) -> tuple[SearchHit, ...]:
        return tuple(h for h, ok in zip(self.hits, self.relevant, strict=True) if ok)


class Retriever:
    def __init__(
        self, clip: ImageTextEmbedder, text: TextEmbedder, options: RetrievalOptions
    ) -> None:
        self._clip = clip
        self._text = text
        self._options = options

    def search_text(
        self,
        collection: VectorCollection,
        question: str,
        *,
        top_k: int,
        filters: SearchFilters | None = None,
    ) -> Retrieval:
        vectors: dict[Signal, FloatVector] = {Signal.TEXT: self._text.embed_texts([question])[0]}
        if collection.spec.clip.aligned:
            vectors[Signal.CLIP] = self._clip.embed_texts([question])[0]
        return self._run(collection, QueryKind.TEXT, vectors, top_k, filters)

    def search_image(
        self,
        collection: VectorCollection,
        image: Image,
        *,
        top_k: int,
        filters: SearchFilters | None = None,
    ) -> Retrieval:
        vectors = {Signal.CLIP: self._clip.embed_images([image])[0]}
        return self._run(collection, QueryKind.IMAGE, vectors, top_k, filters)

    def _run(
        self,
        collection: VectorCollection,
        kind: QueryKind,
        vectors: dict[Signal, FloatVector],
        top_k: int,
        filters: SearchFilters | None,
    ) -> Retrieval:
        query = VectorQuery(
            vectors=vectors,
            limit=min(top_k * _GROUPING_OVERFETCH, _MAX_FETCH),
            filters=filters or SearchFilters(),
            candidates_per_signal=self._options.candidates_per_signal,
            rrf_k=self._options.rrf_k,
        )
        hits = best_per_asset(collection.search(query), top_k)
        return Retrieval(
            kind=kind,
            signals=tuple(s for s in Signal if s in vectors),
            hits=hits,
            relevant=tuple(self.is_relevant(h, kind) for h in hits),
        )

    def is_relevant(self, hit: SearchHit, kind: QueryKind) -> bool:
        o = self._options
        clip = hit.signal_scores.get(Signal.CLIP)
        if kind is QueryKind.IMAGE:
            return clip is not None and clip >= o.min_clip_image_score
        text = hit.signal_scores.get(Signal.TEXT)
        return (text is not None and text >= o.min_text_score) or (
            clip is not None and clip >= o.min_clip_text_score
        )


def best_per_asset(hits: Sequence[SearchHit], top_k: int) -> tuple[SearchHit, ...]:
    """Keep each asset's best-ranked segment, in rank order, up to ``top_k`` assets."""
    seen: set[str] = set()
    out: list[SearchHit] = []
    for hit in hits:
        asset_id = hit.segment.asset.asset_id
        if asset_id in seen:
            continue
        seen.add(asset_id)
        out.append(hit)
        if len(out) == top_k:
            break
    return tuple(out)
