"""BM25 sparse vectors, the same for every vector-store adapter.

The embedded engine's own BM25 (English stop words and stemming) turns a segment's words into a
document vector and a question into a query vector; the engine (embedded or server) applies the
collection's IDF at query time (the sparse vector's ``idf`` modifier). Computing both sides here
keeps tokenisation identical whichever engine stores the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import qdrant_edge as qe

from app.core.models import Signal

BM25_VECTOR = Signal.BM25.value
_BM25 = qe.Bm25(qe.Bm25Config(language="english"))


@dataclass(frozen=True, slots=True)
class SparseTerms:
    """A sparse vector as plain lists (term ids and weights)."""

    indices: list[int]
    values: list[float]


def bm25_document(text: str | None) -> SparseTerms | None:
    """The BM25 document vector of a segment's words; None when it has none worth indexing."""
    words = (text or "").strip()
    if not words:
        return None
    vector = _BM25.embed_document(words)
    return SparseTerms(list(vector.indices), list(vector.values)) if vector.indices else None


def bm25_query(text: str | None) -> SparseTerms | None:
    """The BM25 query vector of a question's words; None when no word survives (stop words)."""
    words = (text or "").strip()
    if not words:
        return None
    vector = _BM25.embed_query(words)
    return SparseTerms(list(vector.indices), list(vector.values)) if vector.indices else None


def coverage(stored_indices: list[int] | None, query: SparseTerms) -> float | None:
    """The share of the query's terms that a stored point's sparse vector holds."""
    if not stored_indices or not query.indices:
        return None
    wanted = set(query.indices)
    return len(wanted.intersection(stored_indices)) / len(wanted)
