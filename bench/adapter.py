"""The embedded adapter's share of a search: ``EdgeCollection.search`` against the bare engine.

Writes ``--n`` points with a 512-d ``clip`` and a 384-d ``text`` vector (random unit vectors; the
time does not depend on their values) and a caption each, then times a fused 24-hit text search
(clip + text + BM25, the service's shape) through the adapter and the same engine query alone.
The difference is what the adapter adds: per-signal scores, payload conversion. Run from the
repository root::

    .venv/bin/python -m bench.adapter [--n 5000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from app.adapters.edge_store import EdgeVectorStore, search_params_for
from app.core.models import (
    Asset,
    BinaryEncoding,
    CollectionSpec,
    EmbeddedSegment,
    EmbeddingModelInfo,
    Modality,
    QuantizationSpec,
    QueryEncoding,
    Segment,
    SegmentKind,
    Signal,
    VectorQuery,
)

SPEC = CollectionSpec(
    name="bench-adapter",
    clip=EmbeddingModelInfo("clip", 512, "none", aligned=True),
    text=EmbeddingModelInfo("text", 384, "w", aligned=True),
    quantization=QuantizationSpec(
        encoding=BinaryEncoding.TWO_BITS,
        query_encoding=QueryEncoding.SCALAR4,
        always_ram=True,
        hnsw_m=16,
        hnsw_ef_construct=100,
    ),
)


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    m = rng.normal(size=(n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _timed_ms(fn: object, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    clip, text = _unit(rng, args.n, 512), _unit(rng, args.n, 384)
    store = EdgeVectorStore(Path(tempfile.mkdtemp(prefix="mmrag-bench-adapter-")))
    try:
        collection = store.open(SPEC, create=True)
        items = []
        for i in range(args.n):
            asset = Asset(
                asset_id=f"{i:032x}",
                source=f"/lib/{i}.jpg",
                modality=Modality.IMAGE,
                mime="image/jpeg",
                size_bytes=1,
                content_sha256="0",
                ingested_at=datetime.now(UTC),
                title=str(i),
                caption=f"caption number {i}",
            )
            segment = Segment(
                asset=asset, index=0, count=1, kind=SegmentKind.IMAGE, text=f"caption {i} words"
            )
            items.append(EmbeddedSegment(segment, {Signal.CLIP: clip[i], Signal.TEXT: text[i]}))
        for start in range(0, args.n, 1000):
            collection.upsert(items[start : start + 1000])
        collection.optimize()
        query = VectorQuery(
            {Signal.CLIP: clip[3], Signal.TEXT: text[3]}, limit=24, keywords="caption words"
        )
        params = search_params_for(query.tuning)
        shard = collection._shard  # the bare engine, for comparison
        bm25 = qe.Bm25(qe.Bm25Config(language="english")).embed_query("caption words")
        bare = qe.QueryRequest(
            limit=24,
            prefetches=[
                qe.Prefetch(
                    limit=64, query=qe.Query.Nearest(clip[3].tolist(), using="clip"), params=params
                ),
                qe.Prefetch(
                    limit=64, query=qe.Query.Nearest(text[3].tolist(), using="text"), params=params
                ),
                qe.Prefetch(limit=64, query=qe.Query.Nearest(bm25, using="bm25"), params=params),
            ],
            query=qe.Fusion.Dbsf(),
            with_payload=True,
        )
        for _ in range(20):
            collection.search(query)
            shard.query(bare)
        adapter = _timed_ms(lambda: collection.search(query), args.runs)
        engine = _timed_ms(lambda: shard.query(bare), args.runs)
    finally:
        store.close()
    print(f"{args.n} points (512 + 384 dims + BM25), fused 24-hit search, median of {args.runs}")
    print(f"engine query alone: {engine:.2f} ms")
    print(f"through the adapter (per-signal scores, payloads): {adapter:.2f} ms")
    print(f"the adapter's share: {adapter - engine:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
