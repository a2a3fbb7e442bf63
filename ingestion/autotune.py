"""``python -m ingestion autotune --collection NAME --target-recall 0.98``: the fastest search
setting whose recall@10 against exact search meets a target, measured on the collection's own
vectors.

For each dense signal (``clip``, ``text``) a sample of the stored vectors (``--sample``, 200)
serves as queries; their exact top-10 over the stored vectors (numpy, cosine) is the ground
truth. Every build-time configuration (binary encoding 1/1.5/2 bits x query encoding
default/8-bit/4-bit) is built as a temporary shard from the collection's vectors, with the
service's own ``edge_config_for`` and the collection's HNSW graph settings, and searched at
every query-time setting (oversampling 1/2/4/8 x hnsw_ef 64/128/256, rescore on), one query at
a time on one search thread. A setting's recall is that of its worst signal; its latency the
p50 over all queries (each query's median of ``--rounds`` interleaved rounds).

The winner is the fastest setting that meets the target; settings within 5 % of the fastest
count as tied, and the tie goes to fewer bits, then lower oversampling, then lower hnsw_ef.
``--apply`` saves the winner's query-time knobs to the collection's ``tuning.json`` when its
build-time part is the collection's; ``--rebuild-into NEW`` copies every point (vectors,
sparse BM25 vectors and payload, nothing re-embedded) into a new collection built with the
winner's encodings, copies the thumbnails, and saves the knobs there.

Exit status: 0 done; 1 no setting meets the target, or ``--apply`` needs ``--rebuild-into``;
2 cannot run. No model is loaded. May import the core, ``app.wiring``, ``app.settings`` and
the edge store adapter (inside functions).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from app.core.errors import ConflictError, InputError, StoreError
from app.core.models import (
    BinaryEncoding,
    CollectionTuning,
    QuantizationSpec,
    QueryEncoding,
    SearchTuning,
    Signal,
)
from app.core.ports import FloatMatrix

if TYPE_CHECKING:
    from app.core.ports import VectorCollection, VectorStore
    from app.settings import Settings

EXIT_OK, EXIT_NOT_MET, EXIT_CANNOT_RUN = 0, 1, 2
_COPY_PAGE = 256
TOP_K = 10
OVERSAMPLINGS = (1.0, 2.0, 4.0, 8.0)
HNSW_EFS = (64, 128, 256)
MAX_VECTORS = 20_000  # per signal, for the temporary shards
TIE = 0.05  # settings this much slower than the fastest still count as tied
_UPSERT_BATCH = 1000
_WARMUP = 5
_SCORE_EPS = 1e-5  # a found point scoring this close to the k-th exact score counts (ties)
_BITS = {
    BinaryEncoding.ONE_BIT: 1.0,
    BinaryEncoding.ONE_AND_HALF_BITS: 1.5,
    BinaryEncoding.TWO_BITS: 2.0,
}
_QUERY_ORDER = {QueryEncoding.DEFAULT: 0, QueryEncoding.SCALAR4: 1, QueryEncoding.SCALAR8: 2}

Ids = npt.NDArray[np.int64]


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True, slots=True)
class Candidate:
    """One setting: its build-time part (encodings) and query-time part (oversampling, ef)."""

    encoding: BinaryEncoding
    query_encoding: QueryEncoding
    oversampling: float
    hnsw_ef: int

    @property
    def build(self) -> tuple[BinaryEncoding, QueryEncoding]:
        return self.encoding, self.query_encoding

    @property
    def tuning(self) -> SearchTuning:
        return SearchTuning(oversampling=self.oversampling, hnsw_ef=self.hnsw_ef, rescore=True)

    @property
    def name(self) -> str:
        return (
            f"{self.encoding.value}/{self.query_encoding.value}/"
            f"os{self.oversampling:g}/ef{self.hnsw_ef}"
        )

    def spec(self, base: QuantizationSpec) -> QuantizationSpec:
        """``base`` (HNSW graph, always_ram) with this setting's encodings."""
        return replace(base, encoding=self.encoding, query_encoding=self.query_encoding)

    def preference(self) -> tuple[float, float, int, int]:
        """Among tied settings: fewer bits, lower oversampling, lower ef, cheaper query code."""
        return (
            _BITS[self.encoding],
            self.oversampling,
            self.hnsw_ef,
            _QUERY_ORDER[self.query_encoding],
        )


