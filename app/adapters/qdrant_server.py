"""``QdrantServerStore``: the vector-store port over a Qdrant server or cluster (qdrant-client).

It mirrors ``EdgeVectorStore`` (the embedded engine): the same named vectors, payloads, payload
indexes, BM25 vectors (computed in ``app.adapters.bm25``, weighted by the server's ``idf``
modifier) and queries, so a collection can move from one engine to the other unchanged. What
differs, and why:

- **Aliases.** A new collection ``NAME`` is the physical collection ``NAME-v1`` plus the alias
  ``NAME`` (a server cannot later put an alias over a plain collection's name), and every point
  operation goes through the name a collection was opened by, so ``switch_alias`` (one atomic
  call) moves readers to a re-indexed copy with no downtime.
- **What built the collection** (its ``CollectionSpec``) and its tuning live in the collection's
  ``metadata`` on the server (keys ``mmrag_spec`` and ``mmrag_tuning``), nothing on local disk.
- **The network.** Every call is retried on transient failures (5xx, 429, timeouts, dropped
  connections) with a short exponential backoff, then fails with a ``StoreError`` naming the URL.
  The first contact has a short timeout and no retry, so a wrong ``MMRAG_STORE__URL`` fails in
  seconds (``hold``), before any model is loaded.
- **Indexing** is the server's own background work: ``optimize`` has nothing to do.

qdrant_client types stay inside this module.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, ParamSpec, TypeVar

import grpc  # type: ignore[import-untyped]
import httpx
import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from app.adapters.bm25 import BM25_VECTOR, SparseTerms, bm25_document, bm25_query, coverage
from app.adapters.payload import (
    FLOAT_FIELDS,
    INDEX_FIELDS,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    PREFIX_FIELDS,
    from_payload,
    indexed_assets,
    to_payload,
)
from app.core.collections import (
    check_compatible,
    spec_from_dict,
    spec_to_dict,
    tuning_from_dict,
    tuning_to_dict,
    validate_collection_name,
)
from app.core.errors import (
    CollectionMismatchError,
    CollectionNotFoundError,
    ConfigurationError,
    StoreError,
)
from app.core.ids import point_id_for
from app.core.models import (
    BinaryEncoding,
    CollectionSpec,
    CollectionStats,
    CollectionTuning,
    EmbeddedSegment,
    FloatVector,
    Fusion,
    IndexedAsset,
    QueryEncoding,
    SearchFilters,
    SearchHit,
    SearchTuning,
    Segment,
    Signal,
    VectorQuery,
)
from app.core.ports import FloatMatrix, StoredPoint

__all__ = ["QdrantServerCollection", "QdrantServerStore"]

_ENCODINGS = {
    BinaryEncoding.ONE_BIT: qm.BinaryQuantizationEncoding.ONE_BIT,
    BinaryEncoding.ONE_AND_HALF_BITS: qm.BinaryQuantizationEncoding.ONE_AND_HALF_BITS,
    BinaryEncoding.TWO_BITS: qm.BinaryQuantizationEncoding.TWO_BITS,
}
_QUERY_ENCODINGS = {
    QueryEncoding.DEFAULT: qm.BinaryQuantizationQueryEncoding.DEFAULT,
    QueryEncoding.SCALAR8: qm.BinaryQuantizationQueryEncoding.SCALAR8BITS,
    QueryEncoding.SCALAR4: qm.BinaryQuantizationQueryEncoding.SCALAR4BITS,
}
# The payload indexes of the embedded engine, field for field: prefix matching on ``source``
# and ``library_path`` (``match: {prefix: ...}``) needs the keyword index's ``prefix`` option.
_PAYLOAD_INDEXES: tuple[tuple[str, Any], ...] = (
    *((name, qm.PayloadSchemaType.KEYWORD) for name in KEYWORD_FIELDS),
    *(
        (name, qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, prefix=True))
        for name in PREFIX_FIELDS
    ),
    *((name, qm.PayloadSchemaType.INTEGER) for name in INTEGER_FIELDS),
    *((name, qm.PayloadSchemaType.FLOAT) for name in FLOAT_FIELDS),
)
_EXACT = qm.SearchParams(exact=True, quantization=qm.QuantizationSearchParams(ignore=True))
_SPEC_KEY = "mmrag_spec"
_TUNING_KEY = "mmrag_tuning"
# Pages of points with their vectors are large JSON (a 512-d vector is ~10 KB of text).
_SCROLL_PAGE = 1024
_RETRY_AFTER_CAP_S = 30.0
_TRANSIENT_GRPC = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# What qdrant-client raises for a failed call (REST and gRPC). Anything else, a ``TypeError`` or
# local mode's ``ValueError``, is a bug on our side and surfaces as one.
_CLIENT_ERRORS: tuple[type[Exception], ...] = (
    UnexpectedResponse,
    ResponseHandlingException,
    ResourceExhaustedResponse,
    grpc.RpcError,
)

P = ParamSpec("P")
T = TypeVar("T")


def _transient(exc: Exception) -> bool:
    """Whether trying the same call again may succeed: overload, restarts, lost connections."""
    if isinstance(exc, ResourceExhaustedResponse):
        return True
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is not None and (exc.status_code == 429 or exc.status_code >= 500)
    if isinstance(exc, ResponseHandlingException):
        return isinstance(exc.source, httpx.TransportError)
    if isinstance(exc, grpc.RpcError):
        return exc.code() in _TRANSIENT_GRPC
    return False


def _reason(exc: Exception) -> str:
    """What went wrong, in a line: the HTTP status and the server's own message."""
    if isinstance(exc, UnexpectedResponse):
        text = f"HTTP {exc.status_code} {exc.reason_phrase}".strip()
        try:
            detail = exc.structured()["status"]["error"]
        except (ValueError, KeyError, TypeError):
            return text
        return f"{text}: {detail}"
    if isinstance(exc, ResourceExhaustedResponse):
        return f"HTTP 429 (rate limited): {exc}"
    if isinstance(exc, ResponseHandlingException):
        source = exc.source
        return f"{type(source).__name__}: {source}" if str(source) else type(source).__name__
    if isinstance(exc, grpc.RpcError):
        return f"gRPC {exc.code().name}: {exc.details()}"
    return str(exc)


