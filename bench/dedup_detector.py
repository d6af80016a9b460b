"""The change detector alone (no service, no Ray): right and wrong verdicts and CPU per frame.

    python -m bench.dedup_detector [--seconds 90] [--seeds 2]

Each camera of ``bench/camera.py`` (conveyor label, hand-held badge, screen with a
cursor and a mouse pointer, document page turned, and the older shaking label) is
generated at 30 fps with its ground truth, and every frame is judged by
``serve_app.dedup`` (default ``DedupConfig``, OpenCV on one thread) against the
reference a sampler keeps: the last frame judged changed. Three ways of passing
the reference's text boxes:

- ``boxes``: always the reference's true boxes (what its read returned);
- ``none``: never (the detector finds text-like regions itself);
- ``sampler``: unknown (None) for the ``--read-frames`` frames after each new
  reference, while it is being read, then its true boxes.

Per camera and way: false "same" (a frame whose true text differs from the
reference's judged same: the worst error), false "changed" (same text judged
changed: an extra read), text changes and one-character changes caught on their
first frame, verdicts "changed" per second, CPU per frame (decode + fingerprint
+ compare, ``time.process_time``). Bait frames (a character hidden, motion
blur) are counted apart. Writes docs/bench/dedup_detector.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.camera import SCENES, CameraFrame, iter_frames, iter_scene
from bench.common import ROOT, machine_info, write_json
from serve_app.config import DedupConfig
from serve_app.dedup import ChangeDetector, Fingerprint

OUT = ROOT / "docs" / "bench" / "dedup_detector.json"
MAX_PIXELS = 40_000_000
WAYS = ("boxes", "none", "sampler")


def frames_of(camera: str, seconds: float, seed: int, hold_s: tuple[float, float]) -> Iterator[CameraFrame]:
    if camera == "label":
        return iter_frames(seconds, seed=seed, hold_s=hold_s)
    return iter_scene(camera, seconds, seed=seed, hold_s=hold_s, bait=True)


def run(detector: ChangeDetector, frames: list[CameraFrame], way: str, read_frames: int) -> dict[str, Any]:
    ref: Fingerprint | None = None
    ref_frame: CameraFrame | None = None
    since_ref = 0
    cost: list[float] = []
    false_same: list[dict[str, Any]] = []
    false_changed: list[dict[str, Any]] = []
    counts = dict.fromkeys(
        ("differs", "equal", "bait", "bait_changed", "moving", "moving_changed", "changed_verdicts"), 0
    )
    changes = caught = one_char = one_char_caught = 0
    for f in frames:
        start = time.process_time()
        fp = detector.fingerprint(f.jpeg, MAX_PIXELS)
        verdict = None
        if ref is not None and ref_frame is not None:
            known = way == "boxes" or (way == "sampler" and since_ref >= read_frames)
            boxes = _boxes(ref_frame) if known else None
            verdict = detector.compare(ref, fp, boxes)
        cost.append(time.process_time() - start)
        same = verdict is not None and verdict.same
        if ref_frame is not None:
            detail = {
                "frame": f.index,
                "ref": ref_frame.index,
                "score": round(verdict.score, 3) if verdict else None,
            }
            if f.text != ref_frame.text:
                counts["differs"] += 1
                if same:
                    false_same.append(detail | {"text": f.text, "ref_text": ref_frame.text})
            elif f.bait or f.moving:  # the view changed, the text did not: apart
                kind = "bait" if f.bait else "moving"
                counts[kind] += 1
                counts[f"{kind}_changed"] += not same
            else:
                counts["equal"] += 1
                if not same:
                    false_changed.append(
                        detail | {"text_score": round(verdict.text_score, 4) if verdict else None}
                    )
        if f.changed:
            changes += 1
            caught += not same
            one_char += f.one_char
            one_char_caught += f.one_char and not same
        since_ref += 1
        if not same:
            ref, ref_frame, since_ref = fp, f, 0
            counts["changed_verdicts"] += 1
    ms = np.array(cost) * 1e3
    return {
        "frames": len(frames),
        "text_differs_frames": counts["differs"],
        "text_equal_frames": counts["equal"],
        "false_same": len(false_same),
        "false_changed": len(false_changed),
        "changes": changes,
        "changes_caught": caught,
        "one_char_changes": one_char,
        "one_char_caught": one_char_caught,
        "changed_verdicts": counts["changed_verdicts"],
        "bait_frames": counts["bait"],
        "bait_judged_changed": counts["bait_changed"],
        "moving_frames": counts["moving"],
        "moving_judged_changed": counts["moving_changed"],
        "cpu_ms": ms,
        "false_same_frames": false_same[:20],
        "false_changed_frames": false_changed[:20],
    }


COUNTS = ("frames", "text_differs_frames", "text_equal_frames", "false_same", "false_changed", "changes",
          "changes_caught", "one_char_changes", "one_char_caught", "changed_verdicts", "bait_frames",
          "bait_judged_changed", "moving_frames", "moving_judged_changed")  # fmt: skip


def merge(parts: list[dict[str, Any]], fps: float) -> dict[str, Any]:
    """Runs of several seeds as one: counts summed, rates and CPU percentiles over all frames."""
    out: dict[str, Any] = {key: sum(p[key] for p in parts) for key in COUNTS}
    out["false_same_rate"] = round(out["false_same"] / max(1, out["text_differs_frames"]), 5)
    out["false_changed_rate"] = round(out["false_changed"] / max(1, out["text_equal_frames"]), 5)
    out["changed_per_s"] = round(out["changed_verdicts"] / (out["frames"] / fps), 2)
    ms = np.concatenate([p["cpu_ms"] for p in parts])
    out["cpu_ms"] = {
        "p50": round(float(np.median(ms)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
        "mean": round(float(ms.mean()), 2),
    }
    out["false_same_frames"] = [f for p in parts for f in p["false_same_frames"]][:20]
    out["false_changed_frames"] = [f for p in parts for f in p["false_changed_frames"]][:20]
    return out


def separation(streams: dict[str, list[list[CameraFrame]]], overrides: dict[str, Any]) -> dict[str, Any]:
    """Text scores of still text and of one-character changes, for one config (``--sweep``).

    Still: each frame against a settled frame of its text (20 frames after the change, not
    bait, not moving, boxes within 12 px); changes: the first frame of a one-character change
    against the frame before it. The gap between them is the room a threshold has.
    """
    detector = ChangeDetector(DedupConfig(**overrides))
    still: list[float] = []
    one: list[float] = []
    for frames_list in streams.values():
        for frames in frames_list:
            fps = [detector.fingerprint(f.jpeg, MAX_PIXELS) for f in frames]
            first = 0
            for i, f in enumerate(frames):
                if i and f.text != frames[i - 1].text:
                    if f.one_char:
                        verdict = detector.compare(fps[i - 1], fps[i], _boxes(frames[i - 1]), full=True)
                        one.append(verdict.text_score)
                    first = i
                    continue
                r = first + 20
                if i <= r or not f.text or frames[r].text != f.text:
                    continue
                if f.bait or frames[r].bait or frames[r].moving:
                    continue
                if np.abs(np.float32(frames[r].boxes) - np.float32(f.boxes)).max() <= 12:
                    still.append(detector.compare(fps[r], fps[i], _boxes(frames[r]), full=True).text_score)
    return {
        "overrides": overrides,
        "still_frames": len(still),
        "still_p99_9": round(float(np.percentile(still, 99.9)), 5),
        "still_max": round(max(still), 5),
        "one_char_changes": len(one),
        "one_char_min": round(min(one), 5),
        "one_char_p10": round(float(np.percentile(one, 10)), 5),
    }


def _boxes(frame: CameraFrame) -> list[list[list[int]]]:
    return [[list(p) for p in box] for box in frame.boxes]


SWEEP = [
    {"smooth": 0.0, "pixel_threshold": 0.5},
    {"smooth": 0.0, "pixel_threshold": 1.0},
    {"smooth": 0.6, "pixel_threshold": 0.5},
    {"smooth": 0.8, "pixel_threshold": 0.5},
    {"smooth": 1.0, "pixel_threshold": 0.5},
    {"smooth": 1.0, "pixel_threshold": 0.6},
    {"smooth": 1.0, "pixel_threshold": 0.6, "block": 6},
    {"smooth": 1.0, "pixel_threshold": 0.6, "candidates": 0},
    {"smooth": 1.2, "pixel_threshold": 0.6},
]


def table(report: dict[str, Any]) -> str:
    """The markdown table of docs/dedup.md."""
    head = (
        "| camera | boxes | false same | false changed | changes caught | one-char caught "
        "| changed verdicts/s | bait judged changed | CPU ms p50 / p99 |\n" + "|---" * 9 + "|"
    )
    rows = []
    for camera, ways in report["cameras"].items():
        for way, r in ways.items():
            rows.append(
                f"| {camera} | {way} | {r['false_same']} / {r['text_differs_frames']} "
                f"| {r['false_changed']} / {r['text_equal_frames']} ({r['false_changed_rate']:.2%}) "
                f"| {r['changes_caught']} / {r['changes']} "
                f"| {r['one_char_caught']} / {r['one_char_changes']} "
                f"| {r['changed_per_s']} | {r['bait_judged_changed']} / {r['bait_frames']} "
                f"| {r['cpu_ms']['p50']} / {r['cpu_ms']['p99']} |"
            )
    return "\n".join([head, *rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="stream time per camera and seed")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--hold", type=float, nargs=2, default=(4.0, 12.0), help="seconds between changes")
    parser.add_argument("--read-frames", type=int, default=6, help="sampler: frames before boxes are known")
    parser.add_argument("--cameras", nargs="+", default=[*SCENES, "label"])
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument(
        "--sweep", action="store_true", help="instead: still vs one-character scores for the configs of SWEEP"
    )
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    command = "python -m bench.dedup_detector " + " ".join(sys.argv[1:] if argv is None else argv)

    def streams(camera: str) -> list[list[CameraFrame]]:
        return [list(frames_of(camera, args.seconds, seed, tuple(args.hold))) for seed in range(args.seeds)]

    if args.sweep:
        rendered = {camera: streams(camera) for camera in args.cameras}
        rows = []
        for overrides in SWEEP:
            rows.append(separation(rendered, overrides))
            print(rows[-1], flush=True)
        write_json(Path(args.out), {"command": command, "machine": machine_info(), "sweep": rows})
        return
    detector = ChangeDetector(DedupConfig())
    report: dict[str, Any] = {
        "command": command,
        "machine": machine_info(),
        "config": DedupConfig().model_dump(mode="json"),
        "seconds": args.seconds,
        "seeds": args.seeds,
        "hold_s": list(args.hold),
        "read_frames": args.read_frames,
        "cameras": {},
    }
    for camera in args.cameras:
        rendered_streams = streams(camera)
        report["cameras"][camera] = {}
        for way in args.ways:
            parts = [run(detector, frames, way, args.read_frames) for frames in rendered_streams]
            report["cameras"][camera][way] = r = merge(parts, args.fps)
            print(
                f"{camera:9s} {way:8s} false same {r['false_same']}/{r['text_differs_frames']}, "
                f"false changed {r['false_changed']}/{r['text_equal_frames']}, "
                f"caught {r['changes_caught']}/{r['changes']} (one char {r['one_char_caught']}/"
                f"{r['one_char_changes']}), {r['changed_per_s']} changed/s, "
                f"bait {r['bait_judged_changed']}/{r['bait_frames']}, cpu {r['cpu_ms']}",
                flush=True,
            )
    report["table_md"] = table(report)
    write_json(Path(args.out), report)
    print(report["table_md"])


if __name__ == "__main__":
    main()
