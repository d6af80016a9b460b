"""Content-change detection: does a frame show what the frame last read showed?

Ray-free and thread-safe (pure functions of their arguments). A frame becomes a
:class:`Fingerprint`: its grey image ``width`` pixels wide, locally contrast
normalised (minus the local mean, over the local standard deviation), which
cancels exposure drift and uneven light. :meth:`ChangeDetector.compare` then

1. registers the reference onto the frame: a phase correlation per quadrant
   gives four shifts, fitted by a similarity (shift, rotation, scale) that
   undoes camera shake;
2. scores what registration cannot explain: a pixel of one image that lies
   outside the range of the other's 3x3 neighbourhood (narrowed to
   ``subpixel_tolerance`` of a pixel) by more than ``pixel_threshold``, both ways;
3. takes the mean of that excess over the worst ``block`` x ``block`` square
   (about one character): the change ``score``, compared with ``threshold``.

See docs/dedup.md for the measurements behind the defaults.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from serve_app.config import DedupConfig
from serve_app.images import decode_gray, probe

_SCALE = 16.0  # int8 units per unit of local contrast (range +-7.9)
_MIN_RESPONSE = 0.25  # a quadrant's phase-correlation peak below this is not trusted
_MAX_FIT_ERROR = 1.0  # px; quadrant shifts that disagree more with the fit: shift only
_K3 = np.ones((3, 3), np.uint8)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What is kept of a frame: picklable, ``contrast.nbytes`` bytes (76.8 KB for 320x240)."""

    source_size: tuple[int, int]  # (width, height) of the image as sent
    contrast: np.ndarray  # int8 (h, w): the normalised grey image x 16


@dataclass(frozen=True, slots=True)
class Comparison:
    same: bool
    score: float  # mean excess residual of the most changed block; inf: not comparable
    shift: tuple[float, float] = (0.0, 0.0)  # content's motion from b to a, px of the grey image
    rotation_deg: float = 0.0
    where: tuple[int, int] | None = None  # (x, y) of the most changed block, px of the source


@functools.lru_cache(maxsize=16)
def _window(width: int, height: int) -> np.ndarray:
    return cv2.createHanningWindow((width, height), cv2.CV_32F)


def _register(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 similarity mapping pixels of ``a`` onto where they are in ``b``."""
    h, w = a.shape
    hh, hw = h // 2, w // 2
    window = _window(hw, hh)
    src, dst, best = [], [], (-1.0, 0.0, 0.0)
    for y0, x0 in ((0, 0), (0, hw), (hh, 0), (hh, hw)):
        # phaseCorrelate writes into its inputs: hand it copies.
        (dx, dy), response = cv2.phaseCorrelate(
            a[y0 : y0 + hh, x0 : x0 + hw].copy(), b[y0 : y0 + hh, x0 : x0 + hw].copy(), window
        )
        best = max(best, (response, dx, dy))
        if response >= _MIN_RESPONSE:
            src.append((x0 + hw / 2, y0 + hh / 2))
            dst.append((x0 + hw / 2 + dx, y0 + hh / 2 + dy))
    if len(src) >= 2:
        m, _ = cv2.estimateAffinePartial2D(np.float32(src), np.float32(dst), method=cv2.LMEDS)
        if m is not None:
            fitted = np.hstack([np.float32(src), np.ones((len(src), 1), np.float32)]) @ m.T
            if np.abs(fitted - np.float32(dst)).max() < _MAX_FIT_ERROR:
                return m.astype(np.float32)
    return np.float32([[1, 0, best[1]], [0, 1, best[2]]])


def _slack(x: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """How much ``x`` can rise and fall when moved by ``tolerance`` of a pixel."""
    return tolerance * (cv2.dilate(x, _K3) - x), tolerance * (x - cv2.erode(x, _K3))


class ChangeDetector:
    def __init__(self, config: DedupConfig) -> None:
        self.config = config

    def fingerprint(self, data: bytes, max_pixels: int) -> Fingerprint:
        """Raises :class:`~serve_app.protocol.ProtocolError` for an image that cannot be read."""
        c = self.config
        info = probe(data, max_pixels)
        gray = decode_gray(data, max_pixels, c.width).astype(np.float32)
        detail = gray - cv2.GaussianBlur(gray, (0, 0), c.contrast_sigma)
        side = 2 * round(2 * c.contrast_sigma) + 1  # a box about as wide as a Gaussian of 2 sigma
        # (a box sum of squares may come out a hair below zero: the floor also keeps sqrt real)
        variance = cv2.blur(detail * detail, (side, side))
        contrast = detail / np.sqrt(np.maximum(variance, c.contrast_floor**2))
        quantised = np.clip(np.rint(contrast * _SCALE), -127, 127).astype(np.int8)
        return Fingerprint((info.width, info.height), quantised)

    def compare(self, a: Fingerprint, b: Fingerprint) -> Comparison:
        """Is frame ``a`` the same content as reference ``b``? Symmetric up to registration."""
        c = self.config
        if a.source_size != b.source_size or a.contrast.shape != b.contrast.shape:
            return Comparison(same=False, score=math.inf)
        fa = a.contrast.astype(np.float32) * (1 / _SCALE)
        fb = b.contrast.astype(np.float32) * (1 / _SCALE)
        h, w = fa.shape
        m = _register(fa, fb)
        moved = cv2.invertAffineTransform(m)  # the content's motion from b to a
        shift = (float(moved[0, 2]), float(moved[1, 2]))
        rotation = math.degrees(math.atan2(float(moved[1, 0]), float(moved[0, 0])))
        corners = np.float32([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]])
        motion = float(np.abs(corners @ m.T - corners[:, :2]).max())
        if motion > c.max_shift:
            return Comparison(same=False, score=math.inf, shift=shift, rotation_deg=rotation)
        fb = cv2.warpAffine(fb, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        edge = c.margin + math.ceil(motion)
        if min(h, w) <= 2 * edge + c.block:
            return Comparison(same=False, score=math.inf, shift=shift, rotation_deg=rotation)
        # a - b beyond what moving a or b by the tolerance can explain, either way
        up_a, down_a = _slack(fa, c.subpixel_tolerance)
        up_b, down_b = _slack(fb, c.subpixel_tolerance)
        d = fa - fb
        residual = np.maximum(d - np.minimum(up_b, down_a), -d - np.minimum(down_b, up_a))
        excess = np.maximum(residual[edge : h - edge, edge : w - edge] - c.pixel_threshold, 0)
        blocks = cv2.blur(excess, (c.block, c.block), borderType=cv2.BORDER_CONSTANT)
        y, x = np.unravel_index(int(blocks.argmax()), blocks.shape)
        score = float(blocks[y, x])
        to_source = a.source_size[0] / w
        where = (round((x + edge) * to_source), round((y + edge) * to_source))
        return Comparison(score <= c.threshold, score, shift, rotation, where)
