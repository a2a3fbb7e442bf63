"""``EdgeVectorStore``: the vector-store port over qdrant-edge, the embedded Qdrant engine.

Layout under ``<data_dir>/collections/<name>/``: ``shard/`` (the engine's own files) and
``collection.json`` (which models and settings built the collection). qdrant_edge types stay
inside this module.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import qdrant_edge as qe

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
    StoreError,
    StoreLockedError,
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
    QuantizationSpec,
    QueryEncoding,
    SearchFilters,
    SearchHit,
    SearchTuning,
    Segment,
    Signal,
    VectorQuery,
)
from app.core.ports import FloatMatrix, StoredPoint

_ENCODINGS = {
    BinaryEncoding.ONE_BIT: qe.BinaryQuantizationEncoding.OneBit,
    BinaryEncoding.ONE_AND_HALF_BITS: qe.BinaryQuantizationEncoding.OneAndHalfBits,
    BinaryEncoding.TWO_BITS: qe.BinaryQuantizationEncoding.TwoBits,
}
_QUERY_ENCODINGS = {
    QueryEncoding.DEFAULT: qe.BinaryQuantizationQueryEncoding.Default,
    QueryEncoding.SCALAR8: qe.BinaryQuantizationQueryEncoding.Scalar8Bits,
    QueryEncoding.SCALAR4: qe.BinaryQuantizationQueryEncoding.Scalar4Bits,
}
# 1.5- and 2-bit codes get their per-dimension statistics when a segment is indexed; below the
# indexing threshold a segment is never indexed and silently behaves as 1-bit. 1 KB means
# "always index on optimize()".
_INDEXING_THRESHOLD_KB = 1
_HNSW_FULL_SCAN_THRESHOLD_KB = 10


def edge_config_for(
    dims: dict[str, int],
    quantization: QuantizationSpec,
    *,
    max_search_threads: int,
    bm25: bool = True,
) -> qe.EdgeConfig:
    """The engine configuration of a collection with one dense cosine vector per name."""
    bq = qe.BinaryQuantizationConfig(
        encoding=_ENCODINGS[quantization.encoding],
        query_encoding=_QUERY_ENCODINGS[quantization.query_encoding],
        always_ram=quantization.always_ram,
    )
    vectors = {
        name: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, quantization_config=bq)
        for name, dim in dims.items()
    }
    return qe.EdgeConfig(
        vectors=vectors,
        sparse_vectors=(
            {BM25_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if bm25 else {}
        ),
        hnsw_config=qe.HnswIndexConfig(
            m=quantization.hnsw_m,
            ef_construct=quantization.hnsw_ef_construct,
            full_scan_threshold=_HNSW_FULL_SCAN_THRESHOLD_KB,
        ),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=_INDEXING_THRESHOLD_KB),
        max_search_threads=max_search_threads or None,
    )


_EXACT = qe.SearchParams(exact=True, quantization=qe.QuantizationSearchParams(ignore=True))


def search_params_for(tuning: SearchTuning, *, exact: bool = False) -> qe.SearchParams:
    """Search parameters: binary codes first, then rescore on the float vectors."""
    if exact:
        return _EXACT
    return qe.SearchParams(
        hnsw_ef=tuning.hnsw_ef,
        quantization=qe.QuantizationSearchParams(
            rescore=tuning.rescore, oversampling=tuning.oversampling
        ),
    )


_SPEC_FILE = "collection.json"
# What calibrate and autotune chose for the collection (thresholds, query-time knobs).
_TUNING_FILE = "tuning.json"
# Present from the first write until optimize() has finished: a run killed in between (or during
# the optimize itself) leaves it, and the next run finishes the index even when no file changed.
_OPTIMIZE_PENDING = "optimize.pending"
_SHARD_DIR = "shard"
_ALIASES_FILE = "aliases.json"
_SCROLL_PAGE = 2048
_LOCKED = re.compile(r"WouldBlock|\block(ed)?\b", re.IGNORECASE)


@contextlib.contextmanager
def _engine_errors(what: str, path: Path) -> Iterator[None]:
    """Translate the engine's errors into the project's error tree.

    The engine raises plain ``Exception`` (and ``OSError`` from the file system); anything else
    (a ``TypeError``, a ``ValueError``) is a bug on our side and surfaces as one.
    """
    try:
        yield
    except Exception as exc:
        if type(exc) is not Exception and not isinstance(exc, OSError):
            raise
        text = str(exc)
        if _LOCKED.search(text):
            msg = (
                f"collection {path.name!r} is open in another process or handle (the embedded "
                "engine locks its directory). Stop the service (or the other ingest run) and "
                "try again, or point this command at another --data-dir."
            )
            raise StoreLockedError(msg) from exc
        raise StoreError(f"vector engine failed to {what}: {text}") from exc


def _filter_for(filters: SearchFilters) -> qe.Filter | None:
    must: list[Any] = []
    must_not: list[Any] = []
    if filters.modalities:
        must.append(
            qe.FieldCondition(
                key="modality",
                match=qe.MatchAny(any=[m.value for m in filters.modalities]),
            )
        )
    if filters.tags:
        must.append(qe.FieldCondition(key="tags", match=qe.MatchAny(any=list(filters.tags))))
    if filters.source_prefix:
        must.append(
            qe.FieldCondition(
                key="library_path", match=qe.MatchPrefix(prefix=filters.source_prefix)
            )
        )
    if filters.asset_ids:
        must.append(
            qe.FieldCondition(key="asset_id", match=qe.MatchAny(any=list(filters.asset_ids)))
        )
    if filters.kinds:
        must.append(
            qe.FieldCondition(key="kind", match=qe.MatchAny(any=[k.value for k in filters.kinds]))
        )
    if filters.exclude_kinds:
        must_not.append(
            qe.FieldCondition(
                key="kind", match=qe.MatchAny(any=[k.value for k in filters.exclude_kinds])
            )
        )
    span = filters.time_range
    if span is not None:
        # Overlap: the segment ends after the range starts and starts before it ends. Segments
        # without a time (pictures, documents) do not match a time filter.
        if span.start_s is not None:
            must.append(qe.FieldCondition(key="end_s", range=qe.RangeFloat(gte=span.start_s)))
        if span.end_s is not None:
            must.append(qe.FieldCondition(key="start_s", range=qe.RangeFloat(lte=span.end_s)))
        if span.start_s is None and span.end_s is None:
            must.append(qe.FieldCondition(key="start_s", range=qe.RangeFloat(gte=0.0)))
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)


def _has_vector(signal: Signal) -> qe.Filter:
    return qe.Filter(must=[qe.HasVectorCondition(signal.value)])


def _dense(record: Any, signal: Signal) -> list[float]:
    vector: list[float] = record.vector[signal.value]
    return vector


def _matrix(rows: list[list[float]]) -> FloatMatrix:
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    return np.asarray(rows, dtype=np.float32)


def _asset_filter(asset_ids: Sequence[str]) -> qe.Filter:
    return qe.Filter(
        must=[qe.FieldCondition(key="asset_id", match=qe.MatchAny(any=list(asset_ids)))]
    )


def _fusion(query: VectorQuery) -> qe.Fusion:
    if query.fusion is Fusion.RRF:
        return cast("qe.Fusion", qe.Fusion.Rrf(k=query.rrf_k))  # the stub omits Rrf
    return cast("qe.Fusion", qe.Fusion.Dbsf())


def _stored_point(record: Any) -> StoredPoint:
    dense: dict[str, list[float]] = {}
    sparse: dict[str, tuple[list[int], list[float]]] = {}
    for name, value in (record.vector or {}).items():
        if isinstance(value, list):
            dense[name] = value
        else:
            sparse[name] = (list(value.indices), list(value.values))
    return StoredPoint(
        id=str(record.id), dense=dense, sparse=sparse, payload=dict(record.payload or {})
    )


def _sparse(terms: SparseTerms) -> qe.SparseVector:
    return qe.SparseVector(indices=terms.indices, values=terms.values)


def _cosine(stored: Any, query: FloatVector) -> float | None:
    """Cosine of a returned vector with the query (a point may lack a named vector)."""
    if not isinstance(stored, list) or not stored:
        return None
    vec = np.asarray(stored, dtype=np.float32)
    denom = float(np.linalg.norm(vec) * np.linalg.norm(query))
    return float(vec @ query) / denom if denom else None


def read_tuning(path: Path) -> CollectionTuning:
    """A collection folder's ``tuning.json``; an absent file is no tuning."""
    file = path / _TUNING_FILE
    if not file.is_file():
        return CollectionTuning()
    try:
        data = json.loads(file.read_text())
    except ValueError as exc:
        msg = f"{file} is unreadable ({exc}); fix it or delete it to use the defaults"
        raise CollectionMismatchError(msg) from exc
    return tuning_from_dict(data, str(file))


