"""Wire types (msgspec Structs) with limits on the fields, and converters from domain values."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import PurePath
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
from msgspec import Meta, Struct

from app.core.collections import COLLECTION_NAME_PATTERN
from app.core.errors import InvalidFieldError
from app.core.models import (
    Answer,
    CollectionStats,
    EmbeddingModelInfo,
    Locator,
    Modality,
    SearchFilters,
    SearchHit,
    SearchTuning,
    Segment,
    Signal,
    TimeRange,
)
from app.core.retrieval import Retrieval

Text = Annotated[str, Meta(min_length=1, max_length=2000)]
TopK = Annotated[int, Meta(ge=1, le=100, description="Assets to return (one hit per asset).")]
CollectionName = Annotated[str, Meta(pattern=COLLECTION_NAME_PATTERN)]
Tag = Annotated[str, Meta(min_length=1, max_length=128)]
SNIPPET_CHARS = 300


Seconds = Annotated[float, Meta(ge=0, le=1e7)]


class TimeRangeIn(Struct, forbid_unknown_fields=True, kw_only=True):
    """Seconds into a video or recording; segments whose span overlaps it match."""

    start_s: Seconds | None = None
    end_s: Seconds | None = None


class Filters(Struct, forbid_unknown_fields=True, kw_only=True):
    modalities: Annotated[
        list[Modality],
        Meta(max_length=8, description="Media types: image, text, video, audio, pdf."),
    ] = []
    tags: Annotated[list[Tag], Meta(max_length=32, description="Match any of these tags.")] = []
    source_prefix: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=4096,
                description="Library path prefix, as hits show it: 'Pictures/2024/'.",
            ),
        ]
        | None
    ) = None
    time_range: TimeRangeIn | None = None

    def to_domain(self) -> SearchFilters:
        span = self.time_range
        if (
            span
            and span.start_s is not None
            and span.end_s is not None
            and span.start_s > span.end_s
        ):
            raise InvalidFieldError("filters.time_range", "start_s must not be after end_s")
        return SearchFilters(
            modalities=tuple(self.modalities),
            tags=tuple(self.tags),
            source_prefix=self.source_prefix,
            time_range=TimeRange(span.start_s, span.end_s) if span else None,
        )


class SearchRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    query: Text
    top_k: TopK | None = None
    collection: CollectionName | None = None
    filters: Filters = msgspec.field(default_factory=Filters)


class ImageSearchForm(Struct, forbid_unknown_fields=True, kw_only=True):
    """The fields that may accompany an ``image`` file in a multipart search."""

    top_k: TopK | None = None
    collection: CollectionName | None = None
    filters: Filters = msgspec.field(default_factory=Filters)


class AskRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    question: Text
    top_k: TopK | None = None
    collection: CollectionName | None = None
    filters: Filters = msgspec.field(default_factory=Filters)
    stream: Annotated[
        bool,
        Meta(description="Answer as server-sent events: hits, text deltas, then the answer."),
    ] = False


class SignalScores(Struct, omit_defaults=True):
    """Cosine of each dense signal; ``bm25``: the share of the query's words the segment has."""

    clip: float | None = None
    text: float | None = None
    bm25: float | None = None


class LocatorOut(Struct, omit_defaults=True):
    page: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    char_start: int | None = None
    char_end: int | None = None


class Hit(Struct):
    asset_id: str
    segment_index: int
    kind: str
    modality: str
    source: str
    title: str
    snippet: str
    tags: list[str]
    score: float
    scores: SignalScores
    relevant: bool
    locator: LocatorOut
    content_url: str
    link: Annotated[
        str,
        Meta(description="content_url with a media fragment: '#t=12.5' (video, audio), '#page=3'."),
    ]
    thumbnail_url: str | None
    segment_thumbnail_url: Annotated[
        str | None, Meta(description="This segment's own frame or page picture.")
    ] = None
    dashboard_url: Annotated[
        str | None,
        Meta(
            description=(
                "Server mode: the hit's collection in the Qdrant dashboard (filter its points "
                "there by asset_id)."
            )
        ),
    ] = None


