"""Retrieval: a question in one modality retrieves context in every modality, coarse to fine.

A text question searches the ``text`` vector with a sentence embedding, the ``bm25`` sparse
vector with its words and, when the collection's CLIP weights are aligned, the ``clip`` vector
with CLIP's text tower; the engine fuses the lists in one query (distribution-based score
fusion by default, so one confident signal can outweigh two flat ones; RRF by setting).
An image question searches ``clip`` with CLIP's image tower.

Videos are searched coarse to fine: their whole-video vectors (the mean of their frames) pick
the best videos, and the segments of those videos join the candidates of the main query, where
they are scored like every other segment. Hits are grouped by asset (best segment each) and
marked relevant or not from their per-signal scores, so "nothing relevant" can be said
honestly.

How long each stage takes (encoding the query, the engine's search) goes to a ``StageTimer``
the caller may give (the service's metrics); by default nobody is told.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from app.core.models import (
    FloatVector,
    Fusion,
    Modality,
    RelevanceThresholds,
    SearchFilters,
    SearchHit,
    SearchTuning,
    SegmentKind,
    Signal,
    VectorQuery,
)
from app.core.ports import ImageTextEmbedder, TextEmbedder, VectorCollection

if TYPE_CHECKING:
    from PIL.Image import Image

_GROUPING_OVERFETCH = 4
_MAX_FETCH = 400


class QueryKind(StrEnum):
    TEXT = "text"
    IMAGE = "image"


class Stage(StrEnum):
    """The timed stages of one search."""

    ENCODE = "encode"  # the query through the model(s): both text towers, or CLIP's image tower
    SEARCH = "search"  # the engine: the coarse video query and the fused one


class StageTimer(Protocol):
    """Told how long each stage of a search took, in seconds (a metrics histogram)."""

    def observe(self, stage: Stage, seconds: float) -> None: ...


class _Untimed:
    def observe(self, stage: Stage, seconds: float) -> None:
        del stage, seconds


UNTIMED: StageTimer = _Untimed()


@dataclass(frozen=True, slots=True)
class RetrievalOptions:
    candidates_per_signal: int = 64
    fusion: Fusion = Fusion.DBSF
    rrf_k: int = 60
    min_text_score: float = 0.30
    min_clip_text_score: float = 0.22
    min_clip_image_score: float = 0.80
    min_bm25_coverage: float = 0.75
    coarse_videos: int = 8
    # Query-time search knobs (rescore, oversampling, hnsw_ef) put on every query.
    tuning: SearchTuning = field(default_factory=SearchTuning)
    # Thresholds and knobs set on purpose (settings, environment), by name: what a collection
    # measured for itself (calibrate, autotune) never overrides them.
    explicit: frozenset[str] = frozenset()

    def with_thresholds(self, calibrated: RelevanceThresholds) -> RetrievalOptions:
        """These options with a collection's calibrated thresholds, where not set explicitly."""
        chosen = {
            name: value
            for name, value in asdict(calibrated).items()
            if value is not None and name not in self.explicit
        }
        return replace(self, **chosen) if chosen else self

    def search_tuning(self, tuned: SearchTuning | None) -> SearchTuning:
        """The knobs a query carries: a collection's tuned ones, where not set explicitly."""
        if tuned is None:
            return self.tuning
        chosen = {name: value for name, value in asdict(tuned).items() if name not in self.explicit}
        return replace(self.tuning, **chosen)


@dataclass(frozen=True, slots=True)
class Retrieval:
    kind: QueryKind
    signals: tuple[Signal, ...]
    hits: tuple[SearchHit, ...]
    relevant: tuple[bool, ...]
    query: str | None = None  # the words of a text query (snippets are centred on them)

    @property
    def relevant_hits(self) -> tuple[SearchHit, ...]:
        return tuple(h for h, ok in zip(self.hits, self.relevant, strict=True) if ok)


