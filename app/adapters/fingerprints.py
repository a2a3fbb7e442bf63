"""SHA-256 of large local files (model checkpoints), hashed once per version of the file.

A digest is kept in ``<cache>/fingerprints.json`` under the file's resolved path with its size
and modification time; while both match, the digest is reused instead of reading the file again
(a 605 MB checkpoint took ~0.5 s at every start of both edges). The cache lives beside the
packaged models, so read-only checkpoint mounts work too; a cache that cannot be written only
costs the hashing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_CHUNK = 1 << 22


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmrag"


def file_sha256(path: Path, *, cache_dir: Path | None = None) -> str:
    st = path.stat()
    key = str(path.resolve())
    cache = (cache_dir or default_cache_dir()) / "fingerprints.json"
    try:
        known = json.loads(cache.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(key)
    if (
        isinstance(entry, dict)
        and entry.get("size") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
        and isinstance(entry.get("sha256"), str)
    ):
        return str(entry["sha256"])
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    known[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(cache)
    except OSError:
        pass  # read-only home: hash again next time
    return digest.hexdigest()
