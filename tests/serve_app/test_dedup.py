"""The sampler's change detector (serve_app.dedup) on camera-like frames made here, no Ray.

A label card with lines of text lies on a textured table; the card can move and
turn on its own (an object on a conveyor, in a hand), the whole view can shake,
and the camera adds exposure drift, flicker bands, noise, blur and JPEG.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest
from PIL import Image

from serve_app.config import DedupConfig
from serve_app.dedup import ChangeDetector, Fingerprint
from serve_app.protocol import ErrorCode, ProtocolError, Roi

MAX_PIXELS = 40_000_000
W, H = 640, 480
LABEL = ["LOT 48213", "EXP 2027-03-14", "SN 5096-7731"]
FONT, SCALE, THICKNESS = cv2.FONT_HERSHEY_DUPLEX, 1.1, 2
Box = list[list[int]]


def table() -> np.ndarray:
    rng = np.random.default_rng(5)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (H, W)).astype(np.float32), (0, 0), 1.5)
    return np.clip(np.float32([70, 95, 120]) + 25 * grain[..., None], 0, 255).astype(np.uint8)


TABLE = table()


@dataclass
class Shot:
    """How one frame is taken: the card's pose on the table, then what the camera does."""

    lines: list[str] = field(default_factory=lambda: list(LABEL))
    card_dx: float = 0.0
    card_dy: float = 0.0
    card_deg: float = 0.0
    view_dx: float = 0.0
    view_dy: float = 0.0
    gain: float = 1.0
    slope: float = 0.0
    bands: float = 0.0
    noise_seed: int = 0
    blur: float = 0.0
    quality: int = 90
    pointer: tuple[int, int] | None = None  # a mouse pointer drawn at (x, y), off the card
    mark: tuple[int, int] | None = None  # a dark blob drawn at (x, y)


def card(lines: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    img = np.full((70 + 60 * len(lines), 420, 3), (236, 240, 244), np.uint8)
    cv2.rectangle(img, (6, 6), (413, img.shape[0] - 7), (60, 60, 160), 2, cv2.LINE_AA)
    boxes = []
    for i, line in enumerate(lines):
        (w, h), base = cv2.getTextSize(line, FONT, SCALE, THICKNESS)
        x, y = 30, 60 + 60 * i
        cv2.putText(img, line, (x, y), FONT, SCALE, (30, 25, 20), THICKNESS, cv2.LINE_AA)
        boxes.append(np.float32([[x, y - h], [x + w, y - h], [x + w, y + base], [x, y + base]]))
    return img, boxes


def take(shot: Shot) -> tuple[bytes, list[Box]]:
    """The JPEG of the shot and the true boxes of its lines (frame px)."""
    sprite, boxes = card(shot.lines)
    h, w = sprite.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), shot.card_deg, 1.0)
    m[:, 2] += (W / 2 - w / 2 + shot.card_dx, H / 2 - h / 2 + shot.card_dy)
    scene = TABLE.copy()
    mask = cv2.warpAffine(np.full((h, w), 255, np.uint8), m, (W, H))
    cv2.copyTo(cv2.warpAffine(sprite, m, (W, H)), mask, scene)
    if shot.pointer is not None:
        arrow = np.int32([[0, 0], [0, 19], [4, 15], [8, 23], [11, 22], [7, 14], [13, 14]]) + shot.pointer
        cv2.fillPoly(scene, [arrow], (250, 250, 250), cv2.LINE_AA)
        cv2.polylines(scene, [arrow], True, (0, 0, 0), 1, cv2.LINE_AA)
    if shot.mark is not None:
        cv2.circle(scene, shot.mark, 7, (40, 40, 40), -1, cv2.LINE_AA)
    view = np.float32([[1, 0, shot.view_dx], [0, 1, shot.view_dy]])
    img = cv2.warpAffine(scene, view, (W, H), borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    if shot.blur:
        img = cv2.GaussianBlur(img, (0, 0), shot.blur)
    yy = np.linspace(-0.5, 0.5, H, dtype=np.float32)[:, None]
    light = (
        shot.gain * (1 + shot.slope * yy) * (1 + shot.bands * np.sin(np.arange(H)[:, None] / 160 * 2 * np.pi))
    )
    noise = np.random.default_rng(shot.noise_seed).normal(0, 4, (H, W, 3)).astype(np.float32)
    out = np.clip(img * light[..., None] + noise, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, shot.quality])
    assert ok
    frame_boxes = [
        (b @ m[:, :2].T + m[:, 2] + (shot.view_dx, shot.view_dy)).round().astype(int) for b in boxes
    ]
    return buf.tobytes(), [b.tolist() for b in frame_boxes]


