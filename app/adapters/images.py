"""Decoding untrusted images at the size a model needs, with bounded memory.

The pixel count is read from the header and checked *before* anything is decoded, so a small
file that claims 9400 x 9400 pixels costs nothing. JPEGs are decoded with DCT scaling
(``Image.draft``) straight to about the size needed; other formats are reduced right after
decoding, so only one full-size copy exists for a moment.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.errors import InvalidFieldError, PayloadTooLargeError, UnsupportedMediaError

SUPPORTED = "JPEG, PNG, WebP, GIF, BMP, TIFF"


def decode_query_image(data: bytes, *, max_pixels: int, min_side: int) -> Image.Image:
    """An RGB image whose shorter side is at most about ``min_side`` (never upscaled).

    Raises InvalidFieldError (empty), PayloadTooLargeError (too many pixels) or
    UnsupportedMediaError (not an image, or corrupt).
    """
    if not data:
        raise InvalidFieldError("image", "the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                msg = (
                    f"the image is {width}x{height} pixels ({width * height / 1e6:.1f} MP); "
                    f"query images are limited to {max_pixels / 1e6:.1f} MP "
                    "(http.max_image_pixels)"
                )
                raise PayloadTooLargeError(msg)
            img.seek(0)  # first frame of animations
            scale = min(width, height) / min_side
            if scale > 1:
                img.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
            img.load()
    except (
        UnidentifiedImageError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:
        msg = f"the upload is not an image in a supported format ({SUPPORTED})"
        raise UnsupportedMediaError(msg) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnsupportedMediaError(f"the uploaded image is corrupt: {exc}") from exc
    img = ImageOps.exif_transpose(img.convert("RGBA") if img.mode == "P" else img)
    scale = min(img.size) / min_side
    if scale > 1:
        target = (max(1, round(img.width / scale)), max(1, round(img.height / scale)))
        img = img.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return img.convert("RGB")
