"""``python -m ingestion eval QUERIES --collection NAME``: retrieval quality and latency of a
collection, measured on labelled queries through the real retriever.

QUERIES is a JSONL file, one query a line::

    {"id": "cat", "text": "a ginger cat", "relevant": ["lib/photos/cat.jpg"]}
    {"image": "queries/rocket.png", "relevant_tags": ["space"]}

``text`` or ``image`` (a path relative to the file's folder) is the query; ``relevant`` lists
asset ids or source paths (absolute, library paths as hits show them, or relative to the file's
folder), ``relevant_tags`` selects every stored asset carrying all those tags. Bad lines are
reported with their numbers and skipped (exit status 1).

Each query runs with exact search (brute force on the float vectors), with the collection's
configured quantized search, and with oversampling 1, 2, 4 and 8 at the configured ``hnsw_ef``.
Hits are grouped one per asset, as the service shows them. Reported per query type
(``text->image``, ``image->image``, ``text->text``, ``text->any``, ...): recall@1/5/10, mAP and
nDCG@10 (binary relevance); quantization fidelity (recall@10 of the quantized asset list
against the exact one); latency p50/p95 of the model call (encode) and of the store calls
(search). ``--out`` gets ``report.json``, ``report.md`` and two plots.

May import the core, ``app.wiring`` and ``app.settings``; models and matplotlib load in
``run``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from app.core.errors import InputError, MMRagError
from app.core.models import (
    CollectionSpec,
    CollectionStats,
    CollectionTuning,
    EmbeddedSegment,
    EmbeddingModelInfo,
    IndexedAsset,
    Modality,
    SearchHit,
    SearchTuning,
    Segment,
    Signal,
    VectorQuery,
)
from app.core.ports import (
    FloatMatrix,
    ImageTextEmbedder,
    StoredPoint,
    TextEmbedder,
    VectorCollection,
)
from ingestion.metrics import average_precision, ndcg_at_k, overlap_at_k, recall_at_k

if TYPE_CHECKING:
    from PIL.Image import Image

    from app.core.retrieval import Retrieval, Retriever
    from app.settings import Settings

EXIT_OK, EXIT_PROBLEMS, EXIT_CANNOT_RUN = 0, 1, 2
CUTOFFS = (1, 5, 10)
NDCG_AT = 10
FIDELITY_AT = 10
OVERSAMPLING_SWEEP = (1.0, 2.0, 4.0, 8.0)
MAX_QUERY_IMAGE_PIXELS = 100_000_000
REPORT_VERSION = 1
ALL = "all"
PLOTS = ("recall_vs_oversampling.png", "latency_vs_recall.png")

# What a relevant asset's modality is searched as: pictures (CLIP) or words.
_TARGET = {
    Modality.IMAGE: "image",
    Modality.PDF: "image",
    Modality.VIDEO: "image",
    Modality.TEXT: "text",
    Modality.AUDIO: "text",
}
_CATALOGUE_FIELDS = ("asset_id", "source", "root", "library_path", "modality", "tags")


# --------------------------------------------------------------------------- the query file


@dataclass(frozen=True, slots=True)
class LineProblem:
    """A line of the query file that was skipped, and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class EvalQuery:
    """One labelled query, its relevant set resolved to stored asset ids."""

    line: int
    query_id: str
    text: str | None
    image: Path | None
    relevant_ids: frozenset[str]
    kind: str  # query type: "text->image", "image->image", "text->text", "text->any", ...

    @property
    def label(self) -> str:
        return self.text if self.text is not None else str(self.image)