class SearchResponse(Struct):
    collection: str
    query_kind: str
    signals: list[str]
    hits: list[Hit]


class CitationOut(Hit, kw_only=True):
    """A hit the answer cites as ``[number]``."""

    number: int


class AskResponse(Struct):
    answer: str
    status: str
    provider: str
    model: str
    prompt_version: str
    collection: str
    citations: list[CitationOut]
    retrieved: int


class AssetOut(Struct):
    asset_id: str
    source: str
    file_name: str
    modality: str
    mime: str
    size_bytes: int
    content_sha256: str
    width: int | None
    height: int | None
    title: str
    caption: str | None
    tags: list[str]
    ingested_at: str
    segments: int
    content_url: str
    thumbnail_url: str | None
    duration_s: float | None = None
    fps: float | None = None
    codec: str | None = None
    pages: int | None = None


class ModelOut(Struct):
    name: str
    dim: int
    weights: str
    aligned: bool


class QuantizationOut(Struct):
    kind: str
    encoding: str
    query_encoding: str
    rescore: bool
    oversampling: float
    always_ram: bool
    hnsw_m: int
    hnsw_ef_construct: int
    hnsw_ef: int


class CollectionOut(Struct):
    name: str
    points: int
    assets: int
    indexed_vectors: int
    segments_on_disk: int
    models: dict[str, ModelOut]
    quantization: QuantizationOut


class HealthOut(Struct):
    status: str


ServerPath = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=4096,
        pattern=r"^/",
        description="An absolute path on the server, under a folder it allows (ingest_roots).",
    ),
]


class IngestPathsRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """Files and folders the service reads itself (a shared media folder), to ingest."""

    paths: Annotated[list[ServerPath], Meta(min_length=1, max_length=1000)]
    collection: CollectionName | None = None
    tags: Annotated[list[Tag], Meta(max_length=32, description="Tag every file.")] = []
    sync: Annotated[
        bool, Meta(description="Also remove what is stored of files gone from these paths.")
    ] = False


class IngestLimitsOut(Struct):
    max_files: Annotated[int, Meta(description="Files one upload (one job) may carry.")]
    max_bytes: Annotated[int, Meta(description="Bytes the files of one upload may add up to.")]
    paths: Annotated[bool, Meta(description="Whether jobs may name server paths (JSON body).")]


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # it ran to the end; ``counts`` says whether some files failed
    FAILED = "failed"  # it could not run (``error`` says why)
    INTERRUPTED = "interrupted"  # the service stopped during it; it resumes at the next start


class JobKind(StrEnum):
    UPLOAD = "upload"
    PATHS = "paths"


class FileResultOut(Struct, kw_only=True):
    path: Annotated[str, Meta(description="Library path, as hits show it.")]
    outcome: Annotated[
        str,
        Meta(description="ingested, replaced, repaired, unchanged, removed or failed."),
    ]
    reason: str | None = None
    asset_id: str | None = None
    segments: int = 0


class JobLinks(Struct):
    self_: str = msgspec.field(name="self")
    collection: str


class JobOut(Struct, kw_only=True, frozen=True):
    """An ingest job: queued, then run by the service in the background, one at a time."""

    id: str
    kind: JobKind
    status: JobStatus
    collection: str
    tags: list[str]
    sync: bool
    created_at: Annotated[str, Meta(description="ISO 8601, UTC.")]
    started_at: str | None = None
    finished_at: str | None = None
    resumed: Annotated[
        int, Meta(description="How often a restart of the service resumed this job.")
    ] = 0
    files_total: Annotated[
        int | None, Meta(description="Files to (re)ingest, known once the job has planned.")
    ] = None
    files_done: int = 0
    current_file: str | None = None
    counts: Annotated[dict[str, int], Meta(description="Files by outcome.")] = {}
    results: Annotated[list[FileResultOut], Meta(description="Each file's outcome.")] = []
    unsupported: list[str] = []
    missing: Annotated[list[str], Meta(description="Paths given that do not exist.")] = []
    warnings: list[str] = []
    timings_s: Annotated[dict[str, float], Meta(description="Seconds by stage.")] = {}
    error: Annotated[str | None, Meta(description="Why a failed job could not run.")] = None
    links: JobLinks


