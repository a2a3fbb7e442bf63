"""The real Tesseract program reading text rendered with Pillow."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from app.adapters.ocr import TesseractOCR, tesseract_available
from app.core.ports import TextRecognizer

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LINES = ("Quarterly invoice 4471", "Turquoise lighthouse ahead")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if DEJAVU.is_file():
        return ImageFont.truetype(str(DEJAVU), size)
    return ImageFont.load_default(size=size)


def _page(size: int, *, mode: str = "RGB", ground: str = "white") -> Image.Image:
    font = _font(size)
    image = Image.new(mode, (size * 22, size * 4), ground)
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(LINES):
        draw.text((size // 2, size // 3 + n * size * 3 // 2), line, fill="black", font=font)
    return image


@pytest.fixture(scope="module")
def ocr() -> TesseractOCR:
    assert tesseract_available(), "tesseract is needed (apt-get install tesseract-ocr)"
    return TesseractOCR()


def test_tesseract_is_found_with_its_version() -> None:
    version = tesseract_available("tesseract", language="eng")
    assert version
    assert version[0].isdigit()


def test_a_missing_program_or_language_is_none() -> None:
    assert tesseract_available("no-such-tesseract-binary") is None
    assert tesseract_available("tesseract", language="eng+xyz") is None


@pytest.mark.parametrize("size", [10, 40])
def test_rendered_lines_are_read_in_order(ocr: TesseractOCR, size: int) -> None:
    recognizer: TextRecognizer = ocr  # conforms to the port
    assert recognizer.read_text(_page(size)).splitlines() == list(LINES)


def test_text_on_a_transparent_picture_is_read(ocr: TesseractOCR) -> None:
    assert ocr.read_text(_page(30, mode="RGBA", ground="#00000000")).splitlines() == list(LINES)


def test_pictures_without_text_give_nothing(ocr: TesseractOCR) -> None:
    assert ocr.read_text(Image.new("RGB", (640, 480), "white")) == ""
    assert ocr.read_text(Image.new("L", (3, 3), 255)) == ""


def test_calls_from_several_threads_do_not_mix(ocr: TesseractOCR) -> None:
    pages = [_page(24), Image.new("RGB", (300, 100), "white")] * 3
    with ThreadPoolExecutor(max_workers=3) as pool:
        texts = list(pool.map(ocr.read_text, pages))
    assert texts == ["\n".join(LINES), ""] * 3


def test_a_failing_program_gives_empty_text_and_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = TesseractOCR(language="xyz")  # no such language data: tesseract exits non-zero
    with caplog.at_level(logging.WARNING, logger="app.adapters.ocr"):
        assert broken.read_text(_page(24)) == ""
    assert "tesseract failed" in caplog.text
    caplog.clear()
    missing = TesseractOCR(binary="no-such-tesseract-binary")
    with caplog.at_level(logging.WARNING, logger="app.adapters.ocr"):
        assert missing.read_text(_page(24)) == ""
    assert "cannot run no-such-tesseract-binary" in caplog.text


def test_a_picture_over_the_time_limit_gives_empty_text(caplog: pytest.LogCaptureFixture) -> None:
    hasty = TesseractOCR(timeout_s=0.001)
    with caplog.at_level(logging.WARNING, logger="app.adapters.ocr"):
        assert hasty.read_text(_page(24)) == ""
    assert "no answer within" in caplog.text