class _Server:
    """One Qdrant server as this adapter talks to it: the client, the first contact, and how a
    failed call is retried and reported."""

    def __init__(
        self,
        client: QdrantClient,
        *,
        url: str,
        probe: QdrantClient | None,
        owns_client: bool,
        retries: int,
        backoff_s: float,
        batch_points: int,
    ) -> None:
        self.client = client
        self.url = url
        self.batch_points = batch_points
        self._probe = probe  # the same server with the connect timeout, used once
        self._owns_client = owns_client
        self._retries = retries
        self._backoff_s = backoff_s
        self._reached = False
        self._lock = threading.Lock()

    def reach(self) -> None:
        """Contact the server once, with the short timeout and no retry, so that a wrong URL, a
        stopped server or a refused API key fail now, in a message that says what to change."""
        with self._lock:
            if self._reached:
                return
            client = self._probe or self.client
            try:
                client.get_aliases()
            except _CLIENT_ERRORS as exc:
                status = getattr(exc, "status_code", None)
                if status in (401, 403):
                    msg = (
                        f"the Qdrant server at {self.url} refused this service ({_reason(exc)}); "
                        "check MMRAG_STORE__API_KEY"
                    )
                else:
                    msg = (
                        f"cannot reach the Qdrant server at {self.url} ({_reason(exc)}); check "
                        "MMRAG_STORE__URL and that the server is running"
                    )
                raise StoreError(msg) from exc
            self._reached = True
            if self._probe is not None:
                self._probe.close()
                self._probe = None

    def call(self, what: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)``, retried on transient failures; ``what`` names it in errors
        ("search", "write points"). Only for calls that are safe to repeat."""
        return self._run(what, partial(fn, *args, **kwargs), self._retries)

    def call_once(self, what: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` without retries: for calls that fail when repeated after a
        success whose answer was lost (creating a collection)."""
        return self._run(what, partial(fn, *args, **kwargs), 0)

    def _run(self, what: str, fn: Callable[[], T], retries: int) -> T:
        if not self._reached:
            self.reach()
        attempt = 0
        while True:
            try:
                return fn()
            except _CLIENT_ERRORS as exc:
                if attempt >= retries or not _transient(exc):
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    msg = f"Qdrant at {self.url} failed to {what}{tries}: {_reason(exc)}"
                    raise StoreError(msg) from exc
                delay = self._backoff_s * 2**attempt
                if isinstance(exc, ResourceExhaustedResponse):
                    delay = max(delay, min(float(exc.retry_after_s), _RETRY_AFTER_CAP_S))
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        """Close the clients this adapter built (never one it was given)."""
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        if self._owns_client:
            self.client.close()

    def aliases(self) -> dict[str, str]:
        """Every alias on the server: alias name -> physical collection."""
        answer = self.call("list aliases", self.client.get_aliases)
        return {a.alias_name: a.collection_name for a in answer.aliases}

    def collection_exists(self, physical: str) -> bool:
        return self.call("look up the collection", self.client.collection_exists, physical)

    def info(self, physical: str) -> qm.CollectionInfo:
        return self.call("read the collection", self.client.get_collection, physical)


