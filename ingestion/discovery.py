"""Finding files, classifying them, and the captions that sit next to images."""

from __future__ import annotations

import csv
import json
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.core.models import Modality

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi"})
AUDIO_SUFFIXES = frozenset({".mp3", ".wav", ".flac", ".ogg", ".oga", ".m4a", ".opus", ".aac"})
PDF_SUFFIXES = frozenset({".pdf"})
MANIFEST_NAMES = ("captions.csv", "captions.jsonl")
SIDECAR_SUFFIX = ".txt"
TRANSCRIPT_SUFFIXES = frozenset({".srt", ".vtt"})
_BY_SUFFIX = {
    **dict.fromkeys(IMAGE_SUFFIXES, Modality.IMAGE),
    **dict.fromkeys(TEXT_SUFFIXES, Modality.TEXT),
    **dict.fromkeys(VIDEO_SUFFIXES, Modality.VIDEO),
    **dict.fromkeys(AUDIO_SUFFIXES, Modality.AUDIO),
    **dict.fromkeys(PDF_SUFFIXES, Modality.PDF),
}
_MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES | AUDIO_SUFFIXES


def modality_of(path: Path) -> Modality | None:
    return _BY_SUFFIX.get(path.suffix.lower())


def is_sidecar(path: Path) -> bool:
    """Words about another file, not a document of their own: ``photo.jpg.txt`` (a caption or
    a transcript), ``talk.srt`` / ``talk.vtt`` / ``talk.mp4.srt`` (timed transcripts)."""
    suffix = path.suffix.lower()
    if suffix == SIDECAR_SUFFIX:
        target = path.with_suffix("")
        return target.suffix.lower() in _MEDIA_SUFFIXES and target.exists()
    if suffix in TRANSCRIPT_SUFFIXES:
        inner = path.with_suffix("")
        if inner.suffix.lower() in VIDEO_SUFFIXES | AUDIO_SUFFIXES:
            return inner.exists()
        return any(
            inner.with_suffix(s).exists()
            for s in (*VIDEO_SUFFIXES, *AUDIO_SUFFIXES)
            if path.parent == inner.parent
        )
    return False


@dataclass(frozen=True, slots=True)
class Discovered:
    path: Path  # resolved: no link on the way, inside ``root``
    modality: Modality
    root: Path  # the resolved library root it was found under


@dataclass(frozen=True, slots=True)
class Refused:
    """Something found under a root that must not be read, with the reason."""

    path: Path  # as it stands in the library (for a link: the link, never its target)
    reason: str
    target: Path | None = None  # where an escaping link leads: stored copies of it must go


@dataclass(slots=True)
class Discovery:
    files: list[Discovered] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    skipped_dirs: list[Path] = field(default_factory=list)  # data directories never descended


def library_root(root: Path) -> Path:
    """The folder a path given on the command line stands for: itself, or a file's folder."""
    return root.resolve() if root.is_dir() else root.parent.resolve()


class _Walker:
    """Walks library roots without leaving them.

    Symbolic links: a link to a *file* is followed when its target stays inside the root being
    scanned (the target is stored, once); a link whose target leaves the root, or is broken, is
    refused and reported. Links to *folders* are never descended: inside the root their files
    are reached through their real path anyway, and one that leads outside is refused.
    Hidden entries (``.git``, ``.DS_Store``) and the excluded folders (the data directory) are
    skipped; anything that is not a regular file (a FIFO, a socket) is unsupported.
    """

    def __init__(self, exclude: Iterable[Path], found: Discovery) -> None:
        self._exclude = {p.resolve() for p in exclude}
        self._found = found

    def _excluded(self, path: Path) -> bool:
        return any(path == ex or path.is_relative_to(ex) for ex in self._exclude)

    def walk(self, given: Path) -> Iterator[tuple[Path, Path]]:
        """(resolved file, resolved root) pairs under a path given by the user."""
        try:
            given.stat()
        except FileNotFoundError:
            self._found.missing.append(given)
            return
        except OSError as exc:
            self._found.refused.append(Refused(given, f"cannot access: {exc.strerror or exc}"))
            return
        base = library_root(given)
        if self._excluded(base):
            self._found.skipped_dirs.append(base)
            return
        if not given.is_dir():
            if (real := self._inside(base / given.name, base)) is not None:
                yield real, base
            return
        for dirpath, dirnames, filenames in os.walk(base, onerror=self._unreadable):
            folder = Path(dirpath)
            dirnames[:] = [name for name in sorted(dirnames) if self._descend(folder / name, base)]
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                if (real := self._inside(folder / name, base)) is not None:
                    yield real, base

    def _descend(self, sub: Path, base: Path) -> bool:
        if sub.name.startswith("."):
            return False
        if sub.is_symlink():
            self._inside(sub, base)  # refused when it leads outside; never descended
            return False
        if self._excluded(sub):
            self._found.skipped_dirs.append(sub)
            return False
        return True

    def _inside(self, path: Path, base: Path) -> Path | None:
        """The real path of ``path`` when it is a regular file inside ``base``; else report."""
        if not path.is_symlink():
            return path if self._regular(path) else None
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            self._found.refused.append(Refused(path, "broken symbolic link"))
            return None
        if not target.is_relative_to(base):
            reason = "symbolic link leads outside the library folder; refused"
            self._found.refused.append(Refused(path, reason, target))
            return None
        if target.is_dir():
            return None  # an in-root folder link: its files are reached through the real path
        return target if self._regular(target) else None

    def _regular(self, path: Path) -> bool:
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            self._found.refused.append(Refused(path, f"cannot access: {exc.strerror or exc}"))
            return False
        if not stat.S_ISREG(mode):
            self._found.unsupported.append(path)
            return False
        return True

    def _unreadable(self, exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else Path()
        self._found.refused.append(Refused(where, f"folder unreadable: {exc.strerror or exc}"))


def discover(roots: Iterable[Path], *, exclude: Iterable[Path] = ()) -> Discovery:
    found = Discovery()
    walker = _Walker(exclude, found)
    seen: set[Path] = set()
    for root in roots:
        for path, base in walker.walk(root):
            if path in seen:
                continue
            seen.add(path)
            if path.name in MANIFEST_NAMES or is_sidecar(path):
                continue
            modality = modality_of(path)
            if modality is None:
                found.unsupported.append(path)
            else:
                found.files.append(Discovered(path, modality, base))
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
