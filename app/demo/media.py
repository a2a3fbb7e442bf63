"""Generates small, deterministic media files for the tests and the offline demo.

Video (PyAV), speech (espeak-ng, transcoded with PyAV), subtitles (SRT, WebVTT), PDF (written by
hand: a real text layer, a "scanned" image page, a broken file, a password-protected file) and
UI-like screenshots. Everything is rendered from text, so OCR and speech-to-text have something
known to find, and the same arguments give the same pictures and sounds.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.audio.stream
import av.video.stream
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

FONT_FILE = "DejaVuSans-Bold.ttf"
_SYSTEM_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts"))


# --------------------------------------------------------------------------------------------
# Text rendering


@functools.cache
def _font_file() -> Path | None:
    """DejaVu Sans Bold: matplotlib's copy first (no OS package needed), then the system's."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin is not None:
        shipped = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / FONT_FILE
        if shipped.is_file():
            return shipped
    for folder in _SYSTEM_FONT_DIRS:
        direct = folder / FONT_FILE
        if direct.is_file():
            return direct
        if folder.is_dir():
            found = next(iter(sorted(folder.rglob(FONT_FILE))), None)
            if found is not None:
                return found
    return None


@functools.cache
def _font(px: int) -> Font:
    path = _font_file()
    if path is not None:
        return ImageFont.truetype(str(path), px)
    return ImageFont.load_default(size=px)


def _fit_font(
    draw: ImageDraw.ImageDraw, text: str, box: tuple[int, int], font_px: int, spacing: float
) -> tuple[Font, int]:
    """The largest font no bigger than ``font_px`` whose text block fits ``box``."""
    px = max(font_px, 1)
    while True:
        font = _font(px)
        gap = round(px * spacing)
        left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, spacing=gap)
        if (right - left <= box[0] and bottom - top <= box[1]) or px <= 8:
            return font, gap
        px = max(8, int(px * 0.9))


def render_text_image(
    text: str,
    size: tuple[int, int] = (640, 360),
    *,
    background: RGB = (255, 255, 255),
    color: RGB = (0, 0, 0),
    font_px: int = 48,
) -> Image.Image:
    """Big, centred, multi-line text (``\\n`` separates lines) that OCR reads reliably.

    The font shrinks below ``font_px`` only when the text would not fit in 90% of the image.
    """
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    box = (int(size[0] * 0.9), int(size[1] * 0.9))
    font, gap = _fit_font(draw, text, box, font_px, spacing=0.25)
    left, top, right, bottom = draw.multiline_textbbox(
        (0, 0), text, font=font, spacing=gap, align="center"
    )
    origin = ((size[0] - (right - left)) / 2 - left, (size[1] - (bottom - top)) / 2 - top)
    draw.multiline_text(origin, text, fill=color, font=font, spacing=gap, align="center")
    return image


def _contrast(background: RGB) -> RGB:
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


# --------------------------------------------------------------------------------------------
# Codecs


@functools.cache
def has_encoder(name: str) -> bool:
    """Whether PyAV's bundled FFmpeg can encode with ``name``."""
    try:
        av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def _first_encoder(*names: str) -> str:
    for name in names:
        if has_encoder(name):
            return name
    raise RuntimeError(f"PyAV has none of the encoders {', '.join(names)}")


# suffix -> (video encoders, audio encoders), best first
_VIDEO_CONTAINERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    ".mp4": (("libx264", "mpeg4"), ("aac", "libmp3lame")),
    ".m4v": (("libx264", "mpeg4"), ("aac", "libmp3lame")),
    ".mov": (("libx264", "mpeg4"), ("aac", "libmp3lame")),
    ".mkv": (("libx264", "mpeg4"), ("aac", "libopus", "libmp3lame")),
    ".webm": (("libvpx-vp9", "libvpx"), ("libopus", "opus")),
    ".avi": (("mpeg4", "libx264"), ("libmp3lame", "aac")),
}

# suffix -> audio encoders, best first (.ogg: FFmpeg's own Vorbis encoder is experimental,
# stereo-only and writes a wrong duration, so Ogg files carry Opus)
_AUDIO_CONTAINERS: dict[str, tuple[str, ...]] = {
    ".mp3": ("libmp3lame",),
    ".ogg": ("libopus", "opus"),
    ".opus": ("libopus", "opus"),
    ".flac": ("flac",),
    ".m4a": ("aac",),
    ".aac": ("aac",),
}

