"""A synthetic 30 fps camera looking at a product label, deterministic from a seed.

Each frame is a 640x480 JPEG of a light card with 4 lines of dark text (a product
name, ``LOT 48213``, ``EXP 2027-03-14``, a price) on a textured table. The text
changes every 0.5-3 s; most changes (``one_char_share``) alter ONE character of
one line. What a real camera does to a still scene is applied to every frame:
shake (translation up to ``shake_px`` in x and y plus a tiny rotation), sensor
noise, a slow exposure drift with an uneven, moving illumination, and a JPEG
quality drawn from 60-95.

    python -m bench.camera --out /tmp/frames --seconds 5
    python -m bench.camera --dedup 10 --seconds 60   # measure serve_app.dedup on it
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

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


@dataclass(frozen=True, slots=True)
class CameraFrame:
    index: int
    ts: float
    jpeg: bytes
    text: str  # the true text, lines joined by "\n"
    changed: bool  # the text differs from the previous frame's
    one_char: bool  # changed, and by exactly one character
    quality: int  # JPEG quality of this frame


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
        org = (x0 + 36, y0 + 70 + 64 * i)
        cv2.putText(img, line, org, _FONT, _SCALE, (30, 25, 20), _THICKNESS, cv2.LINE_AA)
    return img


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
) -> bytes:
    """The JPEG a camera makes of ``scene``: moved by (dx, dy) px and turned by ``angle_deg``
    about the centre, lit by ``gain * (1 + slope_x * x + slope_y * y)`` (x, y in -0.5..0.5),
    plus ``noise`` (float32, the frame's shape)."""
    height, width = scene.shape[:2]
    m = cv2.getRotationMatrix2D((width / 2, height / 2), angle_deg, 1.0)
    m[:, 2] += (dx, dy)
    img = cv2.warpAffine(scene, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    xx = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    yy = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    light = gain * (1.0 + slope[0] * xx + slope[1] * yy)
    out = img.astype(np.float32) * light[..., None]
    if noise is not None:
        out += noise
    ok, buf = cv2.imencode(".jpg", np.clip(out, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


class _Camera:
    """Shake, exposure drift, uneven light and noise at time ``t``, from one seeded generator."""

    def __init__(self, rng: np.random.Generator, shake_px: float, rotation_deg: float, noise: float) -> None:
        self.rng = rng
        self.shake_px = shake_px
        self.rotation_deg = rotation_deg
        self.phase = rng.uniform(0, 2 * math.pi, 6)
        self.noise_bank = rng.normal(0, noise, (4, HEIGHT + 64, WIDTH + 64, 3)).astype(np.float32)

    def shoot(self, scene: np.ndarray, t: float, quality: int) -> bytes:
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
        return capture(
            scene,
            dx=float(dx),
            dy=float(dy),
            angle_deg=angle,
            gain=gain,
            slope=slope,
            noise=noise,
            quality=quality,
        )


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
        yield CameraFrame(index, ts, camera.shoot(scene, ts, q), "\n".join(lines), changed, one_char, q)


def measure_dedup(seconds: float, seeds: list[int]) -> None:
    """Scores and cost of ``serve_app.dedup`` (default config, one core) on generated streams.

    Separation: every frame is compared with the first frame of its text (same text)
    or, at a change, with the first frame of the previous text. Sampler: a frame is
    read when it is not "same" as the frame last read.
    """
    import time

    from serve_app.config import DedupConfig
    from serve_app.dedup import ChangeDetector

    cv2.setNumThreads(1)
    detector = ChangeDetector(DedupConfig())
    same: list[float] = []
    one: list[float] = []
    other: list[float] = []
    cost: list[float] = []
    reads = missed = late = changes = 0
    for seed in seeds:
        first = last_read = None
        text = read_text = ""
        for f in iter_frames(seconds, seed=seed):
            t0 = time.perf_counter()
            fp = detector.fingerprint(f.jpeg, 1 << 30)
            verdict = detector.compare(fp, last_read) if last_read is not None else None
            cost.append(time.perf_counter() - t0)
            if verdict is None or not verdict.same:
                reads, last_read, read_text = reads + 1, fp, f.text
            changes += f.changed
            missed += read_text != f.text
            late += f.changed and read_text != f.text
            if first is not None:
                score = detector.compare(fp, first).score
                (same if f.text == text else one if f.one_char else other).append(score)
            if f.text != text:
                first, text = fp, f.text
    s = np.array(same)
    ms = np.array(cost) * 1e3
    print(f"{len(seeds)} streams x {seconds:g} s, default DedupConfig, cv2 on 1 thread")
    print(
        f"decode+fingerprint+compare: p50 {np.median(ms):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms a frame"
    )
    print(f"fingerprint: {fp.contrast.nbytes} bytes")
    print(
        f"same text ({s.size} frames): p50 {np.median(s):.4f} p99 {np.percentile(s, 99):.4f} "
        f"p99.9 {np.percentile(s, 99.9):.4f} max {s.max():.4f}"
    )
    print(f"one-character changes ({len(one)}): min {min(one):.4f} p10 {np.percentile(one, 10):.4f}")
    print(f"other changes ({len(other)}): min {min(other):.4f}")
    print(
        f"sampler: {changes} changes, {reads} reads, frames showing unread text {missed}, "
        f"changes not read on their first frame {late}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="directory for the JPEG frames and frames.tsv")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dedup", type=int, metavar="N", help="measure serve_app.dedup on N streams instead")
    args = parser.parse_args(argv)
    if args.dedup:
        measure_dedup(args.seconds, list(range(args.seed, args.seed + args.dedup)))
        return
    if args.out is None:
        parser.error("--out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    count = 0
    with (args.out / "frames.tsv").open("w") as index:
        index.write("index\tts\tchanged\tone_char\tquality\ttext\n")
        for f in iter_frames(args.seconds, args.fps, args.seed):
            (args.out / f"{f.index:05d}.jpg").write_bytes(f.jpeg)
            text = f.text.replace("\n", " | ")
            index.write(f"{f.index}\t{f.ts:.3f}\t{int(f.changed)}\t{int(f.one_char)}\t{f.quality}\t{text}\n")
            count += 1
    print(f"wrote {count} frames to {args.out}")


if __name__ == "__main__":
    main()
