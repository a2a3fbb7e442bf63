"""Search benchmark: exact search vs binary quantization (BQ) in the embedded Qdrant engine.

What it measures, on ``--n`` points (default 100,000) and ``--queries`` held-out queries:

* build time of each build-time configuration (encoding, query encoding, HNSW m/ef_construct):
  upsert of all points, then ``optimize()`` (HNSW graph + binary codes);
* per search setting (rescore, oversampling, hnsw_ef are query-time, so they share a build):
  p50/p95 latency of one query at a time (ms, ``shard.query`` only, after a warm-up; each
  query's latency is its median over ``--rounds`` rounds interleaved across settings), and
  recall@10 = |engine top-10 ∩ exact top-10| / 10 averaged over the queries, where the exact
  top-10 is a numpy brute-force dot product on the normalised vectors;
* the engine's own exact search (``exact=True``, float vectors) as the latency baseline.

Engine configurations are made only through the service's own ``edge_config_for`` and
``search_params_for`` (``app.adapters.edge_store``), with one search thread, so the figures
are those of what the service ships. The single exception is the ``float-hnsw`` diagnostic
row: the same HNSW graph searched on the float vectors (quantization ignored), which separates
the recall lost to the graph from the recall lost to the binary codes.

Data: real passages embedded with all-MiniLM-L6-v2 (see ``bench.corpus``), or ``--synthetic``
clustered random vectors for a fast run. The first real run harvests (~4 min) and embeds
(~15 min on 2 idle cores, ~35 min when they are shared: the model does ~4k tokens/s and the
passages average 34 tokens) 100k passages; later runs load them from ``bench/.cache/`` and the
full grid then takes ~5 minutes. Output is markdown tables.

The HNSW graph is built by several threads and is not deterministic: recall@10 of the same
setting moves by a few thousandths between runs. Latency is of a shared machine unless yours
is idle; compare rows of one run, not runs.

Run from the repository root::

    .venv/bin/python -m bench.search                       # 100k real passages, full grid
    .venv/bin/python -m bench.search --synthetic --n 20000  # fast smoke run
    .venv/bin/python -m bench.search --quick                # small subset of the grid
    .venv/bin/python -m bench.search --configs '2bit/*,exact' --list
    .venv/bin/python bench/search.py --help
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import qdrant_edge as qe

if not __package__:  # run as ``python bench/search.py``: make ``app`` and ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.adapters.edge_store import edge_config_for, search_params_for
from app.core.models import BinaryEncoding, QuantizationSpec, QueryEncoding, SearchTuning
from bench.corpus import Dataset, Matrix, real_dataset, synthetic_dataset

VECTOR = "text"
TOP_K = 10
UPSERT_BATCH = 2000
DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"
BASE_SPEC = QuantizationSpec(
    encoding=BinaryEncoding.TWO_BITS,
    query_encoding=QueryEncoding.SCALAR8,
    always_ram=True,
    hnsw_m=16,
    hnsw_ef_construct=128,
)
BASE_EF = 128
BASE_TUNING = SearchTuning(hnsw_ef=BASE_EF)
QUICK = ("exact", "1bit/qdefault/os4", "1bit/qdefault/os8", "2bit/q8bit/*")
_SHORT_QUERY = {
    QueryEncoding.DEFAULT: "qdefault",
    QueryEncoding.SCALAR8: "q8bit",
    QueryEncoding.SCALAR4: "q4bit",
}

Ids = npt.NDArray[np.int64]
Mode = Literal["bq", "exact", "float-hnsw"]


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the results: a spec plus how it is searched.

    ``mode`` is ``"bq"`` (the service's search params), ``"exact"`` (the service's exact
    params) or ``"float-hnsw"`` (diagnostic: the HNSW graph on float vectors).
    """

    name: str
    spec: QuantizationSpec
    tuning: SearchTuning = BASE_TUNING
    mode: Mode = "bq"

    @property
    def build_key(self) -> tuple[object, ...]:
        """What the shard must have been built with; settings sharing it share a shard."""
        s = self.spec
        return (s.encoding, s.query_encoding, s.always_ram, s.hnsw_m, s.hnsw_ef_construct)

    def params(self) -> qe.SearchParams:
        if self.mode == "exact":
            return search_params_for(self.tuning, exact=True)
        if self.mode == "float-hnsw":
            ignore = qe.QuantizationSearchParams(ignore=True)
            return qe.SearchParams(hnsw_ef=self.tuning.hnsw_ef, quantization=ignore)
        return search_params_for(self.tuning)


