"""Synthetic 30 fps cameras looking at text, deterministic from a seed, with ground truth.

``iter_frames``: the first camera, a light card with 4 lines of dark text (a
product name, ``LOT 48213``, ``EXP 2027-03-14``, a price) on a textured table,
the whole view shaking (translation up to ``shake_px`` plus a tiny rotation),
sensor noise, a slow exposure drift with an uneven, moving illumination, JPEG
quality 60-95; the text changes every 0.5-3 s, most changes (``one_char_share``)
ONE character of one line.

``iter_scene``: cameras where objects move in the view on their own (DejaVu
fonts from matplotlib's package data, 640x480, JPEG 70-92, noise, exposure
drift, flicker bands, a few slightly blurred frames, whole-view shake):

- ``conveyor``: a label card (1-3 lines: serial, lot, date) jitters by 1-3 px
  and turns by up to 1.5 degrees on a still belt; a new card slides in, or the
  label is reprinted with one character changed;
- ``handheld``: a badge held up to the camera wobbles all the time (3 px, 2
  degrees); another badge is shown now and then;
- ``screen``: a monitor with an order number, a total and a quantity; a cursor
  blinks in an empty field, a mouse pointer roams (motion that is not text);
- ``document``: a page of 6-8 lines, still; now and then a page is turned.

Changes come every ``hold_s`` seconds (4-12 by default). Each frame carries its
true lines in view with their boxes, whether the text differs from the previous
frame's (and by one character), ``moving`` while a change is under way, and,
with ``bait=True``, ``bait`` on frames made to be misread (a character hidden
by a fingertip for 2-4 frames, 2-3 motion-blurred frames). Rendering costs
5-8 ms a frame: benchmarks render their streams before they start the clock.

    python -m bench.camera --out /tmp/frames --scene conveyor --seconds 5 --bait
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 480
PRODUCTS = (
    "OAT MILK 1L",
    "GREEK YOGURT",
    "ORANGE JUICE",
    "WHOLE BEANS",
    "SPARKLING WATER",
    "DARK CHOCOLATE",
    "BASMATI RICE",
    "OLIVE OIL 500ML",
)
_FONT = cv2.FONT_HERSHEY_DUPLEX
_SCALE = 1.2  # cap height 26 px
_THICKNESS = 2
_CARD = (60, 80, 580, 380)  # x0, y0, x1, y1 of the label in the unshaken scene


Box = tuple[tuple[int, int], ...]  # 4 corners, clockwise from top left, px of the frame


@dataclass(frozen=True, slots=True)
class CameraFrame:
    index: int
    ts: float
    jpeg: bytes
    text: str  # the true text, lines joined by "\n"
    changed: bool  # the text differs from the previous frame's
    one_char: bool  # changed, and by exactly one character
    quality: int  # JPEG quality of this frame
    boxes: tuple[Box, ...] = ()  # where each line of ``text`` is, px of this frame (scene generators)
    bait: str | None = None  # "occluded" (a character hidden), "motion_blur": frames likely misread
    moving: bool = False  # a card sliding or dropping, a page turning: the view changes, the text may not
    scene: str = "label"

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n") if self.text else []


def random_label(rng: np.random.Generator) -> list[str]:
    product = PRODUCTS[int(rng.integers(len(PRODUCTS)))]
    lot = f"LOT {int(rng.integers(10_000, 100_000))}"
    exp = f"EXP 20{int(rng.integers(26, 30))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    price = f"PRICE ${int(rng.integers(1, 40))}.{int(rng.integers(0, 100)):02d}"
    return [product, lot, exp, price]


def change_one_char(lines: list[str], rng: np.random.Generator) -> list[str]:
    """The same label with one digit of the LOT, EXP or PRICE line replaced."""
    row = int(rng.integers(1, len(lines)))
    line = lines[row]
    cols = [i for i, c in enumerate(line) if c.isdigit()]
    col = cols[int(rng.integers(len(cols)))]
    digit = str((int(line[col]) + int(rng.integers(1, 10))) % 10)
    out = list(lines)
    out[row] = line[:col] + digit + line[col + 1 :]
    return out


def background(rng: np.random.Generator) -> np.ndarray:
    """A table: smooth colour blotches and fine grain, fixed per seed."""
    coarse = rng.normal(0, 1, (HEIGHT // 32, WIDTH // 32, 3)).astype(np.float32)
    coarse = coarse.mean(axis=2, keepdims=True) + 0.3 * coarse  # mostly brightness, a little hue
    coarse = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (HEIGHT, WIDTH)).astype(np.float32), (0, 0), 1.5)
    base = np.array([70, 95, 120], np.float32)  # brownish BGR
    return np.clip(base + 18 * coarse + 25 * fine[..., None], 0, 255).astype(np.uint8)


def render_scene(lines: list[str], table: np.ndarray) -> np.ndarray:
    """The still, noise-free BGR scene: the card with ``lines`` on ``table``."""
    img = table.copy()
    x0, y0, x1, y1 = _CARD
    cv2.rectangle(img, (x0, y0), (x1, y1), (228, 236, 240), -1, cv2.LINE_AA)
    cv2.rectangle(img, (x0 + 8, y0 + 8), (x1 - 8, y1 - 8), (60, 60, 160), 2, cv2.LINE_AA)
    for i, line in enumerate(lines):
        cv2.putText(img, line, _origin(i), _FONT, _SCALE, (30, 25, 20), _THICKNESS, cv2.LINE_AA)
    return img


def _origin(row: int) -> tuple[int, int]:
    return _CARD[0] + 36, _CARD[1] + 70 + 64 * row


def label_boxes(lines: list[str]) -> list[tuple[str, np.ndarray]]:
    """Each line of ``render_scene`` with its box (4x2, scene px)."""
    out = []
    for i, line in enumerate(lines):
        (w, h), baseline = cv2.getTextSize(line, _FONT, _SCALE, _THICKNESS)
        x, y = _origin(i)
        out.append((line, np.float32([[x, y - h], [x + w, y - h], [x + w, y + baseline], [x, y + baseline]])))
    return out


def view_matrix(width: int, height: int, dx: float, dy: float, angle_deg: float) -> np.ndarray:
    """The 2x3 map of the scene onto the frame: turned by ``angle_deg`` about the centre, then moved."""
    m = cv2.getRotationMatrix2D((width / 2, height / 2), angle_deg, 1.0)
    m[:, 2] += (dx, dy)
    return m


def capture(
    scene: np.ndarray,
    *,
    dx: float = 0.0,
    dy: float = 0.0,
    angle_deg: float = 0.0,
    gain: float = 1.0,
    slope: tuple[float, float] = (0.0, 0.0),
    noise: np.ndarray | None = None,
    quality: int = 90,
    bands: tuple[float, float, float] = (0.0, 1.0, 0.0),
    blur: float = 0.0,
    motion_blur: int = 0,
) -> bytes:
    """The JPEG a camera makes of ``scene``: moved by (dx, dy) px and turned by ``angle_deg``
    about the centre, lit by ``gain * (1 + slope_x * x + slope_y * y)`` (x, y in -0.5..0.5)
    times rolling flicker bands ``1 + a * sin(2 pi (y / period + phase))`` for ``bands = (a,
    period px, phase)``, defocused by a Gaussian of ``blur`` px, smeared along x over
    ``motion_blur`` px, plus ``noise`` (float32, the frame's shape)."""
    height, width = scene.shape[:2]
    m = view_matrix(width, height, dx, dy, angle_deg)
    img = cv2.warpAffine(scene, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    if motion_blur > 1:
        img = cv2.blur(img, (motion_blur, 1))
    # The light varies slowly: computed on a coarse grid, then spread (cheap at 30 fps x many streams).
    xx = np.linspace(-0.5, 0.5, 64, dtype=np.float32)[None, :]
    yy = np.linspace(-0.5, 0.5, height // 4, dtype=np.float32)[:, None]
    amplitude, period, phase = bands
    rows = 1.0 + amplitude * np.sin(2 * np.pi * ((yy + 0.5) * height / period + phase))
    light = cv2.resize(128 * gain * (1.0 + slope[0] * xx + slope[1] * yy) * rows, (width, height))
    light = cv2.cvtColor(np.clip(light, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    out = cv2.multiply(img, light, scale=1 / 128)
    if noise is not None:
        out = cv2.add(out, noise, dtype=cv2.CV_8U)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


class _Camera:
    """Shake, exposure drift, uneven light, flicker, focus and noise at time ``t``, from one seeded
    generator."""

    def __init__(
        self,
        rng: np.random.Generator,
        shake_px: float,
        rotation_deg: float,
        noise: float,
        *,
        flicker: float = 0.0,
        blur_share: float = 0.0,
    ) -> None:
        self.rng = rng
        self.shake_px = shake_px
        self.rotation_deg = rotation_deg
        self.flicker = flicker
        self.blur_share = blur_share
        self.phase = rng.uniform(0, 2 * math.pi, 6)
        self.noise_bank = rng.normal(0, noise, (4, HEIGHT + 64, WIDTH + 64, 3)).round().astype(np.int16)

    def effects(self, t: float) -> dict[str, Any]:
        """``capture`` keyword arguments for the frame at ``t`` (s)."""
        rng, p, s = self.rng, self.phase, self.shake_px
        # Shake: a slow sway plus per-frame jitter, both within +-shake_px.
        dx = np.clip(0.5 * s * math.sin(2 * math.pi * 0.7 * t + p[0]) + rng.uniform(-0.5, 0.5) * s, -s, s)
        dy = np.clip(0.5 * s * math.sin(2 * math.pi * 0.9 * t + p[1]) + rng.uniform(-0.5, 0.5) * s, -s, s)
        angle = self.rotation_deg * (0.6 * math.sin(2 * math.pi * 0.3 * t + p[2]) + rng.uniform(-0.4, 0.4))
        # Exposure drifts +-25% over ~10 s; the light falls unevenly and its slope moves.
        gain = 1.0 + 0.25 * math.sin(2 * math.pi * t / 10 + p[3])
        slope = (0.25 * math.sin(2 * math.pi * t / 13 + p[4]), 0.2 * math.sin(2 * math.pi * t / 17 + p[5]))
        ox, oy = (int(v) for v in rng.integers(0, 64, 2))
        noise = self.noise_bank[int(rng.integers(len(self.noise_bank))), oy : oy + HEIGHT, ox : ox + WIDTH]
        out = {
            "dx": float(dx),
            "dy": float(dy),
            "angle_deg": angle,
            "gain": gain,
            "slope": slope,
            "noise": noise,
        }
        if self.flicker:  # mains flicker seen by a rolling shutter: a frame-to-frame gain step and bands
            out["gain"] = gain * (1.0 + self.flicker * rng.uniform(-1, 1))
            out["bands"] = (self.flicker, 160.0, float(rng.uniform(0, 1)))
        if self.blur_share and rng.random() < self.blur_share:
            out["blur"] = float(rng.uniform(0.6, 1.0))  # focus breathing: still readable
        return out


def iter_frames(
    seconds: float,
    fps: float = 30.0,
    seed: int = 0,
    *,
    one_char_share: float = 0.6,
    hold_s: tuple[float, float] = (0.5, 3.0),
    shake_px: float = 2.0,
    rotation_deg: float = 0.3,
    noise: float = 4.0,
    quality: tuple[int, int] = (60, 95),
) -> Iterator[CameraFrame]:
    """``seconds * fps`` frames of the label stream; the same seed gives the same bytes."""
    rng = np.random.default_rng(seed)
    table = background(rng)
    camera = _Camera(rng, shake_px, rotation_deg, noise)
    lines = random_label(rng)
    scene = render_scene(lines, table)
    next_change = float(rng.uniform(*hold_s))
    for index in range(round(seconds * fps)):
        ts = index / fps
        changed = one_char = False
        if ts >= next_change:
            one_char = bool(rng.random() < one_char_share)
            new = change_one_char(lines, rng) if one_char else random_label(rng)
            changed = new != lines
            one_char = one_char and changed
            lines = new
            scene = render_scene(lines, table)
            next_change = ts + float(rng.uniform(*hold_s))
        q = int(rng.integers(quality[0], quality[1] + 1))
        effects = camera.effects(ts)
        _, boxes = in_view(label_boxes(lines), effects)
        jpeg = capture(scene, quality=q, **effects)
        yield CameraFrame(index, ts, jpeg, "\n".join(lines), changed, one_char, q, tuple(boxes))


# --- scenes with objects that move in the view ------------------------------------------------

SCENES = ("conveyor", "handheld", "screen", "document")
_FONT_DIR = Path(importlib.util.find_spec("matplotlib").origin).parent / "mpl-data" / "fonts" / "ttf"  # type: ignore[union-attr, arg-type]
_WORDS = [
    "the",
    "valve",
    "pressure",
    "check",
    "line",
    "pump",
    "filter",
    "store",
    "order",
    "north",
    "south",
    "batch",
    "safety",
    "hold",
    "unit",
    "clean",
    "seal",
    "test",
    "before",
    "after",
    "shift",
    "report",
    "store",
    "manual",
    "open",
    "close",
    "level",
    "flow",
    "drain",
    "motor",
    "belt",
    "start",
    "stop",
    "panel",
    "power",
    "cable",
    "sensor",
    "reset",
    "alarm",
    "cooling",
    "water",
    "supply",
    "return",
    "daily",
]


@functools.lru_cache(maxsize=32)
def font(size: int, face: str = "DejaVuSans") -> ImageFont.FreeTypeFont:
    """A DejaVu face from matplotlib's package data (installed wherever the benchmarks run)."""
    return ImageFont.truetype(str(_FONT_DIR / f"{face}.ttf"), size)


@dataclass(frozen=True, slots=True)
class Sprite:
    """An object of a scene: its pixels, its opacity and where its text lines are (sprite px)."""

    image: np.ndarray  # BGR uint8
    alpha: np.ndarray  # uint8, 255 = opaque
    lines: tuple[str, ...]
    boxes: tuple[np.ndarray, ...]  # 4x2 float32 per line


def render_card(
    lines: Sequence[str],
    size: tuple[int, int],
    *,
    face: str,
    font_px: int,
    color: tuple[int, int, int],
    ink: tuple[int, int, int],
    origin: tuple[int, int],
    spacing: int,
    border: tuple[int, int, int] | None = None,
    radius: int = 8,
) -> Sprite:
    """A rounded card of ``size`` with ``lines`` drawn from ``origin`` every ``spacing`` px (RGB colours)."""
    w, h = size
    img = Image.new("RGB", size, color)
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, w - 1, h - 1), radius, fill=255)
    draw = ImageDraw.Draw(img)
    if border is not None:
        draw.rounded_rectangle((5, 5, w - 6, h - 6), radius, outline=border, width=2)
    f = font(font_px, face)
    boxes = []
    x, y = origin
    for line in lines:
        draw.text((x, y), line, font=f, fill=ink)
        left, top, right, bottom = draw.textbbox((x, y), line, font=f)
        boxes.append(np.float32([[left, top], [right, top], [right, bottom], [left, bottom]]))
        y += spacing
    return Sprite(np.asarray(img)[..., ::-1].copy(), np.asarray(mask), tuple(lines), tuple(boxes))


def placement(
    sprite: Sprite, cx: float, cy: float, angle_deg: float = 0.0, squeeze: float = 1.0
) -> np.ndarray:
    """The 2x3 map of sprite px onto the scene: centred at (cx, cy), turned, its width x ``squeeze``
    about its left edge (a page half turned)."""
    h, w = sprite.alpha.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, 1.0)
    m[:, 2] += (cx - w / 2, cy - h / 2)
    m[:, 0] *= squeeze
    return m


def paste(canvas: np.ndarray, sprite: Sprite, m: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Draw ``sprite`` onto ``canvas`` (in place) through ``m``; its lines and their boxes, scene px."""
    h, w = sprite.alpha.shape
    corners = np.float32([[0, 0], [w, 0], [0, h], [w, h]]) @ m[:, :2].T + m[:, 2]
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
    x1 = min(canvas.shape[1], math.ceil(corners[:, 0].max()))
    y1 = min(canvas.shape[0], math.ceil(corners[:, 1].max()))
    if x1 > x0 and y1 > y0:
        local = m.copy()
        local[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        img = cv2.warpAffine(sprite.image, local, size, flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(sprite.alpha, local, size, flags=cv2.INTER_LINEAR)
        weight = alpha.astype(np.float32) * (1 / 255)
        roi = canvas[y0:y1, x0:x1]
        roi[:] = cv2.blendLinear(img, roi, weight, 1 - weight)
    return [(line, box @ m[:, :2].T + m[:, 2]) for line, box in zip(sprite.lines, sprite.boxes, strict=True)]


def one_char_changed(lines: list[str], rng: np.random.Generator) -> list[str]:
    """``lines`` with one letter or digit of one line replaced by another of its kind."""
    spots = [(i, j) for i, line in enumerate(lines) for j, ch in enumerate(line) if ch.isalnum()]
    i, j = spots[int(rng.integers(len(spots)))]
    old = lines[i][j]
    pool = "0123456789" if old.isdigit() else "ABCDEFGHJKLMNPRSTUVWXYZ"
    new = pool[int(rng.integers(len(pool)))]
    while new == old:
        new = pool[int(rng.integers(len(pool)))]
    return [line[:j] + new + line[j + 1 :] if k == i else line for k, line in enumerate(lines)]


def _differ_by_one(a: str, b: str) -> bool:
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(int(d)) for d in rng.integers(0, 10, n))


def _wobble(
    rng: np.random.Generator, phase: np.ndarray, t: float, amplitude: float, freqs: Sequence[float]
) -> float:
    """Smooth random motion: sines of random phase plus a little per-frame jitter, within +-amplitude."""
    smooth = sum(math.sin(2 * math.pi * f * t + p) for f, p in zip(freqs, phase, strict=False)) / len(freqs)
    return float(np.clip(amplitude * (0.8 * smooth + 0.2 * rng.uniform(-1, 1)), -amplitude, amplitude))


class _Scene:
    """Text that changes every ``hold_s`` seconds, one character at a time with ``one_char_share``;
    a subclass draws it (:meth:`compose`) and says what a change looks like."""

    transition_s = 0.0  # how long a change takes to happen on screen (a card sliding, a page turning)
    in_place_one_char = True  # a one-character change happens without a transition (reprinted label)

    def __init__(
        self, rng: np.random.Generator, hold_s: tuple[float, float], one_char_share: float, bait: bool
    ) -> None:
        self.rng = rng
        self.hold_s = hold_s
        self.one_char_share = one_char_share
        self.bait = bait
        self.phase = rng.uniform(0, 2 * math.pi, 8)
        self.backdrop = self.background()
        self.sprite = self.render(self.new_text())
        self.old: Sprite | None = None
        self.since = 0.0  # when the last change started
        self.in_place = True  # the last change happened without a transition
        self.change_at = float(rng.uniform(*hold_s))
        self.events: list[tuple[float, float, str]] = []  # bait: (start, end, kind)
        self._schedule_bait(0.0)

    # --- what a subclass provides
    def background(self) -> np.ndarray:
        raise NotImplementedError

    def new_text(self) -> list[str]:
        raise NotImplementedError

    def render(self, lines: list[str]) -> Sprite:
        raise NotImplementedError

    def draw(self, canvas: np.ndarray, t: float, progress: float) -> list[tuple[str, np.ndarray]]:
        """Draw the objects at ``t``; ``progress`` of the change in course (1: none). The lines in view."""
        raise NotImplementedError

    # --- shared
    def compose(self, t: float) -> tuple[np.ndarray, list[tuple[str, np.ndarray]], str | None, bool]:
        """The scene at ``t``: its pixels (before the camera), its text lines with boxes, the bait,
        whether a change is under way."""
        rng = self.rng
        if t >= self.change_at:
            one = bool(rng.random() < self.one_char_share)
            self.old = self.sprite
            self.sprite = self.render(
                one_char_changed(list(self.sprite.lines), rng) if one else self.new_text()
            )
            self.since = t
            self.in_place = one and self.in_place_one_char
            self.change_at = t + float(rng.uniform(*self.hold_s))
            self._schedule_bait(t)
        duration = 0.0 if self.in_place else self.transition_s
        progress = 1.0 if duration == 0 else min(1.0, (t - self.since) / duration)
        canvas = self.backdrop.copy()
        lines = self.draw(canvas, t, progress)
        event = next((e for e in self.events if e[0] <= t < e[1]), None)
        if event is not None and event[2] == "occluded" and lines:
            self._occlude(canvas, lines, np.random.default_rng(round(event[0] * 1000)))
        return canvas, lines, None if event is None else event[2], progress < 1

    def _schedule_bait(self, start: float) -> None:
        """After a change: maybe a character hidden for 2-4 frames, maybe 2-3 motion-blurred frames."""
        if not self.bait:
            return
        rng = self.rng
        lo, hi = start + 1.0, self.change_at - 0.5
        for kind, frames in (("occluded", int(rng.integers(2, 5))), ("motion_blur", int(rng.integers(2, 4)))):
            if hi - lo > 0.5 and rng.random() < 0.6:
                at = float(rng.uniform(lo, hi - frames / 30))
                self.events.append((at, at + frames / 30 - 1e-6, kind))
        self.events = [e for e in self.events if e[1] >= start]

    @staticmethod
    def _occlude(canvas: np.ndarray, lines: list[tuple[str, np.ndarray]], rng: np.random.Generator) -> None:
        """A fingertip over one character of one line (``rng``: the same one for the whole event)."""
        _, box = lines[int(rng.integers(len(lines)))]
        (x0, y0), (x1, y1) = box.min(axis=0), box.max(axis=0)
        x = float(rng.uniform(x0 + 0.1 * (x1 - x0), x1 - 0.1 * (x1 - x0)))
        r = 0.45 * (y1 - y0)
        centre = (round(x), round((y0 + y1) / 2))
        cv2.ellipse(canvas, centre, (round(r), round(1.6 * r)), 15, 0, 360, (120, 150, 200), -1, cv2.LINE_AA)


class _Conveyor(_Scene):
    """A label on a conveyor: the card jitters and turns on a still belt; a new card slides in."""

    transition_s = 0.3

    def background(self) -> np.ndarray:
        rng = self.rng
        belt = np.full((HEIGHT, WIDTH, 3), 62, np.float32)
        belt += cv2.GaussianBlur(rng.normal(0, 6, (HEIGHT, WIDTH)).astype(np.float32), (0, 0), 1.2)[..., None]
        for x in range(int(rng.integers(0, 48)), WIDTH, 48):  # the belt's slats
            belt[:, x : x + 3] *= 0.7
        belt[:40] = belt[-40:] = (150, 155, 160)  # rails
        return np.clip(belt, 0, 255).astype(np.uint8)

    def new_text(self) -> list[str]:
        rng = self.rng
        choices = [
            f"SN {_digits(rng, 4)}-{_digits(rng, 4)}",
            f"LOT {chr(65 + int(rng.integers(26)))}{_digits(rng, 2)}-{_digits(rng, 4)}",
            f"20{_digits(rng, 1)}{int(rng.integers(6, 10))}-{int(rng.integers(1, 13)):02d}-"
            f"{int(rng.integers(1, 29)):02d}",
        ]
        return choices[: int(rng.integers(1, 4))]

    def render(self, lines: list[str]) -> Sprite:
        width = 24 * max(len(line) for line in lines) + 48
        return render_card(
            lines, (width, 34 + 44 * len(lines)), face="DejaVuSansMono-Bold", font_px=30,
            color=(246, 244, 236), ink=(20, 20, 24), origin=(24, 14), spacing=44, border=(40, 40, 40),
        )  # fmt: skip

    def draw(self, canvas: np.ndarray, t: float, progress: float) -> list[tuple[str, np.ndarray]]:
        p, rng = self.phase, self.rng
        dx = _wobble(rng, p[0:3], t, 2.5, (0.4, 1.1, 2.3))
        dy = _wobble(rng, p[3:6], t, 2.0, (0.5, 1.3, 2.9))
        angle = _wobble(rng, p[6:8], t, 1.5, (0.3, 1.7))
        if progress < 1 and self.old is not None:
            leaving = paste(canvas, self.old, placement(self.old, 320 + 700 * progress, 240 + dy, angle))
            return leaving + paste(
                canvas, self.sprite, placement(self.sprite, 320 - 700 * (1 - progress), 240, angle)
            )
        return paste(canvas, self.sprite, placement(self.sprite, 320 + dx, 240 + dy, angle))


class _Handheld(_Scene):
    """A badge held up to the camera: it wobbles all the time; another badge is shown now and then."""

    transition_s = 0.5
    in_place_one_char = False

    def background(self) -> np.ndarray:
        rng = self.rng
        wall = np.linspace(150, 110, HEIGHT, dtype=np.float32)[:, None, None] * np.float32([1.0, 1.05, 1.1])
        wall = np.repeat(wall, WIDTH, axis=1)
        for _ in range(6):  # shelves, a poster, a door frame
            x, y = int(rng.integers(0, WIDTH - 100)), int(rng.integers(0, HEIGHT - 60))
            cv2.rectangle(wall, (x, y), (x + int(rng.integers(60, 200)), y + int(rng.integers(20, 160))),
                          tuple(float(v) for v in rng.uniform(40, 200, 3)), -1)  # fmt: skip
        wall += rng.normal(0, 3, (HEIGHT, WIDTH, 1)).astype(np.float32)
        return np.clip(cv2.GaussianBlur(wall, (0, 0), 1.5), 0, 255).astype(np.uint8)

    def new_text(self) -> list[str]:
        rng = self.rng
        company = ("ACME LOGISTICS", "NORTHWIND", "CONTOSO LTD", "GLOBEX")[int(rng.integers(4))]
        return [
            company,
            f"ID {_digits(rng, 4)}-{_digits(rng, 4)}",
            f"EXP 20{int(rng.integers(26, 31))}-0{int(rng.integers(1, 10))}",
        ]

    def render(self, lines: list[str]) -> Sprite:
        card = render_card(
            lines, (340, 200), face="DejaVuSans-Bold", font_px=28, color=(214, 228, 242), ink=(16, 30, 60),
            origin=(22, 24), spacing=54, radius=14,
        )  # fmt: skip
        thumb = card.image.copy()
        cv2.ellipse(thumb, (300, 196), (34, 46), -20, 0, 360, (120, 150, 200), -1, cv2.LINE_AA)  # a thumb
        return Sprite(thumb, card.alpha, card.lines, card.boxes)

    def draw(self, canvas: np.ndarray, t: float, progress: float) -> list[tuple[str, np.ndarray]]:
        p, rng = self.phase, self.rng
        dx = _wobble(rng, p[0:3], t, 3.0, (0.7, 1.9, 3.7))
        dy = _wobble(rng, p[3:6], t, 3.0, (0.9, 2.3, 4.1))
        angle = _wobble(rng, p[6:8], t, 2.0, (0.6, 2.1))
        if progress < 1 and self.old is not None:  # down out of view, then the next one up
            sprite, drop = (self.old, 2 * progress) if progress < 0.5 else (self.sprite, 2 - 2 * progress)
            return paste(canvas, sprite, placement(sprite, 320 + dx, 250 + dy + 400 * drop, angle))
        return paste(canvas, self.sprite, placement(self.sprite, 320 + dx, 250 + dy, angle))


_ARROW = np.float32([[0, 0], [0, 19], [4, 15], [8, 23], [11, 22], [7, 14], [13, 14]])  # a mouse pointer


class _Screen(_Scene):
    """A monitor showing an order and its total; a cursor blinks in a field, a mouse pointer roams."""

    def background(self) -> np.ndarray:
        desk = np.repeat(np.linspace(170, 120, HEIGHT, dtype=np.uint8)[:, None], WIDTH, axis=1)
        img = cv2.cvtColor(desk, cv2.COLOR_GRAY2BGR)
        cv2.rectangle(img, (50, 30), (590, 420), (22, 22, 24), -1)  # bezel
        cv2.rectangle(img, (290, 420), (350, 470), (40, 40, 44), -1)  # stand
        return img

    def new_text(self) -> list[str]:
        rng = self.rng
        return [
            f"ORDER {_digits(rng, 5)}",
            "TOTAL",
            f"$ {int(rng.integers(1, 10))},{_digits(rng, 3)}.{_digits(rng, 2)}",
            f"QTY {int(rng.integers(1, 99))}",
        ]

    def render(self, lines: list[str]) -> Sprite:
        img = Image.new("RGB", (520, 370), (28, 32, 44))
        draw = ImageDraw.Draw(img)
        grey, white, green = (160, 170, 190), (200, 205, 215), (120, 235, 140)
        spots = ((30, 24, 24, "DejaVuSans", grey), (30, 92, 26, "DejaVuSans-Bold", white),
                 (30, 140, 52, "DejaVuSansMono-Bold", green), (30, 226, 26, "DejaVuSans", white))  # fmt: skip
        boxes = []
        for line, (x, y, size, face, ink) in zip(lines, spots, strict=True):
            f = font(size, face)
            draw.text((x, y), line, font=f, fill=ink)
            left, top, right, bottom = draw.textbbox((x, y), line, font=f)
            boxes.append(np.float32([[left, top], [right, top], [right, bottom], [left, bottom]]))
        draw.rectangle((30, 300, 250, 340), outline=(150, 155, 170), width=2)  # an empty input field
        return Sprite(
            np.asarray(img)[..., ::-1].copy(), np.full((370, 520), 255, np.uint8), tuple(lines), tuple(boxes)
        )

    def draw(self, canvas: np.ndarray, t: float, progress: float) -> list[tuple[str, np.ndarray]]:
        lines = paste(canvas, self.sprite, placement(self.sprite, 320, 225))
        if int(t * 2) % 2 == 0:  # the cursor blinks at 1 Hz
            cv2.rectangle(canvas, (96, 346), (97, 374), (230, 230, 230), -1)
        p = self.phase
        x = 470 + 60 * math.sin(2 * math.pi * 0.23 * t + p[0]) + 20 * math.sin(2 * math.pi * 0.9 * t + p[1])
        y = 330 + 45 * math.sin(2 * math.pi * 0.31 * t + p[2]) + 10 * math.sin(2 * math.pi * 1.1 * t + p[3])
        arrow = _ARROW + np.float32([x, y])
        cv2.fillPoly(canvas, [arrow.round().astype(np.int32)], (250, 250, 250), cv2.LINE_AA)
        cv2.polylines(canvas, [arrow.round().astype(np.int32)], True, (0, 0, 0), 1, cv2.LINE_AA)
        return lines


class _Document(_Scene):
    """A page of text on a desk, still; now and then the page is turned to another page."""

    transition_s = 0.5
    in_place_one_char = False

    def background(self) -> np.ndarray:
        return background(self.rng)

    def new_text(self) -> list[str]:
        rng = self.rng
        return [
            " ".join(_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), int(rng.integers(3, 5)))).upper()
            if k == 0
            else " ".join(_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), int(rng.integers(2, 5))))
            for k in range(int(rng.integers(6, 9)))
        ]

    def render(self, lines: list[str]) -> Sprite:
        return render_card(
            lines, (420, 440), face="DejaVuSerif", font_px=22, color=(240, 238, 232), ink=(30, 30, 30),
            origin=(30, 30), spacing=50, radius=2,
        )  # fmt: skip

    def draw(self, canvas: np.ndarray, t: float, progress: float) -> list[tuple[str, np.ndarray]]:
        angle = 1.5 * math.sin(self.phase[0])
        if progress < 1 and self.old is not None:  # the page folds to its left edge, the next unfolds
            sprite, squeeze = (
                (self.old, 1 - 2 * progress) if progress < 0.5 else (self.sprite, 2 * progress - 1)
            )
            lines = paste(canvas, sprite, placement(sprite, 320, 240, angle, max(squeeze, 0.02)))
            return lines if squeeze >= 0.75 else []  # a page in mid-turn shows no readable line
        return paste(canvas, self.sprite, placement(self.sprite, 320, 240, angle))


def in_view(lines: list[tuple[str, np.ndarray]], effects: dict[str, Any]) -> tuple[list[str], list[Box]]:
    """The lines whose whole box the camera (``capture`` arguments ``effects``) sees, and those boxes."""
    m = view_matrix(WIDTH, HEIGHT, effects["dx"], effects["dy"], effects["angle_deg"])
    seen, boxes = [], []
    for line, box in lines:
        pts = box @ m[:, :2].T + m[:, 2]
        if pts.min() >= 0 and pts[:, 0].max() <= WIDTH and pts[:, 1].max() <= HEIGHT:
            seen.append(line)
            boxes.append(tuple((round(float(x)), round(float(y))) for x, y in pts))
    return seen, boxes


_SCENE_TYPES: dict[str, type[_Scene]] = {
    "conveyor": _Conveyor,
    "handheld": _Handheld,
    "screen": _Screen,
    "document": _Document,
}


def iter_scene(
    scene: str,
    seconds: float,
    fps: float = 30.0,
    seed: int = 0,
    *,
    hold_s: tuple[float, float] = (4.0, 12.0),
    one_char_share: float = 0.5,
    bait: bool = False,
    shake_px: float = 1.5,
    noise: float = 4.0,
    flicker: float = 0.04,
    blur_share: float = 0.03,
    quality: tuple[int, int] = (70, 92),
) -> Iterator[CameraFrame]:
    """``seconds * fps`` frames of ``scene`` (one of :data:`SCENES`), deterministic from ``seed``.

    Objects move relative to the background (see each scene); the camera adds whole-view shake
    (``shake_px``), exposure drift, uneven light, ``flicker``, focus blur on ``blur_share`` of the
    frames, sensor ``noise`` and JPEG ``quality``. Each frame carries its true lines in view
    (a line is in view when its whole box is) with their boxes, and ``bait`` when marked.
    """
    rng = np.random.default_rng(seed)
    world = _SCENE_TYPES[scene](rng, hold_s, one_char_share, bait)
    camera = _Camera(rng, shake_px, 0.3, noise, flicker=flicker, blur_share=blur_share)
    previous: str | None = None
    for index in range(round(seconds * fps)):
        ts = index / fps
        canvas, lines, kind, moving = world.compose(ts)
        effects = camera.effects(ts)
        if kind == "motion_blur":
            effects["motion_blur"] = int(rng.integers(9, 16))
        q = int(rng.integers(quality[0], quality[1] + 1))
        jpeg = capture(canvas, quality=q, **effects)
        seen, boxes = in_view(lines, effects)
        text = "\n".join(seen)
        changed = previous is not None and text != previous
        one_char = changed and _differ_by_one(previous or "", text)
        yield CameraFrame(index, ts, jpeg, text, changed, one_char, q, tuple(boxes), kind, moving, scene)
        previous = text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="directory for the JPEG frames and frames.tsv"
    )
    parser.add_argument("--scene", choices=("label", *SCENES), default="label")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bait", action="store_true", help="scenes: hidden characters, motion blur")
    args = parser.parse_args(argv)
    frames = (
        iter_frames(args.seconds, args.fps, args.seed)
        if args.scene == "label"
        else iter_scene(args.scene, args.seconds, args.fps, args.seed, bait=args.bait)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    count = 0
    with (args.out / "frames.tsv").open("w") as index:
        index.write("index\tts\tchanged\tone_char\tquality\tbait\ttext\n")
        for f in frames:
            (args.out / f"{f.index:05d}.jpg").write_bytes(f.jpeg)
            text = f.text.replace("\n", " | ")
            index.write(
                f"{f.index}\t{f.ts:.3f}\t{int(f.changed)}\t{int(f.one_char)}\t{f.quality}\t"
                f"{f.bait or ''}\t{text}\n"
            )
            count += 1
    print(f"wrote {count} frames to {args.out}")


if __name__ == "__main__":
    main()