@pytest.fixture(scope="module")
def detector() -> ChangeDetector:
    return ChangeDetector(DedupConfig())


@pytest.fixture(scope="module")
def reference(detector: ChangeDetector) -> tuple[Fingerprint, list[Box]]:
    """The frame last read: a still, sharp shot of LABEL, and its read's text boxes."""
    data, boxes = take(Shot())
    return detector.fingerprint(data, MAX_PIXELS), boxes


def judge(
    detector: ChangeDetector, reference: tuple[Fingerprint, list[Box]], shot: Shot, *, boxes: bool = True
) -> bool:
    """Is the shot the same as the reference, for the reference's boxes (or none)?"""
    ref, ref_boxes = reference
    frame = detector.fingerprint(take(shot)[0], MAX_PIXELS)
    return detector.compare(ref, frame, ref_boxes if boxes else None).same


# What moves in a view of still text, and what cameras do to it: none of it is a change.
STILL = {
    "card moved 3 px": Shot(card_dx=3, card_dy=-2, noise_seed=1),
    "card moved -3 px, turned 2 deg": Shot(card_dx=-3, card_dy=3, card_deg=2.0, noise_seed=2),
    "card turned -2 deg": Shot(card_deg=-2.0, noise_seed=3),
    "whole view shaken 4 px": Shot(view_dx=4, view_dy=-3, noise_seed=4),
    "shake and the card moving": Shot(view_dx=-2, view_dy=2, card_dx=2, card_deg=1.0, noise_seed=5),
    "exposure +30%": Shot(gain=1.3, noise_seed=6),
    "exposure -35%, uneven": Shot(gain=0.65, slope=0.3, noise_seed=7),
    "flicker bands": Shot(bands=0.06, gain=0.95, noise_seed=8),
    "sensor noise": Shot(noise_seed=9),
    "jpeg quality 70": Shot(quality=70, noise_seed=10),
    "slightly out of focus": Shot(blur=0.9, noise_seed=11),
    "a mouse pointer off the text": Shot(pointer=(560, 420), noise_seed=12),
    "all at once": Shot(card_dx=2, card_dy=-3, card_deg=-1.5, view_dx=1.5, gain=0.8, bands=0.04, quality=72),
}


@pytest.mark.parametrize("boxes", [True, False], ids=["boxes known", "boxes unknown"])
@pytest.mark.parametrize("shot", STILL.values(), ids=STILL.keys())
def test_still_text_is_the_same(
    detector: ChangeDetector, reference: tuple[Fingerprint, list[Box]], shot: Shot, boxes: bool
) -> None:
    assert judge(detector, reference, shot, boxes=boxes)


def one_char(line: int, col: int, char: str) -> list[str]:
    lines = list(LABEL)
    lines[line] = lines[line][:col] + char + lines[line][col + 1 :]
    return lines


