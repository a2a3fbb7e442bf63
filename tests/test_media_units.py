"""The small parts of media ingestion and citation: subtitle parsing, transcript segments,
sidecar recognition, time labels, deep links, snippets, and the OCR/speech switches."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.core.answering import clock, source_label
from app.core.errors import ConfigurationError, ModelUnavailableError
from app.core.models import Asset, Locator, Modality, SearchHit, Segment, SegmentKind
from app.core.ports import TranscriptPiece
from app.http.schemas import SNIPPET_CHARS, deep_link, snippet
from app.wiring import build_ocr, build_speech
from ingestion.discovery import is_sidecar, modality_of
from ingestion.media import merge_pieces, parse_cues, transcript_sidecar
from tests.conftest import make_settings

SRT = """1
00:00:01,000 --> 00:00:03,500
Caravans of <i>camels</i>

2
00:00:03,500 --> 00:00:05,250
carried saffron.

3
01:02:03,040 --> 01:02:04,000
Much later.
"""

VTT = """WEBVTT

NOTE a comment

00:01.000 --> 00:02.500 align:start
Hello there.
"""


def test_srt_and_vtt_cues_are_parsed_with_their_times() -> None:
    assert parse_cues(SRT) == [
        TranscriptPiece(1.0, 3.5, "Caravans of camels"),
        TranscriptPiece(3.5, 5.25, "carried saffron."),
        TranscriptPiece(3723.04, 3724.0, "Much later."),
    ]
    assert parse_cues(VTT) == [TranscriptPiece(1.0, 2.5, "Hello there.")]
    assert parse_cues("no cues at all") == []


def test_short_pieces_join_but_not_across_pauses_or_limits() -> None:
    pieces = [
        TranscriptPiece(0.0, 1.5, "One."),
        TranscriptPiece(1.5, 3.0, "Two."),
        TranscriptPiece(3.0, 8.0, "Three is long enough alone."),
        TranscriptPiece(8.0, 9.0, "Four."),
        TranscriptPiece(12.0, 13.0, "Five, after a pause."),
    ]
    merged = merge_pieces(pieces, max_span_s=30, max_chars=800)
    assert [(p.start_s, p.end_s) for p in merged] == [(0.0, 8.0), (8.0, 9.0), (12.0, 13.0)]
    assert merged[0].text == "One. Two. Three is long enough alone."
    capped = merge_pieces(pieces[:3], max_span_s=2.0, max_chars=800)
    assert len(capped) == 3


def test_sidecars_of_media_are_not_documents(tmp_path: Path) -> None:
    (tmp_path / "talk.mp3").write_bytes(b"x")
    (tmp_path / "talk.srt").write_text(SRT)
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "clip.mp4.vtt").write_text(VTT)
    (tmp_path / "clip.mp4.txt").write_text("words")
    (tmp_path / "orphan.srt").write_text(SRT)
    assert is_sidecar(tmp_path / "talk.srt")
    assert is_sidecar(tmp_path / "clip.mp4.vtt")
    assert is_sidecar(tmp_path / "clip.mp4.txt")
    assert not is_sidecar(tmp_path / "orphan.srt")
    assert transcript_sidecar(tmp_path / "talk.mp3") == tmp_path / "talk.srt"
    assert transcript_sidecar(tmp_path / "clip.mp4") == tmp_path / "clip.mp4.vtt"
    assert modality_of(Path("a.MKV")) is Modality.VIDEO
    assert modality_of(Path("a.opus")) is Modality.AUDIO
    assert modality_of(Path("a.pdf")) is Modality.PDF
    assert modality_of(Path("a.srt")) is None


def _hit(kind: SegmentKind, locator: Locator, text: str = "words") -> SearchHit:
    asset = Asset(
        asset_id="a" * 32,
        source="/lib/talk.mp4",
        modality=Modality.VIDEO,
        mime="video/mp4",
        size_bytes=1,
        content_sha256="0",
        ingested_at=datetime.now(UTC),
        title="talk",
    )
    segment = Segment(asset=asset, index=3, count=9, kind=kind, text=text, locator=locator)
    return SearchHit(segment=segment, score=1.0, signal_scores={})


def test_citations_name_the_time_or_page() -> None:
    assert clock(0) == "0:00"
    assert clock(75.5) == "1:15.5"
    assert clock(59.96) == "1:00"
    assert clock(3725) == "1:02:05"
    frame = _hit(SegmentKind.FRAME, Locator(start_s=62.0, end_s=75.5))
    assert source_label(frame) == "video: talk.mp4 (1:02-1:15.5)"
    page = _hit(SegmentKind.TEXT_CHUNK, Locator(page=4, char_start=0, char_end=5))
    assert source_label(page) == "video: talk.mp4 (page 4)"  # no "part 4 of 9" beside a page
    url = "/v1/assets/x/content?collection=c"
    assert deep_link(url, Locator(start_s=12.5, end_s=20)) == url + "#t=12.5"
    assert deep_link(url, Locator(page=3)) == url + "#page=3"
    assert deep_link(url, Locator(char_start=1, char_end=2)) == url


def test_snippets_show_the_words_asked_about() -> None:
    long_text = " ".join(f"filler{i}" for i in range(200)) + " order part XJ-4417-B now."
    segment = _hit(SegmentKind.TEXT_CHUNK, Locator(), long_text).segment
    shown = snippet(segment, "XJ-4417-B")
    assert "XJ-4417-B" in shown
    assert shown.startswith("…")
    assert len(shown) <= SNIPPET_CHARS
    assert snippet(segment).startswith("filler0 ")  # no query: from the start
    assert snippet(segment, "absent words").startswith("filler0 ")


def test_ocr_switch_gives_one_notice_or_an_error(tmp_path: Path) -> None:
    missing = {"tesseract": "/nonexistent/tesseract"}
    auto = make_settings(tmp_path, ingestion={"ocr": "auto", **missing})
    recognizer, notice = build_ocr(auto)
    assert recognizer is None
    assert notice is not None
    assert "apt-get install tesseract-ocr" in notice
    with pytest.raises(ConfigurationError, match=r"ingestion\.ocr=on"):
        build_ocr(make_settings(tmp_path, ingestion={"ocr": "on", **missing}))
    assert build_ocr(make_settings(tmp_path, ingestion={"ocr": "off", **missing})) == (None, None)
    on, none = build_ocr(make_settings(tmp_path))  # the set-up installs tesseract
    assert on is not None
    assert none is None


def test_speech_switch_gives_one_notice_or_an_error(tmp_path: Path) -> None:
    nowhere = {"speech_model": str(tmp_path / "no-such-model")}
    recognizer, notice = build_speech(make_settings(tmp_path, ingestion=nowhere))
    assert recognizer is None
    assert notice is not None
    assert "models fetch" in notice
    with pytest.raises(ModelUnavailableError):
        build_speech(make_settings(tmp_path, ingestion={"speech": "on", **nowhere}))
    assert build_speech(make_settings(tmp_path, ingestion={"speech": "off"})) == (None, None)


def test_each_long_medium_is_a_batch_of_its_own(tmp_path: Path) -> None:
    """Memory holds one video's frames (or one PDF's pages) at a time, not a batch of them."""
    from ingestion.discovery import Discovered
    from ingestion.pipeline import IngestionPipeline, Outcome, _Job
    from ingestion.readers import read_options_for

    def job(name: str, modality: Modality) -> _Job:
        found = Discovered(tmp_path / name, modality, tmp_path)
        return _Job(found, "0" * 64, (), Outcome.INGESTED)

    jobs = [job(f"p{i}.jpg", Modality.IMAGE) for i in range(10)]
    jobs += [job("a.mp4", Modality.VIDEO), job("b.pdf", Modality.PDF), job("c.mp3", Modality.AUDIO)]
    options = read_options_for(make_settings(tmp_path), "default")
    pipeline = IngestionPipeline(None, None, None, options, write_batch_assets=8)  # type: ignore[arg-type]
    sizes = [[j.file.path.name for j in b] for b in pipeline._batches(jobs)]
    assert sizes == [
        [f"p{i}.jpg" for i in range(4)],  # a small first batch: the model starts at once
        [f"p{i}.jpg" for i in range(4, 10)],
        ["a.mp4"],
        ["b.pdf"],
        ["c.mp3"],
    ]
