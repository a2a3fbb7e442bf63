"""Domain values: assets, segments, queries, hits, answers. Frozen dataclasses, no frameworks.

An *asset* is one file. A *segment* is one retrievable unit of an asset (the whole image, a
text chunk; later a video frame, an audio span, a PDF page) and is stored as one vector-store
point. ``Locator`` says where in the asset a segment lies, so citations can point at it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import PurePath

import numpy as np
import numpy.typing as npt

FloatVector = npt.NDArray[np.float32]
"""One embedding: shape (dim,), L2-normalised."""


class Modality(StrEnum):
    """What kind of file an asset is."""

    IMAGE = "image"
    TEXT = "text"
    VIDEO = "video"
    AUDIO = "audio"
    PDF = "pdf"


class SegmentKind(StrEnum):
    """What kind of unit a segment is."""

    IMAGE = "image"  # a whole picture
    TEXT_CHUNK = "text_chunk"  # a stretch of a document (of a PDF page, when it has a page)
    FRAME = "frame"  # a frame sampled from a video, with its time span
    VIDEO = "video"  # a whole video: the mean of its frames, for coarse retrieval
    TRANSCRIPT = "transcript"  # speech in a recording or a video's sound, with its time span
    PAGE = "page"  # a PDF page: its rendered picture and (the start of) its text
    RECORDING = "recording"  # a whole recording in which no speech was recognised

    @property
    def coarse(self) -> bool:
        """Whether the segment stands for its whole asset (it is never cited itself)."""
        return self is SegmentKind.VIDEO


class Signal(StrEnum):
    """A named vector in the store; each is one retrieval signal."""

    CLIP = "clip"  # open_clip joint space: images and (when aligned) text
    TEXT = "text"  # sentence-embedding space: captions, chunks, OCR, transcripts
    BM25 = "bm25"  # sparse: exact words (names, codes, rare terms), weighted by the engine

    @property
    def dense(self) -> bool:
        return self is not Signal.BM25


class Fusion(StrEnum):
    """How the engine merges the candidate lists of several signals."""

    DBSF = "dbsf"  # distribution-based score fusion: each signal's scores normalised, summed
    RRF = "rrf"  # reciprocal-rank fusion: ranks only


class BinaryEncoding(StrEnum):
    """Bits per dimension stored by binary quantization."""

    ONE_BIT = "1bit"
    ONE_AND_HALF_BITS = "1.5bit"
    TWO_BITS = "2bit"


class QueryEncoding(StrEnum):
    """How the query is encoded against binary codes (asymmetric encodings are finer)."""

    DEFAULT = "default"
    SCALAR8 = "8bit"
    SCALAR4 = "4bit"


@dataclass(frozen=True, slots=True)
class QuantizationSpec:
    """A collection's build-time index: binary quantization and the HNSW graph. Saved with the
    collection and checked when it is opened; the query-time knobs are ``SearchTuning``."""

    encoding: BinaryEncoding
    query_encoding: QueryEncoding
    always_ram: bool
    hnsw_m: int
    hnsw_ef_construct: int


@dataclass(frozen=True, slots=True)
class EmbeddingModelInfo:
    """Which model produced a signal's vectors; recorded with the collection."""

    name: str
    dim: int
    weights: str  # pretrained tag, checkpoint file name, or "none" (random)
    aligned: bool  # True when text and images share a meaningful space (CLIP) / always for text


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """What a collection must be: its vector spaces and index settings."""

    name: str
    clip: EmbeddingModelInfo
    text: EmbeddingModelInfo
    quantization: QuantizationSpec


@dataclass(frozen=True, slots=True)
class CollectionStats:
    name: str
    points: int
    assets: int
    indexed_vectors: int
    segments_on_disk: int
    spec: CollectionSpec


@dataclass(frozen=True, slots=True)
class Locator:
    """Where a segment lies inside its asset (all optional; more fields as media grow)."""

    page: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    char_start: int | None = None
    char_end: int | None = None


@dataclass(frozen=True, slots=True)
class Asset:
    """One ingested file."""

    asset_id: str
    source: str  # absolute, resolved path of the file when it was ingested (never shown to clients)
    modality: Modality
    mime: str
    size_bytes: int
    content_sha256: str
    ingested_at: datetime
    title: str
    caption: str | None = None
    tags: tuple[str, ...] = ()
    width: int | None = None
    height: int | None = None
    thumbnail: str | None = None  # path relative to the data dir
    mtime_ns: int | None = None  # file modification time when ingested
    root: str | None = None  # absolute, resolved library root the file was found under
    duration_s: float | None = None  # video and audio
    fps: float | None = None  # video
    codec: str | None = None  # video and audio: the main stream's codec ("h264", "mp3")
    pages: int | None = None  # PDF

    @property
    def library_path(self) -> str:
        """What clients see: the root folder's name and the path below it (``Pictures/cat.jpg``)."""
        return library_path(self.source, self.root)


