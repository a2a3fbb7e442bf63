"""SHA-256 of large local files (model checkpoints), hashed once per version of the file.

A digest is kept in ``<cache>/fingerprints.json`` under the file's resolved path with its size
and modification time; while both match, the digest is reused instead of reading the file again
(a 605 MB checkpoint took ~0.5 s at every start of both edges). The cache lives beside the
packaged models, so read-only checkpoint mounts work too; a cache that cannot be written only
costs the hashing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from app.core.ids import sha256_file


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmrag"


def _cache_file(cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "fingerprints.json"


def _load(cache: Path) -> dict[str, object]:
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def remember_sha256(path: Path, sha256: str, *, cache_dir: Path | None = None) -> None:
    """Record a digest computed elsewhere (while writing the file, say)."""
    st = path.stat()
    cache = _cache_file(cache_dir)
    known = {k: v for k, v in _load(cache).items() if Path(k).exists()}  # forget deleted files
    known[str(path.resolve())] = {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": sha256,
    }
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(cache)
    except OSError:
        pass  # read-only home: hash again next time


def file_sha256(path: Path, *, cache_dir: Path | None = None) -> str:
    st = path.stat()
    entry = _load(_cache_file(cache_dir)).get(str(path.resolve()))
    if (
        isinstance(entry, dict)
        and entry.get("size") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
        and isinstance(entry.get("sha256"), str)
    ):
        return str(entry["sha256"])
    digest = sha256_file(path)
    remember_sha256(path, digest, cache_dir=cache_dir)
    return digest