def build_name(spec: QuantizationSpec) -> str:
    return f"{spec.encoding.value}/{_SHORT_QUERY[spec.query_encoding]}"


def _bq(
    spec: QuantizationSpec, *, rescore: bool, oversampling: float, ef: int = BASE_EF
) -> Setting:
    name = f"{build_name(spec)}/os{oversampling:g}"
    name += "" if rescore else "/norescore"
    name += "" if ef == BASE_EF else f"/ef{ef}"
    return Setting(name, spec, SearchTuning(oversampling=oversampling, hnsw_ef=ef, rescore=rescore))


def full_grid() -> list[Setting]:
    """Exact, then per build: rescore at 2/4/8x, rescore off at 4x (1- and 2-bit), float HNSW."""
    builds = [
        (BinaryEncoding.ONE_BIT, (QueryEncoding.DEFAULT, QueryEncoding.SCALAR8)),
        (BinaryEncoding.ONE_AND_HALF_BITS, (QueryEncoding.DEFAULT, QueryEncoding.SCALAR8)),
        (
            BinaryEncoding.TWO_BITS,
            (QueryEncoding.DEFAULT, QueryEncoding.SCALAR8, QueryEncoding.SCALAR4),
        ),
    ]
    grid = [Setting("exact", BASE_SPEC, mode="exact")]
    for encoding, query_encodings in builds:
        for query_encoding in query_encodings:
            spec = replace(BASE_SPEC, encoding=encoding, query_encoding=query_encoding)
            grid += [_bq(spec, rescore=True, oversampling=x) for x in (2.0, 4.0, 8.0)]
            if encoding is not BinaryEncoding.ONE_AND_HALF_BITS:
                grid.append(_bq(spec, rescore=False, oversampling=4.0))
            if (encoding, query_encoding) == (BinaryEncoding.TWO_BITS, QueryEncoding.SCALAR8):
                grid.append(_bq(spec, rescore=True, oversampling=8.0, ef=192))
            grid.append(Setting(f"{build_name(spec)}/float-hnsw", spec, mode="float-hnsw"))
    return grid


def select(grid: list[Setting], patterns: Sequence[str]) -> list[Setting]:
    """The settings whose name matches any glob pattern; exact search is always kept."""
    chosen = [s for s in grid if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]
    exact = [s for s in grid if s.mode == "exact" and s not in chosen]
    return exact + chosen


def by_build(settings: list[Setting]) -> list[list[Setting]]:
    """Settings grouped by build-time configuration, in first-seen order; exact goes first."""
    groups: dict[tuple[object, ...], list[Setting]] = {}
    exact = [s for s in settings if s.mode == "exact"]
    for s in settings:
        if s.mode != "exact":
            groups.setdefault(s.build_key, []).append(s)
    ordered = list(groups.values())
    if exact and ordered:
        ordered[0] = exact + ordered[0]  # exact search runs on whichever shard is built first
    elif exact:
        ordered = [exact]
    return ordered


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True, slots=True)
class Options:
    """How queries are timed: untimed warm-up queries per setting, then timed rounds."""

    warmup: int = 20
    rounds: int = 3


@dataclass(frozen=True, slots=True)
class BuildResult:
    name: str
    upsert_s: float
    optimize_s: float
    segments: int
    indexed: int


@dataclass(frozen=True, slots=True)
class SearchResult:
    setting: Setting
    recall: float
    latencies_ms: npt.NDArray[np.float64] = field(repr=False)

    @property
    def p50(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.latencies_ms, 95))