# One character of one line: 8 <-> 3, 6 <-> 8, 4 <-> 1 differ by a short stroke in this font.
CHANGES = {
    "one digit 8 -> 3": one_char(0, 7, "3"),
    "one digit 6 -> 8 (card moved)": one_char(2, 7, "8"),
    "one digit 4 -> 1 (card turned)": one_char(1, 13, "1"),
    "one digit 9 -> 0": one_char(2, 5, "0"),
    "one letter T -> I": one_char(0, 2, "I"),
    "a dash gone": one_char(1, 8, " "),
    "a line added": [*LABEL, "QTY 12"],
    "a line removed": LABEL[:2],
    "another label": ["LOT 99120", "EXP 2028-11-02", "SN 1187-0042"],
}
MOTION = {
    "one digit 6 -> 8 (card moved)": {"card_dx": 2.5},
    "one digit 4 -> 1 (card turned)": {"card_deg": 1.5},
}


@pytest.mark.parametrize("boxes", [True, False], ids=["boxes known", "boxes unknown"])
@pytest.mark.parametrize("name", CHANGES.keys())
def test_changed_text_is_caught(
    detector: ChangeDetector, reference: tuple[Fingerprint, list[Box]], name: str, boxes: bool
) -> None:
    shot = Shot(lines=CHANGES[name], noise_seed=20, quality=75, view_dx=1.0, **MOTION.get(name, {}))
    assert not judge(detector, reference, shot, boxes=boxes)


def test_every_digit_pair_is_told_apart_under_motion(detector: ChangeDetector) -> None:
    """The 90 ordered pairs of digits, each in a moving card: one changed digit is always caught."""
    base = ["LOT 0", "EXP 1", "SN 2"]
    ref_data, ref_boxes = take(Shot(lines=base))
    ref = detector.fingerprint(ref_data, MAX_PIXELS)
    missed = []
    for a in "0123456789":
        ref_a = detector.fingerprint(take(Shot(lines=["LOT " + a, *base[1:]]))[0], MAX_PIXELS)
        boxes_a = take(Shot(lines=["LOT " + a, *base[1:]]))[1]
        for b in "0123456789":
            if a == b:
                continue
            shot = Shot(
                lines=["LOT " + b, *base[1:]], card_dx=2.0, card_deg=1.0, noise_seed=ord(b), quality=75
            )
            frame = detector.fingerprint(take(shot)[0], MAX_PIXELS)
            if detector.compare(ref_a, frame, boxes_a).same:
                missed.append(f"{a}->{b}")
    assert detector.compare(ref, ref, ref_boxes).same
    assert missed == []


def test_a_page_turned_and_a_number_on_a_screen_changed(detector: ChangeDetector) -> None:
    page = ["PUMP 4 CHECK", "valve open", "flow 12.5", "drain closed"]
    other = ["REPORT DAILY", "motor stop", "level 80", "alarm reset"]
    data, boxes = take(Shot(lines=page))
    ref = detector.fingerprint(data, MAX_PIXELS)
    turned = detector.fingerprint(take(Shot(lines=other, view_dx=2))[0], MAX_PIXELS)
    assert not detector.compare(ref, turned, boxes).same
    price = detector.fingerprint(take(Shot(lines=["TOTAL", "$ 1,284.50"]))[0], MAX_PIXELS)
    price_boxes = take(Shot(lines=["TOTAL", "$ 1,284.50"]))[1]
    new_price = detector.fingerprint(take(Shot(lines=["TOTAL", "$ 1,284.60"], noise_seed=3))[0], MAX_PIXELS)
    assert not detector.compare(price, new_price, price_boxes).same


