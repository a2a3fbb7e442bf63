"""Text in pictures with the Tesseract command-line program (no Python binding needed).

Each call runs one ``tesseract`` process on a grayscale PNG piped to its stdin, so calls from
several threads do not share state. Words come back as TSV with a confidence each; words below
``min_confidence`` or without a letter or digit are dropped, which keeps the speckle Tesseract
reads into photos out of the index. One picture that fails (timeout, a crash) gives "" and a
warning: a bad video frame must not fail its file.

Tesseract reads printed text (scans, slides, screenshots, captions on plain ground) well and
text painted over busy photos poorly; on such photos it mostly finds nothing, which is fine.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
from typing import TYPE_CHECKING

from PIL import Image as PILImage

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["TesseractOCR", "tesseract_available"]

log = logging.getLogger(__name__)

_UPSCALE_BELOW_PX = 600  # Tesseract wants letters ~30 px tall; small pictures are scaled x2
_MIN_SIDE_PX = 8  # smaller than this holds no legible word (and Tesseract refuses it)
_TSV_COLUMNS = 12  # level page block par line word left top width height conf text
_WORD_LEVEL = "5"


def _child_env() -> dict[str, str]:
    # One OpenMP thread per process: callers run pictures in parallel themselves.
    return {**os.environ, "OMP_THREAD_LIMIT": "1"}


def _run_quietly(command: list[str]) -> str | None:
    """What a short command prints (stdout, else stderr), or None when it cannot run or fails."""
    try:
        done = subprocess.run(  # noqa: S603 - the configured binary, fixed arguments
            command, capture_output=True, timeout=10, check=True, env=_child_env()
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout or done.stderr).decode(errors="replace")


def tesseract_available(binary: str = "tesseract", language: str | None = None) -> str | None:
    """Tesseract's version ("5.3.0") when ``binary`` runs (and has ``language``'s data), else None.

    ``language`` may join several with "+" ("eng+deu"); each must be installed.
    """
    path = shutil.which(binary)
    if path is None:
        return None
    lines = (_run_quietly([path, "--version"]) or "").strip().splitlines()
    if not lines or not lines[0].lower().startswith("tesseract"):
        return None
    if language is not None:
        listed = _run_quietly([path, "--list-langs"])
        if listed is None or not set(language.split("+")) <= set(listed.split()):
            return None
    return lines[0].split()[-1]


def _prepared(image: Image) -> Image:
    """Grayscale on white (transparent parts become white), scaled up when small."""
    if image.mode in {"RGBA", "LA", "PA"} or "transparency" in image.info:
        rgba = image.convert("RGBA")
        ground = PILImage.new("RGBA", rgba.size, "white")
        image = PILImage.alpha_composite(ground, rgba)
    gray = image.convert("L")
    if min(gray.size) < _UPSCALE_BELOW_PX:
        gray = gray.resize((gray.width * 2, gray.height * 2), PILImage.Resampling.LANCZOS)
    return gray


def _has_word_char(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _lines_from_tsv(tsv: str, min_confidence: float) -> list[str]:
    lines: dict[tuple[str, str, str, str], list[str]] = {}  # insertion order = reading order
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) != _TSV_COLUMNS or cols[0] != _WORD_LEVEL:
            continue
        text = cols[11].strip()
        try:
            confidence = float(cols[10])
        except ValueError:
            continue
        if confidence < min_confidence or not _has_word_char(text):
            continue
        lines.setdefault((cols[1], cols[2], cols[3], cols[4]), []).append(text)
    return [" ".join(words) for words in lines.values()]


class TesseractOCR:
    """``TextRecognizer`` that runs the ``tesseract`` program once per picture."""

    def __init__(
        self,
        binary: str = "tesseract",
        language: str = "eng",
        *,
        timeout_s: float = 30.0,
        min_confidence: float = 50.0,
    ) -> None:
        """``language``: Tesseract's codes, "+"-joined ("eng+deu"); ``min_confidence``: 0-100."""
        self._binary = binary
        self._language = language
        self._timeout_s = timeout_s
        self._min_confidence = min_confidence

    @property
    def name(self) -> str:
        return f"tesseract-{self._language}"

    def read_text(self, image: Image) -> str:
        """The words the picture shows, one line of text per line read; "" when none."""
        if min(image.size) < _MIN_SIDE_PX:
            return ""
        buffer = io.BytesIO()
        _prepared(image).save(buffer, format="PNG", compress_level=1)
        command = [self._binary, "stdin", "stdout", "-l", self._language, "--psm", "3", "tsv"]
        try:
            done = subprocess.run(  # noqa: S603 - the configured binary, fixed arguments
                command,
                input=buffer.getvalue(),
                capture_output=True,
                timeout=self._timeout_s,
                check=False,
                env=_child_env(),
            )
        except subprocess.TimeoutExpired:
            log.warning("tesseract gave no answer within %.0f s; picture skipped", self._timeout_s)
            return ""
        except OSError as exc:
            log.warning("cannot run %s: %s; picture skipped", self._binary, exc)
            return ""
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip().splitlines()
            log.warning(
                "tesseract failed (exit %d): %s; picture skipped",
                done.returncode,
                detail[-1] if detail else "no message",
            )
            return ""
        tsv = done.stdout.decode("utf-8", errors="replace")
        return "\n".join(_lines_from_tsv(tsv, self._min_confidence))