@dataclass(frozen=True, slots=True)
class _RawQuery:
    line: int
    query_id: str
    text: str | None
    image: Path | None
    relevant: tuple[str, ...]
    relevant_tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _StoredAsset:
    asset_id: str
    source: str
    library_path: str
    modality: Modality
    tags: frozenset[str]


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The collection's assets, looked up by id, source path or library path."""

    assets: Mapping[str, _StoredAsset]

    @classmethod
    def of(cls, collection: VectorCollection) -> Catalogue:
        """Read from the store: one scroll of a few payload fields where the store offers it,
        else the port's ``indexed_assets`` and one segment per asset."""
        assets: dict[str, _StoredAsset] = {}
        payloads: Callable[[Sequence[str]], Iterator[dict[str, Any]]] | None = getattr(
            collection, "payloads", None
        )
        if payloads is not None:
            for p in payloads(_CATALOGUE_FIELDS):
                asset_id = str(p["asset_id"])
                if asset_id not in assets:
                    assets[asset_id] = _StoredAsset(
                        asset_id,
                        str(p["source"]),
                        str(p.get("library_path") or ""),
                        Modality(p["modality"]),
                        frozenset(p.get("tags") or ()),
                    )
            return cls(assets)
        for indexed in collection.indexed_assets():
            segments = collection.asset_segments(indexed.asset_id)
            if segments:
                a = segments[0].asset
                assets[a.asset_id] = _StoredAsset(
                    a.asset_id, a.source, a.library_path, a.modality, frozenset(a.tags)
                )
        return cls(assets)

    def resolve(self, item: str, base: Path) -> set[str]:
        """The asset ids an entry of ``relevant`` names (empty when it names none)."""
        if item in self.assets:
            return {item}
        by_library = {a.asset_id for a in self.assets.values() if a.library_path == item}
        if by_library:
            return by_library
        path = Path(item).expanduser()
        source = str((path if path.is_absolute() else base / path).resolve())
        return {a.asset_id for a in self.assets.values() if a.source == source}

    def tagged(self, tags: Sequence[str]) -> set[str]:
        wanted = set(tags)
        return {a.asset_id for a in self.assets.values() if wanted <= a.tags}

    def target(self, asset_ids: set[str]) -> str:
        """What the relevant assets are searched as: "image", "text", or "any" when mixed."""
        kinds = {_TARGET[self.assets[i].modality] for i in asset_ids}
        return kinds.pop() if len(kinds) == 1 else "any"


def _strings(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f'"{name}" must be a list of non-empty strings')
    return tuple(value)


def _parse_line(number: int, line: str, base: Path) -> _RawQuery:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(data, dict):
        raise ValueError("a line must be a JSON object")
    known = {"id", "text", "image", "relevant", "relevant_tags"}
    if unknown := sorted(set(data) - known):
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; expected {sorted(known)}")
    text, image = data.get("text"), data.get("image")
    if (text is None) == (image is None):
        raise ValueError('give exactly one of "text" and "image"')
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise ValueError('"text" must be a non-empty string')
    image_path: Path | None = None
    if image is not None:
        if not isinstance(image, str) or not image:
            raise ValueError('"image" must be a path (relative to the query file\'s folder)')
        image_path = (base / Path(image).expanduser()).resolve()
        if not image_path.is_file():
            raise ValueError(f"image {image!r} not found (looked for {image_path})")
    if ("relevant" in data) == ("relevant_tags" in data):
        raise ValueError('give exactly one of "relevant" and "relevant_tags"')
    relevant = _strings(data["relevant"], "relevant") if "relevant" in data else ()
    tags = _strings(data["relevant_tags"], "relevant_tags") if "relevant_tags" in data else ()
    if not relevant and not tags:
        raise ValueError("the relevant set is empty")
    query_id = data.get("id", f"line-{number}")
    if not isinstance(query_id, str | int):
        raise ValueError('"id" must be a string or a number')
    return _RawQuery(number, str(query_id), text, image_path, relevant, tags)


