"""``python -m ingestion migrate --to URL [--collection NAME]``: copy a collection from the
embedded engine (under the data directory) to a Qdrant server.

Points move as stored, with no model loaded and nothing re-embedded: ids, the dense ``clip`` and
``text`` vectors, the ``bm25`` sparse vectors and the payloads, page by page. The target is
created with the source's models and index settings (binary quantization, HNSW) plus the
server settings (``MMRAG_STORE__SHARD_NUMBER``, ``..._REPLICATION_FACTOR``, ...), and the
collection's calibrated thresholds and tuned knobs come along.

It is resumable: after every page the position is saved under the data directory, and a run
that stops (a network failure, Ctrl-C) goes on from there the next time; writes are idempotent
(same ids), so a page written twice is not duplicated. At the end the point counts must match
and a sample of points must be equal on both sides (vectors to 1e-5, sparse vectors and
payloads exactly), or the command says what differs and exits 1.

Thumbnails stay files: a service in server mode reads them from its own data directory, so
copy ``<data_dir>/thumbnails`` along when the service moves to another machine.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from app.core.ports import StoredPoint, VectorCollection, VectorStore

VECTOR_TOLERANCE = 1e-5


@dataclass(frozen=True, slots=True)
class MigrationResult:
    copied: int  # points written by this run
    source_points: int
    target_points: int
    checked: int  # points compared one by one
    differences: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.source_points == self.target_points and not self.differences


class Checkpoint:
    """Where a migration stopped: the next page's offset, in a small JSON file."""

    def __init__(self, path: Path, key: str) -> None:
        self._path = path
        self._key = key

    def load(self) -> tuple[str | None, int]:
        """The offset to go on from (None: the start) and the points copied before it."""
        try:
            data = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return None, 0
        if data.get("key") != self._key:
            return None, 0
        return data.get("offset"), int(data.get("copied") or 0)

    def save(self, offset: str | None, copied: int) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self._key, "offset": offset, "copied": copied}))
        tmp.replace(self._path)

    def clear(self) -> None:
        self._path.unlink(missing_ok=True)


def copy_points(
    source: VectorCollection,
    target: VectorCollection,
    checkpoint: Checkpoint,
    *,
    batch: int,
    on_page: Callable[[int], None] | None = None,
) -> int:
    """Every point of ``source`` written to ``target``, from where the checkpoint says; returns
    how many this call wrote."""
    offset, before = checkpoint.load()
    copied = 0
    while True:
        points, after = source.export_points(offset, batch)
        target.import_points(points)
        copied += len(points)
        if on_page is not None:
            on_page(len(points))
        if after is None:
            return copied
        offset = after
        checkpoint.save(offset, before + copied)


def compare(source: VectorCollection, target: VectorCollection, ids: Sequence[str]) -> list[str]:
    """What differs between the two collections' points with these ids."""
    mine = {p.id: p for p in source.get_points(ids)}
    theirs = {p.id: p for p in target.get_points(ids)}
    problems: list[str] = []
    for point_id in ids:
        a, b = mine.get(point_id), theirs.get(point_id)
        if a is None or b is None:
            problems.append(f"point {point_id}: missing on the {'target' if a else 'source'}")
            continue
        problems.extend(f"point {point_id}: {d}" for d in _differences(a, b))
    return problems


def _differences(a: StoredPoint, b: StoredPoint) -> list[str]:
    found: list[str] = []
    if set(a.dense) != set(b.dense):
        found.append(f"dense vectors {sorted(a.dense)} vs {sorted(b.dense)}")
    for name in set(a.dense) & set(b.dense):
        x, y = a.dense[name], b.dense[name]
        if len(x) != len(y) or any(
            not math.isclose(p, q, abs_tol=VECTOR_TOLERANCE) for p, q in zip(x, y, strict=False)
        ):
            found.append(f"vector {name!r} differs")
    if _sparse(a) != _sparse(b):
        found.append("sparse vectors differ")
    if dict(a.payload) != dict(b.payload):
        keys = sorted(
            k for k in set(a.payload) | set(b.payload) if a.payload.get(k) != b.payload.get(k)
        )
        found.append(f"payload differs in {keys}")
    return found