def _filter_for(filters: SearchFilters) -> qm.Filter | None:
    must: list[qm.Condition] = []
    must_not: list[qm.Condition] = []
    if filters.modalities:
        values = [m.value for m in filters.modalities]
        must.append(qm.FieldCondition(key="modality", match=qm.MatchAny(any=values)))
    if filters.tags:
        must.append(qm.FieldCondition(key="tags", match=qm.MatchAny(any=list(filters.tags))))
    if filters.source_prefix:
        must.append(
            qm.FieldCondition(
                key="library_path", match=qm.MatchPrefix(prefix=filters.source_prefix)
            )
        )
    if filters.asset_ids:
        must.append(_asset_condition(filters.asset_ids))
    if filters.kinds:
        kinds = [k.value for k in filters.kinds]
        must.append(qm.FieldCondition(key="kind", match=qm.MatchAny(any=kinds)))
    if filters.exclude_kinds:
        kinds = [k.value for k in filters.exclude_kinds]
        must_not.append(qm.FieldCondition(key="kind", match=qm.MatchAny(any=kinds)))
    span = filters.time_range
    if span is not None:
        # Overlap: the segment ends after the range starts and starts before it ends. Segments
        # without a time (pictures, documents) do not match a time filter.
        if span.start_s is not None:
            must.append(qm.FieldCondition(key="end_s", range=qm.Range(gte=span.start_s)))
        if span.end_s is not None:
            must.append(qm.FieldCondition(key="start_s", range=qm.Range(lte=span.end_s)))
        if span.start_s is None and span.end_s is None:
            must.append(qm.FieldCondition(key="start_s", range=qm.Range(gte=0.0)))
    if not must and not must_not:
        return None
    return qm.Filter(must=must or None, must_not=must_not or None)


def _asset_condition(asset_ids: Sequence[str]) -> qm.FieldCondition:
    return qm.FieldCondition(key="asset_id", match=qm.MatchAny(any=list(asset_ids)))


def _asset_filter(asset_ids: Sequence[str]) -> qm.Filter:
    return qm.Filter(must=[_asset_condition(asset_ids)])


def _has_vector(signal: Signal) -> qm.Filter:
    return qm.Filter(must=[qm.HasVectorCondition(has_vector=signal.value)])


def _search_params(tuning: SearchTuning, *, exact: bool) -> qm.SearchParams:
    """Binary codes first, then ``oversampling`` x the limit rescored on the float vectors."""
    if exact:
        return _EXACT
    return qm.SearchParams(
        hnsw_ef=tuning.hnsw_ef,
        quantization=qm.QuantizationSearchParams(
            rescore=tuning.rescore, oversampling=tuning.oversampling
        ),
    )


def _fusion(query: VectorQuery) -> qm.FusionQuery | qm.RrfQuery:
    if query.fusion is Fusion.RRF:
        return qm.RrfQuery(rrf=qm.Rrf(k=query.rrf_k))
    return qm.FusionQuery(fusion=qm.Fusion.DBSF)


def _sparse(terms: SparseTerms) -> qm.SparseVector:
    return qm.SparseVector(indices=terms.indices, values=terms.values)


def _named_vectors(record: qm.Record | qm.ScoredPoint) -> dict[str, Any]:
    return dict(record.vector) if isinstance(record.vector, dict) else {}


def _stored_point(record: qm.Record) -> StoredPoint:
    dense: dict[str, list[float]] = {}
    sparse: dict[str, tuple[list[int], list[float]]] = {}
    for name, value in _named_vectors(record).items():
        if isinstance(value, qm.SparseVector):
            sparse[name] = (list(value.indices), list(value.values))
        else:
            dense[name] = [float(x) for x in value]
    return StoredPoint(
        id=str(record.id), dense=dense, sparse=sparse, payload=dict(record.payload or {})
    )


def _matrix(rows: list[list[float]]) -> FloatMatrix:
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    return np.asarray(rows, dtype=np.float32)


