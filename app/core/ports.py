"""The core's ports: small Protocols that adapters implement (no inheritance needed).

Embedders and the vector store are synchronous (CPU or embedded-engine work; the HTTP layer
runs them in worker threads). Language models are asynchronous (network I/O, or a local model
that generates in a worker thread).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from app.core.models import (
    CollectionSpec,
    CollectionStats,
    CollectionTuning,
    EmbeddedSegment,
    EmbeddingModelInfo,
    IndexedAsset,
    SearchHit,
    Segment,
    Signal,
    VectorQuery,
)

if TYPE_CHECKING:
    from PIL.Image import Image

FloatMatrix = npt.NDArray[np.float32]
"""Shape (n, dim), each row L2-normalised."""


class ImageTextEmbedder(Protocol):
    """A joint image-text model (CLIP): both towers map into one space."""

    @property
    def info(self) -> EmbeddingModelInfo: ...

    def embed_images(self, images: Sequence[Image]) -> FloatMatrix: ...

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix: ...


class TextEmbedder(Protocol):
    """A sentence-embedding model for words found in or next to media."""

    @property
    def info(self) -> EmbeddingModelInfo: ...

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix: ...


@dataclass(frozen=True, slots=True)
class TranscriptPiece:
    """A stretch of recognised speech with its time span in the recording (seconds)."""

    start_s: float
    end_s: float
    text: str


class SpeechRecognizer(Protocol):
    """Speech to time-coded text (Whisper and the like)."""

    @property
    def name(self) -> str: ...

    def transcribe(self, samples: npt.NDArray[np.float32]) -> list[TranscriptPiece]:
        """``samples``: mono float32 PCM at 16 kHz, in [-1, 1]."""
        ...


class TextRecognizer(Protocol):
    """Text in pictures (OCR): photos, video frames, scanned pages."""

    @property
    def name(self) -> str: ...

    def read_text(self, image: Image) -> str:
        """The words the picture shows, in reading order; "" when there are none."""
        ...


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """A point exactly as stored, in no engine's types: what copying a collection from one
    engine to another moves (``python -m ingestion migrate``)."""

    id: str
    dense: Mapping[str, Sequence[float]]  # vector name -> values
    sparse: Mapping[str, tuple[Sequence[int], Sequence[float]]]  # name -> (indices, values)
    payload: Mapping[str, Any]


class VectorCollection(Protocol):
    """One open collection of the vector store."""

    @property
    def spec(self) -> CollectionSpec: ...

    def upsert(self, segments: Sequence[EmbeddedSegment]) -> None:
        """Write whole assets' segments; ids are deterministic, so a re-write is idempotent."""
        ...

    def delete_assets(self, asset_ids: Sequence[str]) -> None: ...

    def set_mtimes(self, mtimes: Mapping[str, int]) -> None:
        """Record new modification times (asset id -> mtime_ns) of files whose content is
        unchanged, without rewriting their vectors."""
        ...

    def indexed_assets(self) -> list[IndexedAsset]:
        """Every stored asset (a source may have several after an interrupted change)."""
        ...

    def search(self, query: VectorQuery) -> list[SearchHit]: ...

    def asset_segments(self, asset_id: str) -> list[Segment]:
        """The stored segments of one asset, in order; empty when the asset is unknown."""
        ...

    def stats(self) -> CollectionStats: ...

    @property
    def tuning(self) -> CollectionTuning:
        """The collection's calibrated thresholds and tuned search knobs (may be empty)."""
        ...

    @property
    def optimize_pending(self) -> bool:
        """Whether writes happened that no finished ``optimize()`` has indexed yet."""
        ...

    def optimize(self) -> None:
        """Build indexes for everything written so far (call after an ingest run)."""
        ...

    def export_points(self, offset: str | None, limit: int) -> tuple[list[StoredPoint], str | None]:
        """One page of stored points (vectors and payloads) in id order from ``offset``
        (None: the start), and the offset of the next page (None: that was the last)."""
        ...

    def import_points(self, points: Sequence[StoredPoint]) -> None:
        """Write points as given (ids, vectors, payloads); a re-write is idempotent."""
        ...

    def get_points(self, ids: Sequence[str]) -> list[StoredPoint]:
        """The stored points with these ids (missing ones are left out)."""
        ...

    def vector_count(self, signal: Signal) -> int:
        """How many stored points hold a ``signal`` vector."""
        ...

    def sample_vectors(self, signal: Signal, n: int, seed: int) -> tuple[list[str], FloatMatrix]:
        """Ids and ``signal`` vectors (as stored) of up to ``n`` points holding one, drawn at
        random (seeded); all of them when there are no more (autotune's sample)."""
        ...


class VectorStore(Protocol):
    """Opens and creates collections; owns their lifetime."""

    def exists(self, name: str) -> bool: ...

    def names(self) -> list[str]:
        """The collections that exist, sorted."""
        ...

    def open_stored(self, name: str) -> VectorCollection:
        """An existing collection as built, before models are known (to plan ingestion)."""
        ...

    def save_tuning(self, name: str, tuning: CollectionTuning) -> None:
        """Record a collection's tuning; an open collection uses it at once."""
        ...

    def hold(self, name: str) -> None:
        """Take hold of an existing collection before models are loaded (fail fast on a lock)."""
        ...

    def open(
        self, spec: CollectionSpec, *, create: bool, require_index_settings: bool = False
    ) -> VectorCollection:
        """Open ``spec.name``; create it when missing and ``create`` is set.

        An existing collection keeps its build-time index settings unless
        ``require_index_settings`` asks for ``spec``'s (then a difference is an error).
        Raises CollectionNotFoundError, CollectionMismatchError or StoreLockedError.
        """
        ...

    def resolve(self, name: str) -> str:
        """The physical collection behind ``name`` (an alias, or the collection itself)."""
        ...

    def switch_alias(self, name: str, target: str) -> str | None:
        """Point ``name`` at the physical collection ``target`` in one step (readers see the
        old or the new, never neither); returns the physical collection it pointed at before."""
        ...

    def drop(self, name: str) -> None:
        """Delete a physical collection and everything in it."""
        ...

    def close(self) -> None: ...


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image sent to a model that can see (the picture behind a source)."""

    media_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str
    images: tuple[ImagePart, ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float
    json_schema: Mapping[str, Any] | None = None  # constrain the output to this JSON schema


class LanguageModel(Protocol):
    """Messages in, text (or a stream of text) out. Nothing else."""

    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def supports_json_schema(self) -> bool:
        """Whether ``json_schema`` really constrains the output (grammar or structured mode)."""
        ...

    @property
    def supports_images(self) -> bool: ...

    async def complete(self, request: GenerationRequest) -> str: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """The text in pieces as it is written; closing the iterator cancels the generation."""
        ...

    async def aclose(self) -> None: ...
