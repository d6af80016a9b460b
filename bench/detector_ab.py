"""The change detector's CPU against another version of it, side by side in one process.

    git worktree add /tmp/before <commit>
    python -m bench.detector_ab --before /tmp/before    # docs/bench/detector_ab.json

``serve_app/dedup.py`` of ``--before`` (a checkout of an older commit) is loaded
next to this one's; each camera of ``bench/camera.py`` with still text (every
frame compared with the first: the duplicate path), with the text boxes a read
gives and with none (a read that found no text: text-like regions found), the
two versions alternated ``--rounds`` times, best pass kept (``time.process_time``,
OpenCV on one thread). Alternating in one process makes the ratio trustworthy on
a machine whose speed moves from minute to minute. The verdicts of both versions
are compared frame by frame.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2

from bench.camera import SCENES, iter_scene
from bench.common import ROOT, machine_info, write_json
from serve_app import dedup
from serve_app.config import DedupConfig

OUT = ROOT / "docs" / "bench" / "detector_ab.json"
MAX_PIXELS = 40_000_000


def load_before(root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("dedup_before", root / "serve_app" / "dedup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def judge(detector: Any, prints: list[Any], boxes: list[list[list[int]]]) -> list[Any]:
    return [detector.compare(prints[0], fp, boxes) for fp in prints[1:]]


def compare_ms(detector: Any, prints: list[Any], boxes: list[list[list[int]]]) -> float:
    """CPU ms of one compare: every frame after the first against the first."""
    start = time.process_time()
    judge(detector, prints, boxes)
    return (time.process_time() - start) * 1000.0 / (len(prints) - 1)


def camera(before: ModuleType, scene: str, seconds: float, rounds: int) -> dict[str, Any]:
    frames = list(iter_scene(scene, seconds, seed=3, hold_s=(1000.0, 1000.0)))
    versions = {"before": before.ChangeDetector(DedupConfig()), "after": dedup.ChangeDetector(DedupConfig())}
    prints = {k: [d.fingerprint(f.jpeg, MAX_PIXELS) for f in frames] for k, d in versions.items()}
    out: dict[str, Any] = {"frames": len(frames), "lines": len(frames[0].boxes)}
    boxes = [[list(p) for p in box] for box in frames[0].boxes]
    for way, given in (("boxes", boxes), ("no_lines", [])):
        ms = dict.fromkeys(versions, float("inf"))
        for _ in range(rounds):
            for name, detector in versions.items():
                ms[name] = min(ms[name], compare_ms(detector, prints[name], given))
        verdicts = {k: [v.same for v in judge(d, prints[k], given)] for k, d in versions.items()}
        out[way] = {
            "compare_ms": {k: round(v, 3) for k, v in ms.items()},
            "judged_same": {k: sum(v) for k, v in verdicts.items()},
            "same_verdicts": verdicts["before"] == verdicts["after"],
        }
        print(f"{scene:9s} {way:8s} {out[way]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the older commit")
    parser.add_argument("--seconds", type=float, default=4.0, help="frames per camera / 30")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    before = load_before(args.before)
    report = {"command": " ".join(["python -m bench.detector_ab", *sys.argv[1:]]), "machine": machine_info()}
    report["cameras"] = {scene: camera(before, scene, args.seconds, args.rounds) for scene in SCENES}
    write_json(args.out, report)


if __name__ == "__main__":
    main()