class QdrantServerCollection:
    """One collection on the server, reached by the name it was opened by (usually an alias)."""

    def __init__(
        self,
        server: _Server,
        name: str,
        spec: CollectionSpec,
        tuning: CollectionTuning,
        *,
        public_url: str | None,
    ) -> None:
        self._server = server
        self._client = server.client
        self._public_url = public_url
        self._name = name
        self._spec = spec
        self._tuning = tuning

    @property
    def spec(self) -> CollectionSpec:
        return self._spec

    @property
    def tuning(self) -> CollectionTuning:
        return self._tuning

    def use_tuning(self, tuning: CollectionTuning) -> None:
        """Adopt newly saved ``tuning`` (thresholds and knobs the retriever reads)."""
        self._tuning = tuning

    @property
    def optimize_pending(self) -> bool:
        return False  # the server indexes by itself, in the background

    def optimize(self) -> None:
        """Nothing to do: the server's optimizers index new points in the background."""

    def upsert(self, segments: Sequence[EmbeddedSegment]) -> None:
        points = []
        for item in segments:
            vector: dict[str, Any] = {
                signal.value: vec.tolist() for signal, vec in item.vectors.items()
            }
            sparse = bm25_document(item.segment.text)
            if sparse is not None:
                vector[BM25_VECTOR] = _sparse(sparse)
            points.append(
                qm.PointStruct(
                    id=point_id_for(item.segment.asset.asset_id, item.segment.index),
                    vector=vector,
                    payload=to_payload(
                        item.segment, public_url=self._public_url, collection=self._spec.name
                    ),
                )
            )
        self._write(points)

    def _write(self, points: list[qm.PointStruct]) -> None:
        """Batches of ``write_batch_points``, each confirmed (``wait``) before the next; a
        repeated batch writes the same ids again, so retrying one is safe."""
        size = self._server.batch_points
        for start in range(0, len(points), size):
            self._server.call(
                "write points",
                self._client.upsert,
                self._name,
                points=points[start : start + size],
                wait=True,
            )

    def delete_assets(self, asset_ids: Sequence[str]) -> None:
        size = self._server.batch_points
        for start in range(0, len(asset_ids), size):
            # ``wait``: an asset's old points are gone before its new ones are written.
            self._server.call(
                "delete points",
                self._client.delete,
                self._name,
                points_selector=qm.FilterSelector(
                    filter=_asset_filter(asset_ids[start : start + size])
                ),
                wait=True,
            )

    def set_mtimes(self, mtimes: Mapping[str, int]) -> None:
        operations = [
            qm.SetPayloadOperation(
                set_payload=qm.SetPayload(
                    payload={"mtime_ns": mtime_ns}, filter=_asset_filter([asset_id])
                )
            )
            for asset_id, mtime_ns in mtimes.items()
        ]
        size = self._server.batch_points
        for start in range(0, len(operations), size):
            self._server.call(
                "update modification times",
                self._client.batch_update_points,
                self._name,
                update_operations=operations[start : start + size],
                wait=True,
            )

    def _records(
        self, flt: qm.Filter | None, *, payload: Any = False, vectors: Any = False
    ) -> Iterator[qm.Record]:
        """Every stored point matching ``flt``, page by page."""
        offset: Any = None
        while True:
            records, offset = self._server.call(
                "scroll points",
                self._client.scroll,
                self._name,
                scroll_filter=flt,
                limit=_SCROLL_PAGE,
                offset=offset,
                with_payload=payload,
                with_vectors=vectors,
            )
            yield from records
            if offset is None:
                return

    def _payloads(
        self, flt: qm.Filter | None, fields: Sequence[str] | None
    ) -> Iterator[dict[str, Any]]:
        selector = list(fields) if fields else True
        for record in self._records(flt, payload=selector):
            yield dict(record.payload or {})

    def payloads(self, fields: Sequence[str]) -> Iterator[dict[str, Any]]:
        """The named payload fields of every stored point (evaluation's view of the assets)."""
        return self._payloads(None, fields)

    def _vectors_of(self, ids: Sequence[str], signal: Signal) -> tuple[list[str], FloatMatrix]:
        """``ids`` (in this order, missing ones left out) and their ``signal`` vectors."""
        found: dict[str, list[float]] = {}
        for start in range(0, len(ids), _SCROLL_PAGE):
            records = self._server.call(
                "read vectors",
                self._client.retrieve,
                self._name,
                ids=list(ids[start : start + _SCROLL_PAGE]),
                with_payload=False,
                with_vectors=[signal.value],
            )
            for record in records:
                found[str(record.id)] = _named_vectors(record)[signal.value]
        kept = [i for i in ids if i in found]
        return kept, _matrix([found[i] for i in kept])

    def all_vectors(self, signal: Signal) -> tuple[list[str], FloatMatrix]:
        """Ids and ``signal`` vectors (as stored: L2-normalised) of every point holding one."""
        if not signal.dense:
            raise ValueError(f"{signal} is not a dense vector")
        ids: list[str] = []
        rows: list[list[float]] = []
        for record in self._records(_has_vector(signal), vectors=[signal.value]):
            ids.append(str(record.id))
            rows.append(_named_vectors(record)[signal.value])
        return ids, _matrix(rows)

    def vector_count(self, signal: Signal) -> int:
        """How many stored points hold a ``signal`` vector."""
        answer = self._server.call(
            "count points",
            self._client.count,
            self._name,
            count_filter=_has_vector(signal),
            exact=True,
        )
        return answer.count

    def sample_vectors(self, signal: Signal, n: int, seed: int) -> tuple[list[str], FloatMatrix]:
        """Ids and ``signal`` vectors of up to ``n`` points holding one, drawn at random
        (seeded; ids in scroll order); all of them when there are no more than ``n``."""
        if not signal.dense:
            raise ValueError(f"{signal} is not a dense vector")
        every = [str(r.id) for r in self._records(_has_vector(signal))]
        if n >= len(every):
            return self.all_vectors(signal)
        chosen = sorted(random.Random(seed).sample(range(len(every)), n))
        return self._vectors_of([every[i] for i in chosen], signal)

    def export_points(self, offset: str | None, limit: int) -> tuple[list[StoredPoint], str | None]:
        records, after = self._server.call(
            "read points",
            self._client.scroll,
            self._name,
            limit=limit,
            offset=offset,
            with_payload=True,
            with_vectors=True,
        )
        return [_stored_point(r) for r in records], None if after is None else str(after)

    def get_points(self, ids: Sequence[str]) -> list[StoredPoint]:
        records = self._server.call(
            "read points",
            self._client.retrieve,
            self._name,
            ids=list(ids),
            with_payload=True,
            with_vectors=True,
        )
        return [_stored_point(r) for r in records]

    def import_points(self, points: Sequence[StoredPoint]) -> None:
        structs = []
        for point in points:
            vector: dict[str, Any] = {name: list(v) for name, v in point.dense.items()}
            for name, (indices, values) in point.sparse.items():
                vector[name] = qm.SparseVector(indices=list(indices), values=list(values))
            structs.append(qm.PointStruct(id=point.id, vector=vector, payload=dict(point.payload)))
        self._write(structs)

    def indexed_assets(self) -> list[IndexedAsset]:
        return indexed_assets(self._payloads(None, INDEX_FIELDS))

    def asset_segments(self, asset_id: str) -> list[Segment]:
        segments = [from_payload(p) for p in self._payloads(_asset_filter([asset_id]), None)]
        return sorted(segments, key=lambda s: s.index)

    def search(self, query: VectorQuery) -> list[SearchHit]:
        signals = [s for s in Signal if s.dense and s in query.vectors]
        nearest: list[tuple[Signal, list[float] | qm.SparseVector]] = [
            (s, query.vectors[s].tolist()) for s in signals
        ]
        sparse_query = bm25_query(query.keywords)
        if sparse_query is not None:
            nearest.append((Signal.BM25, _sparse(sparse_query)))
        if not nearest:
            return []
        params = _search_params(query.tuning, exact=query.exact)
        flt = _filter_for(query.filters)
        focus = (
            _filter_for(replace(query.filters, asset_ids=query.focus_assets))
            if query.focus_assets
            else None
        )
        # Only the sparse vector travels back (for BM25 coverage); dense scores come from the
        # server (``_signal_scores``), not from vectors fetched and multiplied here.
        names: list[str] | bool = [BM25_VECTOR] if sparse_query is not None else False
        depth = max(query.candidates_per_signal, query.limit)
        if len(nearest) == 1:
            signal, vector = nearest[0]
            answer = self._server.call(
                "search",
                self._client.query_points,
                self._name,
                query=vector,
                using=signal.value,
                prefetch=(
                    _candidates(signal, vector, flt=flt, focus=focus, depth=depth, params=params)
                    if focus
                    else None
                ),
                query_filter=None if focus else flt,
                search_params=params,
                limit=query.limit,
                with_payload=True,
                with_vectors=names,
            )
        else:
            answer = self._server.call(
                "search",
                self._client.query_points,
                self._name,
                prefetch=[
                    _signal_stage(signal, vector, flt=flt, focus=focus, depth=depth, params=params)
                    for signal, vector in nearest
                ],
                query=_fusion(query),
                limit=query.limit,
                with_payload=True,
                with_vectors=names,
            )
        points = answer.points
        dense = self._signal_scores(points, [(s, query.vectors[s]) for s in signals])
        hits: list[SearchHit] = []
        for point in points:
            key = str(point.id)
            scores = {s: by_id[key] for s, by_id in dense.items() if key in by_id}
            if sparse_query is not None:
                stored = _named_vectors(point).get(BM25_VECTOR)
                indices = list(stored.indices) if isinstance(stored, qm.SparseVector) else None
                share = coverage(indices, sparse_query)
                if share is not None:
                    scores[Signal.BM25] = share
            hits.append(
                SearchHit(
                    segment=from_payload(point.payload or {}),
                    score=point.score,
                    signal_scores=scores,
                )
            )
        return hits

    def _signal_scores(
        self, points: Sequence[qm.ScoredPoint], signals: Sequence[tuple[Signal, FloatVector]]
    ) -> dict[Signal, dict[str, float]]:
        """Each dense signal's cosine for the returned points, scored by the server: one exact
        query per signal over just those points, all in one batch (one round trip)."""
        if not points or not signals:
            return {}
        only = qm.Filter(must=[qm.HasIdCondition(has_id=[p.id for p in points])])
        answers = self._server.call(
            "score the hits",
            self._client.query_batch_points,
            self._name,
            requests=[
                qm.QueryRequest(
                    query=vector.tolist(),
                    using=signal.value,
                    filter=only,
                    params=_EXACT,
                    limit=len(points),
                    with_payload=False,
                    with_vector=False,
                )
                for signal, vector in signals
            ],
        )
        return {
            signal: {str(p.id): p.score for p in answer.points}
            for (signal, _), answer in zip(signals, answers, strict=True)
        }

    def stats(self) -> CollectionStats:
        physical = self._server.aliases().get(self._name, self._name)
        info = self._server.info(physical)
        points = self._server.call("count points", self._client.count, self._name, exact=True).count
        assets = self._server.call(
            "count assets",
            self._client.count,
            self._name,
            count_filter=qm.Filter(
                must=[qm.FieldCondition(key="segment_index", match=qm.MatchValue(value=0))]
            ),
            exact=True,
        ).count
        return CollectionStats(
            name=self._spec.name,
            points=points,
            assets=assets,
            indexed_vectors=info.indexed_vectors_count or 0,
            segments_on_disk=info.segments_count,
            spec=self._spec,
        )