def grid(
    encodings: Sequence[BinaryEncoding] = tuple(BinaryEncoding),
    query_encodings: Sequence[QueryEncoding] = tuple(QueryEncoding),
) -> list[Candidate]:
    """Every combination, grouped by build (encoding, query encoding)."""
    return [
        Candidate(e, q, x, ef)
        for e in encodings
        for q in query_encodings
        for x in OVERSAMPLINGS
        for ef in HNSW_EFS
    ]


# --------------------------------------------------------------------------- the data


@dataclass(frozen=True, slots=True)
class SignalData:
    """One signal's sampled stored vectors, their temporary-shard ids, and the queries."""

    signal: Signal
    point_ids: Ids  # temporary-shard id of each row of ``vectors``
    vectors: FloatMatrix  # L2-normalised
    queries: FloatMatrix
    truth: Ids  # per query: rows of ``vectors`` of its exact top-k, best first
    kth_score: npt.NDArray[np.float32]  # per query: the k-th best exact score

    @property
    def k(self) -> int:
        return int(self.truth.shape[1])


@dataclass(frozen=True, slots=True)
class Sample:
    """What the temporary shards hold and what they are asked."""

    points: int  # temporary-shard ids are 0..points-1
    signals: tuple[SignalData, ...]
    stored: dict[Signal, int] = field(default_factory=dict)  # vectors in the collection

    @property
    def dims(self) -> dict[str, int]:
        return {s.signal.value: int(s.vectors.shape[1]) for s in self.signals}

    @property
    def queries(self) -> int:
        return sum(len(s.queries) for s in self.signals)

    @property
    def capped(self) -> bool:
        return any(len(s.vectors) < self.stored.get(s.signal, 0) for s in self.signals)


def _normalised(matrix: FloatMatrix) -> FloatMatrix:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out: FloatMatrix = (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)
    return out


def exact_top_k(vectors: FloatMatrix, queries: FloatMatrix, k: int) -> tuple[Ids, FloatMatrix]:
    """Per query: the rows of ``vectors`` with the ``k`` largest dot products (best first) and
    those scores."""
    scores = queries @ vectors.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    rows: Ids = np.take_along_axis(top, order, axis=1).astype(np.int64)
    best: FloatMatrix = np.take_along_axis(top_scores, order, axis=1).astype(np.float32)
    return rows, best


def sample_collection(
    collection: VectorCollection, *, queries: int, max_vectors: int, seed: int
) -> Sample:
    """Up to ``max_vectors`` stored vectors per dense signal, and ``queries`` of them as
    queries with their exact top-10."""
    temp: dict[str, int] = {}
    rng = np.random.default_rng(seed)
    signals: list[SignalData] = []
    stored: dict[Signal, int] = {}
    for signal in (s for s in Signal if s.dense):
        stored[signal] = collection.vector_count(signal)
        ids, matrix = collection.sample_vectors(signal, max_vectors, seed)
        if not ids:
            continue
        vectors = _normalised(matrix)
        point_ids = np.array([temp.setdefault(i, len(temp)) for i in ids], dtype=np.int64)
        rows = np.sort(rng.choice(len(ids), size=min(queries, len(ids)), replace=False))
        k = min(TOP_K, len(ids))
        truth, best = exact_top_k(vectors, vectors[rows], k)
        signals.append(SignalData(signal, point_ids, vectors, vectors[rows], truth, best[:, -1]))
    return Sample(points=len(temp), signals=tuple(signals), stored=stored)


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True, slots=True)
class Result:
    """One setting's recall@10 per signal and its per-query latency (ms)."""

    candidate: Candidate
    recall_by_signal: dict[Signal, float]
    latencies_ms: npt.NDArray[np.float64] = field(repr=False)

    @property
    def recall(self) -> float:
        """The worst signal's recall (the encodings and knobs apply to both vectors)."""
        return min(self.recall_by_signal.values())

    @property
    def p50(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.latencies_ms, 95))


