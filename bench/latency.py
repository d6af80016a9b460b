"""Single-frame latency: through the WebSocket vs the OCR pipeline called directly.

    python -m bench.latency [--reps 5]

The same frames (a 640x480 label and the test images of tests/data/images),
one at a time, each read (consecutive frames differ, so dedup never skips
one). Writes docs/bench/latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import cv2
import numpy as np
import websockets

from bench.common import ROOT, running_app, summary, write_json
from serve_app.protocol import encode_binary_frame

IMAGES = ROOT / "tests" / "data" / "images"


def label_jpeg() -> bytes:
    image = np.full((480, 640, 3), 235, np.uint8)
    cv2.rectangle(image, (60, 90), (580, 390), (250, 250, 250), -1)
    for i, text in enumerate(["ACME COFFEE 500g", "LOT 48213", "EXP 2027-03-14", "EUR 7.49"]):
        cv2.putText(image, text, (90, 160 + 65 * i), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (20, 20, 20), 3)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def frames() -> list[tuple[str, bytes]]:
    images = sorted((p.name, p.read_bytes()) for p in IMAGES.iterdir())
    return [("label_640x480.jpg", label_jpeg()), *images]


def direct(reps: int) -> dict[str, list[float]]:
    from serve_app.config import AppConfig
    from serve_app.images import decode_bgr
    from serve_app.reader import TextReader

    config = AppConfig.from_file(ROOT / "configs" / "serve.yaml")
    reader = TextReader(config.ocr)
    out: dict[str, list[float]] = {}
    for _ in range(reps + 1):
        for name, data in frames():
            start = time.perf_counter()
            reader.read([decode_bgr(data, config.ingress.max_pixels)])
            out.setdefault(name, []).append((time.perf_counter() - start) * 1000)
    return {k: v[1:] for k, v in out.items()}  # the first pass warms up


async def through_websocket(url: str, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    async with websockets.connect(url.replace("http", "ws") + "/v1/stream?fps=30", max_size=None) as ws:
        frame_id = 0
        for _ in range(reps + 1):
            for name, data in frames():
                start = time.perf_counter()
                await ws.send(encode_binary_frame(frame_id, data, ts=float(frame_id)))
                answer = json.loads(await ws.recv())
                assert answer.get("status") == "ok", answer
                out.setdefault(name, []).append((time.perf_counter() - start) * 1000)
                frame_id += 1
    return {k: v[1:] for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    d = direct(args.reps)
    with running_app() as url:
        w = asyncio.run(through_websocket(url, args.reps))
    rows = {name: {"direct_ms": summary(d[name]), "websocket_ms": summary(w[name])} for name in d}
    every_d = [x for v in d.values() for x in v]
    every_w = [x for v in w.values() for x in v]
    result = {
        "per_image": rows,
        "all": {"direct_ms": summary(every_d), "websocket_ms": summary(every_w)},
        "ratio_p50": round(float(np.median(every_w)) / float(np.median(every_d)), 3),
        "command": f"python -m bench.latency --reps {args.reps}",
    }
    write_json(ROOT / "docs" / "bench" / "latency.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
