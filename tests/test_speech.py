"""The real Whisper base (CTranslate2, assembled from its packages) on speech made by espeak-ng."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from app.adapters.packaged_models import WHISPER_BASE, ensure_packaged
from app.adapters.speech import SAMPLE_RATE, WhisperRecognizer
from app.core.errors import ModelUnavailableError
from app.core.ports import SpeechRecognizer, TranscriptPiece
from tests.conftest import make_settings

SENTENCE = (
    "Seventeen purple elephants walked slowly across the old wooden bridge. "
    "Then the orchestra played a quiet melody for the sleeping giraffe."
)

Samples = npt.NDArray[np.float32]


@pytest.fixture(scope="session")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> WhisperRecognizer:
    models_dir = make_settings(tmp_path_factory.mktemp("unused")).llm.models_dir
    folder = ensure_packaged(WHISPER_BASE, models_dir, fetch=True)
    recognizer = WhisperRecognizer(folder, threads=2)
    recognizer.load()
    return recognizer


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    """SENTENCE spoken by espeak-ng (22,050 Hz), resampled to 16 kHz mono float32."""
    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is needed (apt-get install espeak-ng)"
    wav = tmp_path_factory.mktemp("speech") / "sentence.wav"
    subprocess.run([espeak, "-w", str(wav), SENTENCE], check=True, capture_output=True)
    with wave.open(str(wav)) as fh:
        assert (fh.getnchannels(), fh.getsampwidth()) == (1, 2)
        rate = fh.getframerate()
        pcm = np.frombuffer(fh.readframes(fh.getnframes()), dtype=np.int16)
    source = pcm.astype(np.float32) / 32768.0
    times = np.arange(round(source.size * SAMPLE_RATE / rate)) / SAMPLE_RATE
    return np.interp(times, np.arange(source.size) / rate, source).astype(np.float32)


def _silence(seconds: float) -> Samples:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def _check_timings(pieces: list[TranscriptPiece], duration_s: float) -> None:
    starts = [p.start_s for p in pieces]
    assert starts == sorted(starts)
    for piece in pieces:
        assert 0.0 <= piece.start_s < piece.end_s <= duration_s
        assert piece.text == piece.text.strip()
        assert piece.text


def test_speech_comes_back_word_for_word_with_times(
    whisper: WhisperRecognizer, speech: Samples
) -> None:
    recognizer: SpeechRecognizer = whisper  # conforms to the port
    assert recognizer.name == "whisper-base-ct2"
    duration = speech.size / SAMPLE_RATE
    pieces = recognizer.transcribe(speech)
    assert pieces
    text = " ".join(p.text for p in pieces).lower()
    for word in ("purple elephant", "wooden bridge", "orchestra", "sleeping giraffe"):
        assert word in text
    _check_timings(pieces, duration)
    assert pieces[0].start_s < 1.0
    assert pieces[-1].end_s > duration - 1.5


def test_speech_after_a_pause_is_dated_after_the_pause(
    whisper: WhisperRecognizer, speech: Samples
) -> None:
    audio = np.concatenate([_silence(8.0), speech, _silence(3.0)])
    pieces = whisper.transcribe(audio)
    _check_timings(pieces, audio.size / SAMPLE_RATE)
    assert "giraffe" in " ".join(p.text for p in pieces).lower()
    assert 7.0 <= pieces[0].start_s <= 9.0
    assert pieces[-1].end_s <= 8.0 + speech.size / SAMPLE_RATE + 1.0


def test_silence_and_nothing_give_no_pieces(whisper: WhisperRecognizer) -> None:
    assert whisper.transcribe(_silence(4.0)) == []  # no "You" made up from silence
    assert whisper.transcribe(_silence(0)) == []


def test_samples_must_be_mono(whisper: WhisperRecognizer) -> None:
    with pytest.raises(ValueError, match="mono"):
        whisper.transcribe(np.zeros((2, SAMPLE_RATE), dtype=np.float32))


def test_a_missing_or_incomplete_folder_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="python -m app models fetch") as missing:
        WhisperRecognizer(tmp_path / "nowhere").transcribe(_silence(1.0))
    assert "MMRAG_INGESTION__SPEECH_MODEL" in str(missing.value)

    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.bin").write_bytes(b"not a model")
    with pytest.raises(ModelUnavailableError, match=r"lacks tokenizer\.json"):
        WhisperRecognizer(tmp_path / "half").load()

    (tmp_path / "half" / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelUnavailableError, match="cannot load the Whisper model"):
        WhisperRecognizer(tmp_path / "half").load()
