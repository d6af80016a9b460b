"""Images as users send them: probe the header, decode for the model or for dedup.

Ray-free. Every failure is a :class:`~serve_app.protocol.ProtocolError` with
``bad_image`` or ``too_large``; nothing else escapes.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from serve_app.protocol import ErrorCode, ProtocolError, Roi

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
    return im, _checked(ImageInfo(im.format, *im.size), max_pixels)


def _checked(info: ImageInfo, max_pixels: int) -> ImageInfo:
    if info.width <= 0 or info.height <= 0:
        raise ProtocolError(ErrorCode.BAD_IMAGE, "image is zero-sized")
    if info.width * info.height > max_pixels:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"image is {info.width}x{info.height}, more than {max_pixels} pixels"
        )
    return info


# Start-of-frame markers (baseline, progressive, lossless, ...); C4, C8 and CC are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, walking the marker segments before it.

    A camera's frame costs ~5 us here against ~75 us for Pillow's header parser, which reads
    every segment and their tables in Python: about half of a stream's own CPU per `rate`
    frame (``python -m bench.session_cpu``). None for anything unusual (not a JPEG, a segment
    that does not parse, a height defined later): Pillow then reads the header and says what
    is wrong.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    at, end = 2, len(data) - 9  # a frame header needs 9 bytes: marker, length, precision, size
    while at <= end:
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, at + 5)
            return (width, height) if width and height else None
        length = (data[at + 2] << 8) | data[at + 3]
        if length < 2 or not 0xC0 <= marker <= 0xFE or marker == 0xDA or 0xD0 <= marker <= 0xD9:
            return None  # no length, or the scan began before any frame header
        at += 2 + length
    return None


def probe(data: bytes, max_pixels: int) -> ImageInfo:
    """Format and size from the header; cheap enough for an event loop (a JPEG's is read here
    directly: an MPO, a JPEG from some cameras, is probed as JPEG)."""
    size = _jpeg_size(data)
    if size is None:
        return _open(data, max_pixels)[1]
    return _checked(ImageInfo("JPEG", *size), max_pixels)


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


@dataclass(frozen=True, slots=True)
class GrayImage:
    """A small grey image of (a region of) the upright frame, for change detection."""

    pixels: np.ndarray  # uint8 (h, w)
    source_size: tuple[int, int]  # (width, height) of the upright frame, as the model reads it
    region: tuple[int, int, int, int]  # x0, y0, x1, y1 of the frame shown, px of the upright frame
    scale: tuple[float, float]  # grey px per frame px along x, y: grey = frame * scale - offset
    offset: tuple[float, float]


# EXIF orientation -> how the stored pixels become upright (the transposes of ImageOps.exif_transpose)
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].T,
    8: lambda a: np.rot90(a),
}
_REDUCED = (
    (8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
    (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    (2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
)


def _orientation(im: Image.Image) -> int:
    with contextlib.suppress(OSError, ValueError, SyntaxError, KeyError, TypeError):
        value = im.getexif().get(0x0112, 1)  # a broken EXIF block: the image as stored, like decode_bgr
        return value if value in _UPRIGHT else 1
    return 1


def _decode_jpeg_reduced(data: bytes, factor: int) -> np.ndarray | None:
    """libjpeg's DCT scaling: 1/``factor`` size for a fraction of a full decode.

    Only for a JPEG that ends with its EOI marker: OpenCV hands back a half-grey
    frame for a truncated one, where Pillow raises (never compare a broken frame).
    """
    if not data.endswith(b"\xff\xd9"):
        return None
    flag = next((f for k, f in _REDUCED if k == factor), cv2.IMREAD_GRAYSCALE)
    return cv2.imdecode(np.frombuffer(data, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)


def decode_gray(data: bytes, max_pixels: int, width: int, roi: Roi | None = None) -> GrayImage:
    """The upright frame (EXIF applied) or its ``roi``, grey, at most ``width`` pixels wide.

    A JPEG decodes at reduced DCT scale (1/2, 1/4, 1/8: the largest that keeps
    ``width`` pixels across the region), so a 640x480 frame costs a fraction of a
    full decode; other formats decode fully. The region is then cut and shrunk
    to ``width`` if wider.
    """
    im, info = _open(data, max_pixels)
    orientation = _orientation(im)
    turned = orientation in (5, 6, 7, 8)
    size = (info.height, info.width) if turned else (info.width, info.height)
    region = roi.pixels(*size) if roi is not None else (0, 0, *size)
    gray = None
    if info.format in ("JPEG", "MPO"):
        factor = next((k for k, _ in _REDUCED if (region[2] - region[0]) // k >= width), 1)
        gray = _decode_jpeg_reduced(data, factor)
    if gray is None:
        _load(im)
        if im.mode in _SIXTEEN_BIT_MODES:
            im = _to_8bit(im)
        gray = np.asarray(im.convert("L"))
    if orientation in _UPRIGHT:
        gray = _UPRIGHT[orientation](gray)
    sx, sy = gray.shape[1] / size[0], gray.shape[0] / size[1]
    x0, y0, x1, y1 = region
    cx0, cy0 = round(x0 * sx), round(y0 * sy)
    crop = gray[cy0 : max(cy0 + 1, round(y1 * sy)), cx0 : max(cx0 + 1, round(x1 * sx))]
    fx = fy = 1.0
    if crop.shape[1] > width:
        height = max(1, round(width * crop.shape[0] / crop.shape[1]))
        fx, fy = width / crop.shape[1], height / crop.shape[0]
        crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    return GrayImage(np.ascontiguousarray(crop), size, region, (sx * fx, sy * fy), (cx0 * fx, cy0 * fy))
