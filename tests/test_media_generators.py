"""The demo's media generators, checked with real decoders: PyAV, pdfium, tesseract."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from app.demo.media import (
    AUDIO_SUFFIXES,
    SCENE_COLORS,
    VIDEO_SUFFIXES,
    PdfPage,
    Scene,
    make_broken_pdf,
    make_encrypted_pdf,
    make_pdf,
    make_screenshot,
    make_speech,
    make_video,
    render_text_image,
    write_srt,
    write_vtt,
)

# The set-up installs tesseract and espeak-ng (scripts/system-deps.sh): their tests never skip.

WORDS = ("RIVER", "MOUNTAIN", "DESERT")
SCENES = tuple(Scene(word, colour) for word, colour in zip(WORDS, SCENE_COLORS, strict=False))
FPS, SECONDS_PER_SCENE = 10, 2.0
FRAMES_PER_SCENE = round(FPS * SECONDS_PER_SCENE)
SENTENCE = "The quick brown fox jumps over the lazy dog beside the river."

EXPECTED_VIDEO_CODEC = {
    ".mp4": "h264",
    ".m4v": "h264",
    ".mov": "h264",
    ".mkv": "h264",
    ".webm": "vp9",
    ".avi": "mpeg4",
}
EXPECTED_AUDIO_CODEC = {
    ".wav": "pcm_s16le",
    ".mp3": "mp3",
    ".ogg": "opus",
    ".opus": "opus",
    ".flac": "flac",
    ".m4a": "aac",
    ".aac": "aac",
}


def ocr(image: Image.Image | Path, tmp_path: Path) -> str:
    """What tesseract reads, upper-cased with whitespace collapsed."""
    if isinstance(image, Image.Image):
        png = tmp_path / f"ocr-{time.monotonic_ns()}.png"
        image.save(png)
    else:
        png = image
    done = subprocess.run(["tesseract", str(png), "stdout"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split()).upper()


def decode_video(path: Path) -> tuple[list[np.ndarray], float, str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert container.duration is not None
        return frames, container.duration / 1_000_000, stream.codec_context.name


def decode_audio(path: Path) -> tuple[float, str]:
    """Seconds of decoded audio (by counting samples) and the codec's name."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / rate, stream.codec_context.name


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech(tmp_path_factory.mktemp("speech") / "speech.wav", SENTENCE)


# --- text images -----------------------------------------------------------------------------


def test_rendered_text_is_read_back(tmp_path: Path) -> None:
    image = render_text_image("Harbour lights\nAT DUSK")
    assert image.size == (640, 360)
    assert ocr(image, tmp_path) == "HARBOUR LIGHTS AT DUSK"


def test_long_text_shrinks_to_fit() -> None:
    image = render_text_image("a rather long line of text that cannot fit at 48 px", (320, 120))
    ink = np.argwhere(np.asarray(image.convert("L")) < 128)
    assert ink.size
    assert ink[:, 1].min() > 0
    assert ink[:, 1].max() < 319


