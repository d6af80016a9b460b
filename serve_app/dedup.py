"""Content-change detection: does a frame show the text the frame last read showed?

Ray-free and thread-safe (pure functions of their arguments). A frame becomes a
:class:`Fingerprint`: its grey image (or its region of interest) at most
``width`` pixels wide, locally contrast normalised (minus the local mean, over
the local standard deviation), which cancels exposure drift, flicker and uneven
light. :meth:`ChangeDetector.compare` then judges two things separately:

1. **Text regions**, each registered on its own: the reference read's text
   boxes (or, when unknown, text-like regions found in the reference). Each
   region is cut into a few pieces, each piece followed into the frame by
   pyramidal Lucas-Kanade (motions of ``search`` pixels and more), and a rigid
   fit (shift, rotation) to the pieces maps the region onto the frame: a label that moves and turns
   with its card, independently of the background and of the other labels, is
   followed. What the fit cannot explain is scored per ``block`` x ``block``
   square (about a character): a pixel counts by how far it lies outside the
   range the other image takes when moved by ``subpixel_tolerance`` of a
   pixel, beyond ``pixel_threshold``. One changed character scores high.
2. **The rest of the view**, coarsely: texture energy in cells of ``cell``
   pixels; new texture where the reference had none within ``reach`` cells, or
   texture gone, over an area of at least ``scene_block`` cells (a short word).
   Objects moving by a few pixels, a blinking cursor or a mouse pointer are not
   a change; a line of text appearing outside the known boxes is.

``Comparison.score`` is the larger of the two scores, each over its threshold:
``same = score <= 1``. See docs/dedup.md for the measurements behind the defaults.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import cv2
import numpy as np

from serve_app.config import DedupConfig
from serve_app.images import decode_gray
from serve_app.protocol import Roi

_SCALE = 16.0  # int8 units per unit of local contrast (range +-7.9)
_K3 = np.ones((3, 3), np.uint8)
_FIT_TOLERANCE = 1.0  # px: a piece further from the region's fit is an outlier (a changed character)

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the grey image


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What is kept of a frame: picklable, ``contrast.nbytes`` bytes (76.8 KB for 320x240)."""

    source_size: tuple[int, int]  # (width, height) of the upright frame as sent
    region: tuple[int, int, int, int]  # the part of it compared (the roi), frame px
    scale: tuple[float, float]  # grey px per frame px: grey = frame * scale - offset
    offset: tuple[float, float]
    contrast: np.ndarray  # int8 (h, w): the normalised grey image x 16
    # Small things compares work out from this frame, kept for its next compares (a reference is
    # compared with every frame until the next read): its texture energy, its text-like regions.
    derived: dict[tuple[Any, ...], Any] = field(default_factory=dict, compare=False, repr=False)

    def to_frame(self, x: float, y: float) -> tuple[int, int]:
        return round((x + self.offset[0]) / self.scale[0]), round((y + self.offset[1]) / self.scale[1])


@dataclass(frozen=True, slots=True)
class Comparison:
    same: bool
    score: float  # max(text_score / threshold, scene_score / scene_threshold); inf: not comparable
    text_score: float = 0.0  # mean excess residual of the most changed block of a text region
    scene_score: float = 0.0  # texture appeared or gone outside the text regions
    regions: int = 0  # text regions compared
    where: tuple[int, int] | None = None  # (x, y) of the most changed spot, frame px
    # A change that lies inside the reference's text boxes (``full``, boxes given): read those lines.
    lines: LineChange | None = None


@dataclass(frozen=True, slots=True)
class LineChange:
    """A frame whose text changed inside known lines only: nothing new elsewhere in the view, no
    changed line's change at either end of its box (where longer text would run out of it)."""

    boxes: list[list[list[int]]]  # each reference box where the frame shows it (its line's fit), frame px
    changed: tuple[int, ...]  # the boxes whose text changed: to read again; the others keep their text


@dataclass(frozen=True, slots=True)
class _Fit:
    rect: Rect
    matrix: np.ndarray  # 2x3 float32: reference px -> frame px


