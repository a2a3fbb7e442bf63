"""``python -m ingestion reindex PATH... [--collection NAME]``: rebuild a collection from its
media with no downtime.

Everything under the paths is ingested into a new collection ``NAME-<UTC time>`` while the
service keeps answering from the current one; when the run has finished (and its index is
built), the name ``NAME`` is switched to the new collection in one step: a Qdrant alias on a
server, ``aliases.json`` beside the embedded collections. Readers see the old collection or the
new one, never neither and never half of one. The old collection is then dropped, unless a
running service still holds it (embedded engine): it says so, and which folder to remove later.

Use it after changing a build-time setting (binary encoding, HNSW graph) or the models: an
ordinary ``ingest`` refuses to mix them into an existing collection.
"""

from __future__ import annotations

import argparse
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from app.core.errors import StoreLockedError


def new_name(name: str, now: datetime) -> str:
    return f"{name}-{now:%Y%m%d%H%M%S}"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reindex",
        help="rebuild a collection into a new one, then switch its name over (no downtime)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    parser.add_argument("--collection", help="collection name (default: settings' collection)")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: settings)")
    parser.add_argument(
        "--tag", action="append", default=[], metavar="T", help="tag every file (repeatable)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, console: Console) -> int:
    from app.core.collections import validate_collection_name
    from app.wiring import build_store
    from ingestion.cli import EXIT_CANNOT_RUN, main, settings_from

    settings = settings_from(args)
    name = settings.collection
    store = build_store(settings)
    try:
        before = store.resolve(name) if store.exists(name) else None
        target = validate_collection_name(new_name(name, datetime.now(UTC)))
        n = 1
        while store.exists(target):  # two runs in one second
            n += 1
            target = validate_collection_name(f"{new_name(name, datetime.now(UTC))}-{n}")
    finally:
        store.close()
    argv = ["ingest", *map(str, args.paths), "--collection", target]
    argv += ["--data-dir", str(settings.data_dir)]
    argv += [f"--tag={t}" for t in args.tag] + (["--quiet"] if args.quiet else [])
    console.print(f"building {target!r} (the service keeps answering from {name!r})…")
    code = main(argv)
    store = build_store(settings)
    try:
        if code == EXIT_CANNOT_RUN or not store.exists(target):
            if store.exists(target):
                store.drop(target)
            console.print(f"[red]nothing switched[/red]: {name!r} is as it was")
            return EXIT_CANNOT_RUN
        replaced = store.switch_alias(name, target)
        console.print(f"[green]{name!r} now reads from {target!r}[/green]")
        old = replaced or before
        if old and old != target:
            try:
                store.drop(old)
            except StoreLockedError:
                console.print(
                    f"the old collection {old!r} is still open in the running service; it "
                    "answers from the new one now. Remove the folder "
                    f"{settings.collections_dir / old} after the service restarts."
                )
            else:
                shutil.rmtree(settings.thumbnails_dir / old, ignore_errors=True)
                console.print(f"dropped the old collection {old!r}")
    finally:
        store.close()
    return code
