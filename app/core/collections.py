"""Collection specs: names, (de)serialisation, and the check that refuses to mix vector spaces."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

from app.core.errors import CollectionMismatchError, InputError
from app.core.models import (
    BinaryEncoding,
    CollectionSpec,
    CollectionTuning,
    EmbeddingModelInfo,
    QuantizationSpec,
    QueryEncoding,
    RelevanceThresholds,
    SearchTuning,
)

COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME_RE = re.compile(COLLECTION_NAME_PATTERN)
SPEC_VERSION = 1

# Fixed when the collection is built (rescore, oversampling and ef ride on each query).
BUILD_TIME_QUANTIZATION = tuple(f.name for f in fields(QuantizationSpec))
# Query-time knobs that collection.json files written before the split still carry.
_LEGACY_QUERY_TIME = ("rescore", "oversampling", "hnsw_ef")


def validate_collection_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        msg = (
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
        raise InputError(msg)
    return name


def spec_to_dict(spec: CollectionSpec) -> dict[str, Any]:
    return {"spec_version": SPEC_VERSION, **asdict(spec)}


def spec_from_dict(data: dict[str, Any]) -> CollectionSpec:
    q = {k: v for k, v in data["quantization"].items() if k not in _LEGACY_QUERY_TIME}
    q["encoding"] = BinaryEncoding(q["encoding"])
    q["query_encoding"] = QueryEncoding(q["query_encoding"])
    return CollectionSpec(
        name=str(data["name"]),
        clip=EmbeddingModelInfo(**data["clip"]),
        text=EmbeddingModelInfo(**data["text"]),
        quantization=QuantizationSpec(**q),
    )


def check_compatible(
    stored: CollectionSpec, wanted: CollectionSpec, *, require_index_settings: bool = False
) -> None:
    """Fail when the configured models differ from the stored ones: that would mix vector spaces.

    Build-time index settings (encoding, query encoding, HNSW graph) are the collection's own
    once it exists; they are only enforced when the caller set them on purpose
    (``require_index_settings``), so changing a default never locks anyone out of their data.
    """
    problems: list[str] = []
    for signal in ("clip", "text"):
        have: EmbeddingModelInfo = getattr(stored, signal)
        want: EmbeddingModelInfo = getattr(wanted, signal)
        for f in fields(EmbeddingModelInfo):
            a, b = getattr(have, f.name), getattr(want, f.name)
            if a != b:
                problems.append(f"{signal}.{f.name}: collection has {a!r}, settings give {b!r}")
    for name in BUILD_TIME_QUANTIZATION if require_index_settings else ():
        a, b = getattr(stored.quantization, name), getattr(wanted.quantization, name)
        if a != b:
            problems.append(f"quantization.{name}: collection has {a}, settings give {b}")
    if problems:
        msg = (
            f"collection {stored.name!r} was built with other settings; mixing them would "
            "compare vectors from different spaces:\n  - "
            + "\n  - ".join(problems)
            + "\nUse the settings it was built with, or ingest into a new collection "
            "(--collection / MMRAG_COLLECTION)."
        )
        raise CollectionMismatchError(msg)


def tuning_to_dict(tuning: CollectionTuning) -> dict[str, Any]:
    """A collection's tuning as saved with it (``tuning.json``, or server metadata)."""
    return {
        "thresholds": {k: v for k, v in asdict(tuning.thresholds).items() if v is not None},
        "search": asdict(tuning.search) if tuning.search else None,
        "notes": list(tuning.notes),
    }


def tuning_from_dict(data: Mapping[str, Any] | None, where: str) -> CollectionTuning:
    """The saved tuning; nothing saved is no tuning. ``where`` names it in the error."""
    if not data:
        return CollectionTuning()
    try:
        search = data.get("search")
        return CollectionTuning(
            thresholds=RelevanceThresholds(**(data.get("thresholds") or {})),
            search=SearchTuning(**search) if search else None,
            notes=tuple(data.get("notes") or ()),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        msg = f"{where} is unreadable ({exc}); fix it or delete it to use the defaults"
        raise CollectionMismatchError(msg) from exc
