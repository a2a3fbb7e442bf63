"""Reading videos and recordings with PyAV: one decoding pass per file.

A video becomes a whole-video segment (the mean of its frames' CLIP vectors, for coarse
search), one frame segment per scene (its time span, thumbnail, CLIP vector and OCR'd words),
and the transcript of its sound. A recording becomes its transcript: from a sidecar
(``talk.srt``, ``talk.vtt``, ``talk.mp3.txt``) when there is one, else from speech recognition.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import av
import av.error
import numpy as np
import numpy.typing as npt
from PIL import Image

from app.core.answering import clock
from app.core.ids import asset_id_for
from app.core.indexing import PreparedAsset
from app.core.models import Asset, Locator, Modality, Segment, SegmentKind
from app.core.ports import TranscriptPiece
from ingestion.readers import (
    WORKING_SIDE,
    AssetReadError,
    ReadOptions,
    check_size,
    title_from,
    write_thumbnail,
)

TRANSCRIPT_SUFFIXES = (".srt", ".vtt")

SPEECH_RATE = 16_000  # what Whisper listens at
_PROBE_SIZE = (64, 36)  # tiny colour thumbnails compared for scene changes
_PROBE_EVERY_S = 0.2  # frames are compared at most this often
_MIME = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".avi": "video/x-msvideo",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
}


@dataclass(slots=True)
class _Frame:
    time_s: float
    image: Image.Image
    text: str = ""


@dataclass(slots=True)
class _Decoded:
    duration_s: float
    fps: float | None
    codec: str | None
    width: int | None
    height: int | None
    frames: list[_Frame]
    samples: npt.NDArray[np.float32] | None  # 16 kHz mono, when the sound was wanted
    decoded_frames: int


class _SceneSampler:
    """Picks frames on scene changes, no closer than ``min_s`` and no further than ``max_s``."""

    def __init__(self, threshold: float, min_s: float, max_s: float, cap: int) -> None:
        self._threshold = threshold
        self._min_s = min_s
        self._max_s = max_s
        self._cap = cap
        self._last_probe_s = -1e9
        self._last_pick_s = -1e9
        self._reference: npt.NDArray[np.float32] | None = None
        self.picked = 0

    def wants(self, time_s: float) -> bool:
        """Whether the frame at ``time_s`` is worth comparing (cheap: no pixels yet)."""
        return self.picked < self._cap and (
            self._reference is None or time_s - self._last_probe_s >= _PROBE_EVERY_S - 1e-3
        )

    def offer(self, time_s: float, probe: npt.NDArray[np.float32]) -> bool:
        """Compare a probed frame with the last picked one; True when it starts a new scene."""
        self._last_probe_s = time_s
        since = time_s - self._last_pick_s
        if self._reference is None or since >= self._max_s:
            pick = True
        elif since < self._min_s:
            pick = False
        else:
            pick = float(np.mean(np.abs(probe - self._reference))) >= self._threshold
        if pick:
            self._reference = probe
            self._last_pick_s = time_s
            self.picked += 1
        return pick


def _working_size(width: int, height: int, side: int) -> tuple[int, int]:
    scale = min(width, height) / side
    if scale <= 1:
        return width, height
    return max(2, round(width / scale)), max(2, round(height / scale))


def _frame_time(frame: av.VideoFrame | av.AudioFrame, fallback: float) -> float:
    return float(frame.time) if frame.time is not None else fallback


def _sampler_for(video: av.VideoStream, duration: float, options: ReadOptions) -> _SceneSampler:
    video.thread_type = "AUTO"
    cap = options.max_frames
    # A long video spreads its frames: never more than the cap over its length.
    spread = duration / cap if duration > 0 else 0.0
    return _SceneSampler(
        options.scene_threshold,
        max(options.frame_min_interval_s, spread),
        max(options.frame_max_interval_s, spread),
        cap,
    )


class _Pass:
    """What one demuxing pass collects: sampled frames and resampled sound."""

    def __init__(self, sampler: _SceneSampler | None, size: tuple[int, int] | None) -> None:
        self.sampler = sampler
        self.size = size
        self.resampler: av.AudioResampler | None = None
        self.frames: list[_Frame] = []
        self.chunks: list[npt.NDArray[np.float32]] = []
        self.decoded = 0
        self.last_time = 0.0

    def video(self, frame: av.VideoFrame) -> None:
        if self.sampler is None:
            return
        self.decoded += 1
        t = _frame_time(frame, self.last_time)
        self.last_time = max(self.last_time, t)
        if not self.sampler.wants(t):
            return
        probe = frame.to_ndarray(format="rgb24", width=_PROBE_SIZE[0], height=_PROBE_SIZE[1])
        if self.sampler.offer(t, probe.astype(np.float32) / 255.0):
            w, h = self.size or (frame.width, frame.height)
            image = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
            self.frames.append(_Frame(t, Image.fromarray(image)))

    def audio(self, frame: av.AudioFrame | None) -> None:
        if self.resampler is None:
            return
        for out in self.resampler.resample(frame):
            self.chunks.append(out.to_ndarray().reshape(-1).astype(np.float32))


def _why(exc: Exception) -> str:
    """FFmpeg's reason without the errno and the file name (the report names the file)."""
    reason = getattr(exc, "strerror", None)
    return reason if isinstance(reason, str) and reason else str(exc)