def recall_of(found: Sequence[Sequence[int]], data: SignalData, row_of: dict[int, int]) -> float:
    """Mean over queries of the share of the exact top-k that was found; a found point whose
    exact score ties the k-th one counts (duplicates and self-matches make ties common)."""
    total = 0
    for q, ids in enumerate(found):
        rows = [row_of[i] for i in ids[: data.k] if i in row_of]
        scores = data.vectors[rows] @ data.queries[q] if rows else np.zeros(0)
        total += min(data.k, int(np.sum(scores >= data.kth_score[q] - _SCORE_EPS)))
    return total / (data.k * len(found))


@contextlib.contextmanager
def _engine(what: str) -> Iterator[None]:
    """Engine failures (plain ``Exception`` from qdrant-edge) as StoreError; bugs surface."""
    try:
        yield
    except Exception as exc:
        if type(exc) is not Exception:
            raise
        raise StoreError(f"autotune could not {what}: {exc}") from exc


def _points(sample: Sample) -> Iterator[list[Any]]:
    """The temporary shard's points in batches (vectors become lists one batch at a time)."""
    import qdrant_edge as qe

    rows_of = []
    for data in sample.signals:
        row_of = np.full(sample.points, -1, dtype=np.int64)
        row_of[data.point_ids] = np.arange(len(data.point_ids))
        rows_of.append(row_of)
    for start in range(0, sample.points, _UPSERT_BATCH):
        batch = []
        for pid in range(start, min(start + _UPSERT_BATCH, sample.points)):
            vector: dict[str, Any] = {
                data.signal.value: data.vectors[row_of[pid]].tolist()
                for data, row_of in zip(sample.signals, rows_of, strict=True)
                if row_of[pid] >= 0
            }
            batch.append(qe.Point(id=pid, vector=vector))
        yield batch


def measure_build(
    sample: Sample,
    candidates: Sequence[Candidate],
    base: QuantizationSpec,
    *,
    rounds: int,
) -> tuple[list[Result], float]:
    """Builds one temporary shard for the candidates' shared encodings and measures each of
    them; returns the results and the build time (s)."""
    import qdrant_edge as qe

    from app.adapters.edge_store import edge_config_for, search_params_for

    build_spec = candidates[0].spec(base)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autotune-") as tmp:
        config = edge_config_for(sample.dims, build_spec, max_search_threads=1, bm25=False)
        with _engine(f"build a temporary {build_spec.encoding.value} shard"):
            shard = qe.EdgeShard.create(str(Path(tmp) / "shard"), config)
        try:
            with _engine("write the temporary shard"):
                for batch in _points(sample):
                    shard.update(qe.UpdateOperation.upsert_points(batch))
                shard.optimize()
            built = time.perf_counter() - started
            requests = [
                [
                    [
                        qe.QueryRequest(
                            limit=data.k,
                            query=qe.Query.Nearest(q, using=data.signal.value),
                            params=search_params_for(c.tuning),
                            with_payload=False,
                        )
                        for q in data.queries.tolist()
                    ]
                    for data in sample.signals
                ]
                for c in candidates
            ]
            with _engine("search the temporary shard"):
                results = _time_all(shard, candidates, requests, sample, rounds=rounds)
        finally:
            shard.close()
    return results, built


def _time_all(
    shard: Any,
    candidates: Sequence[Candidate],
    requests: list[list[list[Any]]],
    sample: Sample,
    *,
    rounds: int,
) -> list[Result]:
    """Rounds go over all candidates in turn, so a burst of load elsewhere lands on one round
    of several settings, not on every measurement of one."""
    for per_signal in requests:
        for batch in per_signal:
            for request in batch[:_WARMUP]:
                shard.query(request)
    n = sample.queries
    times = np.zeros((len(candidates), rounds, n), dtype=np.float64)
    found: list[list[list[list[int]]]] = [[] for _ in candidates]
    gc.collect()
    gc.disable()  # keep Python's collector out of the engine's latency
    try:
        for r in range(rounds):
            for c, per_signal in enumerate(requests):
                column = 0
                for batch in per_signal:
                    ids: list[list[int]] = []
                    for request in batch:
                        t0 = time.perf_counter_ns()
                        points = shard.query(request)
                        times[c, r, column] = (time.perf_counter_ns() - t0) / 1e6
                        column += 1
                        ids.append([int(p.id) for p in points])
                    if r == 0:
                        found[c].append(ids)
    finally:
        gc.enable()
    row_maps = [
        {pid: row for row, pid in enumerate(data.point_ids.tolist())} for data in sample.signals
    ]
    return [
        Result(
            candidate,
            {
                data.signal: recall_of(found[c][s], data, row_maps[s])
                for s, data in enumerate(sample.signals)
            },
            np.median(times[c], axis=0),
        )
        for c, candidate in enumerate(candidates)
    ]