def _candidates(
    signal: Signal,
    vector: list[float] | qm.SparseVector,
    *,
    flt: qm.Filter | None,
    focus: qm.Filter,
    depth: int,
    params: qm.SearchParams,
) -> list[qm.Prefetch]:
    """The best ``depth`` of the whole collection and of the focused assets, pooled."""
    return [
        qm.Prefetch(query=vector, using=signal.value, filter=flt, params=params, limit=depth),
        qm.Prefetch(query=vector, using=signal.value, filter=focus, params=params, limit=depth),
    ]


def _signal_stage(
    signal: Signal,
    vector: list[float] | qm.SparseVector,
    *,
    flt: qm.Filter | None,
    focus: qm.Filter | None,
    depth: int,
    params: qm.SearchParams,
) -> qm.Prefetch:
    """One signal's candidate list for fusion; with focused assets, the pooled candidates scored
    again by the same signal (so nothing is counted twice)."""
    if focus is None:
        return qm.Prefetch(query=vector, using=signal.value, filter=flt, params=params, limit=depth)
    return qm.Prefetch(
        query=vector,
        using=signal.value,
        prefetch=_candidates(signal, vector, flt=flt, focus=focus, depth=depth, params=params),
        params=params,
        limit=depth,
    )


class QdrantServerStore:
    """Collections on a Qdrant server or cluster.

    Built from plain settings (``url``, ``api_key``, ...: ``app.settings.StoreSettings``), or over
    a ``client`` built elsewhere (tests: ``QdrantClient(":memory:")``); the store closes only a
    client it built. ``url`` then only names the server in messages.
    """

    def __init__(
        self,
        url: str = "http://localhost:6333",
        *,
        api_key: str | None = None,
        prefer_grpc: bool = False,
        grpc_port: int = 6334,
        verify_tls: bool = True,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 3.0,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        on_disk_payload: bool = True,
        write_batch_points: int = 256,
        write_retries: int = 3,
        retry_backoff_s: float = 0.2,
        public_url: str | None = None,
        client: QdrantClient | None = None,
    ) -> None:
        """``public_url``: the service as users reach it, for thumbnail links in payloads."""
        probe: QdrantClient | None = None
        owns_client = client is None
        if client is None:
            if prefer_grpc and not verify_tls:
                msg = (
                    "MMRAG_STORE__VERIFY_TLS=false works over REST only: the gRPC channel always "
                    "checks certificates. Turn off MMRAG_STORE__PREFER_GRPC, or trust the "
                    "server's certificate."
                )
                raise ConfigurationError(msg)
            options: dict[str, Any] = {} if verify_tls else {"verify": False}

            def build(timeout: float) -> QdrantClient:
                # The client takes whole seconds. Its own version check runs in a thread and
                # only warns; ``hold`` contacts the server instead.
                return QdrantClient(
                    url=url,
                    api_key=api_key,
                    prefer_grpc=prefer_grpc,
                    grpc_port=grpc_port,
                    timeout=math.ceil(timeout),
                    check_compatibility=False,
                    **options,
                )

            client = build(timeout_s)
            probe = build(connect_timeout_s)
        self._server = _Server(
            client,
            url=url,
            probe=probe,
            owns_client=owns_client,
            retries=write_retries,
            backoff_s=retry_backoff_s,
            batch_points=write_batch_points,
        )
        self._client = client
        self._shard_number = shard_number
        self._replication_factor = replication_factor
        self._write_consistency_factor = write_consistency_factor
        self._on_disk_payload = on_disk_payload
        self._public_url = public_url
        self._open: dict[str, QdrantServerCollection] = {}  # by the name it was opened by
        self._lock = threading.Lock()

    def hold(self, name: str) -> None:
        """Contact the server now (short timeout, no retry): a wrong URL, a stopped server or a
        refused API key fail in seconds instead of after loading models. The server has no
        lock to take."""
        validate_collection_name(name)
        self._server.reach()

    def resolve(self, name: str) -> str:
        return self._server.aliases().get(validate_collection_name(name), name)

    def exists(self, name: str) -> bool:
        validate_collection_name(name)
        return name in self._server.aliases() or self._server.collection_exists(name)

    def names(self) -> list[str]:
        """Aliases and the collections no alias covers (a re-index's old copy shows until it is
        dropped), sorted."""
        aliases = self._server.aliases()
        answer = self._server.call("list collections", self._client.get_collections)
        hidden = set(aliases.values())
        plain = {c.name for c in answer.collections if c.name not in hidden}
        return sorted(plain | set(aliases))

    def open_stored(self, name: str) -> QdrantServerCollection:
        """An existing collection as it was built, opened before any model is loaded: planning
        an ingest run needs none. A later ``open(spec)`` checks the models against it."""
        with self._lock:
            if name in self._open:
                return self._open[name]
            physical = self.resolve(name)
            if not self._server.collection_exists(physical):
                raise CollectionNotFoundError(name)
            collection = self._existing(name, physical)
            self._open[name] = collection
            return collection

    def open(
        self, spec: CollectionSpec, *, create: bool, require_index_settings: bool = False
    ) -> QdrantServerCollection:
        name = validate_collection_name(spec.name)
        with self._lock:
            if name in self._open:
                collection = self._open[name]
                check_compatible(
                    collection.spec, spec, require_index_settings=require_index_settings
                )
                return collection
            aliases = self._server.aliases()
            physical = aliases.get(name, name)
            if self._server.collection_exists(physical):
                collection = self._existing(name, physical)
                check_compatible(
                    collection.spec, spec, require_index_settings=require_index_settings
                )
            elif not create:
                raise CollectionNotFoundError(name)
            else:
                collection = self._create(spec, aliases)
            self._open[name] = collection
            return collection

    def _existing(self, name: str, physical: str) -> QdrantServerCollection:
        """Open a collection that exists: its spec and tuning from its metadata, and any
        payload index it lacks (collections from older versions)."""
        info = self._server.info(physical)
        metadata = info.config.metadata or {}
        where = f"collection {physical!r} at {self._server.url}"
        data = metadata.get(_SPEC_KEY)
        if not isinstance(data, dict):
            msg = (
                f"{where} has no {_SPEC_KEY!r} in its metadata: it was not made by this service, "
                "and which models built it cannot be known. Use another collection name."
            )
            raise CollectionMismatchError(msg)
        try:
            stored = spec_from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"the spec saved with {where} is unreadable ({exc}); it cannot be opened safely"
            raise CollectionMismatchError(msg) from exc
        self._ensure_payload_indexes(physical, set(info.payload_schema))
        tuning = tuning_from_dict(metadata.get(_TUNING_KEY), f"the tuning saved with {where}")
        return QdrantServerCollection(
            self._server, name, stored, tuning, public_url=self._public_url
        )

    def _create(self, spec: CollectionSpec, aliases: Mapping[str, str]) -> QdrantServerCollection:
        """``NAME-v1`` behind the alias ``NAME``; a half-made one (no alias yet) is finished."""
        name = spec.name
        physical = f"{name}-v1"
        taken = [alias for alias, target in aliases.items() if target == physical]
        if taken:
            msg = (
                f"{physical!r}, where a new collection {name!r} would live, is what {taken[0]!r} "
                "reads from (a re-index switched it over); use another collection name."
            )
            raise CollectionMismatchError(msg)
        if self._server.collection_exists(physical):
            collection = self._existing(name, physical)
            check_compatible(collection.spec, spec)
        else:
            q = spec.quantization
            # ``always_ram`` and ``on_disk`` are the spellings every server version reads (1.20
            # also has ``memory`` placements for them).
            bq = qm.BinaryQuantization(
                binary=qm.BinaryQuantizationConfig(
                    encoding=_ENCODINGS[q.encoding],
                    query_encoding=_QUERY_ENCODINGS[q.query_encoding],
                    always_ram=q.always_ram,
                )
            )
            vectors = {
                signal.value: qm.VectorParams(size=dim, distance=qm.Distance.COSINE, on_disk=True)
                for signal, dim in ((Signal.CLIP, spec.clip.dim), (Signal.TEXT, spec.text.dim))
            }
            # Not retried: a repeat after a lost answer would fail ("already exists"); the
            # next open finds the collection and finishes it instead.
            self._server.call_once(
                "create the collection",
                self._client.create_collection,
                physical,
                vectors_config=vectors,
                sparse_vectors_config={
                    BM25_VECTOR: qm.SparseVectorParams(modifier=qm.Modifier.IDF)
                },
                quantization_config=bq,
                hnsw_config=qm.HnswConfigDiff(m=q.hnsw_m, ef_construct=q.hnsw_ef_construct),
                shard_number=self._shard_number,
                replication_factor=self._replication_factor,
                write_consistency_factor=self._write_consistency_factor,
                on_disk_payload=self._on_disk_payload,
                # Through JSON: enums become their values, as the server would store them.
                metadata={_SPEC_KEY: json.loads(json.dumps(spec_to_dict(spec)))},
            )
            self._ensure_payload_indexes(physical, set())
            collection = QdrantServerCollection(
                self._server, name, spec, CollectionTuning(), public_url=self._public_url
            )
        self._server.call("create the alias", self._point_alias, name, physical, None)
        return collection

    def _ensure_payload_indexes(self, physical: str, existing: set[str]) -> None:
        for field, schema in _PAYLOAD_INDEXES:
            if field not in existing:
                self._server.call(
                    "create a payload index",
                    self._client.create_payload_index,
                    physical,
                    field,
                    field_schema=schema,
                    wait=True,
                )

    def save_tuning(self, name: str, tuning: CollectionTuning) -> None:
        aliases = self._server.aliases()
        physical = aliases.get(validate_collection_name(name), name)
        if not self._server.collection_exists(physical):
            raise CollectionNotFoundError(name)
        # Metadata updates merge by key: this replaces the tuning and keeps the spec.
        self._server.call(
            "save the tuning",
            self._client.update_collection,
            physical,
            metadata={_TUNING_KEY: tuning_to_dict(tuning)},
        )
        with self._lock:
            for opened, collection in self._open.items():
                if aliases.get(opened, opened) == physical:
                    collection.use_tuning(tuning)

    def switch_alias(self, name: str, target: str) -> str | None:
        """Point the alias ``name`` at the physical collection ``target`` in one atomic call;
        the next ``open(name)`` reads ``target``'s spec and tuning.

        ``target`` may be the name a new collection was opened by (``open`` puts every new
        collection behind an alias): that alias then hands its collection over to ``name`` and
        goes, in the same call, so each collection keeps one name. ``name`` must not be a plain
        collection: a server keeps aliases and collections apart.
        """
        validate_collection_name(name)
        aliases = self._server.aliases()
        physical = aliases.get(validate_collection_name(target), target)
        if not self._server.collection_exists(physical):
            raise CollectionNotFoundError(target)
        before = aliases.get(name)
        if before is None and self._server.collection_exists(name):
            msg = (
                f"{name!r} is a collection on {self._server.url}, not an alias, so it cannot be "
                "pointed elsewhere; copy it into a new collection and use that name."
            )
            raise CollectionMismatchError(msg)
        if before == physical:
            return None
        handover = target if target in aliases else None
        self._server.call("switch the alias", self._point_alias, name, physical, handover)
        with self._lock:
            self._open.pop(name, None)
            if handover is not None:
                self._open.pop(handover, None)
        return before

    def _point_alias(self, name: str, physical: str, handover: str | None) -> None:
        """One attempt at making ``name`` the alias of ``physical`` (and removing the alias
        ``handover``), all in one request, planned from the aliases as they are now: a retry
        after an answer that was lost does nothing twice."""
        now = {a.alias_name: a.collection_name for a in self._client.get_aliases().aliases}
        operations: list[qm.AliasOperations] = []
        if handover is not None and handover in now:
            operations.append(
                qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=handover))
            )
        if now.get(name) != physical:
            if name in now:
                operations.append(
                    qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=name))
                )
            operations.append(
                qm.CreateAliasOperation(
                    create_alias=qm.CreateAlias(collection_name=physical, alias_name=name)
                )
            )
        if operations:
            self._client.update_collection_aliases(change_aliases_operations=operations)

    def drop(self, name: str) -> None:
        """Delete the physical collection ``name`` (one no alias points at)."""
        validate_collection_name(name)
        aliases = self._server.aliases()
        if name in aliases.values():
            msg = f"collection {name!r} is what an alias points at; switch the alias first"
            raise CollectionMismatchError(msg)
        if name in aliases:
            msg = f"{name!r} is an alias (of {aliases[name]!r}); drop a physical collection"
            raise CollectionMismatchError(msg)
        if not self._server.collection_exists(name):
            raise CollectionNotFoundError(name)
        self._server.call("delete the collection", self._client.delete_collection, name)
        with self._lock:
            self._open.pop(name, None)

    def close(self) -> None:
        with self._lock:
            self._open.clear()
        self._server.close()