VIDEO_SUFFIXES = tuple(_VIDEO_CONTAINERS)
AUDIO_SUFFIXES = (".wav", *_AUDIO_CONTAINERS)

# no random IDs (Matroska's segment UID, Ogg's stream serials), no dates, no version strings
_BITEXACT = {"fflags": "+bitexact"}

_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def _audio_rate(codec: str, rate: int) -> int:
    if codec in {"libopus", "opus"}:
        return 48000 if rate not in _OPUS_RATES else rate
    return rate


def _read_mono(path: Path, *, fmt: str, rate: int) -> npt.NDArray[np.generic]:
    """All of ``path``'s first audio stream as one mono plane in ``fmt`` at ``rate``."""
    resampler = av.AudioResampler(format=fmt, layout="mono", rate=rate)
    chunks: list[npt.NDArray[np.generic]] = []
    with av.open(str(path)) as source:
        for frame in source.decode(audio=0):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks)


def _add_audio_stream(
    container: av.container.OutputContainer, codec: str, rate: int
) -> av.audio.stream.AudioStream:
    stream = container.add_stream(codec, rate=_audio_rate(codec, rate), layout="mono")
    if not isinstance(stream, av.audio.stream.AudioStream):
        raise TypeError(f"{codec} is not an audio encoder")
    if codec == "aac" or codec.startswith("libmp3lame"):
        stream.codec_context.bit_rate = 64_000
    return stream


def _encode_audio(
    container: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    samples: npt.NDArray[np.generic],
) -> None:
    """Encodes mono ``samples`` (already in the stream's format and rate), then flushes."""
    ctx = stream.codec_context
    fmt, rate = ctx.format.name, ctx.sample_rate
    step = ctx.frame_size or 1024
    for start in range(0, len(samples), step):
        chunk = np.ascontiguousarray(samples[start : start + step]).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _transcode_audio(source: Path, target: Path) -> None:
    codecs = _AUDIO_CONTAINERS.get(target.suffix.lower())
    if codecs is None:
        known = ", ".join(AUDIO_SUFFIXES)
        raise ValueError(f"unsupported audio suffix {target.suffix!r} (known: {known})")
    codec = _first_encoder(*codecs)
    with av.open(str(source)) as probe:
        rate = probe.streams.audio[0].codec_context.sample_rate
    with av.open(str(target), "w", options=_BITEXACT) as container:
        stream = _add_audio_stream(container, codec, rate)
        ctx = stream.codec_context
        samples = _read_mono(source, fmt=ctx.format.name, rate=ctx.sample_rate)
        _encode_audio(container, stream, samples)


# --------------------------------------------------------------------------------------------
# Video


@dataclass(frozen=True, slots=True)
class Scene:
    """One shot of a generated video: ``text`` in big letters on a plain ``background``."""

    text: str
    background: RGB


# Backgrounds far apart in colour and brightness, so every cut is obvious to a frame differ.
SCENE_COLORS: tuple[RGB, ...] = (
    (200, 30, 30),
    (30, 110, 220),
    (250, 220, 40),
    (20, 140, 60),
    (120, 40, 160),
    (240, 240, 240),
)


def _add_video_stream(
    container: av.container.OutputContainer,
    codec: str,
    size: tuple[int, int],
    fps: int,
    gop: int,
) -> av.video.stream.VideoStream:
    stream = container.add_stream(codec, rate=fps)
    if not isinstance(stream, av.video.stream.VideoStream):
        raise TypeError(f"{codec} is not a video encoder")
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    ctx = stream.codec_context
    ctx.time_base = Fraction(1, fps)
    ctx.gop_size = gop  # a key frame at every cut: cheap seeking to each scene
    ctx.thread_count = 1  # the same bytes every run
    if codec == "libx264":
        ctx.options = {"preset": "veryfast", "crf": "20", "tune": "stillimage"}
    elif codec.startswith("libvpx"):
        ctx.options = {"deadline": "realtime", "cpu-used": "8", "crf": "20"}
        ctx.bit_rate = 0
    else:
        ctx.bit_rate = 1_000_000
        ctx.qmax = 8
    return stream