class ChangeDetector:
    def __init__(self, config: DedupConfig) -> None:
        self.config = config

    def fingerprint(self, data: bytes, max_pixels: int, roi: Roi | None = None) -> Fingerprint:
        """Raises :class:`~serve_app.protocol.ProtocolError` for an image that cannot be read."""
        c = self.config
        gray = decode_gray(data, max_pixels, c.width, roi)
        # Local mean: an 8-bit box as wide as a Gaussian of ``contrast_sigma`` (4x cheaper, same
        # result to half a grey level); local deviation: a box about as wide as 2 sigma.
        mean = cv2.blur(gray.pixels, (2 * round(1.7 * c.contrast_sigma) + 1,) * 2)
        detail = cv2.subtract(gray.pixels, mean, dtype=cv2.CV_16S).astype(np.float32)
        side = 2 * round(2 * c.contrast_sigma) + 1
        variance = cv2.max(cv2.blur(cv2.multiply(detail, detail), (side, side)), c.contrast_floor**2)
        contrast = cv2.divide(detail, cv2.sqrt(variance), scale=_SCALE)
        quantised = np.clip(contrast, -127, 127, out=contrast).astype(np.int8)
        return Fingerprint(gray.source_size, gray.region, gray.scale, gray.offset, quantised)

    def compare(
        self,
        reference: Fingerprint,
        frame: Fingerprint,
        boxes: list[list[list[int]]] | None = None,
        *,
        full: bool = False,
    ) -> Comparison:
        """Does ``frame`` show what ``reference`` showed?

        ``boxes``: the reference read's text boxes (4 points each, px of the upright
        frame as sent, the whole frame even with a roi). None (unknown: the reference is
        being read), ``[]`` (its read found no text) or no box in the roi: text-like
        regions found in the reference stand in. The verdict stops at the first text
        region that changed (a frame with new text costs a region, not all of them);
        ``full`` scores every region and the scene, and says which boxes changed when
        nothing else did (``Comparison.lines``: only those lines need reading again).
        """
        c = self.config
        if (
            reference.source_size != frame.source_size
            or reference.region != frame.region
            or reference.contrast.shape != frame.contrast.shape
        ):
            return Comparison(same=False, score=math.inf)
        ref, cur = reference.contrast, frame.contrast
        boxed = _box_rects(boxes or [], reference, c)
        rects = boxed or _text_like(reference, c)
        fits = _Fits(reference, frame, rects, c)
        text_score, where = 0.0, None
        scored: list[_Scored] = []
        for i, rect in enumerate(rects):
            best = _residual(ref, cur, fits[i], c)
            if best.score > c.threshold:  # mis-tracked? try how the nearest other regions moved
                for j in _neighbours(i, rects, c.candidates):
                    best = min(
                        best, _residual(ref, cur, _Fit(rect, fits[j].matrix), c), key=attrgetter("score")
                    )
            scored.append(best)
            score, spot = best.score, best.spot
            if score > text_score:
                text_score, where = score, spot
            if not full and text_score > c.threshold:
                return Comparison(
                    same=False,
                    score=text_score / c.threshold,
                    text_score=text_score,
                    regions=len(rects),
                    where=None if where is None else reference.to_frame(*where),
                )
        scene_score, scene_spot = _scene(reference, frame, rects, c)
        score = max(text_score / c.threshold, scene_score / c.scene_threshold)
        if scene_score / c.scene_threshold > text_score / c.threshold:
            where = scene_spot
        inside = bool(boxes) and len(boxed) == len(boxes) and scene_score <= c.scene_threshold
        return Comparison(
            same=score <= 1.0,
            score=score,
            text_score=text_score,
            scene_score=scene_score,
            regions=len(rects),
            where=None if where is None else reference.to_frame(*where),
            lines=_line_change(boxes, scored, reference, c) if inside and score > 1.0 else None,
        )


@dataclass(frozen=True, slots=True)
class _Scored:
    """A text region's verdict: its score, where it changed most, and the fit it was scored with."""

    score: float
    spot: tuple[int, int]  # grey px of the frame
    ends: float  # mean excess of the outermost ``padding`` columns at either end (outside the box)
    matrix: np.ndarray  # reference grey px -> frame grey px


def _line_change(
    boxes: list[list[list[int]]], scored: list[_Scored], fp: Fingerprint, c: DedupConfig
) -> LineChange | None:
    """The lines to read again, or None when a changed one may have grown out of its box."""
    changed = tuple(i for i, s in enumerate(scored) if s.score > c.threshold)
    grown = (not math.isfinite(scored[i].score) or scored[i].ends > c.threshold for i in changed)
    if not changed or any(grown):
        return None
    scale, offset = np.float32(fp.scale), np.float32(fp.offset)
    moved = []
    for box, s in zip(boxes, scored, strict=True):
        grey = np.asarray(box, np.float32).reshape(-1, 2) * scale - offset
        frame = (grey @ s.matrix[:, :2].T + s.matrix[:, 2] + offset) / scale
        moved.append(np.rint(frame).astype(int).tolist())
    return LineChange(boxes=moved, changed=changed)