def _sparse(point: StoredPoint) -> dict[str, dict[int, float]]:
    return {
        name: {i: round(v, 5) for i, v in zip(indices, values, strict=True)}
        for name, (indices, values) in point.sparse.items()
    }


def sample_ids(source: VectorCollection, n: int, seed: int) -> list[str]:
    """Up to ``n`` ids drawn at random from the whole collection (seeded)."""
    every: list[str] = []
    offset: str | None = None
    while True:
        points, offset = source.export_points(offset, 1024)
        every.extend(p.id for p in points)
        if offset is None:
            break
    if len(every) <= n:
        return every
    return random.Random(seed).sample(every, n)


def migrate(
    source_store: VectorStore,
    target_store: VectorStore,
    name: str,
    *,
    target_name: str,
    checkpoint: Checkpoint,
    batch: int = 256,
    sample: int = 200,
    console: Console,
) -> MigrationResult:
    """Copy ``name`` from ``source_store`` into ``target_name`` on ``target_store`` and check."""
    source = source_store.open_stored(name)
    spec = replace(source.spec, name=target_name)
    _, copied_before = checkpoint.load()
    if target_store.exists(target_name):
        target = target_store.open(spec, create=False, require_index_settings=True)
    else:
        target = target_store.open(spec, create=True)
    total = source.stats().points
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"copying {name!r}", total=total, completed=copied_before)
        copied = copy_points(
            source,
            target,
            checkpoint,
            batch=batch,
            on_page=lambda n: progress.advance(task, n),
        )
    target_store.save_tuning(target_name, source.tuning)
    target.optimize()
    ids = sample_ids(source, sample, seed=0)
    differences = compare(source, target, ids)
    result = MigrationResult(
        copied=copied,
        source_points=total,
        target_points=target.stats().points,
        checked=len(ids),
        differences=tuple(differences),
    )
    if result.ok:
        checkpoint.clear()
    return result


# --------------------------------------------------------------------------- command
def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="copy a collection from the embedded engine to a Qdrant server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the Qdrant server (e.g. http://localhost:6333); API key from MMRAG_STORE__API_KEY",
    )
    parser.add_argument("--collection", help="collection to copy (default: settings' collection)")
    parser.add_argument("--target", help="name on the server (default: the same name)")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: settings)")
    parser.add_argument("--batch", type=int, default=256, help="points per request (default 256)")
    parser.add_argument(
        "--sample", type=int, default=200, help="points compared one by one at the end"
    )


def run(args: argparse.Namespace, console: Console) -> int:
    from app.core.collections import validate_collection_name
    from app.core.errors import InputError
    from app.wiring import build_embedded_store, build_server_store
    from ingestion.cli import settings_from

    if args.batch < 1 or args.sample < 0:
        raise InputError("--batch must be at least 1 and --sample at least 0")
    settings = settings_from(args)
    name = settings.collection
    target_name = validate_collection_name(args.target or name)
    server = settings.store.model_copy(update={"backend": "server", "url": args.to})
    source_store = build_embedded_store(settings)
    target_store = build_server_store(server)
    checkpoint = Checkpoint(
        settings.data_dir / "migrations" / f"{name}.json", key=f"{args.to}|{target_name}"
    )
    try:
        result = migrate(
            source_store,
            target_store,
            name,
            target_name=target_name,
            checkpoint=checkpoint,
            batch=args.batch,
            sample=args.sample,
            console=console,
        )
    finally:
        target_store.close()
        source_store.close()
    console.print(
        f"{name!r} -> {args.to} {target_name!r}: {result.copied} points written this run; "
        f"{result.source_points} in the source, {result.target_points} on the server; "
        f"{result.checked} compared one by one"
    )
    for problem in result.differences[:20]:
        console.print(f"[red]differs:[/red] {problem}")
    if not result.ok:
        if result.source_points != result.target_points:
            console.print("[red]the point counts differ[/red]: run the command again")
        return 1
    console.print(f"[green]verified[/green]: point it at the service with {_env_hint(args.to)}")
    return 0


def _env_hint(url: str) -> str:
    return f"MMRAG_STORE__BACKEND=server MMRAG_STORE__URL={url}"