def _scene_still(scene: Scene, size: tuple[int, int]) -> av.VideoFrame:
    picture = render_text_image(
        scene.text,
        size,
        background=scene.background,
        color=_contrast(scene.background),
        font_px=max(12, size[1] // 4),
    )
    rgb = av.VideoFrame.from_ndarray(np.asarray(picture), format="rgb24")
    return rgb.reformat(format="yuv420p")


def _mux_soundtrack(
    container: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    audio: Path,
    seconds: float,
) -> None:
    """Encodes ``audio`` cut, or padded with silence, to exactly ``seconds``."""
    ctx = stream.codec_context
    samples = _read_mono(audio, fmt=ctx.format.name, rate=ctx.sample_rate)
    wanted = round(seconds * ctx.sample_rate)
    if len(samples) < wanted:
        silence = np.zeros(wanted - len(samples), dtype=samples.dtype)
        samples = np.concatenate([samples, silence])
    _encode_audio(container, stream, samples[:wanted])


def make_video(
    path: Path,
    scenes: Sequence[Scene],
    *,
    fps: int = 10,
    size: tuple[int, int] = (320, 240),
    seconds_per_scene: float = 2.0,
    audio: Path | None = None,
) -> Path:
    """Writes a video whose scenes each show their word on their own colour; returns ``path``.

    The container follows the suffix (.mp4, .m4v, .mov, .mkv: H.264, else MPEG-4 Part 2;
    .webm: VP9, else VP8; .avi: MPEG-4 Part 2). ``audio`` (any file PyAV reads, WAV say) is
    muxed as a mono track (AAC; Opus in WebM; MP3 in AVI), cut or padded with silence to the
    video's length. Every scene lasts ``round(fps * seconds_per_scene)`` frames.
    """
    codecs = _VIDEO_CONTAINERS.get(path.suffix.lower())
    if codecs is None:
        known = ", ".join(VIDEO_SUFFIXES)
        raise ValueError(f"unsupported video suffix {path.suffix!r} (known: {known})")
    if not scenes:
        raise ValueError("a video needs at least one scene")
    if size[0] % 2 or size[1] % 2 or min(size) <= 0:
        raise ValueError(f"yuv420p needs an even, positive width and height, got {size}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    per_scene = max(1, round(fps * seconds_per_scene))
    video_codec = _first_encoder(*codecs[0])
    audio_codec = _first_encoder(*codecs[1]) if audio is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)

    with av.open(str(path), "w", options=_BITEXACT) as container:
        stream = _add_video_stream(container, video_codec, size, fps, per_scene)
        soundtrack = None
        if audio is not None and audio_codec is not None:
            with av.open(str(audio)) as probe:
                rate = probe.streams.audio[0].codec_context.sample_rate
            soundtrack = _add_audio_stream(container, audio_codec, rate)
        index = 0
        for scene in scenes:
            still = _scene_still(scene, size)
            for _ in range(per_scene):
                still.pts = index
                still.time_base = Fraction(1, fps)
                container.mux(stream.encode(still))
                index += 1
        container.mux(stream.encode(None))
        if audio is not None and soundtrack is not None:
            _mux_soundtrack(container, soundtrack, audio, index / fps)
    return path


# --------------------------------------------------------------------------------------------
# Speech


def make_speech(
    path: Path, text: str, *, voice: str = "en-us", words_per_minute: int = 150
) -> Path:
    """Speaks ``text`` with espeak-ng into ``path``; the suffix picks the format.

    .wav is espeak-ng's own output (mono, 22050 Hz, 16 bit); .mp3, .ogg and .opus (Opus),
    .flac, .m4a and .aac (AAC) are transcoded with PyAV.
    """
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError(
            "espeak-ng is needed to make speech: install espeak-ng "
            "(Debian: apt-get install espeak-ng)"
        )
    suffix = path.suffix.lower()
    if suffix not in AUDIO_SUFFIXES:
        raise ValueError(f"unsupported audio suffix {path.suffix!r} (known: {AUDIO_SUFFIXES})")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmrag-speech-") as tmp:
        wav = path if suffix == ".wav" else Path(tmp) / "speech.wav"
        cmd = [espeak, "-v", voice, "-s", str(words_per_minute), "-w", str(wav), "--stdin"]
        done = subprocess.run(cmd, input=text, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"espeak-ng failed ({done.returncode}): {done.stderr.strip()}")
        if wav != path:
            _transcode_audio(wav, path)
    return path


# --------------------------------------------------------------------------------------------
# Subtitles


def _cue_time(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _checked(cues: Sequence[tuple[float, float, str]]) -> Iterator[tuple[float, float, str]]:
    for start, end, text in cues:
        if start < 0 or end <= start:
            raise ValueError(f"a cue needs 0 <= start < end, got {start}..{end}")
        if not text.strip():
            raise ValueError("a cue needs text")
        yield start, end, text.strip()


def write_srt(path: Path, cues: Sequence[tuple[float, float, str]]) -> Path:
    """Writes SubRip subtitles from ``(start_s, end_s, text)`` cues; returns ``path``."""
    blocks = [
        f"{n}\n{_cue_time(start, ',')} --> {_cue_time(end, ',')}\n{text}\n"
        for n, (start, end, text) in enumerate(_checked(cues), start=1)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


def write_vtt(path: Path, cues: Sequence[tuple[float, float, str]]) -> Path:
    """Writes WebVTT subtitles from ``(start_s, end_s, text)`` cues; returns ``path``."""
    blocks = [
        f"{_cue_time(start, '.')} --> {_cue_time(end, '.')}\n{text}\n"
        for start, end, text in _checked(cues)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["WEBVTT\n", *blocks]), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# PDF

PAGE_WIDTH, PAGE_HEIGHT = 612, 792  # US Letter, in points


@dataclass(frozen=True)
class PdfPage:
    """A PDF page: ``lines`` of real text (Helvetica), or an ``image`` with no text layer."""

    lines: tuple[str, ...] = ()
    image: Image.Image | None = None
    font_size: int = 14

    def __post_init__(self) -> None:
        if (self.image is None) == (not self.lines):
            raise ValueError("a PdfPage has either lines or an image")


def _pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsi (Latin-1 plus €, dashes, quotes), with escapes.

    Characters WinAnsi lacks become ``?``.
    """
    raw = text.encode("cp1252", errors="replace")
    escaped = raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    escaped = escaped.replace(b"\r", b"\\r").replace(b"\n", b"\\n")
    return b"(" + escaped + b")"


def _text_content(page: PdfPage) -> bytes:
    leading = round(page.font_size * 1.5)
    ops = [b"BT", b"/F1 %d Tf" % page.font_size, b"72 %d Td" % (PAGE_HEIGHT - 72)]
    for n, line in enumerate(page.lines):
        if n:
            ops.append(b"0 %d Td" % -leading)
        ops.append(_pdf_string(line) + b" Tj")
    ops.append(b"ET")
    return b"\n".join(ops) + b"\n"


def _jpeg(image: Image.Image) -> tuple[bytes, str]:
    picture = image.convert("L" if image.mode in {"1", "L", "LA", "I", "F"} else "RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "/DeviceGray" if picture.mode == "L" else "/DeviceRGB"


def _rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray(len(data))
    i = j = 0
    for n, byte in enumerate(data):
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out[n] = byte ^ state[(state[i] + state[j]) % 256]
    return bytes(out)


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


_PASSWORD_PAD = bytes.fromhex("28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0cfea96453697a")
_PERMISSIONS = -4  # everything allowed once opened


@dataclass(frozen=True, slots=True)
class _Rc4Security:
    """The standard security handler, revision 2 (RC4, 40-bit): what every reader opens."""

    key: bytes
    owner: bytes
    user: bytes
    file_id: bytes

    @classmethod
    def for_password(cls, user: str, owner: str, file_id: bytes) -> _Rc4Security:
        def padded(password: str) -> bytes:
            return (password.encode("latin-1") + _PASSWORD_PAD)[:32]

        owner_value = _rc4(_md5(padded(owner or user))[:5], padded(user))
        perms = _PERMISSIONS.to_bytes(4, "little", signed=True)
        key = _md5(padded(user) + owner_value + perms + file_id)[:5]
        return cls(key=key, owner=owner_value, user=_rc4(key, _PASSWORD_PAD), file_id=file_id)

    def encrypt(self, number: int, data: bytes) -> bytes:
        object_key = _md5(self.key + number.to_bytes(3, "little") + b"\0\0")[:10]
        return _rc4(object_key, data)

    def dictionary(self) -> bytes:
        return b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (
            self.owner.hex().encode(),
            self.user.hex().encode(),
            _PERMISSIONS,
        )


def _pdf_bytes(pages: Sequence[PdfPage], security: _Rc4Security | None = None) -> bytes:
    if not pages:
        raise ValueError("a PDF needs at least one page")
    # objects: 1 catalog, 2 page tree, 3 font, then per page: page, content[, image]
    objects: dict[int, tuple[bytes, bytes | None]] = {
        3: (
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
            None,
        )
    }
    kids: list[int] = []
    number = 4
    for page in pages:
        page_no, content_no = number, number + 1
        number += 2
        if page.image is None:
            content = _text_content(page)
            resources = b"<< /Font << /F1 3 0 R >> >>"
        else:
            image_no = number
            number += 1
            jpeg, colour_space = _jpeg(page.image)
            width, height = page.image.size
            objects[image_no] = (
                b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s "
                b"/BitsPerComponent 8 /Filter /DCTDecode" % (width, height, colour_space.encode()),
                jpeg,
            )
            content = b"q %d 0 0 %d 0 0 cm /Im1 Do Q\n" % (PAGE_WIDTH, PAGE_HEIGHT)
            resources = b"<< /XObject << /Im1 %d 0 R >> >>" % image_no
        objects[page_no] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources %s /Contents %d 0 R >>"
            % (PAGE_WIDTH, PAGE_HEIGHT, resources, content_no),
            None,
        )
        objects[content_no] = (b"<<", content)
        kids.append(page_no)
    objects[1] = (b"<< /Type /Catalog /Pages 2 0 R >>", None)
    refs = b" ".join(b"%d 0 R" % kid for kid in kids)
    objects[2] = (b"<< /Type /Pages /Kids [%s] /Count %d >>" % (refs, len(kids)), None)
    if security is not None:
        objects[number] = (security.dictionary(), None)

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for n in sorted(objects):
        head, stream = objects[n]
        offsets[n] = len(out)
        out += b"%d 0 obj\n" % n
        if stream is None:
            out += head
        else:
            if security is not None:
                stream = security.encrypt(n, stream)
            out += head + b" /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
        out += b"\nendobj\n"
    xref = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[n] for n in range(1, size))
    trailer = b"<< /Size %d /Root 1 0 R" % size
    if security is not None:
        file_id = security.file_id.hex().encode()
        trailer += b" /Encrypt %d 0 R /ID [<%s> <%s>]" % (number, file_id, file_id)
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def make_pdf(path: Path, pages: Sequence[PdfPage]) -> Path:
    """Writes a small valid PDF (text pages and image-only "scanned" pages); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_pdf_bytes(pages))
    return path


def make_encrypted_pdf(
    path: Path, pages: Sequence[PdfPage], *, password: str, owner_password: str = ""
) -> Path:
    """Writes a PDF that opens only with ``password`` (RC4, 40-bit); returns ``path``."""
    content_hash = zlib.crc32(b"".join(line.encode() for page in pages for line in page.lines))
    file_id = _md5(b"mmrag-demo-%d-%d" % (len(pages), content_hash))
    security = _Rc4Security.for_password(password, owner_password, file_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_pdf_bytes(pages, security))
    return path


def make_broken_pdf(path: Path) -> Path:
    """Writes a file that starts like a PDF and then is garbage: no object, xref or trailer."""
    noise = bytes((n * 73 + 41) % 256 for n in range(512)).replace(b"obj", b"xxx")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + noise)
    return path


# --------------------------------------------------------------------------------------------
# Screenshots


def make_screenshot(
    path: Path, text: str, *, title: str = "Notes", size: tuple[int, int] = (1024, 640)
) -> Path:
    """Writes a PNG that looks like an application window showing ``text`` (lines by ``\\n``).

    The text exists only as pixels: the PNG carries no text chunk or other metadata.
    """
    width, height = size
    image = Image.new("RGB", size, (236, 238, 242))
    draw = ImageDraw.Draw(image)
    bar = max(28, height // 16)
    draw.rectangle((0, 0, width, bar), fill=(52, 58, 70))
    for n, dot in enumerate(((237, 95, 86), (245, 190, 80), (98, 197, 84))):
        centre, radius = (bar // 2 + n * bar * 0.75, bar / 2), bar * 0.22
        draw.ellipse(
            (centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius),
            fill=dot,
        )
    title_font = _font(max(10, bar // 2))
    draw.text((width / 2, bar / 2), title, fill=(220, 224, 230), font=title_font, anchor="mm")
    sidebar = width // 5
    draw.rectangle((0, bar + 1, sidebar, height), fill=(214, 218, 226))
    for n in range(5):
        top = bar + 24 + n * 36
        draw.rounded_rectangle((16, top, sidebar - 16, top + 18), radius=6, fill=(190, 196, 206))
    panel = (sidebar + 24, bar + 24, width - 24, height - 24)
    draw.rectangle(panel, fill=(255, 255, 255), outline=(200, 204, 212))
    room = (panel[2] - panel[0] - 48, panel[3] - panel[1] - 48)
    font, gap = _fit_font(draw, text, room, max(14, height // 18), spacing=0.4)
    draw.multiline_text(
        (panel[0] + 24, panel[1] + 24), text, fill=(20, 22, 28), font=font, spacing=gap
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