class JobListOut(Struct):
    jobs: Annotated[list[JobOut], Meta(description="Most recent first.")]


def job_links(job_id: str, collection: str) -> JobLinks:
    return JobLinks(self_=f"/v1/jobs/{job_id}", collection=f"/v1/collections/{quote(collection)}")


# -- converters ---------------------------------------------------------------------------


def asset_urls(asset_id: str, collection: str, *, has_thumbnail: bool) -> tuple[str, str | None]:
    q = f"?collection={quote(collection)}"
    content = f"/v1/assets/{asset_id}/content{q}"
    return content, (f"/v1/assets/{asset_id}/thumbnail{q}" if has_thumbnail else None)


def deep_link(content_url: str, loc: Locator) -> str:
    """The content URL with a media fragment that opens at the segment (W3C Media Fragments
    ``#t=`` for time, the PDF viewers' ``#page=``)."""
    if loc.start_s is not None:
        return f"{content_url}#t={loc.start_s:g}"
    if loc.page is not None:
        return f"{content_url}#page={loc.page}"
    return content_url


def _locator(loc: Locator) -> LocatorOut:
    return LocatorOut(
        page=loc.page,
        start_s=loc.start_s,
        end_s=loc.end_s,
        char_start=loc.char_start,
        char_end=loc.char_end,
    )


_WORD = re.compile(r"[^\W_]{3,}(?:-[^\W_]+)*|\d+")


