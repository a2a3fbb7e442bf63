"""Decoding untrusted images at the size a model needs, with bounded memory: the one image
decoder of both edges (ingestion reads library files with it, the service query uploads).

A file is checked (``verify``: truncated and corrupt files are caught) before it is decoded.
With a pixel limit, the pixel count is read from the header and checked *before* anything is
decoded, so a small file that claims 9400 x 9400 pixels costs nothing; without one, Pillow's
own decompression-bomb limit still applies. JPEGs are decoded with DCT scaling
(``Image.draft``) straight to about the size needed; other formats are reduced right after
decoding, so only one full-size copy exists for a moment. The result is upright (EXIF
orientation applied) RGB.

Failures are the core's input errors, so each edge maps them its own way (a per-file failure
in an ingestion report, a 413 or 415 problem on the HTTP API).
"""

from __future__ import annotations

import io
import mimetypes
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.errors import (
    InputError,
    InvalidFieldError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)

SUPPORTED = "JPEG, PNG, WebP, GIF, BMP, TIFF"
# Query images are reduced to this shorter side before embedding: CLIP sees 224 px crops.
QUERY_IMAGE_SIDE = 448
# EXIF tags: 0x010E ImageDescription, 0x0112 Orientation; PNG text chunks that describe.
_EXIF_IMAGE_DESCRIPTION = 0x010E
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = frozenset({5, 6, 7, 8})  # orientations that swap width and height
_PNG_TEXT_KEYS = ("Description", "Comment", "Title", "Caption", "Subject")


@dataclass(frozen=True, slots=True)
class DecodedImage:
    image: Image.Image  # upright RGB, shorter side at most about ``min_side`` (never upscaled)
    mime: str  # "image/png"; "" when neither the format nor the file name tells
    width: int  # the full upright size, not the decoded one
    height: int
    words: tuple[str, ...]  # what the file says about itself: EXIF description, PNG text


def decode_image(
    source: Path | bytes,
    *,
    min_side: int,
    max_pixels: int | None = None,
    max_pixels_setting: str = "",
) -> DecodedImage:
    """Decode ``source`` (a file, or the bytes of one) reduced to ``min_side``.

    Raises UnsupportedMediaError (not an image, or corrupt), PayloadTooLargeError (more pixels
    than ``max_pixels``, whose setting ``max_pixels_setting`` names, or a decompression bomb)
    or InputError (a file that cannot be read).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open(source) as probe:
                width, height = probe.size
                if max_pixels is not None and width * height > max_pixels:
                    raise PayloadTooLargeError(
                        _too_many_pixels(width, height, max_pixels, max_pixels_setting)
                    )
                probe.verify()  # catches truncated and corrupt files before decoding
            img = _open(source)
            try:
                orientation = _orientation(img)
                img.seek(0)  # first frame of animations
                scale = min(width, height) / min_side
                if scale > 1:
                    img.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
                img.load()
            except BaseException:
                img.close()
                raise
    except UnidentifiedImageError as exc:
        msg = f"not an image in a supported format ({SUPPORTED})"
        raise UnsupportedMediaError(msg) from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise PayloadTooLargeError(f"image too large to decode safely: {exc}") from exc
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnsupportedMediaError(f"the image is corrupt: {exc}") from exc
    with img:
        words = _embedded_words(img)
        mime = Image.MIME.get(img.format or "", "")
        upright = ImageOps.exif_transpose(img.convert("RGBA") if img.mode == "P" else img)
        picture = reduced(upright.convert("RGB"), min_side)
    if not mime and isinstance(source, Path):
        mime = mimetypes.guess_type(source.name)[0] or ""
    if orientation in _TRANSPOSED:
        width, height = height, width
    return DecodedImage(picture, mime, width, height, words)


def decode_query_image(
    data: bytes, *, max_pixels: int, min_side: int = QUERY_IMAGE_SIDE
) -> Image.Image:
    """An uploaded query image, as RGB reduced to ``min_side``.

    Raises InvalidFieldError (empty), PayloadTooLargeError (too many pixels) or
    UnsupportedMediaError (not an image, or corrupt).
    """
    if not data:
        raise InvalidFieldError("image", "the uploaded file is empty")
    decoded = decode_image(
        data, min_side=min_side, max_pixels=max_pixels, max_pixels_setting="http.max_image_pixels"
    )
    return decoded.image


def reduced(img: Image.Image, min_side: int) -> Image.Image:
    """``img`` with its shorter side brought down to ``min_side`` (never upscaled)."""
    scale = min(img.size) / min_side
    if scale <= 1:
        return img
    size = (max(1, round(img.width / scale)), max(1, round(img.height / scale)))
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def _orientation(img: Image.Image) -> int | None:
    try:
        value = img.getexif().get(_EXIF_ORIENTATION)
    except (OSError, ValueError, SyntaxError):
        return None
    return value if isinstance(value, int) else None


def _open(source: Path | bytes) -> Image.Image:
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def _too_many_pixels(width: int, height: int, limit: int, setting: str) -> str:
    named = f" ({setting})" if setting else ""
    return (
        f"the image is {width}x{height} pixels ({width * height / 1e6:.1f} MP); "
        f"images are limited to {limit / 1e6:.1f} MP{named}"
    )


def _embedded_words(img: Image.Image) -> tuple[str, ...]:
    words: list[str] = []
    try:
        description = img.getexif().get(_EXIF_IMAGE_DESCRIPTION)
    except (OSError, ValueError, SyntaxError):
        description = None
    if isinstance(description, bytes):
        description = description.decode("utf-8", "replace")
    if isinstance(description, str):
        words.append(description.strip("\x00 "))
    text_chunks = getattr(img, "text", None)  # PNG tEXt/iTXt
    if isinstance(text_chunks, dict):
        words.extend(str(text_chunks[k]) for k in _PNG_TEXT_KEYS if k in text_chunks)
    return tuple(words)