def exact_top_k(corpus: Matrix, queries: Matrix, k: int = TOP_K, chunk: int = 64) -> Ids:
    """Row i: ids (corpus row numbers) of the k largest dot products with query i, best first."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ corpus.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def _batches(corpus: Matrix, size: int) -> Iterator[list[qe.Point]]:
    for start in range(0, len(corpus), size):
        rows = corpus[start : start + size].tolist()
        yield [
            qe.Point(id=start + i, vector={VECTOR: row}, payload={"i": start + i})
            for i, row in enumerate(rows)
        ]


def build_shard(
    path: Path, spec: QuantizationSpec, corpus: Matrix
) -> tuple[qe.EdgeShard, BuildResult]:
    """A fresh shard at ``path`` holding ``corpus`` (ids = row numbers), optimised."""
    config = edge_config_for({VECTOR: corpus.shape[1]}, spec, max_search_threads=1)
    shard = qe.EdgeShard.create(str(path), config)
    try:
        started = time.perf_counter()
        for points in _batches(corpus, UPSERT_BATCH):
            shard.update(qe.UpdateOperation.upsert_points(points))
        upserted = time.perf_counter()
        shard.optimize()
        optimized = time.perf_counter()
        info = shard.info()
    except BaseException:
        shard.close()
        raise
    result = BuildResult(
        build_name(spec),
        upserted - started,
        optimized - upserted,
        info.segments_count,
        info.indexed_vectors_count,
    )
    return shard, result


def _requests(queries: Matrix, params: qe.SearchParams) -> list[qe.QueryRequest]:
    return [
        qe.QueryRequest(
            limit=TOP_K,
            query=qe.Query.Nearest(q, using=VECTOR),
            params=params,
            with_payload=False,
        )
        for q in queries.tolist()
    ]


def warm_up(shard: qe.EdgeShard, requests: list[qe.QueryRequest], count: int) -> None:
    for request in requests[:count]:
        shard.query(request)


def time_queries(
    shard: qe.EdgeShard, requests: list[qe.QueryRequest]
) -> tuple[Ids, npt.NDArray[np.float64]]:
    """Top-k ids and latency (ms) of each request, run one at a time."""
    ids = np.full((len(requests), TOP_K), -1, dtype=np.int64)
    latencies = np.empty(len(requests), dtype=np.float64)
    gc.collect()
    gc.disable()  # keep Python's collector out of the engine's latency
    try:
        for row, request in enumerate(requests):
            started = time.perf_counter_ns()
            points = shard.query(request)
            latencies[row] = (time.perf_counter_ns() - started) / 1e6
            hits = [int(p.id) for p in points[:TOP_K]]  # ids are the ints we upserted
            ids[row, : len(hits)] = hits
    finally:
        gc.enable()
    return ids, latencies


def recall_at_k(found: Ids, truth: Ids) -> float:
    """Mean over queries of |found ∩ truth| / k."""
    k = int(truth.shape[1])
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return sum(hits) / (k * len(hits))


def measure(
    shard: qe.EdgeShard, group: list[Setting], data: Dataset, truth: Ids, options: Options
) -> list[SearchResult]:
    """Each setting's recall and per-query latency, the median of ``options.rounds`` rounds.

    Rounds go over all settings in turn, so a burst of load from elsewhere on the machine (or
    pages still cold after the build) lands on one round of several settings, not on all of
    one setting's measurements.
    """
    requests = [_requests(data.queries, s.params()) for s in group]
    for batch in requests:
        warm_up(shard, batch, options.warmup)
    found: list[Ids] = [np.empty(0, dtype=np.int64)] * len(group)
    rounds: list[list[npt.NDArray[np.float64]]] = [[] for _ in group]
    for _ in range(options.rounds):
        for i, batch in enumerate(requests):
            found[i], latencies = time_queries(shard, batch)
            rounds[i].append(latencies)
    return [
        SearchResult(s, recall_at_k(found[i], truth), np.median(np.stack(rounds[i]), axis=0))
        for i, s in enumerate(group)
    ]


def run_group(
    group: list[Setting],
    data: Dataset,
    truth: Ids,
    options: Options,
    report: Callable[[str], None],
) -> tuple[BuildResult, list[SearchResult]]:
    """Build one shard for the group's build-time config, then measure each of its settings."""
    build_spec = next((s.spec for s in group if s.mode != "exact"), group[0].spec)
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        shard, built = build_shard(Path(tmp) / "shard", build_spec, data.corpus)
        report(
            f"built {built.name}: upsert {built.upsert_s:.1f} s + optimize {built.optimize_s:.1f} s"
            f" ({built.indexed:,} indexed vectors, {built.segments} segments)"
        )
        try:
            results = measure(shard, group, data, truth, options)
        finally:
            shard.close()
    for r in results:
        report(
            f"  {r.setting.name:<28} recall@{TOP_K} {r.recall:.4f}"
            f"  p50 {r.p50:.3f} ms  p95 {r.p95:.3f} ms"
        )
    return built, results


