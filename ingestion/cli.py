"""``python -m ingestion``: the ingestion command line.

    python -m ingestion ingest PATH... [--collection NAME] [--tag T]... [--sync] [--dry-run]
    python -m ingestion ingest --via http://HOST:PORT [--upload] PATH...      (ingestion.remote)
    python -m ingestion train PAIRS --out DIR [--arch NAME | --from WEIGHTS]   (ingestion.train)
    python -m ingestion eval QUERIES [--collection NAME] [--out DIR]          (ingestion.evaluate)
    python -m ingestion calibrate QUERIES [--collection NAME] [--write]       (ingestion.calibrate)
    python -m ingestion autotune [--collection NAME] [--target-recall 0.98]   (ingestion.autotune)

Exit status of ``ingest``: 0 when every file was stored or unchanged; 1 when some files failed
(everything else is stored, and the summary says why each failed); 2 when nothing could run (a
bad setting, missing model weights, the collection locked by a running service: then
``--via`` hands the work to that service). The other commands say theirs in ``--help``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL.Image import Image
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.core.collections import validate_collection_name
from app.core.errors import MMRagError, StoreLockedError
from app.core.models import EmbeddingModelInfo
from app.core.ports import FloatMatrix, ImageTextEmbedder, TextEmbedder, VectorCollection
from app.settings import Settings
from ingestion.pipeline import (
    IngestionPipeline,
    IngestReport,
    IngestRequest,
    Outcome,
    ProgressSink,
)
from ingestion.readers import read_options_for

EXIT_OK, EXIT_SOME_FAILED, EXIT_CANNOT_RUN = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ingestion", description="Ingest media into the multimodal index."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ingest = sub.add_parser("ingest", help="embed files and folders into a collection")
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    ingest.add_argument("--collection", help="collection name (default: settings' collection)")
    ingest.add_argument("--data-dir", type=Path, help="data directory (default: settings)")
    ingest.add_argument(
        "--tag", action="append", default=[], metavar="T", help="tag every file (repeatable)"
    )
    ingest.add_argument(
        "--sync", action="store_true", help="remove points of files gone from the given paths"
    )
    ingest.add_argument(
        "--dry-run", action="store_true", help="show what would change; write nothing"
    )
    ingest.add_argument(
        "--verify",
        action="store_true",
        help="hash every file, even those whose size and modification time are unchanged",
    )
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.add_argument(
        "--via",
        metavar="URL",
        help=(
            "ingest through the running service at URL (http://127.0.0.1:8000) instead of "
            "opening the collection here; it reads the paths itself (under its "
            "MMRAG_HTTP__INGEST_ROOTS), or, with --upload, gets the files"
        ),
    )
    ingest.add_argument(
        "--upload",
        action="store_true",
        help="with --via: upload the files found (for a service that cannot read them)",
    )
    ingest.add_argument(
        "--api-key",
        metavar="KEY",
        help="with --via: the service's API key (default: $MMRAG_API_KEY)",
    )
    # The other commands live in their own modules (light at import: torch loads in run()).
    for module in _COMMAND_MODULES.values():
        importlib.import_module(module).add_parser(sub)
    return parser


# command -> module with ``add_parser(subparsers)`` and ``run(args, console) -> exit code``
_COMMAND_MODULES = {
    "train": "ingestion.train",
    "eval": "ingestion.evaluate",
    "calibrate": "ingestion.calibrate",
    "autotune": "ingestion.autotune",
    "migrate": "ingestion.migrate",
    "reindex": "ingestion.reindex",
}


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.collection is not None:
        overrides["collection"] = validate_collection_name(args.collection)
    return Settings(**overrides)  # type: ignore[arg-type]


def _summary(report: IngestReport, console: Console, *, dry_run: bool) -> None:
    table = Table(title="Dry run: nothing written" if dry_run else "Ingestion summary")
    table.add_column("outcome")
    table.add_column("files", justify="right")
    for outcome in Outcome:
        n = report.count(outcome)
        if n:
            table.add_row(outcome.value, str(n))
    if report.unsupported:
        table.add_row("skipped (unsupported type)", str(len(report.unsupported)))
    console.print(table)
    if dry_run:
        verbs = {"ingested": "ingest", "replaced": "replace", "repaired": "repair"}
        for r in report.results:
            if r.outcome is Outcome.PLANNED:
                console.print(f"  would {verbs.get(r.reason or '', r.reason)}: {r.path}")
            elif r.outcome is Outcome.REMOVED:
                console.print(f"  would remove: {r.path}")
    for root in report.missing_roots:
        console.print(f"[red]path not found:[/red] {root}")
    for r in report.failed:
        console.print(f"[red]failed:[/red] {r.path}: {r.reason}")
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    if report.timings_s:
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in report.timings_s.items())
        console.print(f"time by stage: {stages}")


def _all_missing(paths: Sequence[Path]) -> list[Path]:
    """The given paths when none of them exists (then there is nothing to do), else [].

    A path that cannot be looked at (permission denied) is not missing: discovery reports it.
    """
    missing = []
    for path in paths:
        try:
            path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            missing.append(path)
        except OSError:
            return []
    return missing if len(missing) == len(paths) else []


class _Models:
    """CLIP and the text model, loaded on first use: an unchanged library never needs them
    (importing open_clip and loading the weights is most of a no-op run's time)."""

    def __init__(self, load: Callable[[], tuple[ImageTextEmbedder, TextEmbedder]]) -> None:
        self._load = load
        self._loaded: tuple[ImageTextEmbedder, TextEmbedder] | None = None

    def get(self) -> tuple[ImageTextEmbedder, TextEmbedder]:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded


class _LazyClip:
    def __init__(self, models: _Models) -> None:
        self._models = models

    @property
    def info(self) -> EmbeddingModelInfo:
        return self._models.get()[0].info

    def embed_images(self, images: Sequence[Image]) -> FloatMatrix:
        return self._models.get()[0].embed_images(images)

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix:
        return self._models.get()[0].embed_texts(texts)


class _LazyText:
    def __init__(self, models: _Models) -> None:
        self._models = models

    @property
    def info(self) -> EmbeddingModelInfo:
        return self._models.get()[1].info

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix:
        return self._models.get()[1].embed_texts(texts)


def _load_models(settings: Settings, console: Console) -> tuple[ImageTextEmbedder, TextEmbedder]:
    from app.wiring import build_clip, build_text

    console.print("loading models…")
    started = time.perf_counter()
    clip, text = build_clip(settings), build_text(settings)
    console.print(
        f"models: clip={clip.info.name} ({clip.info.weights}, "
        f"{'aligned' if clip.info.aligned else 'NOT aligned: image queries only'}), "
        f"text={text.info.name} (loaded in {time.perf_counter() - started:.1f}s)"
    )
    return clip, text


def _ingest(args: argparse.Namespace, console: Console) -> int:
    if problem := _misused(args):
        console.print(f"[red]error:[/red] {problem}")
        return EXIT_CANNOT_RUN
    settings = settings_from(args)
    paths = tuple(p.expanduser() for p in args.paths)
    if missing := _all_missing(paths):
        # Checked before loading models or creating a collection: nothing could run.
        for path in missing:
            console.print(f"[red]path not found:[/red] {path}")
        return EXIT_CANNOT_RUN
    if args.via:
        return _ingest_via(args, settings, paths, console)
    try:
        return _ingest_here(args, settings, paths, console)
    except StoreLockedError as exc:
        console.print(f"[red]error:[/red] {exc}")
        console.print(
            "When it is the service that holds it, ingest through the service: "
            f"[bold]--via {service_url(settings)}[/bold] (add --upload when it does not "
            "share these folders)."
        )
        return EXIT_CANNOT_RUN


def _misused(args: argparse.Namespace) -> str | None:
    """Why these options cannot go together, or None."""
    if not args.via:
        return "--upload and --api-key go with --via" if args.upload or args.api_key else None
    local = [
        f"--{n.replace('_', '-')}" for n in ("dry_run", "verify", "data_dir") if getattr(args, n)
    ]
    if local:
        return f"{', '.join(local)} work on a local run only, not with --via"
    if args.upload and args.sync:
        return "--sync needs paths the service reads itself, not --upload"
    return None


def service_url(settings: Settings) -> str:
    """The configured service as a client reaches it (a wildcard host means this machine)."""
    host = settings.http.host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    return (
        f"http://[{host}]:{settings.http.port}"
        if ":" in host
        else f"http://{host}:{settings.http.port}"
    )


def _ingest_here(
    args: argparse.Namespace, settings: Settings, paths: tuple[Path, ...], console: Console
) -> int:
    from app.wiring import build_ocr, build_speech, build_store, collection_spec

    store = build_store(settings)
    try:
        name = settings.collection
        explicit = settings.quantization.index_settings_explicit
        clip: ImageTextEmbedder
        text: TextEmbedder
        collection: VectorCollection | None = None
        if store.exists(name) and not explicit:
            # Plan from the stored collection; models load only when something must be embedded,
            # and are then checked against the collection before the first vector is written.
            collection = store.open_stored(name)

            def load() -> tuple[ImageTextEmbedder, TextEmbedder]:
                loaded = _load_models(settings, console)
                store.open(collection_spec(settings, name, *loaded), create=False)
                return loaded

            models = _Models(load)
            clip, text = _LazyClip(models), _LazyText(models)
        else:
            clip, text = _load_models(settings, console)
            if not args.dry_run or store.exists(name):
                collection = store.open(
                    collection_spec(settings, name, clip, text),
                    create=not args.dry_run,
                    require_index_settings=explicit,
                )
            else:
                console.print(f"collection {name!r} does not exist yet; every file would be new")
        ocr, ocr_notice = build_ocr(settings)
        speech, speech_notice = build_speech(settings)
        options = read_options_for(
            settings, name, tags=tuple(dict.fromkeys(args.tag)), ocr=ocr, speech=speech
        )
        pipeline = IngestionPipeline(
            collection,
            clip,
            text,
            options,
            write_batch_assets=settings.ingestion.write_batch_assets,
        )
        request = IngestRequest(
            paths=paths,
            sync=args.sync,
            dry_run=args.dry_run,
            verify=args.verify,
            exclude=(settings.data_dir,),
        )
        quiet = args.quiet or args.dry_run
        report = _with_progress(
            lambda sink: pipeline.run(request, sink), console=console, quiet=quiet
        )
        report.warnings.extend(n for n in (ocr_notice, speech_notice) if n)
        if collection is not None and not args.dry_run:
            stats = collection.stats()
            console.print(
                f"collection {name!r}: {stats.assets} assets, {stats.points} points, "
                f"{stats.indexed_vectors} vectors indexed ({settings.data_dir.resolve()})"
            )
    finally:
        store.close()
    _summary(report, console, dry_run=args.dry_run)
    return EXIT_OK if report.ok else EXIT_SOME_FAILED


class _RichProgress:
    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task = progress.add_task("planning (hashing files)…", total=None)

    def start(self, total: int) -> None:
        description = "ingesting" if total else "nothing new to ingest"
        self._progress.update(self._task, total=total, description=description)

    def advance(self, done: int, description: str) -> None:
        self._progress.update(self._task, advance=done, description=description)


def _with_progress(
    run: Callable[[ProgressSink | None], IngestReport], *, console: Console, quiet: bool
) -> IngestReport:
    """``run`` (a local pipeline, or a job followed on a service) with the progress bar."""
    if quiet:
        return run(None)
    columns = (
        TextColumn("[progress.description]{task.description:<32.32}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        return run(_RichProgress(progress))


def _ingest_via(
    args: argparse.Namespace, settings: Settings, paths: tuple[Path, ...], console: Console
) -> int:
    """The same run, done by the service at ``--via``: same bar, summary and exit codes."""
    from ingestion.remote import ServiceClient, ingest_paths, ingest_uploads

    tags = tuple(dict.fromkeys(args.tag))
    name = settings.collection
    show = functools.partial(_with_progress, console=console, quiet=args.quiet)
    with ServiceClient(args.via, api_key=args.api_key) as client:
        if args.upload:
            exclude = (settings.data_dir,)
            report = ingest_uploads(
                client,
                paths,
                collection=name,
                tags=tags,
                exclude=exclude,
                show=show,
                say=console.print,
            )
        else:
            report = ingest_paths(
                client,
                paths,
                collection=name,
                tags=tags,
                sync=args.sync,
                show=show,
                say=console.print,
            )
        if any(r.outcome is not Outcome.FAILED for r in report.results):
            stats = client.collection_stats(name)
            console.print(
                f"collection {name!r}: {stats['assets']} assets, {stats['points']} points, "
                f"{stats['indexed_vectors']} vectors indexed ({client.base_url})"
            )
    _summary(report, console, dry_run=False)
    return EXIT_OK if report.ok else EXIT_SOME_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    console = Console(soft_wrap=True)
    try:
        if args.command == "ingest":
            return _ingest(args, console)
        if args.command in _COMMAND_MODULES:
            run: Callable[[argparse.Namespace, Console], int] = importlib.import_module(
                _COMMAND_MODULES[args.command]
            ).run
            return run(args, console)
    except MMRagError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return EXIT_CANNOT_RUN
    except ValidationError as exc:
        console.print(f"[red]invalid settings[/red] (MMRAG_* environment or .env): {exc}")
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted[/yellow]: run the same command again to finish; "
            "nothing is duplicated"
        )
        return 130
    return EXIT_CANNOT_RUN


if __name__ == "__main__":
    sys.exit(main())
