"""Images as users send them: probe the header, decode for the model or for dedup.

Ray-free. Every failure is a :class:`~serve_app.protocol.ProtocolError` with
``bad_image`` or ``too_large``; nothing else escapes.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from serve_app.protocol import ErrorCode, ProtocolError

FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "MPO"})  # MPO: JPEG from some cameras
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


@dataclass(frozen=True, slots=True)
class ImageInfo:
    format: str
    width: int
    height: int


def _open(data: bytes, max_pixels: int) -> tuple[Image.Image, ImageInfo]:
    """Read the header only: no pixel is decoded or allocated here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"image has more than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ProtocolError(ErrorCode.BAD_IMAGE, "image bytes could not be decoded") from None
    if im.format not in FORMATS:
        raise ProtocolError(
            ErrorCode.BAD_IMAGE, f"unsupported image format {im.format}; send JPEG, PNG, WebP or BMP"
        )
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ProtocolError(ErrorCode.BAD_IMAGE, "image is zero-sized")
    if width * height > max_pixels:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"image is {width}x{height}, more than {max_pixels} pixels")
    return im, ImageInfo(im.format, width, height)


def probe(data: bytes, max_pixels: int) -> ImageInfo:
    """Format and size from the header; cheap enough for an event loop."""
    return _open(data, max_pixels)[1]


def _load(im: Image.Image) -> None:
    try:
        im.load()
    except Image.DecompressionBombError:
        raise ProtocolError(ErrorCode.TOO_LARGE, "image has too many pixels") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        # Pillow raises "image file is truncated" for a JPEG cut short, where
        # OpenCV would hand back a half-grey frame: never read a broken frame.
        raise ProtocolError(ErrorCode.BAD_IMAGE, "image is truncated or corrupt") from None


def _to_8bit(im: Image.Image) -> Image.Image:
    arr = np.asarray(im)
    if arr.dtype != np.uint8:
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, mode="L")


def _flatten_alpha(im: Image.Image) -> np.ndarray:
    """Composite onto a background that contrasts with what is drawn.

    Text drawn on a transparent canvas is only visible by its alpha: white text
    composited onto white vanishes. The background is white unless the opaque
    pixels are mostly light, then black.
    """
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3:4] / 255.0
    rgb = rgba[..., :3]
    opaque = alpha[..., 0] > 0.5
    light = opaque.any() and float(rgb[opaque].mean()) > 127.0
    background = 0.0 if light else 255.0
    out = rgb * alpha + background * (1.0 - alpha)
    return out.round().astype(np.uint8)


def _rgb(im: Image.Image) -> np.ndarray:
    if im.mode in _SIXTEEN_BIT_MODES:
        im = _to_8bit(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        return _flatten_alpha(im)
    return np.asarray(im.convert("RGB"))


def decode_bgr(data: bytes, max_pixels: int) -> np.ndarray:
    """The upright 8-bit BGR image the model reads (EXIF applied, alpha flattened)."""
    im, _ = _open(data, max_pixels)
    _load(im)
    with contextlib.suppress(OSError, ValueError, SyntaxError, KeyError, TypeError):
        im = ImageOps.exif_transpose(im)  # a broken EXIF block: read the image as stored
    return np.ascontiguousarray(_rgb(im)[..., ::-1])


def decode_gray(data: bytes, max_pixels: int, width: int) -> np.ndarray:
    """A small grey image ``width`` pixels wide, for change detection.

    JPEG decodes at reduced DCT scale (``draft``), so a 640x480 frame costs a
    fraction of a full decode; other formats decode fully, then shrink.
    """
    im, info = _open(data, max_pixels)
    if info.format in ("JPEG", "MPO"):
        im.draft("L", (max(width, 1), max(1, width * info.height // info.width)))
    _load(im)
    if im.mode in _SIXTEEN_BIT_MODES:
        im = _to_8bit(im)
    gray = np.asarray(im.convert("L"))
    height = max(1, round(width * gray.shape[0] / gray.shape[1]))
    return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)