def write_tuning(path: Path, tuning: CollectionTuning) -> None:
    tmp = path / f"{_TUNING_FILE}.tmp"
    tmp.write_text(json.dumps(tuning_to_dict(tuning), indent=2) + "\n")
    tmp.replace(path / _TUNING_FILE)


class EdgeCollection:
    """One collection: a qdrant-edge shard plus the spec that built it."""

    def __init__(
        self,
        shard: qe.EdgeShard,
        spec: CollectionSpec,
        path: Path,
        *,
        public_url: str | None = None,
    ) -> None:
        self._shard = shard
        self._public_url = public_url
        self._path = path
        self._pending = (path / _OPTIMIZE_PENDING).exists()
        self._tuning = read_tuning(path)
        self._spec = spec

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
        return self._pending

    def _mark_pending(self) -> None:
        if not self._pending:
            (self._path / _OPTIMIZE_PENDING).touch()  # before the write it announces
            self._pending = True

    def engine_config(self) -> dict[str, Any]:
        """The engine's own persisted configuration, as it reads it back."""
        data: dict[str, Any] = json.loads(
            (self._path / _SHARD_DIR / "edge_config.json").read_text()
        )
        return data

    def upsert(self, segments: Sequence[EmbeddedSegment]) -> None:
        if not segments:
            return
        points = []
        for item in segments:
            vector: dict[str, Any] = {
                signal.value: vec.tolist() for signal, vec in item.vectors.items()
            }
            sparse = bm25_document(item.segment.text)
            if sparse is not None:
                vector[BM25_VECTOR] = _sparse(sparse)
            points.append(
                qe.Point(
                    id=point_id_for(item.segment.asset.asset_id, item.segment.index),
                    vector=vector,
                    payload=to_payload(
                        item.segment, public_url=self._public_url, collection=self._spec.name
                    ),
                )
            )
        self._write(points)

    def _write(self, points: list[qe.Point]) -> None:
        # One update operation: the engine logs it as one WAL record, so a crash leaves a
        # batch either written or not, never half an asset.
        self._mark_pending()
        with _engine_errors("write points", self._path):
            self._shard.update(qe.UpdateOperation.upsert_points(points))

    def delete_assets(self, asset_ids: Sequence[str]) -> None:
        if not asset_ids:
            return
        self._mark_pending()
        with _engine_errors("delete points", self._path):
            self._shard.update(qe.UpdateOperation.delete_points_by_filter(_asset_filter(asset_ids)))

    def set_mtimes(self, mtimes: Mapping[str, int]) -> None:
        if not mtimes:
            return
        with _engine_errors("update modification times", self._path):
            for asset_id, mtime_ns in mtimes.items():
                self._shard.update(
                    qe.UpdateOperation.set_payload_by_filter(
                        _asset_filter([asset_id]), {"mtime_ns": mtime_ns}
                    )
                )

    def _scroll(
        self, flt: qe.Filter | None, fields: Sequence[str] | None
    ) -> Iterator[dict[str, Any]]:
        selector: Any = qe.PayloadSelector.Include(list(fields)) if fields else True
        for record in self._records(flt, payload=selector):
            yield dict(record.payload or {})

    def _records(
        self, flt: qe.Filter | None, *, payload: Any = False, vectors: Any = False
    ) -> Iterator[Any]:
        """Every stored point matching ``flt``, page by page (engine records)."""
        offset: Any = None
        while True:
            with _engine_errors("scroll points", self._path):
                records, offset = self._shard.scroll(
                    qe.ScrollRequest(
                        offset=offset,
                        limit=_SCROLL_PAGE,
                        filter=flt,
                        with_payload=payload,
                        with_vector=vectors,
                    )
                )
            yield from records
            if offset is None:
                return

    def payloads(self, fields: Sequence[str]) -> Iterator[dict[str, Any]]:
        """The named payload fields of every stored point (evaluation's view of the assets)."""
        return self._scroll(None, fields)

    def all_vectors(self, signal: Signal) -> tuple[list[str], FloatMatrix]:
        """Ids and ``signal`` vectors (as stored: L2-normalised) of every point holding one."""
        if not signal.dense:
            raise ValueError(f"{signal} is not a dense vector")
        ids: list[str] = []
        rows: list[list[float]] = []
        for record in self._records(_has_vector(signal), vectors=[signal.value]):
            ids.append(str(record.id))
            rows.append(_dense(record, signal))
        return ids, _matrix(rows)

    def vector_count(self, signal: Signal) -> int:
        """How many stored points hold a ``signal`` vector."""
        with _engine_errors("count points", self._path):
            return self._shard.count(qe.CountRequest(filter=_has_vector(signal), exact=True))

    def sample_vectors(self, signal: Signal, n: int, seed: int) -> tuple[list[str], FloatMatrix]:
        """Ids and ``signal`` vectors of up to ``n`` points holding one, drawn at random
        (seeded; ids in scroll order); all of them when there are no more than ``n``."""
        if not signal.dense:
            raise ValueError(f"{signal} is not a dense vector")
        every = [str(r.id) for r in self._records(_has_vector(signal))]
        if n >= len(every):
            return self.all_vectors(signal)
        chosen = sorted(random.Random(seed).sample(range(len(every)), n))
        wanted = [every[i] for i in chosen]
        ids: list[str] = []
        rows: list[list[float]] = []
        for start in range(0, len(wanted), _SCROLL_PAGE):
            with _engine_errors("read vectors", self._path):
                records = self._shard.retrieve(
                    list(wanted[start : start + _SCROLL_PAGE]),
                    with_payload=False,
                    with_vector=[signal.value],
                )
            for record in records:
                ids.append(str(record.id))
                rows.append(_dense(record, signal))
        return ids, _matrix(rows)

    def export_points(self, offset: str | None, limit: int) -> tuple[list[StoredPoint], str | None]:
        with _engine_errors("read points", self._path):
            records, after = self._shard.scroll(
                qe.ScrollRequest(offset=offset, limit=limit, with_payload=True, with_vector=True)
            )
        return [_stored_point(r) for r in records], None if after is None else str(after)

    def get_points(self, ids: Sequence[str]) -> list[StoredPoint]:
        with _engine_errors("read points", self._path):
            records = self._shard.retrieve(list(ids), with_payload=True, with_vector=True)
        return [_stored_point(r) for r in records]

    def import_points(self, points: Sequence[StoredPoint]) -> None:
        if not points:
            return
        engine_points = []
        for point in points:
            vector: dict[str, Any] = {name: list(v) for name, v in point.dense.items()}
            for name, (indices, values) in point.sparse.items():
                vector[name] = qe.SparseVector(indices=list(indices), values=list(values))
            engine_points.append(qe.Point(id=point.id, vector=vector, payload=dict(point.payload)))
        self._write(engine_points)

    def indexed_assets(self) -> list[IndexedAsset]:
        return indexed_assets(self._scroll(None, INDEX_FIELDS))

    def asset_segments(self, asset_id: str) -> list[Segment]:
        segments = [from_payload(p) for p in self._scroll(_asset_filter([asset_id]), None)]
        return sorted(segments, key=lambda s: s.index)

    def search(self, query: VectorQuery) -> list[SearchHit]:
        signals = [s for s in Signal if s.dense and s in query.vectors]
        nearest: list[tuple[Signal, Any]] = [(s, query.vectors[s].tolist()) for s in signals]
        sparse_query = bm25_query(query.keywords)
        if sparse_query is not None:
            nearest.append((Signal.BM25, _sparse(sparse_query)))
        if not nearest:
            return []
        params = search_params_for(query.tuning, exact=query.exact)
        flt = _filter_for(query.filters)
        focus = (
            _filter_for(replace(query.filters, asset_ids=query.focus_assets))
            if query.focus_assets
            else None
        )
        # Only the sparse vector travels back (for BM25 coverage); dense scores come from
        # the engine (``_signal_scores``), not from vectors fetched and multiplied here.
        names: Any = [BM25_VECTOR] if sparse_query is not None else False
        depth = max(query.candidates_per_signal, query.limit)
        if len(nearest) == 1:
            signal, vector = nearest[0]
            scoring = qe.Query.Nearest(vector, using=signal.value)
            request = qe.QueryRequest(
                limit=query.limit,
                query=scoring,
                prefetches=self._candidates(scoring, flt, focus, depth, params) if focus else None,
                filter=None if focus else flt,
                params=params,
                with_payload=True,
                with_vector=names,
            )
        else:
            request = qe.QueryRequest(
                limit=query.limit,
                prefetches=[
                    self._signal_stage(
                        qe.Query.Nearest(vector, using=signal.value), flt, focus, depth, params
                    )
                    for signal, vector in nearest
                ],
                query=_fusion(query),
                with_payload=True,
                with_vector=names,
            )
        with _engine_errors("search", self._path):
            points = self._shard.query(request)
            dense = self._signal_scores(points, [(s, query.vectors[s]) for s in signals])
        hits: list[SearchHit] = []
        for point in points:
            scores = {s: by_id[point.id] for s, by_id in dense.items() if point.id in by_id}
            if sparse_query is not None:
                vectors = point.vector if isinstance(point.vector, dict) else {}
                stored = getattr(vectors.get(BM25_VECTOR), "indices", None)
                share = coverage(stored, sparse_query)
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
        self, points: Sequence[Any], signals: Sequence[tuple[Signal, FloatVector]]
    ) -> dict[Signal, dict[Any, float]]:
        """Each dense signal's cosine for the returned points, scored by the engine: one exact
        query per signal over just those points (cheaper than fetching their vectors)."""
        if not points:
            return {}
        only = qe.Filter(must=[qe.HasIdCondition(point_ids={p.id for p in points})])
        scores: dict[Signal, dict[Any, float]] = {}
        for signal, vector in signals:
            found = self._shard.query(
                qe.QueryRequest(
                    limit=len(points),
                    query=qe.Query.Nearest(vector.tolist(), using=signal.value),
                    filter=only,
                    params=_EXACT,
                    with_payload=False,
                    with_vector=False,
                )
            )
            scores[signal] = {p.id: p.score for p in found}
        return scores

    @staticmethod
    def _candidates(
        scoring: Any, flt: qe.Filter | None, focus: qe.Filter, depth: int, params: Any
    ) -> list[qe.Prefetch]:
        """The best ``depth`` of the whole collection and of the focused assets, pooled."""
        return [
            qe.Prefetch(limit=depth, query=scoring, filter=flt, params=params),
            qe.Prefetch(limit=depth, query=scoring, filter=focus, params=params),
        ]

    def _signal_stage(
        self,
        scoring: Any,
        flt: qe.Filter | None,
        focus: qe.Filter | None,
        depth: int,
        params: Any,
    ) -> qe.Prefetch:
        """One signal's candidate list for fusion; with focused assets, the pooled candidates
        scored again by the same signal (so nothing is counted twice)."""
        if focus is None:
            return qe.Prefetch(limit=depth, query=scoring, filter=flt, params=params)
        return qe.Prefetch(
            limit=depth,
            query=scoring,
            prefetches=self._candidates(scoring, flt, focus, depth, params),
            params=params,
        )

    def stats(self) -> CollectionStats:
        assets_filter = qe.Filter(
            must=[qe.FieldCondition(key="segment_index", match=qe.MatchValue(value=0))]
        )
        with _engine_errors("read statistics", self._path):
            info = self._shard.info()
            points = self._shard.count(qe.CountRequest(exact=True))
            assets = self._shard.count(qe.CountRequest(filter=assets_filter, exact=True))
        return CollectionStats(
            name=self._spec.name,
            points=points,
            assets=assets,
            indexed_vectors=info.indexed_vectors_count,
            segments_on_disk=info.segments_count,
            spec=self._spec,
        )

    def optimize(self) -> None:
        with _engine_errors("optimize", self._path):
            self._shard.optimize()
            self._shard.flush()
        (self._path / _OPTIMIZE_PENDING).unlink(missing_ok=True)
        self._pending = False

    def close(self) -> None:
        with _engine_errors("close", self._path):
            self._shard.flush()
            self._shard.close()