def read_query_file(path: Path) -> tuple[list[_RawQuery], list[LineProblem]]:
    """The file's queries as written (relevant sets unresolved) and its bad lines."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the query file {path}: {exc}") from exc
    base = path.resolve().parent
    raw: list[_RawQuery] = []
    problems: list[LineProblem] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw.append(_parse_line(number, line, base))
        except ValueError as exc:
            problems.append(LineProblem(number, str(exc)))
    return raw, problems


def resolve_queries(
    raw: Sequence[_RawQuery], catalogue: Catalogue, base: Path
) -> tuple[list[EvalQuery], list[LineProblem]]:
    """Relevant sets as asset ids; a query naming anything not stored is skipped."""
    queries: list[EvalQuery] = []
    problems: list[LineProblem] = []
    for q in raw:
        if q.relevant_tags:
            ids = catalogue.tagged(q.relevant_tags)
            if not ids:
                tags = ", ".join(q.relevant_tags)
                problems.append(LineProblem(q.line, f"no stored asset carries all of: {tags}"))
                continue
        else:
            ids = set()
            unknown = []
            for item in q.relevant:
                found = catalogue.resolve(item, base)
                ids |= found
                if not found:
                    unknown.append(item)
            if unknown:
                names = ", ".join(repr(u) for u in unknown)
                msg = f"relevant {names} not in the collection (an asset id or a source path)"
                problems.append(LineProblem(q.line, msg))
                continue
        source = "text" if q.text is not None else "image"
        kind = f"{source}->{catalogue.target(ids)}"
        queries.append(EvalQuery(q.line, q.query_id, q.text, q.image, frozenset(ids), kind))
    return queries, problems


def load_queries(
    path: Path, collection: VectorCollection
) -> tuple[list[EvalQuery], list[LineProblem]]:
    """The usable queries of a JSONL file, resolved against ``collection``, and the skipped
    lines (in line order). Raises InputError when the file cannot be read."""
    raw, problems = read_query_file(path)
    queries, unresolved = resolve_queries(raw, Catalogue.of(collection), path.resolve().parent)
    return queries, sorted([*problems, *unresolved], key=lambda p: p.line)


def load_image(path: Path, *, max_pixels: int = MAX_QUERY_IMAGE_PIXELS) -> Image:
    """A query image decoded as the service decodes uploads."""
    from app.adapters.images import decode_query_image

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read query image {path}: {exc}") from exc
    return decode_query_image(data, max_pixels=max_pixels)  # as the service decodes them


# --------------------------------------------------------------------------- timing proxies


class _TimedText:
    """A text embedder that times its model calls and remembers the answers (each query is
    encoded once, however many search settings run it)."""

    def __init__(self, inner: TextEmbedder) -> None:
        self._inner = inner
        self._cache: dict[tuple[str, ...], FloatMatrix] = {}
        self.elapsed_ms = 0.0

    @property
    def info(self) -> EmbeddingModelInfo:
        return self._inner.info

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix:
        key = tuple(texts)
        if key not in self._cache:
            started = time.perf_counter()
            self._cache[key] = self._inner.embed_texts(texts)
            self.elapsed_ms += (time.perf_counter() - started) * 1e3
        return self._cache[key]

    def reset(self) -> None:
        self._cache.clear()
        self.elapsed_ms = 0.0


class _TimedClip(_TimedText):
    def __init__(self, inner: ImageTextEmbedder) -> None:
        super().__init__(inner)
        self._clip = inner
        # keyed by the images' identity; the images are held so an id is never reused
        self._images: dict[tuple[int, ...], tuple[Sequence[Image], FloatMatrix]] = {}

    def embed_images(self, images: Sequence[Image]) -> FloatMatrix:
        key = tuple(id(i) for i in images)
        if key not in self._images:
            started = time.perf_counter()
            self._images[key] = (images, self._clip.embed_images(images))
            self.elapsed_ms += (time.perf_counter() - started) * 1e3
        return self._images[key][1]

    def reset(self) -> None:
        super().reset()
        self._images.clear()


class _TimedCollection:
    """A collection whose ``search`` calls are timed; everything else is passed through."""

    def __init__(self, inner: VectorCollection) -> None:
        self._inner = inner
        self.elapsed_ms = 0.0

    @property
    def spec(self) -> CollectionSpec:
        return self._inner.spec

    @property
    def tuning(self) -> CollectionTuning:
        return self._inner.tuning

    @property
    def optimize_pending(self) -> bool:
        return self._inner.optimize_pending

    def search(self, query: VectorQuery) -> list[SearchHit]:
        started = time.perf_counter()
        try:
            return self._inner.search(query)
        finally:
            self.elapsed_ms += (time.perf_counter() - started) * 1e3

    def upsert(self, segments: Sequence[EmbeddedSegment]) -> None:
        self._inner.upsert(segments)

    def delete_assets(self, asset_ids: Sequence[str]) -> None:
        self._inner.delete_assets(asset_ids)

    def set_mtimes(self, mtimes: Mapping[str, int]) -> None:
        self._inner.set_mtimes(mtimes)

    def indexed_assets(self) -> list[IndexedAsset]:
        return self._inner.indexed_assets()

    def asset_segments(self, asset_id: str) -> list[Segment]:
        return self._inner.asset_segments(asset_id)

    def stats(self) -> CollectionStats:
        return self._inner.stats()

    def optimize(self) -> None:
        self._inner.optimize()

    def export_points(self, offset: str | None, limit: int) -> tuple[list[StoredPoint], str | None]:
        return self._inner.export_points(offset, limit)

    def import_points(self, points: Sequence[StoredPoint]) -> None:
        self._inner.import_points(points)

    def get_points(self, ids: Sequence[str]) -> list[StoredPoint]:
        return self._inner.get_points(ids)

    def vector_count(self, signal: Signal) -> int:
        return self._inner.vector_count(signal)

    def sample_vectors(self, signal: Signal, n: int, seed: int) -> tuple[list[str], FloatMatrix]:
        return self._inner.sample_vectors(signal, n, seed)


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True, slots=True)
class Mode:
    """One way of searching: exact, the collection's own settings, or a query-time tuning."""

    name: str
    exact: bool = False
    tuning: SearchTuning | None = None


@dataclass(slots=True)
class QueryRun:
    """What one query found in each mode, and how long each stage took."""

    query: EvalQuery
    encode_ms: float
    ranked: dict[str, list[str]] = field(default_factory=dict)  # mode -> asset ids, best first
    search_ms: dict[str, float] = field(default_factory=dict)


