"""Deterministic identifiers: the same file always gets the same asset and point ids."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

_POINT_NAMESPACE = uuid.UUID("6f1c8a52-3b0e-4c55-9f7e-2b4d7e0a9c31")
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def asset_id_for(content_sha256: str, source: str) -> str:
    """An asset is a file's content at a path: a changed file gets a new id.

    The path is part of the id so that two copies of one photo in different folders stay two
    assets (each removable by ``--sync`` on its own).
    """
    return hashlib.sha256(f"{content_sha256}\0{source}".encode()).hexdigest()[:32]


def point_id_for(asset_id: str, segment_index: int) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{asset_id}:{segment_index}"))
