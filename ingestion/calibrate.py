"""``python -m ingestion calibrate QUERIES --collection NAME``: relevance thresholds measured on
a collection instead of guessed.

Every query of the file (the ``eval`` format: a text or an image, and its relevant assets) is
run through the real retriever; each hit's per-signal scores are labelled relevant or not. For
each threshold (``min_text_score``, ``min_clip_text_score``, ``min_clip_image_score``,
``min_bm25_coverage``) the rule is: **the highest threshold that keeps ``--keep`` (95 %) of the
relevant hits** on that signal. Its precision and recall on the labelled hits are printed; with
``--write`` the thresholds go to the collection's ``tuning.json``, and the service uses them over
the defaults (a threshold set explicitly in the settings still wins).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from app.core.models import SearchHit, Signal
from app.core.retrieval import QueryKind

# threshold name -> (kind of query it judges, the signal it reads)
THRESHOLDS: dict[str, tuple[QueryKind, Signal]] = {
    "min_text_score": (QueryKind.TEXT, Signal.TEXT),
    "min_clip_text_score": (QueryKind.TEXT, Signal.CLIP),
    "min_clip_image_score": (QueryKind.IMAGE, Signal.CLIP),
    "min_bm25_coverage": (QueryKind.TEXT, Signal.BM25),
}
MIN_RELEVANT = 5  # fewer labelled relevant hits than this: no threshold is chosen for a signal


@dataclass(frozen=True, slots=True)
class Labelled:
    """One hit's score on one signal, and whether the query's relevant set holds its asset."""

    score: float
    relevant: bool


@dataclass(frozen=True, slots=True)
class Choice:
    name: str
    threshold: float | None  # None: not enough relevant hits to choose
    relevant: int
    irrelevant: int
    precision: float | None  # of hits at or above the threshold, the share that is relevant
    recall: float | None  # of relevant hits, the share at or above the threshold
    reason: str = ""


def choose(name: str, scores: Sequence[Labelled], *, keep: float) -> Choice:
    """The highest threshold that keeps ``keep`` of the relevant scores, with its precision and
    recall over all the labelled scores."""
    relevant = sorted((s.score for s in scores if s.relevant), reverse=True)
    irrelevant = sum(1 for s in scores if not s.relevant)
    if len(relevant) < MIN_RELEVANT:
        reason = f"only {len(relevant)} relevant hits scored on this signal (need {MIN_RELEVANT})"
        return Choice(name, None, len(relevant), irrelevant, None, None, reason)
    kept = max(1, math.ceil(keep * len(relevant)))
    threshold = relevant[kept - 1]
    above = [s for s in scores if s.score >= threshold]
    true_above = sum(1 for s in above if s.relevant)
    return Choice(
        name,
        round(threshold, 4),
        len(relevant),
        irrelevant,
        true_above / len(above),
        true_above / len(relevant),
    )


def label_hits(
    kind: QueryKind, hits: Sequence[SearchHit], relevant_ids: set[str]
) -> dict[str, list[Labelled]]:
    """Each threshold's labelled scores from one query's hits."""
    out: dict[str, list[Labelled]] = {name: [] for name in THRESHOLDS}
    for hit in hits:
        is_relevant = hit.segment.asset.asset_id in relevant_ids
        for name, (judged, signal) in THRESHOLDS.items():
            score = hit.signal_scores.get(signal)
            if judged is kind and score is not None:
                out[name].append(Labelled(score, is_relevant))
    return out


def calibrate(
    retriever: Any,
    collection: Any,
    queries: Sequence[Any],
    *,
    keep: float,
    depth: int,
    load_image: Any,
) -> list[Choice]:
    """Runs every query (``text`` or ``image`` attribute, ``relevant_ids``) and chooses each
    threshold from the labelled scores of its hits."""
    labelled: dict[str, list[Labelled]] = {name: [] for name in THRESHOLDS}
    for query in queries:
        if query.text is not None:
            found = retriever.search_text(collection, query.text, top_k=depth)
        else:
            found = retriever.search_image(collection, load_image(query.image), top_k=depth)
        for name, scores in label_hits(found.kind, found.hits, set(query.relevant_ids)).items():
            labelled[name].extend(scores)
    return [choose(name, labelled[name], keep=keep) for name in THRESHOLDS]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="choose relevance thresholds from labelled queries (the eval format)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("queries", type=Path, metavar="QUERIES")
    parser.add_argument("--collection", help="collection name (default: settings' collection)")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: settings)")
    parser.add_argument(
        "--keep",
        type=float,
        default=0.95,
        help="share of relevant hits each threshold keeps (default 0.95)",
    )
    parser.add_argument("--depth", type=int, default=20, help="hits scored per query")
    parser.add_argument(
        "--write", action="store_true", help="save them to the collection's tuning.json"
    )


def run(args: argparse.Namespace, console: Console) -> int:
    from app.core.errors import InputError
    from app.wiring import build_clip, build_retriever, build_store, build_text, collection_spec
    from ingestion.cli import settings_from
    from ingestion.evaluate import load_image, load_queries

    if not 0 < args.keep <= 1:
        raise InputError("--keep must be in (0, 1]")
    settings = settings_from(args)
    name = settings.collection
    store = build_store(settings)
    try:
        clip, text = build_clip(settings), build_text(settings)
        collection = store.open(collection_spec(settings, name, clip, text), create=False)
        queries, problems = load_queries(args.queries, collection)
        for problem in problems:
            console.print(f"[yellow]skipped:[/yellow] {problem}")
        if not queries:
            console.print("[red]no usable query in the file[/red]")
            return 2
        retriever = build_retriever(settings, clip, text)
        choices = calibrate(
            retriever,
            collection,
            queries,
            keep=args.keep,
            depth=args.depth,
            load_image=load_image,
        )
        _print(console, choices, settings.retrieval, keep=args.keep, queries=len(queries))
        if args.write:
            chosen = {c.name: c.threshold for c in choices if c.threshold is not None}
            old = collection.tuning
            note = (
                f"calibrate {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {len(queries)} queries from "
                f"{args.queries.name}, keep {args.keep:.0%}: "
                + ", ".join(f"{k}={v}" for k, v in chosen.items())
            )
            tuning = replace(
                old,
                thresholds=replace(old.thresholds, **chosen),
                notes=(*old.notes, note),
            )
            store.save_tuning(name, tuning)
            explicit = sorted(set(chosen) & settings.retrieval.model_fields_set)
            console.print(f"written to collection {name!r} (tuning.json): {', '.join(chosen)}")
            if explicit:
                console.print(
                    f"[yellow]note:[/yellow] {', '.join(explicit)} set explicitly in the settings"
                    " (environment or .env) win over the calibrated values"
                )
    finally:
        store.close()
    return 0 if problems == [] else 1


def _print(
    console: Console, choices: Sequence[Choice], defaults: Any, *, keep: float, queries: int
) -> None:
    table = Table(
        title=f"Relevance thresholds: keep {keep:.0%} of relevant hits ({queries} queries)"
    )
    for column in ("threshold", "default", "chosen", "precision", "recall", "relevant/other"):
        table.add_column(column, justify="left" if column == "threshold" else "right")
    for c in choices:
        table.add_row(
            c.name,
            f"{getattr(defaults, c.name):.3f}",
            "-" if c.threshold is None else f"{c.threshold:.3f}",
            "-" if c.precision is None else f"{c.precision:.2f}",
            "-" if c.recall is None else f"{c.recall:.2f}",
            f"{c.relevant}/{c.irrelevant}",
        )
    console.print(table)
    for c in choices:
        if c.reason:
            console.print(f"  {c.name}: not chosen, {c.reason}")


__all__ = ["Choice", "Labelled", "add_parser", "calibrate", "choose", "label_hits", "run"]