def modes_for(tuning: SearchTuning) -> list[Mode]:
    """Exact, the quantized search as configured (``tuning``: the knobs in effect), then the
    oversampling sweep at its hnsw_ef."""
    sweep = [
        Mode(
            _sweep_name(x),
            tuning=SearchTuning(oversampling=x, hnsw_ef=tuning.hnsw_ef, rescore=tuning.rescore),
        )
        for x in OVERSAMPLING_SWEEP
    ]
    return [Mode("exact", exact=True), Mode("quantized"), *sweep]


def _sweep_name(oversampling: float) -> str:
    return f"oversampling={oversampling:g}"


def run_queries(
    make_retriever: Callable[[ImageTextEmbedder, TextEmbedder], Retriever],
    collection: VectorCollection,
    clip: ImageTextEmbedder,
    text: TextEmbedder,
    queries: Sequence[EvalQuery],
    *,
    modes: Sequence[Mode],
    top_k: int,
    on_query: Callable[[], None] | None = None,
) -> tuple[list[QueryRun], list[LineProblem]]:
    """Runs every query in every mode through a retriever built by ``make_retriever`` on timing
    proxies of ``clip``, ``text`` and ``collection``. The first query also runs once untimed,
    as a warm-up. Queries whose image cannot be decoded are skipped and reported."""
    timed_clip, timed_text = _TimedClip(clip), _TimedText(text)
    timed = _TimedCollection(collection)
    retriever = make_retriever(timed_clip, timed_text)
    runs: list[QueryRun] = []
    problems: list[LineProblem] = []
    warmed = False
    for query in queries:
        try:
            image = load_image(query.image) if query.image is not None else None
        except MMRagError as exc:
            problems.append(LineProblem(query.line, str(exc)))
            continue
        if not warmed:
            for mode in modes:
                _retrieve(retriever, timed, query, image, mode=mode, top_k=top_k)
            warmed = True
        timed_clip.reset()
        timed_text.reset()
        run = QueryRun(query, encode_ms=0.0)
        for mode in modes:
            timed.elapsed_ms = 0.0
            found = _retrieve(retriever, timed, query, image, mode=mode, top_k=top_k)
            run.search_ms[mode.name] = timed.elapsed_ms
            run.ranked[mode.name] = [h.segment.asset.asset_id for h in found.hits]
        run.encode_ms = timed_clip.elapsed_ms + timed_text.elapsed_ms
        runs.append(run)
        if on_query is not None:
            on_query()
    timed_clip.reset()
    timed_text.reset()
    return runs, problems


def _retrieve(
    retriever: Retriever,
    collection: VectorCollection,
    query: EvalQuery,
    image: Image | None,
    *,
    mode: Mode,
    top_k: int,
) -> Retrieval:
    if image is not None:
        return retriever.search_image(
            collection, image, top_k=top_k, exact=mode.exact, tuning=mode.tuning
        )
    assert query.text is not None
    return retriever.search_text(
        collection, query.text, top_k=top_k, exact=mode.exact, tuning=mode.tuning
    )


# --------------------------------------------------------------------------- figures


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0}
    return {
        "p50": round(float(np.percentile(values, 50)), 3),
        "p95": round(float(np.percentile(values, 95)), 3),
    }


def _groups(runs: Sequence[QueryRun]) -> dict[str, list[QueryRun]]:
    """Runs by query type (sorted), then all of them under ``"all"``."""
    by_kind: dict[str, list[QueryRun]] = {}
    for run in runs:
        by_kind.setdefault(run.query.kind, []).append(run)
    return {**dict(sorted(by_kind.items())), ALL: list(runs)}


def query_metrics(ranked: Sequence[str], relevant: frozenset[str], top_k: int) -> dict[str, float]:
    """One query's recall@1/5/10, AP over the top-k list and nDCG@10."""
    out = {f"recall@{k}": recall_at_k(ranked, relevant, k) for k in CUTOFFS}
    out["map"] = average_precision(ranked, relevant, top_k)
    out[f"ndcg@{NDCG_AT}"] = ndcg_at_k(ranked, relevant, NDCG_AT)
    return out


def quality(runs: Sequence[QueryRun], mode: str, top_k: int) -> dict[str, dict[str, float]]:
    """Mean metrics of one mode per query type and over all queries."""
    out: dict[str, dict[str, float]] = {}
    for group, members in _groups(runs).items():
        per_query = [query_metrics(r.ranked[mode], r.query.relevant_ids, top_k) for r in members]
        means = {name: round(_mean([m[name] for m in per_query]), 4) for name in per_query[0]}
        out[group] = {"queries": len(members), **means}
    return out