def sweep(
    sample: Sample,
    candidates: Sequence[Candidate],
    base: QuantizationSpec,
    *,
    rounds: int,
    report: Callable[[str], None],
) -> list[Result]:
    """Every candidate measured, one temporary shard per build."""
    builds: dict[tuple[BinaryEncoding, QueryEncoding], list[Candidate]] = {}
    for c in candidates:
        builds.setdefault(c.build, []).append(c)
    results: list[Result] = []
    for (encoding, query_encoding), group in builds.items():
        measured, built_s = measure_build(sample, group, base, rounds=rounds)
        best = max(r.recall for r in measured)
        report(
            f"  {encoding.value}/{query_encoding.value}: built in {built_s:.1f} s, "
            f"{len(group)} settings, best recall@10 {best:.4f}"
        )
        results += measured
    return results


def pick(results: Sequence[Result], target: float) -> Result | None:
    """The fastest result meeting ``target``; within ``TIE`` of the fastest, the preferred."""
    meeting = [r for r in results if r.recall >= target]
    if not meeting:
        return None
    fastest = min(r.p50 for r in meeting)
    tied = [r for r in meeting if r.p50 <= fastest * (1 + TIE)]
    return min(tied, key=lambda r: (*r.candidate.preference(), r.p50))


# --------------------------------------------------------------------------- output


def print_table(
    results: Sequence[Result],
    sample: Sample,
    *,
    target: float,
    winner: Result | None,
    current: Candidate,
    console: Console,
) -> None:
    """Every setting, fastest first; the winner and the collection's current setting marked."""
    signals = [d.signal for d in sample.signals]
    headers = [
        "",
        "encoding",
        "query enc",
        "oversampling",
        "hnsw_ef",
        *(f"recall {s.value}" for s in signals),
        f"recall@{TOP_K}",
        "p50 ms",
        "p95 ms",
    ]
    rows: list[tuple[list[str], str | None]] = []
    for r in sorted(results, key=lambda r: r.p50):
        c = r.candidate
        mark = ("*" if r is winner else "") + ("=" if c == current else "")
        style = "bold green" if r is winner else ("dim" if r.recall < target else None)
        cells = [
            mark,
            c.encoding.value,
            c.query_encoding.value,
            f"{c.oversampling:g}",
            str(c.hnsw_ef),
            *(f"{r.recall_by_signal[s]:.4f}" for s in signals),
            f"{r.recall:.4f}",
            f"{r.p50:.3f}",
            f"{r.p95:.3f}",
        ]
        rows.append((cells, style))
    table = Table(
        title=f"Search settings by p50 latency (target recall@{TOP_K} >= {target:g})",
        caption="* winner   = the collection's current setting   dim: below the target",
    )
    for i, h in enumerate(headers):
        # never narrower than its cells: a table wider than the terminal scrolls, not "…"
        width = max(len(h), *(len(cells[i]) for cells, _ in rows))
        table.add_column(h, justify="left" if i < 2 else "right", min_width=width)
    for cells, style in rows:
        table.add_row(*cells, style=style)
    console.print(table)


def describe(r: Result) -> str:
    c = r.candidate
    return (
        f"{c.encoding.value} codes, {c.query_encoding.value} query encoding, oversampling "
        f"{c.oversampling:g}, hnsw_ef {c.hnsw_ef}: recall@{TOP_K} {r.recall:.4f}, "
        f"p50 {r.p50:.3f} ms"
    )