def snippet(segment: Segment, query: str | None = None) -> str:
    """The segment's words, cut to ``SNIPPET_CHARS`` around the first word of ``query`` it
    contains (so a match deep in a long chunk shows), else from the start."""
    text = " ".join((segment.text or segment.asset.caption or segment.asset.title).split())
    if len(text) <= SNIPPET_CHARS:
        return text
    lowered = text.lower()
    words = sorted(set(_WORD.findall((query or "").lower())), key=len, reverse=True)
    at = min((i for w in words if (i := lowered.find(w)) >= 0), default=0)
    start = max(0, min(at - SNIPPET_CHARS // 3, len(text) - SNIPPET_CHARS))
    if start > 0:
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < at else start
    cut = text[start : start + SNIPPET_CHARS - 2].strip()
    return ("…" if start > 0 else "") + cut + ("…" if start + len(cut) < len(text) else "")


def hit_out(
    hit: SearchHit,
    collection: str,
    *,
    relevant: bool,
    query: str | None = None,
    dashboard: str | None = None,
) -> Hit:
    """``dashboard``: the collection's page in the Qdrant dashboard (server mode)."""
    seg = hit.segment
    content, thumb = asset_urls(
        seg.asset.asset_id, collection, has_thumbnail=seg.asset.thumbnail is not None
    )
    return Hit(
        asset_id=seg.asset.asset_id,
        segment_index=seg.index,
        kind=seg.kind.value,
        modality=seg.asset.modality.value,
        source=seg.asset.library_path,
        title=seg.asset.title,
        snippet=snippet(seg, query),
        tags=list(seg.asset.tags),
        score=hit.score,
        scores=SignalScores(
            clip=hit.signal_scores.get(Signal.CLIP),
            text=hit.signal_scores.get(Signal.TEXT),
            bm25=hit.signal_scores.get(Signal.BM25),
        ),
        relevant=relevant,
        locator=_locator(seg.locator),
        content_url=content,
        link=deep_link(content, seg.locator),
        thumbnail_url=thumb,
        segment_thumbnail_url=(
            f"/v1/assets/{seg.asset.asset_id}/thumbnail?collection={quote(collection)}"
            f"&segment={seg.index}"
            if seg.thumbnail
            else None
        ),
        dashboard_url=dashboard,
    )


def search_out(
    retrieval: Retrieval, collection: str, *, dashboard: str | None = None
) -> SearchResponse:
    return SearchResponse(
        collection=collection,
        query_kind=retrieval.kind.value,
        signals=[s.value for s in retrieval.signals],
        hits=[
            hit_out(h, collection, relevant=ok, query=retrieval.query, dashboard=dashboard)
            for h, ok in zip(retrieval.hits, retrieval.relevant, strict=True)
        ],
    )


def citations_out(
    answer: Answer, collection: str, *, dashboard: str | None = None
) -> list[CitationOut]:
    return [
        CitationOut(
            number=c.number,
            **msgspec.structs.asdict(
                hit_out(c.hit, collection, relevant=True, dashboard=dashboard)
            ),
        )
        for c in answer.citations
    ]


def answer_out(
    answer: Answer, collection: str, retrieved: int, *, dashboard: str | None = None
) -> AskResponse:
    citations = citations_out(answer, collection, dashboard=dashboard)
    return AskResponse(
        answer=answer.text,
        status=answer.status.value,
        provider=answer.provider,
        model=answer.model,
        prompt_version=answer.prompt_version,
        collection=collection,
        citations=citations,
        retrieved=retrieved,
    )


def asset_out(segments: list[Segment], collection: str) -> AssetOut:
    asset = segments[0].asset
    content, thumb = asset_urls(asset.asset_id, collection, has_thumbnail=bool(asset.thumbnail))
    return AssetOut(
        asset_id=asset.asset_id,
        source=asset.library_path,
        file_name=PurePath(asset.source).name,
        modality=asset.modality.value,
        mime=asset.mime,
        size_bytes=asset.size_bytes,
        content_sha256=asset.content_sha256,
        width=asset.width,
        height=asset.height,
        title=asset.title,
        caption=asset.caption,
        tags=list(asset.tags),
        ingested_at=asset.ingested_at.isoformat(),
        segments=len(segments),
        content_url=content,
        thumbnail_url=thumb,
        duration_s=asset.duration_s,
        fps=asset.fps,
        codec=asset.codec,
        pages=asset.pages,
    )


def _model(info: EmbeddingModelInfo) -> ModelOut:
    return ModelOut(name=info.name, dim=info.dim, weights=info.weights, aligned=info.aligned)


def collection_out(stats: CollectionStats, tuning: SearchTuning) -> CollectionOut:
    """``tuning``: the query-time knobs its searches carry (settings, or autotuned)."""
    q = stats.spec.quantization
    return CollectionOut(
        name=stats.name,
        points=stats.points,
        assets=stats.assets,
        indexed_vectors=stats.indexed_vectors,
        segments_on_disk=stats.segments_on_disk,
        models={"clip": _model(stats.spec.clip), "text": _model(stats.spec.text)},
        quantization=QuantizationOut(
            kind="binary",
            encoding=q.encoding.value,
            query_encoding=q.query_encoding.value,
            rescore=tuning.rescore,
            oversampling=tuning.oversampling,
            always_ram=q.always_ram,
            hnsw_m=q.hnsw_m,
            hnsw_ef_construct=q.hnsw_ef_construct,
            hnsw_ef=tuning.hnsw_ef,
        ),
    )


class ProblemDetails(Struct, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem: the body of every error response (``application/problem+json``).

    Problems may grow members; clients should ignore the ones they do not know.
    """

    type: Annotated[str, Meta(description="'/problems/<slug>', or 'about:blank'.")]
    title: Annotated[str, Meta(description="The HTTP status phrase.")]
    status: int
    detail: Annotated[str, Meta(description="What went wrong, for a person to read.")]
    instance: Annotated[str, Meta(description="The request path.")]
    field: Annotated[str, Meta(description="The request field at fault (422).")] | None = None
    errors: (
        Annotated[list[dict[str, Any]], Meta(description="Each parameter that failed validation.")]
        | None
    ) = None
    request_id: (
        Annotated[
            str,
            Meta(
                description="The request's id (its X-Request-ID header): quote it when reporting."
            ),
        ]
        | None
    ) = None