def _box_rects(boxes: list[list[list[int]]], fp: Fingerprint, c: DedupConfig) -> list[Rect]:
    """The text boxes in grey pixels, padded, clipped, each at least 4 px each way."""
    if not boxes:
        return []
    h, w = fp.contrast.shape
    corners = np.asarray(boxes, np.float32).reshape(len(boxes), -1, 2)
    pts = corners * np.float32(fp.scale) - np.float32(fp.offset)
    low = np.maximum(np.floor(pts.min(axis=1) - c.padding), 0).astype(int).tolist()
    high = np.minimum(np.ceil(pts.max(axis=1) + c.padding), (w, h)).astype(int).tolist()
    rects = [(x0, y0, x1, y1) for (x0, y0), (x1, y1) in zip(low, high, strict=True)]
    return [r for r in rects if r[2] - r[0] >= 4 and r[3] - r[1] >= 4]


def _derived(fp: Fingerprint, key: tuple[Any, ...], make: Callable[[Fingerprint], Any]) -> Any:
    """``make(fp)``, worked out once per fingerprint and ``key`` (two threads may both work it out)."""
    value = fp.derived.get(key)
    if value is None:
        value = fp.derived[key] = make(fp)
    return value


def _text_like(fp: Fingerprint, c: DedupConfig) -> list[Rect]:
    """Regions of the reference that look like lines of text: strokes merged along a line."""
    return _derived(fp, ("text_like", c.padding, c.block, c.max_regions), lambda f: _find_text(f.contrast, c))


def _find_text(contrast: np.ndarray, c: DedupConfig) -> list[Rect]:
    strokes = (np.abs(contrast) >= round(1.5 * _SCALE)).astype(np.uint8)
    merged = cv2.dilate(strokes, np.ones((3, 2 * c.padding + 1), np.uint8))  # characters into words
    _, _, stats, _ = cv2.connectedComponentsWithStats(merged, connectivity=8)
    found = [  # a line of text: a few characters wide, between one and a few blocks high
        (int(x), int(y), int(x + bw), int(y + bh))
        for x, y, bw, bh, _ in stats[1:]
        if c.block <= bh <= 6 * c.block and bw >= max(2 * c.block, 1.5 * bh)
    ]
    found.sort(key=lambda r: (r[2] - r[0]) * (r[3] - r[1]), reverse=True)
    return found[: c.max_regions]


def _points(rect: Rect, c: DedupConfig) -> list[tuple[float, float]]:
    """Where a region is tracked: the centres of a grid of pieces about ``chunk`` wide, 2 blocks high."""
    x0, y0, x1, y1 = rect
    cols = max(1, min(c.max_pieces, round((x1 - x0) / c.chunk)))
    rows = max(1, min(3, round((y1 - y0) / (2 * c.block))))
    xs = x0 + (np.arange(cols) + 0.5) * (x1 - x0) / cols
    ys = y0 + (np.arange(rows) + 0.5) * (y1 - y0) / rows
    return [(float(x), float(y)) for y in ys for x in xs]