def fidelity(runs: Sequence[QueryRun], mode: str) -> dict[str, float]:
    """Recall@10 of ``mode``'s asset lists against exact search's, per query type and overall."""
    return {
        group: round(
            _mean([overlap_at_k(r.ranked[mode], r.ranked["exact"], FIDELITY_AT) for r in members]),
            4,
        )
        for group, members in _groups(runs).items()
    }


def build_report(
    runs: Sequence[QueryRun],
    modes: Sequence[Mode],
    *,
    spec: CollectionSpec,
    tuning: SearchTuning,
    tuned: bool,
    queries_file: Path,
    top_k: int,
    lines: int,
    problems: Sequence[LineProblem],
) -> dict[str, Any]:
    """The whole evaluation as a JSON-ready dict (``report.json``)."""
    q = spec.quantization
    sweep = []
    for mode in modes:
        if mode.tuning is None:
            continue
        overall = quality(runs, mode.name, top_k)[ALL]
        latency = _percentiles([r.search_ms[mode.name] for r in runs])
        sweep.append(
            {
                "oversampling": mode.tuning.oversampling,
                "hnsw_ef": mode.tuning.hnsw_ef,
                "rescore": mode.tuning.rescore,
                "recall@10": overall["recall@10"],
                "map": overall["map"],
                f"ndcg@{NDCG_AT}": overall[f"ndcg@{NDCG_AT}"],
                f"fidelity@{FIDELITY_AT}": fidelity(runs, mode.name)[ALL],
                "search_p50_ms": latency["p50"],
                "search_p95_ms": latency["p95"],
            }
        )
    per_query = []
    for r in runs:
        entry: dict[str, Any] = {
            "line": r.query.line,
            "id": r.query.query_id,
            "type": r.query.kind,
            "text" if r.query.text is not None else "image": r.query.label,
            "relevant": sorted(r.query.relevant_ids),
            "encode_ms": round(r.encode_ms, 3),
        }
        for name in ("exact", "quantized"):
            entry[name] = {
                "ranked": r.ranked[name],
                **{
                    k: round(v, 4)
                    for k, v in query_metrics(r.ranked[name], r.query.relevant_ids, top_k).items()
                },
                "search_ms": round(r.search_ms[name], 3),
            }
        entry["quantized"][f"fidelity@{FIDELITY_AT}"] = overlap_at_k(
            r.ranked["quantized"], r.ranked["exact"], FIDELITY_AT
        )
        per_query.append(entry)
    return {
        "version": REPORT_VERSION,
        "collection": spec.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "queries_file": str(queries_file.resolve()),
        "top_k": top_k,
        "search": {
            "encoding": q.encoding.value,
            "query_encoding": q.query_encoding.value,
            "rescore": tuning.rescore,
            "oversampling": tuning.oversampling,
            "hnsw_ef": tuning.hnsw_ef,
            "tuned": tuned,
        },
        "queries": {
            "lines": lines,
            "evaluated": len(runs),
            "skipped": [{"line": p.line, "problem": p.message} for p in problems],
        },
        "quality": {
            "exact": quality(runs, "exact", top_k),
            "quantized": quality(runs, "quantized", top_k),
        },
        "fidelity": {"quantized": fidelity(runs, "quantized")},
        "latency_ms": {
            "encode": _percentiles([r.encode_ms for r in runs]),
            "search": {
                "exact": _percentiles([r.search_ms["exact"] for r in runs]),
                "quantized": _percentiles([r.search_ms["quantized"] for r in runs]),
            },
        },
        "sweep": sweep,
        "plots": [],
        "per_query": per_query,
    }


# --------------------------------------------------------------------------- output