class Retriever:
    def __init__(
        self,
        clip: ImageTextEmbedder,
        text: TextEmbedder,
        options: RetrievalOptions,
        *,
        timer: StageTimer = UNTIMED,
    ) -> None:
        self._clip = clip
        self._text = text
        self._options = options
        self._timer = timer

    @contextmanager
    def _timed(self, stage: Stage) -> Iterator[None]:
        """Time the block; a stage that raises is not observed (its error is what counts)."""
        started = time.perf_counter()
        yield
        self._timer.observe(stage, time.perf_counter() - started)

    def tuning_for(self, collection: VectorCollection) -> SearchTuning:
        """The query-time knobs searches of ``collection`` carry."""
        return self._options.search_tuning(collection.tuning.search)

    def search_text(
        self,
        collection: VectorCollection,
        question: str,
        *,
        top_k: int,
        filters: SearchFilters | None = None,
        exact: bool = False,
        tuning: SearchTuning | None = None,
    ) -> Retrieval:
        """``exact`` and ``tuning`` override the search knobs in effect (evaluation)."""
        with self._timed(Stage.ENCODE):
            vectors: dict[Signal, FloatVector] = {
                Signal.TEXT: self._text.embed_texts([question])[0]
            }
            if collection.spec.clip.aligned:
                vectors[Signal.CLIP] = self._clip.embed_texts([question])[0]
        return self._run(
            collection,
            QueryKind.TEXT,
            vectors,
            top_k,
            filters,
            keywords=question,
            exact=exact,
            tuning=tuning,
        )

    def search_image(
        self,
        collection: VectorCollection,
        image: Image,
        *,
        top_k: int,
        filters: SearchFilters | None = None,
        exact: bool = False,
        tuning: SearchTuning | None = None,
    ) -> Retrieval:
        """``exact`` and ``tuning`` override the search knobs in effect (evaluation)."""
        with self._timed(Stage.ENCODE):
            vectors = {Signal.CLIP: self._clip.embed_images([image])[0]}
        return self._run(
            collection, QueryKind.IMAGE, vectors, top_k, filters, exact=exact, tuning=tuning
        )

    def _run(
        self,
        collection: VectorCollection,
        kind: QueryKind,
        vectors: dict[Signal, FloatVector],
        top_k: int,
        filters: SearchFilters | None,
        *,
        keywords: str | None = None,
        exact: bool = False,
        tuning: SearchTuning | None = None,
    ) -> Retrieval:
        o = self._options
        filters = filters or SearchFilters()
        tuning = tuning or self.tuning_for(collection)
        fine = replace(filters, exclude_kinds=(*filters.exclude_kinds, SegmentKind.VIDEO))

        # Coarse: the best whole videos. Fine: their segments join the candidates of the one
        # query below and compete, scored alike, with every other segment.
        with self._timed(Stage.SEARCH):
            videos = self._coarse_videos(collection, vectors, filters, exact=exact, tuning=tuning)
            found = collection.search(
                VectorQuery(
                    vectors=vectors,
                    limit=min(top_k * _GROUPING_OVERFETCH, _MAX_FETCH),
                    filters=fine,
                    candidates_per_signal=o.candidates_per_signal,
                    fusion=o.fusion,
                    rrf_k=o.rrf_k,
                    keywords=keywords,
                    focus_assets=tuple(dict.fromkeys(v.segment.asset.asset_id for v in videos)),
                    exact=exact,
                    tuning=tuning,
                )
            )
        hits = best_per_asset(found, top_k)
        options = o.with_thresholds(collection.tuning.thresholds)
        signals = [s for s in Signal if s in vectors]
        if keywords and Signal.BM25 not in signals:
            signals.append(Signal.BM25)
        return Retrieval(
            kind=kind,
            signals=tuple(signals),
            hits=hits,
            relevant=tuple(is_relevant(h, kind, options) for h in hits),
            query=keywords,
        )

    def _coarse_videos(
        self,
        collection: VectorCollection,
        vectors: dict[Signal, FloatVector],
        filters: SearchFilters,
        *,
        exact: bool,
        tuning: SearchTuning,
    ) -> list[SearchHit]:
        """The best whole videos by their mean-frame CLIP vector (coarse step)."""
        limit = self._options.coarse_videos
        wanted = filters.modalities
        if limit == 0 or Signal.CLIP not in vectors or (wanted and Modality.VIDEO not in wanted):
            return []
        coarse = replace(filters, kinds=(SegmentKind.VIDEO,), exclude_kinds=())
        return collection.search(
            VectorQuery(
                vectors={Signal.CLIP: vectors[Signal.CLIP]},
                limit=limit,
                filters=coarse,
                exact=exact,
                tuning=tuning,
            )
        )


def is_relevant(hit: SearchHit, kind: QueryKind, o: RetrievalOptions) -> bool:
    """Whether a hit is close enough to answer from, by its per-signal scores."""
    clip = hit.signal_scores.get(Signal.CLIP)
    if kind is QueryKind.IMAGE:
        return clip is not None and clip >= o.min_clip_image_score
    text = hit.signal_scores.get(Signal.TEXT)
    bm25 = hit.signal_scores.get(Signal.BM25)
    return (
        (text is not None and text >= o.min_text_score)
        or (clip is not None and clip >= o.min_clip_text_score)
        or (bm25 is not None and bm25 >= o.min_bm25_coverage)
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