def test_boxes_say_where_text_is_judged_finely(
    detector: ChangeDetector, reference: tuple[Fingerprint, list[Box]]
) -> None:
    """Inside a text box a mark as small as a dot is a change; outside the boxes only a change
    the size of a word counts (a mouse pointer, a speck on the card are not text)."""
    ref, boxes = reference
    (x0, y0), (x1, y1) = np.min(boxes[1], axis=0), np.max(boxes[1], axis=0)
    inside = detector.fingerprint(take(Shot(mark=(int(x1) - 20, int(y0 + y1) // 2)))[0], MAX_PIXELS)
    assert not detector.compare(ref, inside, boxes).same
    below = int(max(p[1] for b in boxes for p in b)) + 30  # on the card, under the last line
    speck = detector.fingerprint(take(Shot(mark=(x0 + 60, below)))[0], MAX_PIXELS)
    assert detector.compare(ref, speck, boxes).same
    word = detector.fingerprint(take(Shot(lines=[*LABEL, "OK"]))[0], MAX_PIXELS)
    assert not detector.compare(ref, word, boxes).same, "a new word outside the boxes"


def test_a_region_of_interest_is_all_that_is_compared(detector: ChangeDetector) -> None:
    """Only the top half of the card is watched: a change below it is not a change."""
    data, boxes = take(Shot())
    top = Roi(0.0, 0.0, 1.0, 0.5)
    ref = detector.fingerprint(data, MAX_PIXELS, top)
    assert ref.contrast.shape == (120, 320)
    below = detector.fingerprint(take(Shot(lines=one_char(2, 7, "8"), noise_seed=3))[0], MAX_PIXELS, top)
    assert detector.compare(ref, below, boxes).same
    above = detector.fingerprint(take(Shot(lines=one_char(0, 7, "3"), noise_seed=3))[0], MAX_PIXELS, top)
    assert not detector.compare(ref, above, boxes).same
    whole = detector.fingerprint(data, MAX_PIXELS)
    verdict = detector.compare(ref, whole, boxes)
    assert not verdict.same and verdict.score == float("inf"), "another roi: not comparable"


def test_boxes_follow_exif_orientation(detector: ChangeDetector) -> None:
    """A camera that stores frames on their side (EXIF 6): boxes are in upright pixels."""
    data, boxes = take(Shot())
    changed, _ = take(Shot(lines=one_char(0, 7, "3"), noise_seed=4))

    def sideways(jpeg: bytes) -> bytes:
        image = Image.open(io.BytesIO(jpeg)).transpose(Image.Transpose.ROTATE_90)  # stored turned
        exif = Image.Exif()
        exif[0x0112] = 6  # ... and tagged: turn 90 degrees clockwise to view
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90, exif=exif.tobytes())
        return buf.getvalue()

    ref = detector.fingerprint(sideways(data), MAX_PIXELS)
    assert ref.source_size == (W, H)
    assert detector.compare(
        ref, detector.fingerprint(sideways(take(Shot(card_dx=2))[0]), MAX_PIXELS), boxes
    ).same
    assert not detector.compare(ref, detector.fingerprint(sideways(changed), MAX_PIXELS), boxes).same


def test_frames_of_another_size_are_not_comparable(
    detector: ChangeDetector, reference: tuple[Fingerprint, list[Box]]
) -> None:
    data, _ = take(Shot())
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    other = detector.fingerprint(cv2.imencode(".png", cv2.resize(image, (480, 360)))[1].tobytes(), MAX_PIXELS)
    verdict = detector.compare(reference[0], other, reference[1])
    assert not verdict.same and verdict.score == float("inf")


def test_fingerprint_is_small_picklable_and_identical_frames_are_the_same(
    detector: ChangeDetector, reference: tuple[Fingerprint, list[Box]]
) -> None:
    ref, boxes = reference
    blob = pickle.dumps(ref)
    assert len(blob) < 100_000
    copy = pickle.loads(blob)
    verdict = detector.compare(ref, copy, boxes)
    assert verdict.same and verdict.score == 0.0


def test_a_png_frame_is_compared_like_a_jpeg(
    detector: ChangeDetector, reference: tuple[Fingerprint, list[Box]]
) -> None:
    data, _ = take(Shot(card_dx=2))
    png = cv2.imencode(".png", cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))[1].tobytes()
    assert detector.compare(reference[0], detector.fingerprint(png, MAX_PIXELS), reference[1]).same


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"\xff\xd8\xff not a jpeg", ErrorCode.BAD_IMAGE), (take(Shot())[0][:20_000], ErrorCode.BAD_IMAGE)],
    ids=["garbage", "truncated"],
)
def test_an_unreadable_frame_raises_protocol_error(
    detector: ChangeDetector, data: bytes, code: ErrorCode
) -> None:
    with pytest.raises(ProtocolError) as err:
        detector.fingerprint(data, MAX_PIXELS)
    assert err.value.code is code