class _Fits:
    """For each region, the similarity mapping it from ``ref`` onto ``cur``: ``fits[i]``.

    The pieces of all regions are tracked at once by pyramidal Lucas-Kanade (sub-pixel, and
    motions of ``search`` px and more); a region's fit to its pieces (refitted without the
    outliers, so a changed character, a piece that moved oddly, does not bend it) is worked
    out when it is first asked for: a compare that stops at a changed region fits only the
    regions it looked at.
    """

    def __init__(self, ref: Fingerprint, cur: Fingerprint, rects: list[Rect], c: DedupConfig) -> None:
        self._rects = rects
        self._fitted: dict[int, _Fit] = {}
        points = [_points(rect, c) for rect in rects]
        self._slices = list(itertools.pairwise(itertools.accumulate((len(p) for p in points), initial=0)))
        flat = np.float32([p for region in points for p in region]).reshape(-1, 2)
        if not len(flat):
            return
        # Track within the regions' bounding box grown by ``search``: smaller pyramids to build.
        h, w = ref.contrast.shape
        reach = math.ceil(c.search) + c.chunk
        x0, y0 = (max(0, min(r[i] for r in rects) - reach) for i in (0, 1))
        x1, y1 = min(w, max(r[2] for r in rects) + reach), min(h, max(r[3] for r in rects) + reach)
        origin = np.float32([x0, y0])
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            _as_u8(ref.contrast[y0:y1, x0:x1]), _as_u8(cur.contrast[y0:y1, x0:x1]),
            (flat - origin).reshape(-1, 1, 2), None, winSize=(c.chunk - 1, 2 * c.block - 1),
            maxLevel=c.pyramid, criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.01),
        )  # fmt: skip
        self._src, self._dst, ok = flat, moved.reshape(-1, 2) + origin, status.ravel() == 1
        self._ok = ok & (np.abs(self._dst - self._src).max(axis=1) <= c.search)
        moves = self._dst[self._ok] - self._src[self._ok]
        self._everywhere = _median(moves) if len(moves) else np.zeros(2)

    def __getitem__(self, i: int) -> _Fit:
        fit = self._fitted.get(i)
        if fit is None:
            start, end = self._slices[i]
            good = self._ok[start:end]
            src, dst = self._src[start:end][good], self._dst[start:end][good]
            fit = self._fitted[i] = _Fit(
                self._rects[i], _rigid(src, dst) if len(src) else _shift(self._everywhere)
            )
        return fit


def _neighbours(i: int, rects: list[Rect], count: int) -> list[int]:
    """The ``count`` other regions nearest to region ``i`` (lines of one card move together)."""
    x0, y0, x1, y1 = rects[i]
    others = [j for j in range(len(rects)) if j != i]
    others.sort(
        key=lambda j: abs(rects[j][0] + rects[j][2] - x0 - x1) + abs(rects[j][1] + rects[j][3] - y0 - y1)
    )
    return others[:count]


def _shift(d: np.ndarray) -> np.ndarray:
    return np.float32([[1, 0, d[0]], [0, 1, d[1]]])