# --- video -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", VIDEO_SUFFIXES)
def test_video_decodes_with_its_scenes(suffix: str, tmp_path: Path) -> None:
    started = time.perf_counter()
    path = make_video(tmp_path / f"scenes{suffix}", SCENES, fps=FPS)
    elapsed = time.perf_counter() - started
    assert elapsed < 3.0, f"{suffix} took {elapsed:.2f}s"

    frames, duration, codec = decode_video(path)
    assert codec == EXPECTED_VIDEO_CODEC[suffix]
    assert len(frames) == FRAMES_PER_SCENE * len(SCENES)
    assert duration == pytest.approx(SECONDS_PER_SCENE * len(SCENES), abs=0.15)
    assert frames[0].shape == (240, 320, 3)

    middles = [frames[n * FRAMES_PER_SCENE + FRAMES_PER_SCENE // 2] for n in range(len(SCENES))]
    for frame, scene in zip(middles, SCENES, strict=True):
        corner = frame[4, 4].astype(int)
        assert np.abs(corner - np.array(scene.background)).max() <= 12

    # a frame differ sees the cuts and nothing else
    diffs = [
        float(np.abs(a.astype(int) - b.astype(int)).mean()) for a, b in itertools.pairwise(frames)
    ]
    cuts = [n for n, d in enumerate(diffs, start=1) if d > 20]
    assert cuts == [FRAMES_PER_SCENE * n for n in range(1, len(SCENES))]


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi"])
def test_scene_word_is_readable_in_the_video(suffix: str, tmp_path: Path) -> None:
    frames, _, _ = decode_video(make_video(tmp_path / f"ocr{suffix}", SCENES, fps=FPS))
    middle_of_scene_two = frames[FRAMES_PER_SCENE + FRAMES_PER_SCENE // 2]
    assert WORDS[1] in ocr(Image.fromarray(middle_of_scene_two), tmp_path)


@pytest.mark.parametrize(
    ("suffix", "audio_codec"),
    [(".mp4", "aac"), (".mkv", "aac"), (".mov", "aac"), (".webm", "opus"), (".avi", "mp3")],
)
def test_video_carries_a_soundtrack_of_its_length(
    suffix: str, audio_codec: str, speech_wav: Path, tmp_path: Path
) -> None:
    wav_seconds, _ = decode_audio(speech_wav)
    assert wav_seconds < 6.0  # so the track below is padded to the video's length
    path = make_video(tmp_path / f"talk{suffix}", SCENES, audio=speech_wav)
    seconds, codec = decode_audio(path)
    assert codec.startswith(audio_codec)  # mp3 decodes as mp3float
    assert seconds == pytest.approx(6.0, abs=0.1)
    frames, _, _ = decode_video(path)
    assert len(frames) == 60


def test_long_audio_is_cut_to_the_video(speech_wav: Path, tmp_path: Path) -> None:
    path = make_video(tmp_path / "short.mp4", SCENES[:1], seconds_per_scene=1.0, audio=speech_wav)
    seconds, _ = decode_audio(path)
    assert seconds == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_video_is_byte_for_byte_reproducible(suffix: str, tmp_path: Path) -> None:
    first = make_video(tmp_path / f"a{suffix}", SCENES).read_bytes()
    second = make_video(tmp_path / f"b{suffix}", SCENES).read_bytes()
    assert first == second


def test_video_rejects_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported video suffix"):
        make_video(tmp_path / "clip.gif", SCENES)
    with pytest.raises(ValueError, match="even"):
        make_video(tmp_path / "clip.mp4", SCENES, size=(321, 240))
    with pytest.raises(ValueError, match="at least one scene"):
        make_video(tmp_path / "clip.mp4", [])


# --- speech ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", AUDIO_SUFFIXES)
def test_speech_decodes_with_a_plausible_length(suffix: str, tmp_path: Path) -> None:
    path = make_speech(tmp_path / f"speech{suffix}", SENTENCE)
    seconds, codec = decode_audio(path)
    assert codec.removesuffix("float") == EXPECTED_AUDIO_CODEC[suffix]
    # twelve words at 150 words a minute: about 4.8 s, less the pauses espeak leaves out
    assert 2.5 < seconds < 7.0


def test_faster_speech_is_shorter(tmp_path: Path) -> None:
    slow, _ = decode_audio(make_speech(tmp_path / "slow.wav", SENTENCE, words_per_minute=120))
    fast, _ = decode_audio(make_speech(tmp_path / "fast.wav", SENTENCE, words_per_minute=240))
    assert fast < slow * 0.7


def test_speech_without_espeak_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(RuntimeError, match=r"apt-get install espeak-ng"):
        make_speech(tmp_path / "speech.wav", "hello")


# --- subtitles -------------------------------------------------------------------------------

CUES = [(0.0, 2.0, "RIVER"), (2.0, 4.5, "MOUNTAIN"), (3725.25, 3726.0, "an hour in")]


def test_srt(tmp_path: Path) -> None:
    text = write_srt(tmp_path / "subs.srt", CUES).read_text(encoding="utf-8")
    assert text == (
        "1\n00:00:00,000 --> 00:00:02,000\nRIVER\n\n"
        "2\n00:00:02,000 --> 00:00:04,500\nMOUNTAIN\n\n"
        "3\n01:02:05,250 --> 01:02:06,000\nan hour in\n"
    )


def test_vtt(tmp_path: Path) -> None:
    text = write_vtt(tmp_path / "subs.vtt", CUES).read_text(encoding="utf-8")
    assert text == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.000\nRIVER\n\n"
        "00:00:02.000 --> 00:00:04.500\nMOUNTAIN\n\n"
        "01:02:05.250 --> 01:02:06.000\nan hour in\n"
    )


def test_cues_must_run_forward(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="start < end"):
        write_srt(tmp_path / "bad.srt", [(2.0, 1.0, "backwards")])


# --- PDF -------------------------------------------------------------------------------------

TEXT_LINES = ("Quarterly report (draft)", r"Path C:\data\q3", "Café déjà vu \u2013 50 €")
SCAN = render_text_image("SCANNED INVOICE\nTOTAL 42", (612 * 2, 792 * 2), font_px=140)


def pdf_pages() -> list[PdfPage]:
    return [PdfPage(lines=TEXT_LINES), PdfPage(image=SCAN), PdfPage(lines=("Last page",))]


def page_texts(document: pdfium.PdfDocument) -> list[str]:
    texts = []
    for page in document:
        text = page.get_textpage().get_text_range()
        texts.append(text.replace("\r\n", "\n"))
    return texts


def test_pdf_text_layer_and_scanned_page(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "doc.pdf", pdf_pages())
    document = pdfium.PdfDocument(str(path))
    try:
        assert len(document) == 3
        assert page_texts(document) == ["\n".join(TEXT_LINES), "", "Last page"]
        for page in document:
            assert page.get_size() == (612, 792)
            assert page.render(scale=1).to_pil().size == (612, 792)
    finally:
        document.close()


def test_pdf_cross_reference_table_points_at_its_objects(tmp_path: Path) -> None:
    data = make_pdf(tmp_path / "doc.pdf", pdf_pages()).read_bytes()
    assert data.startswith(b"%PDF-1.4\n")
    assert data.endswith(b"%%EOF\n")
    startxref = int(re.findall(rb"startxref\n(\d+)\n", data)[-1])
    assert data[startxref:].startswith(b"xref\n")
    header = re.match(rb"xref\n0 (\d+)\n", data[startxref:])
    assert header is not None
    count = int(header.group(1))
    entries = data[startxref + header.end() :].split(b"trailer")[0]
    assert len(entries) == 20 * count  # every entry is exactly 20 bytes
    for number in range(1, count):
        offset = int(entries[20 * number : 20 * number + 10])
        assert data[offset:].startswith(b"%d 0 obj" % number)
    assert b"/Size %d" % count in data


def test_scanned_page_is_only_pixels_that_ocr_reads(tmp_path: Path) -> None:
    document = pdfium.PdfDocument(str(make_pdf(tmp_path / "scan.pdf", [PdfPage(image=SCAN)])))
    try:
        assert page_texts(document) == [""]
        picture = document[0].render(scale=1).to_pil()
    finally:
        document.close()
    assert ocr(picture, tmp_path) == "SCANNED INVOICE TOTAL 42"


def test_broken_pdf_is_refused(tmp_path: Path) -> None:
    path = make_broken_pdf(tmp_path / "broken.pdf")
    assert path.read_bytes().startswith(b"%PDF-")
    with pytest.raises(pdfium.PdfiumError):
        pdfium.PdfDocument(str(path))


def test_encrypted_pdf_needs_its_password(tmp_path: Path) -> None:
    path = make_encrypted_pdf(tmp_path / "locked.pdf", pdf_pages(), password="s3cret")
    assert b"Quarterly" not in path.read_bytes()
    with pytest.raises(pdfium.PdfiumError, match="password"):
        pdfium.PdfDocument(str(path))
    document = pdfium.PdfDocument(str(path), password="s3cret")
    try:
        assert page_texts(document) == ["\n".join(TEXT_LINES), "", "Last page"]
        assert document[1].render(scale=1).to_pil().size == (612, 792)
    finally:
        document.close()


def test_pdf_page_is_text_or_image() -> None:
    with pytest.raises(ValueError, match="either lines or an image"):
        PdfPage()
    with pytest.raises(ValueError, match="either lines or an image"):
        PdfPage(lines=("x",), image=SCAN)


def test_pdf_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    first = make_pdf(tmp_path / "a.pdf", pdf_pages()).read_bytes()
    assert make_pdf(tmp_path / "b.pdf", pdf_pages()).read_bytes() == first


# --- screenshots -----------------------------------------------------------------------------


def test_screenshot_text_is_read_back_and_nowhere_else(tmp_path: Path) -> None:
    text = "Deploy checklist\nRotate the API keys\nShip the harbour demo on Friday"
    path = make_screenshot(tmp_path / "shot.png", text, title="Planner")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (1024, 640)
        assert not getattr(image, "text", {})
        assert set(image.info) <= {"dpi", "gamma", "srgb"}
    assert b"harbour" not in path.read_bytes().lower()
    read = ocr(path, tmp_path)
    for line in text.upper().splitlines():
        assert line in read


@pytest.mark.parametrize(("suffix", "fallback"), [(".mp4", "mpeg4"), (".webm", "vp8")])
def test_video_falls_back_when_the_best_encoder_is_missing(
    suffix: str, fallback: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.demo import media

    monkeypatch.setattr(media, "has_encoder", lambda name: name not in {"libx264", "libvpx-vp9"})
    frames, duration, codec = decode_video(make_video(tmp_path / f"old{suffix}", SCENES))
    assert codec == fallback
    assert len(frames) == 60
    assert duration == pytest.approx(6.0, abs=0.15)
