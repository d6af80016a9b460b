"""Frames/s of one model replica's pipeline for batch sizes 1..16 on this CPU.

    python -m bench.batching [--frames 32]

The same 640x480 label frames (distinct text each) read in batches of N by one
`TextReader` (the OCR replica's pipeline, config of configs/serve.yaml).
Writes docs/bench/batching.json.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from bench.common import ROOT, write_json
from serve_app.config import AppConfig
from serve_app.reader import TextReader


def label(i: int) -> np.ndarray:
    image = np.full((480, 640, 3), 240, np.uint8)
    for row, text in enumerate([f"LOT {48213 + i}", f"EXP 2027-0{1 + i % 9}-14", f"EUR {i % 90 + 7}.49"]):
        cv2.putText(image, text, (80, 150 + 90 * row), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (20, 20, 20), 3)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()
    config = AppConfig.from_file(ROOT / "configs" / "serve.yaml").ocr
    reader = TextReader(config)
    frames = [label(i) for i in range(args.frames)]
    reader.read(frames[:2])  # warm-up
    rows = {}
    for size in (1, 2, 4, 8, 16):
        start = time.perf_counter()
        for k in range(0, len(frames), size):
            reader.read(frames[k : k + size])
        rows[size] = round(len(frames) / (time.perf_counter() - start), 2)
    result = {
        "frames_per_s_by_batch_size": rows,
        "cpu_threads": config.cpu_threads,
        "engine": config.engine,
        "command": f"python -m bench.batching --frames {args.frames}",
    }
    write_json(ROOT / "docs" / "bench" / "batching.json", result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