def _decode(path: Path, options: ReadOptions, *, want_sound: bool) -> _Decoded:
    """One pass over the file: sampled frames (video) and 16 kHz mono sound (when wanted)."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise AssetReadError(f"not a readable media file: {_why(exc)}") from exc
    with container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise AssetReadError("no video or audio stream in the file")
        duration = (
            float(container.duration) / av.time_base if container.duration is not None else 0.0
        )
        streams: list[av.VideoStream | av.AudioStream] = []
        work = _Pass(None, None)
        if video is not None:
            streams.append(video)
            size = (
                _working_size(video.width, video.height, WORKING_SIDE)
                if video.width and video.height
                else None
            )
            work = _Pass(_sampler_for(video, duration, options), size)
        if audio is not None and want_sound:
            streams.append(audio)
            work.resampler = av.AudioResampler(format="flt", layout="mono", rate=SPEECH_RATE)
        try:
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        work.video(frame)
                    elif isinstance(frame, av.AudioFrame):
                        work.audio(frame)
            work.audio(None)  # flush the resampler
        except (av.error.FFmpegError, ValueError) as exc:
            raise AssetReadError(f"corrupt or truncated media: {_why(exc)}") from exc
        if video is not None and not work.frames:
            raise AssetReadError("no video frame could be decoded")
        samples = np.concatenate(work.chunks) if work.chunks else None
        if duration <= 0:
            heard = len(samples) / SPEECH_RATE if samples is not None else 0.0
            duration = max(work.last_time, heard)
        main = video or audio
        fps = float(video.average_rate) if video is not None and video.average_rate else None
        return _Decoded(
            duration_s=round(duration, 3),
            fps=fps,
            codec=main.codec_context.name if main is not None else None,
            width=video.width if video is not None else None,
            height=video.height if video is not None else None,
            frames=work.frames,
            samples=samples,
            decoded_frames=work.decoded,
        )


# -- transcripts -------------------------------------------------------------------------------

_CUE_TIME = re.compile(
    r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})\s*-->\s*(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
)


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def parse_cues(text: str) -> list[TranscriptPiece]:
    """Cues of an SRT or WebVTT file (numbers, headers, styling tags dropped)."""
    pieces: list[TranscriptPiece] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = block.strip().splitlines()
        for i, line in enumerate(lines):
            match = _CUE_TIME.search(line)
            if not match:
                continue
            g = match.groups()
            words = " ".join(re.sub(r"<[^>]+>", "", x).strip() for x in lines[i + 1 :]).strip()
            if words:
                start, end = _seconds(*g[:4]), _seconds(*g[4:])
                pieces.append(TranscriptPiece(start, max(start, end), words))
            break
    return pieces


def transcript_sidecar(path: Path) -> Path | None:
    """``talk.srt`` / ``talk.vtt`` / ``talk.mp4.srt`` / ``talk.mp4.txt`` beside ``path``."""
    for suffix in TRANSCRIPT_SUFFIXES:
        for candidate in (path.with_suffix(suffix), path.with_name(path.name + suffix)):
            if candidate.is_file():
                return candidate
    plain = path.with_name(path.name + ".txt")
    return plain if plain.is_file() else None


def _sidecar_pieces(sidecar: Path, duration_s: float) -> list[TranscriptPiece]:
    try:
        text = sidecar.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise AssetReadError(f"transcript {sidecar.name} unreadable: {exc}") from exc
    if sidecar.suffix.lower() in TRANSCRIPT_SUFFIXES:
        pieces = parse_cues(text)
        if not pieces:
            raise AssetReadError(f"transcript {sidecar.name} has no timed cues")
        return pieces
    words = " ".join(text.split())
    return [TranscriptPiece(0.0, duration_s, words)] if words else []


MAX_PAUSE_S = 1.5  # a longer silence always starts a new transcript segment
MIN_SPAN_S = 4.0  # shorter pieces (subtitle cues, short sentences) join the next one


def merge_pieces(
    pieces: Sequence[TranscriptPiece], *, max_span_s: float, max_chars: int
) -> list[TranscriptPiece]:
    """Short consecutive pieces joined, so each segment says enough to be found and cited
    precisely: a segment grows while it is under ``MIN_SPAN_S``, stays within ``max_span_s``
    and ``max_chars``, and no pause over ``MAX_PAUSE_S`` separates the pieces."""
    out: list[TranscriptPiece] = []
    for piece in pieces:
        if out:
            last = out[-1]
            joined = f"{last.text} {piece.text}"
            if (
                last.end_s - last.start_s < MIN_SPAN_S
                and piece.end_s - last.start_s <= max_span_s
                and len(joined) <= max_chars
                and piece.start_s - last.end_s <= MAX_PAUSE_S
            ):
                out[-1] = TranscriptPiece(last.start_s, piece.end_s, joined)
                continue
        out.append(piece)
    return out


def _transcript(
    path: Path, decoded: _Decoded, options: ReadOptions
) -> tuple[list[TranscriptPiece], str | None]:
    """(time-coded pieces, where they came from); no sound or no recognizer: none."""
    sidecar = transcript_sidecar(path)
    if sidecar is not None:
        pieces = _sidecar_pieces(sidecar, decoded.duration_s)
        origin: str | None = sidecar.name
    elif options.speech is not None and decoded.samples is not None and decoded.samples.size:
        pieces = options.speech.transcribe(decoded.samples)
        origin = options.speech.name
    else:
        return [], None
    merged = merge_pieces(
        pieces, max_span_s=options.transcript_chunk_s, max_chars=options.chunk_size
    )
    return merged, origin


# -- assets ------------------------------------------------------------------------------------


def _asset(
    path: Path, sha256: str, options: ReadOptions, *, root: Path, modality: Modality, d: _Decoded
) -> Asset:
    size, mtime_ns = check_size(path, options)
    return Asset(
        asset_id=asset_id_for(sha256, str(path)),
        source=str(path),
        modality=modality,
        mime=_MIME.get(path.suffix.lower(), "application/octet-stream"),
        size_bytes=size,
        content_sha256=sha256,
        ingested_at=datetime.now(UTC),
        title=title_from(path),
        tags=options.tags,
        width=d.width,
        height=d.height,
        mtime_ns=mtime_ns,
        root=str(root),
        duration_s=d.duration_s,
        fps=d.fps,
        codec=d.codec,
    )


def _spans(times: Sequence[float], duration_s: float) -> Iterator[tuple[float, float]]:
    for i, start in enumerate(times):
        end = times[i + 1] if i + 1 < len(times) else max(duration_s, start)
        yield round(start, 3), round(end, 3)


def read_video(path: Path, sha256: str, options: ReadOptions, *, root: Path) -> PreparedAsset:
    check_size(path, options)
    decoded = _decode(path, options, want_sound=True)
    if options.ocr is not None:
        for frame in decoded.frames:
            frame.text = options.ocr.read_text(frame.image)
    pieces, _ = _transcript(path, decoded, options)
    asset = _asset(path, sha256, options, root=root, modality=Modality.VIDEO, d=decoded)
    first = write_thumbnail(decoded.frames[0].image, asset.asset_id, options)
    asset = replace(asset, thumbnail=first)
    count = 1 + len(decoded.frames) + len(pieces)
    segments = [
        Segment(
            asset=asset,
            index=0,
            count=count,
            kind=SegmentKind.VIDEO,
            locator=Locator(start_s=0.0, end_s=decoded.duration_s),
            thumbnail=first,
        )
    ]
    images: dict[int, Image.Image] = {}
    times = [f.time_s for f in decoded.frames]
    for n, (frame, (start, end)) in enumerate(
        zip(decoded.frames, _spans(times, decoded.duration_s), strict=True), start=1
    ):
        images[n] = frame.image
        segments.append(
            Segment(
                asset=asset,
                index=n,
                count=count,
                kind=SegmentKind.FRAME,
                text=frame.text.strip() or None,
                locator=Locator(start_s=start, end_s=end),
                thumbnail=write_thumbnail(frame.image, asset.asset_id, options, segment=n),
            )
        )
    segments.extend(_transcript_segments(asset, pieces, first_index=len(segments), count=count))
    return PreparedAsset(
        asset=asset, segments=tuple(segments), images=images, decoded=decoded.decoded_frames
    )


def read_audio(path: Path, sha256: str, options: ReadOptions, *, root: Path) -> PreparedAsset:
    check_size(path, options)
    has_sidecar = transcript_sidecar(path) is not None
    if not has_sidecar and options.speech is None:
        msg = (
            "no transcript: speech recognition is off and there is no sidecar "
            "(.srt, .vtt or .txt) beside the file; run `python -m app models fetch` or add one"
        )
        raise AssetReadError(msg)
    decoded = _decode(path, options, want_sound=not has_sidecar)
    if decoded.samples is None and not has_sidecar:
        raise AssetReadError("no audio stream in the file")
    pieces, origin = _transcript(path, decoded, options)
    asset = _asset(path, sha256, options, root=root, modality=Modality.AUDIO, d=decoded)
    if not pieces:
        # Music, noise, silence: stored as one segment that says so, found by its name, and
        # never transcribed again while the file is unchanged.
        why = (
            f"whose transcript {origin} holds no words"
            if has_sidecar
            else f"in which {origin or 'speech recognition'} recognised no speech"
        )
        words = f"{asset.title}: a recording of {clock(decoded.duration_s)} ({decoded.codec}) {why}"
        whole = Segment(
            asset=asset,
            index=0,
            count=1,
            kind=SegmentKind.RECORDING,
            text=words,
            locator=Locator(start_s=0.0, end_s=decoded.duration_s),
        )
        return PreparedAsset(asset=asset, segments=(whole,), decoded=1)
    segments = _transcript_segments(asset, pieces, first_index=0, count=len(pieces))
    return PreparedAsset(asset=asset, segments=tuple(segments), decoded=1)


def _transcript_segments(
    asset: Asset, pieces: Sequence[TranscriptPiece], *, first_index: int, count: int
) -> list[Segment]:
    return [
        Segment(
            asset=asset,
            index=first_index + i,
            count=count,
            kind=SegmentKind.TRANSCRIPT,
            text=piece.text,
            locator=Locator(start_s=round(piece.start_s, 3), end_s=round(piece.end_s, 3)),
        )
        for i, piece in enumerate(pieces)
    ]