def _rigid(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The rotation and shift (no scale: objects keep their distance) that best map ``src`` onto
    ``dst``, refitted without the points it misses by more than ``_FIT_TOLERANCE`` (a piece with a
    changed character, a lost track). Points as complex numbers: a rotation is a unit factor."""
    zs, zd = src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1]
    keep = np.ones(len(src), bool)
    m = _shift(_median(dst - src))
    for _ in range(3):
        s, d = zs[keep], zd[keep]
        if len(s) < 2:
            break
        s_mean, d_mean = s.sum() / len(s), d.sum() / len(d)
        turn = np.vdot(s - s_mean, d - d_mean)  # sum(conj(a) * b): its angle is the rotation's
        rotation = turn / abs(turn) if turn else 1.0
        shift = d_mean - rotation * s_mean
        cos, sin = rotation.real, rotation.imag
        m = np.float32([[cos, -sin, shift.real], [sin, cos, shift.imag]])
        fitted = np.abs(rotation * zs + shift - zd) <= _FIT_TOLERANCE
        if fitted.sum() < 2 or (fitted == keep).all():
            break
        keep = fitted
    return m


def _median(points: np.ndarray) -> np.ndarray:
    """``np.median(points, axis=0)`` of a few points, without its overhead."""
    ordered = np.sort(points, axis=0)
    return (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2


def _as_float(contrast: np.ndarray) -> np.ndarray:
    return contrast.astype(np.float32) * (1 / _SCALE)


def _as_u8(x: np.ndarray) -> np.ndarray:
    """The int8 contrast as offset-binary 8-bit (what Lucas-Kanade reads): -128 -> 0, 0 -> 128."""
    return x.view(np.uint8) ^ np.uint8(128)


def _slack(x: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """How much ``x`` can rise and fall when moved by ``tolerance`` of a pixel."""
    return tolerance * (cv2.dilate(x, _K3) - x), tolerance * (x - cv2.erode(x, _K3))


def _residual(ref: np.ndarray, cur: np.ndarray, fit: _Fit, c: DedupConfig) -> _Scored:
    """Score of the region in ``cur`` where ``fit`` puts it, against ``ref`` warped there (both
    int8 contrast images; only the parts looked at are made float)."""
    h, w = cur.shape
    x0, y0, x1, y1 = fit.rect
    tx, ty = (round(float(v)) for v in fit.matrix @ np.float32([(x0 + x1) / 2, (y0 + y1) / 2, 1]))
    tx, ty = tx - (x0 + x1) // 2, ty - (y0 + y1) // 2
    fx0, fy0 = max(c.margin, x0 + tx), max(c.margin, y0 + ty)
    fx1, fy1 = min(w - c.margin, x1 + tx), min(h - c.margin, y1 + ty)
    if fx1 - fx0 < 3 or fy1 - fy0 < 3:
        return _Scored(math.inf, (x0, y0), math.inf, fit.matrix)  # the region left the view
    inverse = cv2.invertAffineTransform(fit.matrix)
    # The reference pixels the warp reads: the patch's corners mapped back, a pixel more each way
    # for the interpolation, within the image (the border is replicated from its edge either way).
    back = inverse @ np.float32([[fx0, fx1, fx0, fx1], [fy0, fy0, fy1, fy1], [1, 1, 1, 1]])
    sx0, sy0 = (min(max(0, math.floor(v) - 1), n - 1) for v, n in zip(back.min(axis=1), (w, h), strict=True))
    sx1 = min(max(sx0 + 1, math.ceil(back[0].max()) + 2), w)
    sy1 = min(max(sy0 + 1, math.ceil(back[1].max()) + 2), h)
    # Output (0, 0) is frame px (fx0, fy0); the source's (0, 0) is reference px (sx0, sy0).
    inverse[:, 2] += inverse[:, :2] @ np.float32([fx0, fy0]) - np.float32([sx0, sy0])
    warped = cv2.warpAffine(
        _as_float(ref[sy0:sy1, sx0:sx1]), inverse, (fx1 - fx0, fy1 - fy0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    patch = _as_float(cur[fy0:fy1, fx0:fx1])
    if c.smooth > 0:  # focus, motion and JPEG differences are finer than a character's strokes
        patch, warped = cv2.GaussianBlur(patch, (0, 0), c.smooth), cv2.GaussianBlur(warped, (0, 0), c.smooth)
    up_a, down_a = _slack(patch, c.subpixel_tolerance)
    up_b, down_b = _slack(warped, c.subpixel_tolerance)
    d = patch - warped
    residual = np.maximum(d - np.minimum(up_b, down_a), -d - np.minimum(down_b, up_a))
    excess = np.maximum(residual - c.pixel_threshold, 0)
    blocks = cv2.blur(excess, (c.block, c.block), borderType=cv2.BORDER_CONSTANT)
    _, score, _, (bx, by) = cv2.minMaxLoc(blocks)
    end = max(1, min(c.padding, excess.shape[1]))
    ends = max(float(excess[:, :end].mean()), float(excess[:, -end:].mean()))
    return _Scored(float(score), (fx0 + bx, fy0 + by), ends, fit.matrix)


def _energy(fp: Fingerprint, c: DedupConfig) -> np.ndarray:
    """Texture energy: the mean |contrast| of each ``cell`` x ``cell`` cell."""

    def make(f: Fingerprint) -> np.ndarray:
        h, w = f.contrast.shape
        size = (max(1, w // c.cell), max(1, h // c.cell))
        energy = cv2.resize(np.abs(f.contrast).view(np.uint8), size, interpolation=cv2.INTER_AREA)
        return energy.astype(np.float32) * (1 / _SCALE)  # |int8| <= 127: fits uint8

    return _derived(fp, ("energy", c.cell), make)


def _scene(
    reference: Fingerprint, frame: Fingerprint, rects: list[Rect], c: DedupConfig
) -> tuple[float, tuple[int, int]]:
    """Texture that appeared or went away outside the text regions, over a word-sized area."""
    energy_ref, energy_cur = _energy(reference, c), _energy(frame, c)
    reach = np.ones((2 * c.reach + 1, 2 * c.reach + 1), np.uint8)
    appeared = energy_cur - cv2.dilate(energy_ref, reach)
    gone = energy_ref - cv2.dilate(energy_cur, reach)
    change = np.maximum(appeared, gone)
    for x0, y0, x1, y1 in rects:  # judged finely above
        change[
            max(0, y0 // c.cell - c.reach) : (y1 - 1) // c.cell + c.reach + 1,
            max(0, x0 // c.cell - c.reach) : (x1 - 1) // c.cell + c.reach + 1,
        ] = 0
    change[: c.reach], change[-c.reach :], change[:, : c.reach], change[:, -c.reach :] = 0, 0, 0, 0
    area = cv2.blur(np.maximum(change, 0), c.scene_block, borderType=cv2.BORDER_CONSTANT)
    _, score, _, (x, y) = cv2.minMaxLoc(area)
    return float(score), (x * c.cell + c.cell // 2, y * c.cell + c.cell // 2)