_QUALITY_COLUMNS = (*(f"recall@{k}" for k in CUTOFFS), "map", f"ndcg@{NDCG_AT}")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """A Markdown table; the first ``left`` columns are left-aligned, the rest right-aligned."""
    rule = ["---" if i < left else "---:" for i in range(len(headers))]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _quality_rows(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for mode in ("exact", "quantized"):
        for group, m in report["quality"][mode].items():
            rows.append(
                [mode, group, str(m["queries"]), *(f"{m[c]:.3f}" for c in _QUALITY_COLUMNS)]
            )
    return rows


def _fidelity_rows(report: Mapping[str, Any]) -> list[list[str]]:
    return [[group, f"{v:.3f}"] for group, v in report["fidelity"]["quantized"].items()]


def _latency_rows(report: Mapping[str, Any]) -> list[list[str]]:
    lat = report["latency_ms"]
    rows = [["encode (model call)", f"{lat['encode']['p50']:.2f}", f"{lat['encode']['p95']:.2f}"]]
    for mode, p in lat["search"].items():
        rows.append([f"search, {mode} (store calls)", f"{p['p50']:.2f}", f"{p['p95']:.2f}"])
    return rows


def _sweep_rows(report: Mapping[str, Any]) -> list[list[str]]:
    return [
        [
            f"{s['oversampling']:g}",
            str(s["hnsw_ef"]),
            f"{s['recall@10']:.3f}",
            f"{s['map']:.3f}",
            f"{s[f'ndcg@{NDCG_AT}']:.3f}",
            f"{s[f'fidelity@{FIDELITY_AT}']:.3f}",
            f"{s['search_p50_ms']:.2f}",
            f"{s['search_p95_ms']:.2f}",
        ]
        for s in report["sweep"]
    ]


_SWEEP_HEADERS = (
    "oversampling",
    "hnsw_ef",
    "recall@10",
    "map",
    f"ndcg@{NDCG_AT}",
    f"fidelity@{FIDELITY_AT}",
    "search p50 ms",
    "search p95 ms",
)


def markdown_report(report: Mapping[str, Any]) -> str:
    """``report.md``: what was measured, the tables, and how to read them."""
    s = report["search"]
    q = report["queries"]
    top_k = report["top_k"]
    setting = (
        f"{s['encoding']} codes, {s['query_encoding']} query encoding, rescore "
        f"{'on' if s['rescore'] else 'off'}, oversampling {s['oversampling']:g}, "
        f"hnsw_ef {s['hnsw_ef']}" + (" (from the collection's tuning.json)" if s["tuned"] else "")
    )
    parts = [
        f"# Retrieval evaluation: collection `{report['collection']}`",
        "",
        (
            f"{report['created_at']}, queries from `{report['queries_file']}`: "
            f"{q['evaluated']} evaluated, {len(q['skipped'])} skipped."
        ),
        "",
        "## What was measured",
        "",
        (
            "Each query ran through the service's own retriever (the same fusion, video "
            f"coarse-to-fine step and grouping: one hit per asset, top {top_k}) in these modes:"
        ),
        "",
        "- **exact**: brute force on the float vectors, the best ranking the models allow;",
        f"- **quantized**: the collection's configured search ({setting});",
        (
            "- **oversampling sweep**: the same with oversampling 1, 2, 4 and 8 at the configured "
            "hnsw_ef (query-time only: no rebuild needed)."
        ),
        "",
        (
            "Query types are named `query -> relevant assets`: `image` for pictures, PDF pages and "
            "video frames (searched with CLIP), `text` for documents and recordings (searched by "
            "their words), `any` when a query's relevant assets are of both kinds."
        ),
        "",
        "## Quality",
        "",
        _md_table(
            ["mode", "query type", "queries", *_QUALITY_COLUMNS], _quality_rows(report), left=2
        ),
        "",
        "## Quantization fidelity",
        "",
        (
            "Recall@10 of the quantized asset list against the exact one, on the same queries: "
            "how much of what exact search returns the configured search returns too."
        ),
        "",
        _md_table(["query type", f"fidelity@{FIDELITY_AT}"], _fidelity_rows(report)),
        "",
        "## Latency",
        "",
        _md_table(["stage", "p50 ms", "p95 ms"], _latency_rows(report)),
        "",
        (
            "Encode is the model call(s) of one query (a text query runs the text model, and "
            "CLIP's text tower when the collection's CLIP is aligned); search is the store "
            "call(s) of one retrieval (the coarse video step and the main query), one query at "
            "a time."
        ),
        "",
        "## Oversampling sweep",
        "",
        _md_table(_SWEEP_HEADERS, _sweep_rows(report)),
        "",
    ]
    if report["plots"]:
        parts += ["## Plots", ""]
        parts += [f"![{name}]({name})" for name in report["plots"]]
        parts.append("")
    parts += [
        "## How to read this",
        "",
        (
            "- **recall@k**: of a query's relevant assets, the share found in its first k hits "
            "(with more relevant assets than k, the best possible value is below 1)."
        ),
        (
            f"- **map**: mean average precision over the top-{top_k} list: 1.0 when every relevant "
            "asset ranks above every other one."
        ),
        (
            f"- **ndcg@{NDCG_AT}**: like map, rewards relevant assets near the top, with a "
            "logarithmic discount by rank."
        ),
        (
            "- **exact vs quantized**: the gap is what binary quantization costs. A gap within a "
            "few hundredths on a few dozen queries is noise. If fidelity is well below 1, raise "
            "oversampling (query time, see the sweep) or run `python -m ingestion autotune`."
        ),
        (
            "- **exact itself low**: the models, captions or the relevance labels are the problem, "
            "not the index."
        ),
        (
            "- Latency figures are of this machine, one query at a time; on a few hundred points "
            "they say little (every setting scans everything)."
        ),
        "",
    ]
    if q["skipped"]:
        parts += ["## Skipped lines", ""]
        parts += [f"- line {p['line']}: {p['problem']}" for p in q["skipped"]]
        parts.append("")
    return "\n".join(parts)


def _score_range(values: Sequence[float]) -> tuple[float, float]:
    """A y range that shows differences of a few hundredths near 1 (never below 0)."""
    low = min(values, default=0.0)
    return max(0.0, min(low - 0.05, 0.9)), 1.02


def write_plots(report: dict[str, Any], out: Path) -> list[str]:
    """The two PNG plots; raises ImportError when matplotlib is not installed."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    sweep = report["sweep"]
    xs = [s["oversampling"] for s in sweep]
    exact = report["quality"]["exact"][ALL]

    series = {
        "recall@10 (relevant)": ("o", [s["recall@10"] for s in sweep]),
        f"nDCG@{NDCG_AT}": ("s", [s[f"ndcg@{NDCG_AT}"] for s in sweep]),
        f"fidelity@{FIDELITY_AT} (vs exact)": ("^", [s[f"fidelity@{FIDELITY_AT}"] for s in sweep]),
    }
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (marker, ys) in series.items():
        ax.plot(xs, ys, marker=marker, label=label)
    ax.axhline(exact["recall@10"], color="grey", linestyle="--", label="exact recall@10")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ys_all = [y for _, ys in series.values() for y in ys]
    ax.set_ylim(*_score_range([*ys_all, exact["recall@10"]]))
    ax.set_xlabel(f"oversampling (hnsw_ef {sweep[0]['hnsw_ef']})")
    ax.set_ylabel("score")
    ax.set_title(f"{report['collection']}: recall vs oversampling ({len(report['per_query'])} q)")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / PLOTS[0], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    points = [
        ("exact", report["latency_ms"]["search"]["exact"]["p50"], exact["recall@10"]),
        (
            "configured",
            report["latency_ms"]["search"]["quantized"]["p50"],
            report["quality"]["quantized"][ALL]["recall@10"],
        ),
        *((f"os {s['oversampling']:g}", s["search_p50_ms"], s["recall@10"]) for s in sweep),
    ]
    ax.plot(
        [s["search_p50_ms"] for s in sweep],
        [s[f"fidelity@{FIDELITY_AT}"] for s in sweep],
        marker="^",
        linestyle=":",
        color="tab:green",
        label=f"fidelity@{FIDELITY_AT} (sweep)",
    )
    for label, x, y in points:
        ax.scatter([x], [y], color="tab:red" if label == "exact" else "tab:blue", zorder=3)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set_ylim(
        *_score_range([y for _, _, y in points] + [s[f"fidelity@{FIDELITY_AT}"] for s in sweep])
    )
    ax.set_xlabel("search latency p50 (ms, one query at a time)")
    ax.set_ylabel("recall@10 (relevant)")
    ax.set_title(f"{report['collection']}: latency vs recall")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / PLOTS[1], dpi=110)
    plt.close(fig)
    return list(PLOTS)


def write_report(report: dict[str, Any], out: Path, console: Console) -> None:
    """``report.json``, the plots (when matplotlib is there) and ``report.md`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        report["plots"] = write_plots(report, out)
    except ImportError:
        console.print(
            "[yellow]matplotlib is not installed: plots skipped[/yellow] "
            "(pip install matplotlib, or the project's 'demo' extra)"
        )
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(markdown_report(report))


def print_report(report: Mapping[str, Any], console: Console) -> None:
    """The report's tables, for the terminal."""

    def table(
        title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1
    ) -> None:
        t = Table(title=title)
        for i, h in enumerate(headers):
            # never narrower than its cells: a table wider than the terminal scrolls, not "…"
            width = max(len(h), *(len(row[i]) for row in rows))
            t.add_column(h, justify="left" if i < left else "right", min_width=width)
        for row in rows:
            t.add_row(*row)
        console.print(t)

    n = report["queries"]["evaluated"]
    table(
        f"Retrieval quality: {report['collection']} ({n} queries, top {report['top_k']})",
        ["mode", "query type", "queries", *_QUALITY_COLUMNS],
        _quality_rows(report),
        left=2,
    )
    table(
        "Quantization fidelity (quantized vs exact)",
        ["query type", "fidelity@10"],
        _fidelity_rows(report),
    )
    table("Latency", ["stage", "p50 ms", "p95 ms"], _latency_rows(report))
    table(
        f"Oversampling sweep (hnsw_ef {report['search']['hnsw_ef']})",
        _SWEEP_HEADERS,
        _sweep_rows(report),
    )


# --------------------------------------------------------------------------- command


@dataclass(frozen=True, slots=True)
class EvalOptions:
    queries: Path
    top_k: int = 10
    out: Path | None = None


def _top_k(value: str) -> int:
    k = int(value)
    if not max(CUTOFFS) <= k <= 100:
        msg = f"--top-k must be between {max(CUTOFFS)} and 100 (recall@10 needs 10 hits)"
        raise argparse.ArgumentTypeError(msg)
    return k


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure retrieval quality (recall, mAP, nDCG) and latency on labelled queries",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("queries", type=Path, metavar="QUERIES", help="JSONL query file")
    parser.add_argument("--collection", help="collection name (default: settings' collection)")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: settings)")
    parser.add_argument(
        "--out",
        type=Path,
        help="report folder (default: <data dir>/eval/<collection>-<UTC timestamp>/)",
    )
    parser.add_argument(
        "--top-k", type=_top_k, default=10, help="hits (assets) per query, 10-100 (default 10)"
    )


def run(args: argparse.Namespace, console: Console) -> int:
    from ingestion.cli import settings_from

    options = EvalOptions(queries=args.queries, top_k=args.top_k, out=args.out)
    return evaluate(settings_from(args), options, console)


def evaluate(
    settings: Settings,
    options: EvalOptions,
    console: Console,
    *,
    models: tuple[ImageTextEmbedder, TextEmbedder] | None = None,
) -> int:
    """The ``eval`` command on built settings; ``models`` skips loading them (tests)."""
    from app.core.errors import CollectionNotFoundError
    from app.wiring import build_retriever, build_store, collection_spec

    raw, problems = read_query_file(options.queries)  # before any model loads
    lines = len(raw) + len(problems)
    if not raw:
        _print_problems(problems, console)
        console.print(f"[red]no usable query in {escape(str(options.queries))}[/red]")
        return EXIT_CANNOT_RUN
    name = settings.collection
    store = build_store(settings)
    try:
        if not store.exists(name):
            raise CollectionNotFoundError(name)
        store.hold(name)  # a locked collection fails now, not after loading models
        if models is None:
            from ingestion.cli import _load_models

            models = _load_models(settings, console)
        clip, text = models
        collection = store.open(collection_spec(settings, name, clip, text), create=False)
        base = options.queries.resolve().parent
        queries, unresolved = resolve_queries(raw, Catalogue.of(collection), base)
        problems += unresolved
        if not queries:
            _print_problems(problems, console)
            console.print("[red]no query could be resolved against the collection[/red]")
            return EXIT_CANNOT_RUN
        tuning = build_retriever(settings, clip, text).tuning_for(collection)
        modes = modes_for(tuning)
        console.print(
            f"evaluating {len(queries)} queries x {len(modes)} search settings on {name!r}…"
        )
        started = time.perf_counter()
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("querying", total=len(queries))
            runs, failed = run_queries(
                lambda c, t: build_retriever(settings, c, t),
                collection,
                clip,
                text,
                queries,
                modes=modes,
                top_k=options.top_k,
                on_query=lambda: progress.advance(task),
            )
        problems += failed
        spec = collection.spec
        tuned = collection.tuning.search is not None and tuning == collection.tuning.search
    finally:
        store.close()
    problems.sort(key=lambda p: p.line)
    _print_problems(problems, console)
    if not runs:
        console.print("[red]no query could be run[/red]")
        return EXIT_CANNOT_RUN
    report = build_report(
        runs,
        modes,
        spec=spec,
        tuning=tuning,
        tuned=tuned,
        queries_file=options.queries,
        top_k=options.top_k,
        lines=lines,
        problems=problems,
    )
    print_report(report, console)
    out = options.out or default_out_dir(settings.data_dir, name)
    write_report(report, out, console)
    console.print(
        f"report: {escape(str(out / 'report.md'))} ({len(runs)} queries in "
        f"{time.perf_counter() - started:.1f} s)"
    )
    return EXIT_PROBLEMS if problems else EXIT_OK


def default_out_dir(data_dir: Path, collection: str) -> Path:
    return data_dir / "eval" / f"{collection}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


def _print_problems(problems: Sequence[LineProblem], console: Console) -> None:
    for problem in problems:
        console.print(f"[yellow]skipped[/yellow] {escape(str(problem))}")


__all__ = [
    "Catalogue",
    "EvalOptions",
    "EvalQuery",
    "LineProblem",
    "Mode",
    "QueryRun",
    "add_parser",
    "build_report",
    "evaluate",
    "load_image",
    "load_queries",
    "markdown_report",
    "modes_for",
    "query_metrics",
    "read_query_file",
    "resolve_queries",
    "run",
    "run_queries",
]
