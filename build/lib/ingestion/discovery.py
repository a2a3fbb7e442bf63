"""Finding files, classifying them, and the captions that sit next to images."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.core.models import Modality

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
MANIFEST_NAMES = ("captions.csv", "captions.jsonl")
SIDECAR_SUFFIX = ".txt"


def modality_of(path: Path) -> Modality | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return Modality.IMAGE
    if suffix in TEXT_SUFFIXES:
        return Modality.TEXT
    return None


def is_sidecar(path: Path) -> bool:
    """``photo.jpg.txt`` describes ``photo.jpg``; it is not a document of its own."""
    if path.suffix.lower() != SIDECAR_SUFFIX:
        return False
    target = path.with_suffix("")
    return target.suffix.lower() in IMAGE_SUFFIXES and target.exists()


@dataclass(frozen=True, slots=True)
class Discovered:
    path: Path
    modality: Modality


@dataclass(slots=True)
class Discovery:
    files: list[Discovered] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)


def _walk(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files and folders (.git, .DS_Store, editor swap files)
        if path.is_file():
            yield path


def discover(roots: Iterable[Path]) -> Discovery:
    found = Discovery()
    seen: set[Path] = set()
    for root in roots:
        if not root.exists():
            found.missing.append(root)
            continue
        for path in _walk(root):
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            if path.name in MANIFEST_NAMES or is_sidecar(path):
                continue
            modality = modality_of(path)
            if modality is None:
                found.unsupported.append(resolved)
            else:
                found.files.append(Discovered(resolved, modality))
    return found


@dataclass(frozen=True, slots=True)
class CaptionEntry:
    caption: str | None = None
    title: str | None = None
    tags: tuple[str, ...] = ()


def _split_tags(value: object) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(t).strip() for t in value if str(t).strip())
    if isinstance(value, str):
        return tuple(t.strip() for t in value.replace("|", ";").split(";") if t.strip())
    return ()


def _entry(row: dict[str, object]) -> tuple[str, CaptionEntry] | None:
    name = next((row[k] for k in ("file", "filename", "path", "image") if row.get(k)), None)
    if not isinstance(name, str):
        return None
    caption = row.get("caption") or row.get("description") or row.get("text")
    title = row.get("title")
    return Path(name).name, CaptionEntry(
        caption=str(caption).strip() if caption else None,
        title=str(title).strip() if title else None,
        tags=_split_tags(row.get("tags")),
    )


class CaptionIndex:
    """Captions from ``captions.csv`` / ``captions.jsonl`` manifests, one lookup per folder."""

    def __init__(self) -> None:
        self._folders: dict[Path, dict[str, CaptionEntry]] = {}
        self.problems: list[str] = []

    def lookup(self, path: Path) -> CaptionEntry | None:
        folder = path.parent
        if folder not in self._folders:
            self._folders[folder] = self._load(folder)
        return self._folders[folder].get(path.name)

    def _load(self, folder: Path) -> dict[str, CaptionEntry]:
        entries: dict[str, CaptionEntry] = {}
        csv_path, jsonl_path = folder / MANIFEST_NAMES[0], folder / MANIFEST_NAMES[1]
        try:
            if csv_path.is_file():
                with csv_path.open(newline="", encoding="utf-8-sig") as fh:
                    for row in csv.DictReader(fh):
                        item = _entry({k.strip().lower(): v for k, v in row.items() if k})
                        if item:
                            entries[item[0]] = item[1]
            if jsonl_path.is_file():
                for n, line in enumerate(jsonl_path.read_text(encoding="utf-8").splitlines(), 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        self.problems.append(f"{jsonl_path}:{n}: not JSON ({exc.msg})")
                        continue
                    item = _entry(row) if isinstance(row, dict) else None
                    if item:
                        entries[item[0]] = item[1]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            self.problems.append(f"{folder}: caption manifest unreadable ({exc})")
        return entries