# --------------------------------------------------------------------------- applying


def thumbnail_rewriter(old: str, new: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A payload rewrite: thumbnail paths under ``thumbnails/<old>/`` move to ``<new>/``."""
    prefix, replacement = f"thumbnails/{old}/", f"thumbnails/{new}/"

    def rewrite(payload: dict[str, Any]) -> dict[str, Any]:
        for key in ("thumbnail", "segment_thumbnail"):
            value = payload.get(key)
            if isinstance(value, str) and value.startswith(prefix):
                payload[key] = replacement + value[len(prefix) :]
        return payload

    return rewrite


def check_new_collection(
    store: VectorStore, old_name: str, new_name: str, *, thumbnails_dir: Path
) -> None:
    """Refuse a ``--rebuild-into`` name that is invalid, the source's own, or taken."""
    from app.core.collections import validate_collection_name

    validate_collection_name(new_name)
    if new_name == old_name:
        raise InputError("--rebuild-into needs a new collection name, not the collection's own")
    if store.exists(new_name):
        msg = f"collection {new_name!r} exists already; choose another --rebuild-into name"
        raise ConflictError(msg)
    if (thumbnails_dir / new_name).exists():
        msg = (
            f"{thumbnails_dir / new_name} exists already; move it away or choose another "
            "--rebuild-into name"
        )
        raise ConflictError(msg)


def _copy_points(
    source: VectorCollection,
    target: VectorCollection,
    rewrite: Callable[[dict[str, Any]], dict[str, Any]],
) -> int:
    """Every point of ``source`` written into ``target`` as stored (vectors not re-embedded),
    its payload through ``rewrite``; returns how many."""
    copied, offset = 0, None
    while True:
        points, offset = source.export_points(offset, _COPY_PAGE)
        target.import_points([replace(p, payload=rewrite(dict(p.payload))) for p in points])
        copied += len(points)
        if offset is None:
            return copied


def rebuild_into(
    store: VectorStore,
    source: VectorCollection,
    new_name: str,
    winner: Candidate,
    *,
    thumbnails_dir: Path,
    note: str,
) -> tuple[int, bool]:
    """A new collection built with the winner's encodings holding every point of ``source``
    (copied, not re-embedded), its thumbnails, and the winner's knobs in its tuning.json.
    Returns the points copied and whether a thumbnails folder was copied."""
    old_name = source.spec.name
    check_new_collection(store, old_name, new_name, thumbnails_dir=thumbnails_dir)
    old_thumbs, new_thumbs = thumbnails_dir / old_name, thumbnails_dir / new_name
    spec = replace(source.spec, name=new_name, quantization=winner.spec(source.spec.quantization))
    target = store.open(spec, create=True, require_index_settings=True)
    try:
        copied = _copy_points(source, target, thumbnail_rewriter(old_name, new_name))
        target.optimize()
    except StoreError as exc:
        msg = (
            f"{exc}. Collection {new_name!r} is only partly written: delete its folder "
            f"(collections/{new_name} in the data directory) and run again"
        )
        raise StoreError(msg) from exc
    copied_thumbs = old_thumbs.is_dir()
    if copied_thumbs:
        shutil.copytree(old_thumbs, new_thumbs)
    old = source.tuning
    store.save_tuning(
        new_name,
        CollectionTuning(thresholds=old.thresholds, search=winner.tuning, notes=(*old.notes, note)),
    )
    return copied, copied_thumbs


# --------------------------------------------------------------------------- command


def _choices(kind: type[BinaryEncoding] | type[QueryEncoding]) -> Callable[[str], list[Any]]:
    def parse(value: str) -> list[Any]:
        try:
            return [kind(v.strip()) for v in value.split(",") if v.strip()]
        except ValueError as exc:
            allowed = ", ".join(m.value for m in kind)
            raise argparse.ArgumentTypeError(f"{exc}; choose from {allowed}") from exc

    return parse


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "autotune",
        help="find the fastest search setting that meets a recall@10 target",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--collection", help="collection name (default: settings' collection)")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: settings)")
    parser.add_argument(
        "--target-recall",
        type=float,
        default=0.98,
        help="recall@10 against exact search to reach, on every signal (default 0.98)",
    )
    parser.add_argument(
        "--sample", type=_positive, default=200, help="query vectors per signal (default 200)"
    )
    parser.add_argument(
        "--max-vectors",
        type=_positive,
        default=MAX_VECTORS,
        help=f"stored vectors per signal in the temporary shards (default {MAX_VECTORS})",
    )
    parser.add_argument(
        "--encodings",
        type=_choices(BinaryEncoding),
        default=list(BinaryEncoding),
        help="comma-separated binary encodings to try (default 1bit,1.5bit,2bit)",
    )
    parser.add_argument(
        "--query-encodings",
        type=_choices(QueryEncoding),
        default=list(QueryEncoding),
        help="comma-separated query encodings to try (default default,8bit,4bit)",
    )
    parser.add_argument("--rounds", type=_positive, default=3, help="timed rounds (median)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument(
        "--apply",
        action="store_true",
        help="save the winner's query-time knobs to the collection's tuning.json",
    )
    parser.add_argument(
        "--rebuild-into",
        metavar="NEW",
        help="copy the collection into NEW, built with the winner's encodings (implies --apply)",
    )


@dataclass(frozen=True, slots=True)
class AutotuneOptions:
    target_recall: float = 0.98
    sample: int = 200
    max_vectors: int = MAX_VECTORS
    encodings: tuple[BinaryEncoding, ...] = tuple(BinaryEncoding)
    query_encodings: tuple[QueryEncoding, ...] = tuple(QueryEncoding)
    rounds: int = 3
    seed: int = 0
    apply: bool = False
    rebuild_into: str | None = None


def run(args: argparse.Namespace, console: Console) -> int:
    from ingestion.cli import settings_from

    if not args.target_recall > 0:
        raise InputError("--target-recall must be above 0 (recall@10 is 0 to 1)")
    if not args.encodings or not args.query_encodings:
        raise InputError("--encodings and --query-encodings need at least one value each")
    options = AutotuneOptions(
        target_recall=args.target_recall,
        sample=args.sample,
        max_vectors=args.max_vectors,
        encodings=tuple(args.encodings),
        query_encodings=tuple(args.query_encodings),
        rounds=args.rounds,
        seed=args.seed,
        apply=args.apply,
        rebuild_into=args.rebuild_into,
    )
    return autotune(settings_from(args), options, console)


def autotune(settings: Settings, options: AutotuneOptions, console: Console) -> int:
    """The ``autotune`` command on built settings."""
    from app.wiring import build_store, retrieval_options

    name = settings.collection
    store = build_store(settings)
    try:
        if options.rebuild_into:  # before minutes of measuring
            check_new_collection(
                store, name, options.rebuild_into, thumbnails_dir=settings.thumbnails_dir
            )
        collection = store.open_stored(name)
        q = collection.spec.quantization
        knobs = retrieval_options(settings).search_tuning(collection.tuning.search)
        current = Candidate(q.encoding, q.query_encoding, knobs.oversampling, knobs.hnsw_ef)
        started = time.perf_counter()
        sample = sample_collection(
            collection, queries=options.sample, max_vectors=options.max_vectors, seed=options.seed
        )
        if not sample.signals:
            console.print(f"[red]collection {name!r} holds no vectors: ingest into it first[/red]")
            return EXIT_CANNOT_RUN
        _describe_sample(sample, console)
        candidates = grid(options.encodings, options.query_encodings)
        builds = len({c.build for c in candidates})
        console.print(
            f"sweeping {len(candidates)} settings ({builds} temporary "
            f"build{'s' if builds > 1 else ''})…"
        )
        results = sweep(sample, candidates, q, rounds=options.rounds, report=console.print)
        winner = pick(results, options.target_recall)
        print_table(
            results,
            sample,
            target=options.target_recall,
            winner=winner,
            current=current,
            console=console,
        )
        console.print(f"measured in {time.perf_counter() - started:.1f} s")
        if winner is None:
            best = max(results, key=lambda r: (r.recall, -r.p50))
            console.print(
                f"[red]no setting reaches recall@{TOP_K} {options.target_recall:g}[/red] "
                f"(worst signal, {sample.queries} queries). Best found: {describe(best)}."
            )
            if options.target_recall > 1:
                console.print(f"recall@{TOP_K} cannot exceed 1.0: lower --target-recall.")
            else:
                console.print(
                    "The sweep tops out at oversampling 8 and hnsw_ef 256: accept a lower "
                    "target, or try a higher oversampling by hand and measure it with "
                    "`python -m ingestion eval`."
                )
            return EXIT_NOT_MET
        console.print(f"[bold green]winner:[/bold green] {describe(winner)}")
        if not (options.apply or options.rebuild_into):
            console.print("nothing written (add --apply to use it)")
            return EXIT_OK
        note = (
            f"autotune {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: target recall@{TOP_K} "
            f"{options.target_recall:g} on {sample.queries} stored vectors; {describe(winner)}"
        )
        if options.rebuild_into:
            copied, thumbs = rebuild_into(
                store,
                collection,
                options.rebuild_into,
                winner.candidate,
                thumbnails_dir=settings.thumbnails_dir,
                note=note,
            )
            new = options.rebuild_into
            console.print(
                f"rebuilt {name!r} into {new!r}: {copied} points copied (vectors, BM25 and "
                f"payload; nothing re-embedded), built with {winner.candidate.encoding.value} "
                f"codes and {winner.candidate.query_encoding.value} query encoding, indexed; "
                f"search knobs saved to its tuning.json."
            )
            console.print(
                f"thumbnails copied to {settings.thumbnails_dir / new} and the payload's "
                "thumbnail paths point there"
                if thumbs
                else "the collection had no thumbnails folder"
            )
            console.print(
                f"{name!r} is unchanged: point the service at {new!r} (MMRAG_COLLECTION={new}) "
                "and delete the old one when satisfied; ingest into the new one from now on."
            )
            return EXIT_OK
        if winner.candidate.build != current.build:
            console.print(
                f"[yellow]not applied:[/yellow] the winner is built with "
                f"{winner.candidate.encoding.value}/{winner.candidate.query_encoding.value}, "
                f"the collection with {current.encoding.value}/{current.query_encoding.value}; "
                "encodings are fixed when a collection is built. Rerun with --rebuild-into NEW "
                f"to copy it into a new collection, or with --encodings {current.encoding.value}"
                f" --query-encodings {current.query_encoding.value} to tune its query time."
            )
            return EXIT_NOT_MET
        old = collection.tuning
        store.save_tuning(
            name, replace(old, search=winner.candidate.tuning, notes=(*old.notes, note))
        )
        console.print(
            f"written to collection {name!r} (tuning.json): oversampling "
            f"{winner.candidate.oversampling:g}, hnsw_ef {winner.candidate.hnsw_ef}, rescore on;"
            " the service uses it when it next opens the collection"
        )
    finally:
        store.close()
    return EXIT_OK


def _describe_sample(sample: Sample, console: Console) -> None:
    parts = [
        f"{len(d.queries)} {d.signal.value} queries over {len(d.vectors)} stored vectors"
        + (f" of {sample.stored[d.signal]}" if len(d.vectors) < sample.stored[d.signal] else "")
        for d in sample.signals
    ]
    console.print(
        "queries: " + "; ".join(parts) + f" (the collection's own vectors; exact top-{TOP_K} by "
        "cosine is the ground truth, each query's own point included)"
    )
    if sample.capped:
        console.print(
            "[yellow]note:[/yellow] the temporary shards hold a sample of the stored vectors; "
            "on the whole collection the graph is larger and the same recall may need a higher "
            "hnsw_ef or oversampling: check with `python -m ingestion eval`."
        )


__all__ = [
    "AutotuneOptions",
    "Candidate",
    "Result",
    "Sample",
    "add_parser",
    "autotune",
    "exact_top_k",
    "grid",
    "pick",
    "rebuild_into",
    "run",
    "sample_collection",
    "sweep",
    "thumbnail_rewriter",
]