def library_path(source: str, root: str | None) -> str:
    path = PurePath(source)
    if root is None:
        return path.name
    base = PurePath(root)
    try:
        rel = path.relative_to(base)
    except ValueError:
        return path.name
    return PurePath(base.name, rel).as_posix() if base.name else rel.as_posix()


@dataclass(frozen=True, slots=True)
class Segment:
    """One retrievable unit of an asset."""

    asset: Asset
    index: int
    count: int  # segments in the asset: lets a re-run detect a half-written asset
    kind: SegmentKind
    text: str | None = None
    locator: Locator = field(default_factory=Locator)
    thumbnail: str | None = None  # this segment's own picture (frame, page), relative to data dir


@dataclass(frozen=True, slots=True, eq=False)
class EmbeddedSegment:
    """A segment with its vectors, ready to be written."""

    segment: Segment
    vectors: Mapping[Signal, FloatVector]


@dataclass(frozen=True, slots=True)
class IndexedAsset:
    """What the store knows about one ingested file, for incremental runs."""

    asset_id: str
    source: str
    content_sha256: str
    segment_count: int
    stored_segments: int
    size_bytes: int = 0
    mtime_ns: int | None = None
    root: str | None = None  # None: written before library roots were recorded

    @property
    def complete(self) -> bool:
        return self.stored_segments == self.segment_count


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Seconds into a video or recording; a segment matches when its span overlaps."""

    start_s: float | None = None
    end_s: float | None = None


@dataclass(frozen=True, slots=True)
class SearchFilters:
    modalities: tuple[Modality, ...] = ()
    tags: tuple[str, ...] = ()
    source_prefix: str | None = None  # on the library path clients see (``Pictures/2024/``)
    time_range: TimeRange | None = None
    asset_ids: tuple[str, ...] = ()  # only these assets (the fine step of coarse-to-fine)
    kinds: tuple[SegmentKind, ...] = ()  # only these kinds of segment
    exclude_kinds: tuple[SegmentKind, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchTuning:
    """Query-time search knobs, carried by every query (never part of the collection): binary
    codes first, then ``oversampling`` x the limit rescored on the float vectors."""

    oversampling: float = 4.0
    hnsw_ef: int = 128
    rescore: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class VectorQuery:
    """A query for the store: one vector per signal used, fused when several."""

    vectors: Mapping[Signal, FloatVector]
    limit: int
    filters: SearchFilters = field(default_factory=SearchFilters)
    keywords: str | None = None  # words for the BM25 signal (the store tokenizes them)
    # Assets whose segments are candidates whatever their rank in the whole collection (the
    # fine step of coarse-to-fine: the frames of the best videos); scored like every other.
    focus_assets: tuple[str, ...] = ()
    candidates_per_signal: int = 64  # prefetch depth of each signal before fusion
    fusion: Fusion = Fusion.DBSF
    rrf_k: int = 60
    exact: bool = False  # brute force on the float vectors (evaluation's ground truth)
    tuning: SearchTuning = field(default_factory=SearchTuning)


@dataclass(frozen=True, slots=True)
class RelevanceThresholds:
    """A collection's own relevance thresholds (``calibrate``); None keeps the default."""

    min_text_score: float | None = None
    min_clip_text_score: float | None = None
    min_clip_image_score: float | None = None
    min_bm25_coverage: float | None = None


@dataclass(frozen=True, slots=True)
class CollectionTuning:
    """What measuring a collection chose for it: thresholds (``calibrate``) and query-time
    search knobs (``autotune``). Thresholds are used over the defaults unless a threshold is set
    explicitly; the search knobs over the quantization settings."""

    thresholds: RelevanceThresholds = field(default_factory=RelevanceThresholds)
    search: SearchTuning | None = None
    notes: tuple[str, ...] = ()  # how each part was chosen (command, date, figures)


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A stored segment that matched, with the fused score and each signal's own score.

    Dense signals score by cosine; ``bm25`` by the share of the query's terms (after stop
    words and stemming) that the segment contains, 0 to 1.
    """

    segment: Segment
    score: float
    signal_scores: Mapping[Signal, float]


class AnswerStatus(StrEnum):
    ANSWERED = "answered"  # written by a language model, every claim from cited sources
    EXTRACTIVE = "extractive"  # composed from the sources' own words, no language model
    NOTHING_FOUND = "nothing_found"  # no relevant source: the model was not even asked
    NO_ANSWER = "no_answer"  # the model read the sources and said they do not answer it
    UNGROUNDED = "ungrounded"  # the model wrote something without citing any given source


@dataclass(frozen=True, slots=True)
class Citation:
    number: int
    hit: SearchHit


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    status: AnswerStatus
    citations: tuple[Citation, ...]
    provider: str  # "local", "openai", "langchain", "extractive"
    model: str  # the model that wrote it ("quotes" for extractive answers)
    prompt_version: str