def _ensure_payload_indexes(shard: qe.EdgeShard) -> None:
    """Create the payload indexes filters and ingestion use, where missing."""
    existing = set(shard.info().payload_schema)
    wanted: list[tuple[str, Any]] = [
        *((name, qe.PayloadSchemaType.Keyword) for name in KEYWORD_FIELDS),
        *((name, qe.KeywordIndexParams(prefix=True)) for name in PREFIX_FIELDS),
        *((name, qe.PayloadSchemaType.Integer) for name in INTEGER_FIELDS),
        *((name, qe.PayloadSchemaType.Float) for name in FLOAT_FIELDS),
    ]
    missing = [(name, schema) for name, schema in wanted if name not in existing]
    for name, schema in missing:
        shard.update(qe.UpdateOperation.create_field_index(name, schema))
    if missing:
        shard.flush()


def _has_bm25(shard_dir: Path) -> bool:
    try:
        config = json.loads((shard_dir / "edge_config.json").read_text())
    except (OSError, ValueError):
        return True  # let the engine report what is wrong with it
    return BM25_VECTOR in (config.get("sparse_vectors") or {})


class EdgeVectorStore:
    """Collections as qdrant-edge shards under ``root`` (one directory each)."""

    def __init__(
        self, root: Path, *, max_search_threads: int = 1, public_url: str | None = None
    ) -> None:
        """``public_url``: the service as users reach it, for thumbnail links in payloads."""
        self._root = root
        self._public_url = public_url
        self._max_search_threads = max_search_threads
        self._open: dict[str, EdgeCollection] = {}
        self._held: dict[str, qe.EdgeShard] = {}  # opened by hold(), before models are known
        self._lock = threading.Lock()
        self._aliases_cache: tuple[tuple[int, int, int], dict[str, str]] | None = None

    def _aliases(self) -> dict[str, str]:
        """``aliases.json``: name -> physical collection (a folder), written by re-indexing.

        Every open of a collection by name reads it (a ``reindex`` in another process switches
        names), so it is parsed again only when the file changed: one stat a request."""
        file = self._root / _ALIASES_FILE
        try:
            st = file.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._aliases_cache
        if cached is not None and cached[0] == stamp:
            return dict(cached[1])
        try:
            data = json.loads(file.read_text())
        except ValueError as exc:
            msg = f"{file} is unreadable ({exc}); fix it or delete it (names then mean folders)"
            raise CollectionMismatchError(msg) from exc
        aliases = {str(k): str(v) for k, v in data.items()}
        self._aliases_cache = (stamp, aliases)
        return dict(aliases)

    def resolve(self, name: str) -> str:
        return self._aliases().get(validate_collection_name(name), name)

    def _dir(self, name: str) -> Path:
        return self._root / self.resolve(name)

    def exists(self, name: str) -> bool:
        return (self._dir(name) / _SPEC_FILE).is_file()

    def names(self) -> list[str]:
        if not self._root.is_dir():
            return []
        aliases = self._aliases()
        folders = {d.name for d in self._root.iterdir() if (d / _SPEC_FILE).is_file()}
        hidden = set(aliases.values())
        return sorted({n for n in folders if n not in hidden} | set(aliases))

    def switch_alias(self, name: str, target: str) -> str | None:
        """Point ``name`` at the folder ``target`` by replacing ``aliases.json`` in one rename.

        A service reading through ``name`` opens ``target`` on its next request; the collection
        it had open stays open (and locked) until it stops, so drop the old one after that.
        """
        validate_collection_name(name)
        if not (self._root / validate_collection_name(target) / _SPEC_FILE).is_file():
            raise CollectionNotFoundError(target)
        aliases = self._aliases()
        before = aliases.get(name, name if (self._root / name / _SPEC_FILE).is_file() else None)
        if target == name:
            aliases.pop(name, None)
        else:
            aliases[name] = target
        tmp = self._root / f"{_ALIASES_FILE}.tmp"
        tmp.write_text(json.dumps(aliases, indent=2, sort_keys=True) + "\n")
        tmp.replace(self._root / _ALIASES_FILE)
        return before if before != target else None

    def drop(self, name: str) -> None:
        """Delete the folder ``name`` (a physical collection no alias points at)."""
        validate_collection_name(name)
        if name in self._aliases().values():
            msg = f"collection {name!r} is what an alias points at; switch the alias first"
            raise CollectionMismatchError(msg)
        path = self._root / name
        if not (path / _SPEC_FILE).is_file():
            raise CollectionNotFoundError(name)
        with self._lock:
            collection = self._open.pop(name, None)
            held = self._held.pop(name, None)
        if collection is not None:
            collection.close()
        if held is not None:
            with _engine_errors("close", path):
                held.close()
        # Taking the engine's lock proves no other process has it open before anything goes.
        stored = self._read_spec(path / _SPEC_FILE)
        if (path / _SHARD_DIR / "edge_config.json").is_file():
            with _engine_errors("close", path):
                self._load_shard(stored, path / _SHARD_DIR).close()
        shutil.rmtree(path)

    def save_tuning(self, name: str, tuning: CollectionTuning) -> None:
        path = self._dir(name)
        if not (path / _SPEC_FILE).is_file():
            raise CollectionNotFoundError(name)
        write_tuning(path, tuning)
        with self._lock:
            if path.name in self._open:
                self._open[path.name].use_tuning(tuning)

    def hold(self, name: str) -> None:
        """Open an existing collection's engine now, taking its lock, before models load.

        A server that cannot have its collection then fails in a second instead of after
        loading models; ``open`` later checks the models against it and takes it over.
        """
        with self._lock:
            path = self._dir(name)
            key = path.name
            if key in self._open or key in self._held or not self.exists(name):
                return
            stored = self._read_spec(path / _SPEC_FILE)
            if (path / _SHARD_DIR / "edge_config.json").is_file():
                self._held[key] = self._load_shard(stored, path / _SHARD_DIR)

    def open_stored(self, name: str) -> EdgeCollection:
        """An existing collection as it was built, opened before any model is loaded: planning
        an ingest run needs none. A later ``open(spec)`` checks the models against it."""
        with self._lock:
            path = self._dir(name)
            key = path.name
            if key in self._open:
                return self._open[key]
            if not (path / _SPEC_FILE).is_file():
                raise CollectionNotFoundError(name)
            stored = self._read_spec(path / _SPEC_FILE)
            shard_dir = path / _SHARD_DIR
            if key in self._held:
                shard = self._held.pop(key)
            elif (shard_dir / "edge_config.json").is_file():
                shard = self._load_shard(stored, shard_dir)
            else:
                shard = self._create_shard(stored, shard_dir)
            with _engine_errors("open the collection", path):
                _ensure_payload_indexes(shard)
            collection = EdgeCollection(shard, stored, path, public_url=self._public_url)
            self._open[key] = collection
            return collection

    def open(
        self, spec: CollectionSpec, *, create: bool, require_index_settings: bool = False
    ) -> EdgeCollection:
        with self._lock:
            key = self._dir(spec.name).name
            if key in self._open:
                collection = self._open[key]
                check_compatible(
                    collection.spec, spec, require_index_settings=require_index_settings
                )
                return collection
            collection = self._open_unlocked(
                spec, create=create, require_index_settings=require_index_settings
            )
            self._open[key] = collection
            return collection

    def _open_unlocked(
        self, spec: CollectionSpec, *, create: bool, require_index_settings: bool
    ) -> EdgeCollection:
        path = self._dir(spec.name)
        spec_file = path / _SPEC_FILE
        if not spec_file.is_file():
            if not create:
                raise CollectionNotFoundError(spec.name)
            if (path / _SHARD_DIR).exists():
                msg = (
                    f"{path / _SHARD_DIR} holds engine files but no {_SPEC_FILE}: refusing to "
                    "guess which models built it. Move the directory away to start afresh."
                )
                raise CollectionMismatchError(msg)
            # The spec is written first, so a crash before the shard exists is repaired by
            # the next open (below) instead of leaving an unexplained directory.
            path.mkdir(parents=True, exist_ok=True)
            tmp = path / f"{_SPEC_FILE}.tmp"
            tmp.write_text(json.dumps(spec_to_dict(spec), indent=2))
            tmp.replace(spec_file)
        stored = self._read_spec(spec_file)
        check_compatible(stored, spec, require_index_settings=require_index_settings)
        shard_dir = path / _SHARD_DIR
        if path.name in self._held:
            shard = self._held.pop(path.name)
            with _engine_errors("open the collection", path):
                _ensure_payload_indexes(shard)
        elif (shard_dir / "edge_config.json").is_file():
            shard = self._load_shard(stored, shard_dir)
            with _engine_errors("open the collection", path):
                _ensure_payload_indexes(shard)  # collections from older versions lack some
        else:
            shard = self._create_shard(stored, shard_dir)
        return EdgeCollection(shard, stored, path, public_url=self._public_url)

    @staticmethod
    def _read_spec(spec_file: Path) -> CollectionSpec:
        try:
            return spec_from_dict(json.loads(spec_file.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"{spec_file} is unreadable ({exc}); the collection cannot be opened safely"
            raise CollectionMismatchError(msg) from exc

    def _config(self, spec: CollectionSpec, *, bm25: bool = True) -> qe.EdgeConfig:
        return edge_config_for(
            {Signal.CLIP.value: spec.clip.dim, Signal.TEXT.value: spec.text.dim},
            spec.quantization,
            max_search_threads=self._max_search_threads,
            bm25=bm25,
        )

    def _load_shard(self, spec: CollectionSpec, shard_dir: Path) -> qe.EdgeShard:
        """Open a built shard with today's search threads; one built before BM25 gains it
        (its existing points get BM25 vectors when they are next written)."""
        bm25 = _has_bm25(shard_dir)
        with _engine_errors("open the collection", shard_dir.parent):
            shard = qe.EdgeShard.load(str(shard_dir), self._config(spec, bm25=bm25))
            if not bm25:
                shard.update(
                    qe.UpdateOperation.create_sparse_vector(BM25_VECTOR, modifier=qe.Modifier.Idf)
                )
                shard.flush()
        return shard

    def _create_shard(self, spec: CollectionSpec, shard_dir: Path) -> qe.EdgeShard:
        shard_dir.mkdir(parents=True, exist_ok=True)
        with _engine_errors("create the collection", shard_dir.parent):
            shard = qe.EdgeShard.create(str(shard_dir), self._config(spec))
            _ensure_payload_indexes(shard)
        return shard

    def close(self) -> None:
        with self._lock:
            errors: list[Exception] = []
            for collection in self._open.values():
                try:
                    collection.close()
                except StoreError as exc:
                    errors.append(exc)
            for name, shard in self._held.items():
                try:
                    with _engine_errors("close", self._root / name):
                        shard.close()
                except StoreError as exc:
                    errors.append(exc)
            self._open.clear()
            self._held.clear()
        if errors:
            raise errors[0]