# --------------------------------------------------------------------------- output


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[int]
) -> str:
    """An aligned markdown table; the columns numbered in ``right`` are right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths)]
    return "\n".join([line(headers), "|" + "|".join(rule) + "|", *map(line, rows)])


def _search_row(r: SearchResult, exact_p50: float) -> list[str]:
    s, t = r.setting.spec, r.setting.tuning
    if r.setting.mode == "exact":
        bq = ["float (exact)", "-", "-", "-", "-"]
    else:
        enc = "float (HNSW)" if r.setting.mode == "float-hnsw" else s.encoding.value
        query = "-" if r.setting.mode == "float-hnsw" else s.query_encoding.value
        rescore = "-" if r.setting.mode == "float-hnsw" else ("on" if t.rescore else "off")
        over = "-" if r.setting.mode == "float-hnsw" else f"{t.oversampling:g}"
        bq = [enc, query, rescore, over, str(t.hnsw_ef)]
    speedup = f"{exact_p50 / r.p50:.1f}x" if r.p50 > 0 else "-"
    return [r.setting.name, *bq, f"{r.recall:.4f}", f"{r.p50:.3f}", f"{r.p95:.3f}", speedup]


def search_table(results: list[SearchResult]) -> str:
    exact = [r.p50 for r in results if r.setting.mode == "exact"]
    exact_p50 = exact[0] if exact else float("nan")
    headers = [
        "config", "encoding", "query enc", "rescore", "oversampling", "hnsw_ef",
        f"recall@{TOP_K}", "p50 ms", "p95 ms", "vs exact p50",
    ]  # fmt: skip
    rows = [_search_row(r, exact_p50) for r in results]
    return markdown_table(headers, rows, right=range(4, 10))


def build_table(builds: list[BuildResult]) -> str:
    headers = ["build", "upsert s", "optimize s", "build s", "indexed", "segments"]
    rows = [
        [
            b.name,
            f"{b.upsert_s:.1f}",
            f"{b.optimize_s:.1f}",
            f"{b.upsert_s + b.optimize_s:.1f}",
            f"{b.indexed:,}",
            str(b.segments),
        ]
        for b in builds
    ]
    return markdown_table(headers, rows, right=range(1, 6))


def environment_line(data: Dataset, options: Options) -> str:
    return (
        f"qdrant-edge-py {version('qdrant-edge-py')}, max_search_threads=1, m={BASE_SPEC.hnsw_m},"
        f" ef_construct={BASE_SPEC.hnsw_ef_construct}, always_ram={BASE_SPEC.always_ram},"
        f" cosine; {len(data.queries)} queries one at a time, {options.warmup} warm-up queries"
        f" per setting, per-query median of {options.rounds} interleaved rounds;"
        f" Python {platform.python_version()}, {os.cpu_count()} CPUs ({platform.machine()})"
    )


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.search",
        description="Exact vs binary-quantization search in the embedded Qdrant engine.",
    )
    parser.add_argument("--n", type=int, default=100_000, help="corpus points (default 100000)")
    parser.add_argument("--queries", type=int, default=500, help="held-out queries (default 500)")
    parser.add_argument("--synthetic", action="store_true", help="clustered random vectors")
    parser.add_argument("--dim", type=int, default=384, help="synthetic dimension (default 384)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed queries per setting")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median per query)")
    parser.add_argument(
        "--configs",
        default="*",
        help="comma-separated glob patterns over config names, e.g. '2bit/*,1bit/q8bit/os8'",
    )
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--list", action="store_true", help="print the selected configs and exit")
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}"
    )
    args = parser.parse_args(argv)
    if args.n < TOP_K or args.queries < 1 or args.dim < 2 or args.rounds < 1:
        parser.error("need --n >= 10, --queries >= 1, --dim >= 2, --rounds >= 1")
    return args


def load_data(args: argparse.Namespace) -> Dataset:
    if args.synthetic:
        return synthetic_dataset(n=args.n, queries=args.queries, dim=args.dim, seed=args.seed)
    return real_dataset(n=args.n, queries=args.queries, seed=args.seed, cache_dir=args.cache_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    patterns = QUICK if args.quick else tuple(p.strip() for p in args.configs.split(","))
    settings = select(full_grid(), patterns)
    if args.list:
        print("\n".join(s.name for s in settings))
        return 0

    def report(message: str) -> None:
        print(message, flush=True)

    started = time.perf_counter()
    data = load_data(args)
    report(data.description)
    truth = exact_top_k(data.corpus, data.queries)
    options = Options(warmup=args.warmup, rounds=args.rounds)
    builds: list[BuildResult] = []
    results: list[SearchResult] = []
    for group in by_build(settings):
        built, group_results = run_group(group, data, truth, options, report)
        builds.append(built)
        results += group_results

    print()
    print(f"Data: {data.description}.")
    print(f"Engine: {environment_line(data, options)}.")
    print(f"Recall@{TOP_K} is against numpy brute-force top-{TOP_K} on the normalised vectors.")
    print()
    print(search_table(results))
    print()
    print(build_table(builds))
    print()
    print(f"Total run time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
