"""The sampler's change detector on synthetic camera frames (bench/camera.py), no Ray."""

from __future__ import annotations

import itertools
import pickle

import cv2
import numpy as np
import pytest

from bench.camera import HEIGHT, WIDTH, background, capture, change_one_char, iter_frames, render_scene
from serve_app.config import DedupConfig
from serve_app.dedup import ChangeDetector, Fingerprint
from serve_app.protocol import ErrorCode, ProtocolError

MAX_PIXELS = 40_000_000
LABEL = ["GREEK YOGURT", "LOT 48213", "EXP 2027-03-14", "PRICE $35.86"]


@pytest.fixture(scope="module")
def detector() -> ChangeDetector:
    return ChangeDetector(DedupConfig())


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return background(np.random.default_rng(5))


def noise(seed: int, sigma: float = 4.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, sigma, (HEIGHT, WIDTH, 3)).astype(np.float32)


def shot(detector: ChangeDetector, scene: np.ndarray, **kwargs: object) -> Fingerprint:
    return detector.fingerprint(capture(scene, **kwargs), MAX_PIXELS)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def reference(detector: ChangeDetector, table: np.ndarray) -> Fingerprint:
    """The frame last read: a still, sharp, well-exposed shot of LABEL."""
    return shot(detector, render_scene(LABEL, table), noise=noise(0), quality=90)


# What a camera does to a still scene: none of it is a change.
STILL_SCENE = {
    "noise": {"noise": noise(1, 6.0)},
    "shift 1 px": {"dx": 1.0, "noise": noise(2)},
    "shift 2 px diagonal": {"dx": -2.0, "dy": 2.0, "noise": noise(3)},
    "sub-pixel shift": {"dx": 0.5, "dy": -0.3, "noise": noise(4)},
    "rotation 0.3 deg": {"angle_deg": 0.3, "noise": noise(5)},
    "brighter 25%": {"gain": 1.25, "noise": noise(6)},
    "darker 30%": {"gain": 0.7, "noise": noise(7)},
    "uneven light": {"slope": (0.3, -0.25), "noise": noise(8)},
    "jpeg 60": {"quality": 60, "noise": noise(9)},
    "jpeg 95": {"quality": 95, "noise": noise(10)},
    "all at once": {
        "dx": 1.7,
        "dy": -1.2,
        "angle_deg": -0.2,
        "gain": 0.8,
        "slope": (-0.2, 0.2),
        "noise": noise(11),
        "quality": 62,
    },
}


@pytest.mark.parametrize("effects", STILL_SCENE.values(), ids=STILL_SCENE.keys())
def test_what_cameras_do_to_a_still_scene_is_not_a_change(
    detector: ChangeDetector, table: np.ndarray, reference: Fingerprint, effects: dict[str, object]
) -> None:
    frame = shot(detector, render_scene(LABEL, table), **effects)
    verdict = detector.compare(frame, reference)
    assert verdict.same, verdict
    assert verdict.score <= DedupConfig().threshold / 2, "less than half the threshold: a margin"


# One character of one line, each with the camera effects of a live frame. In this font
# 6 and 8 differ by one short arc, 5 and 6 by one stroke: the hardest pairs.
ONE_CHARACTER = [
    ("PRICE $35.86", "PRICE $35.88"),
    ("PRICE $35.86", "PRICE $36.86"),
    ("LOT 48213", "LOT 46213"),
    ("LOT 48213", "LOT 48218"),
    ("LOT 48213", "LOT 48713"),
    ("LOT 48213", "LOT 40213"),
    ("EXP 2027-03-14", "EXP 2027-08-14"),
    ("EXP 2027-03-14", "EXP 2027-03-11"),
    ("PRICE $35.86", "PRICE $35.80"),
    ("PRICE $35.86", "PRICE $85.86"),
    ("GREEK YOGURT", "GREEK YOGHRT"),
]


@pytest.mark.parametrize(("old", "new"), ONE_CHARACTER, ids=[f"{o}->{n}" for o, n in ONE_CHARACTER])
def test_one_changed_character_is_a_change(
    detector: ChangeDetector, table: np.ndarray, reference: Fingerprint, old: str, new: str
) -> None:
    lines = [new if line == old else line for line in LABEL]
    assert lines != LABEL
    effects = {"dx": -1.3, "dy": 0.8, "angle_deg": 0.15, "gain": 1.15, "noise": noise(20), "quality": 70}
    verdict = detector.compare(shot(detector, render_scene(lines, table), **effects), reference)
    assert not verdict.same, verdict
    assert verdict.score >= 1.5 * DedupConfig().threshold, "a margin above the threshold"
    # The change is located on the card, near the line that changed.
    assert verdict.where is not None
    x, y = verdict.where
    row = LABEL.index(old)
    assert 60 <= x <= 580
    assert abs(y - (80 + 70 + 64 * row - 12)) <= 40