def test_a_frame_over_the_pixel_limit_is_too_large(detector: ChangeDetector) -> None:
    with pytest.raises(ProtocolError) as err:
        detector.fingerprint(take(Shot())[0], W * H - 1)
    assert err.value.code is ErrorCode.TOO_LARGE


def test_config_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        DedupConfig(width=10)
    with pytest.raises(ValueError):
        DedupConfig(subpixel_tolerance=2.0)


def test_the_verdict_stops_at_the_first_changed_line_and_agrees_with_the_full_score(
    detector: ChangeDetector,
) -> None:
    data, boxes = take(Shot())
    ref = detector.fingerprint(data, MAX_PIXELS)
    shots = [
        Shot(lines=["LOT 48218", *LABEL[1:]], card_dx=1.0, noise_seed=2),  # first line changed
        Shot(lines=[*LABEL[:2], "SN 5096-7781"], card_deg=0.5, noise_seed=3),  # last line changed
        Shot(card_dx=1.5, card_deg=0.4, gain=1.05, noise_seed=4),  # the same label, moved
    ]
    for shot in shots:
        frame = detector.fingerprint(take(shot)[0], MAX_PIXELS)
        for known in (boxes, None):
            quick, full = detector.compare(ref, frame, known), detector.compare(ref, frame, known, full=True)
            assert quick.same == full.same
            assert quick.same or (quick.score > 1.0 and quick.text_score <= full.text_score)
    first = detector.fingerprint(take(shots[0])[0], MAX_PIXELS)
    assert detector.compare(ref, first, boxes).scene_score == 0.0, "no scene check once a line changed"


def test_a_change_inside_known_lines_says_which_lines_and_where_they_are_now(
    detector: ChangeDetector, reference: tuple[Fingerprint, list[Box]]
) -> None:
    """The card moved and turned, one character of the second line changed: only that line is to
    be read again, and every box is where the frame shows its line (what a line read crops)."""
    ref, boxes = reference
    shot = Shot(lines=one_char(1, 9, "8"), card_dx=2.5, card_dy=-1.5, card_deg=0.8, noise_seed=4)
    data, true_boxes = take(shot)
    frame = detector.fingerprint(data, MAX_PIXELS)
    verdict = detector.compare(ref, frame, boxes, full=True)
    assert not verdict.same and verdict.lines is not None
    assert verdict.lines.changed == (1,)
    off = np.abs(np.float32(verdict.lines.boxes) - np.float32(true_boxes)).max()
    assert off <= 2.0, f"moved boxes {off:.1f} px from the lines in the frame"
    assert detector.compare(ref, frame, boxes).lines is None, "only a full compare says which lines"
    assert (
        detector.compare(
            ref, detector.fingerprint(take(Shot(card_dx=2.5))[0], MAX_PIXELS), boxes, full=True
        ).lines
        is None
    )


@pytest.mark.parametrize(
    "lines",
    [
        [LABEL[0] + "5", *LABEL[1:]],  # a line grew out of its box: its new end is unread
        [*LABEL, "OK"],  # a new word outside the boxes
    ],
    ids=["grown", "new-word"],
)
def test_a_change_outside_known_lines_reads_the_frame_whole(
    detector: ChangeDetector, reference: tuple[Fingerprint, list[Box]], lines: list[str]
) -> None:
    ref, boxes = reference
    verdict = detector.compare(
        ref, detector.fingerprint(take(Shot(lines=lines))[0], MAX_PIXELS), boxes, full=True
    )
    assert not verdict.same and verdict.lines is None