def test_a_frame_of_another_size_is_a_change(detector: ChangeDetector, table: np.ndarray) -> None:
    scene = render_scene(LABEL, table)
    full = detector.fingerprint(capture(scene), MAX_PIXELS)
    for size in ((640, 360), (480, 640), (320, 240), (641, 480)):
        other = detector.fingerprint(capture(cv2.resize(scene, size)), MAX_PIXELS)
        verdict = detector.compare(other, full)
        assert not verdict.same
        assert verdict.score == float("inf")


def test_a_large_motion_of_the_view_is_a_change(detector: ChangeDetector, table: np.ndarray) -> None:
    scene = render_scene(LABEL, table)
    reference = shot(detector, scene)
    moved = detector.compare(shot(detector, scene, dx=40.0, dy=-10.0), reference)
    assert not moved.same
    assert moved.shift[0] == pytest.approx(20.0, abs=1.0), "40 px of the frame: 20 of the grey image"


def test_fingerprint_is_small_picklable_and_identical_frames_score_zero(
    detector: ChangeDetector, reference: Fingerprint
) -> None:
    blob = pickle.dumps(reference)
    assert len(blob) < 80_000
    copy = pickle.loads(blob)
    assert copy.source_size == (WIDTH, HEIGHT)
    verdict = detector.compare(copy, reference)
    assert verdict.same
    assert verdict.score == 0.0


def test_a_bad_image_raises_protocol_error(detector: ChangeDetector) -> None:
    with pytest.raises(ProtocolError) as err:
        detector.fingerprint(b"\xff\xd8\xff not a jpeg", MAX_PIXELS)
    assert err.value.code is ErrorCode.BAD_IMAGE


def test_config_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        DedupConfig(width=10)
    with pytest.raises(ValueError):
        DedupConfig(subpixel_tolerance=2.0)


def test_camera_stream_is_deterministic_and_changes_are_mostly_one_character() -> None:
    a = list(iter_frames(30, seed=3))
    b = list(iter_frames(1, seed=3))
    assert [f.jpeg for f in a[:30]] == [f.jpeg for f in b]
    changes = [f for f in a if f.changed]
    gaps = np.diff([f.ts for f in changes])
    assert len(changes) >= 10
    assert gaps.min() >= 0.5 - 1 / 30
    assert gaps.max() <= 3.0 + 1 / 30
    assert sum(f.one_char for f in changes) >= 0.4 * len(changes)
    for before, after in itertools.pairwise(a):
        assert after.changed == (after.text != before.text)
    assert {f.quality for f in a} <= set(range(60, 96))
    assert min(f.quality for f in a) <= 65
    assert max(f.quality for f in a) >= 90


def test_change_one_char_changes_exactly_one_character() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        new = change_one_char(LABEL, rng)
        diffs = [
            (o, n)
            for line_o, line_n in zip(LABEL, new, strict=True)
            for o, n in zip(line_o, line_n, strict=True)
        ]
        assert sum(o != n for o, n in diffs) == 1


def test_camera_stream_as_the_sampler_sees_it(detector: ChangeDetector) -> None:
    """20 s of a 30 fps label stream: a frame is read when it is not "same" as the frame
    last read. Every text change is read within 2 frames of its first frame, and at
    least 90% of the frames showing the text last read are answered duplicate."""
    frames = list(iter_frames(20, seed=11))
    last_read: Fingerprint | None = None
    read_text = ""
    read_at: list[int] = []
    same_as_read = duplicates = 0
    for f in frames:
        fp = detector.fingerprint(f.jpeg, MAX_PIXELS)
        is_same = last_read is not None and detector.compare(fp, last_read).same
        if f.text == read_text:
            same_as_read += 1
            duplicates += is_same
        if not is_same:
            last_read, read_text = fp, f.text
            read_at.append(f.index)
    changes = [f for f in frames if f.changed]
    assert len(changes) >= 8
    assert sum(f.one_char for f in changes) >= 3
    for change in changes:
        caught = [i for i in read_at if change.index <= i <= change.index + 2]
        assert caught, f"text change at frame {change.index} ({change.text!r}) not read within 2 frames"
        assert frames[caught[0]].text == change.text
    assert duplicates >= 0.9 * same_as_read, (duplicates, same_as_read)
    assert len(read_at) <= 1 + len(changes) + 0.1 * len(frames)
