"""PaddleOCR engines on this CPU, same weights, same frames: which is the default and why.

    python -m bench.engines [--reps 5]

Writes docs/bench/engines.json: per image p50 ms for each engine (and
ONNX Runtime with 1 and 2 threads), start-up time, and whether the texts agree.
"""

from __future__ import annotations

import argparse
import json
import time

from bench.common import ROOT, summary, write_json
from bench.latency import frames
from serve_app.config import OCRConfig
from serve_app.images import decode_bgr
from serve_app.reader import TextReader

VARIANTS = {
    "onnxruntime, 2 threads": OCRConfig(engine="onnxruntime", cpu_threads=2),
    "onnxruntime, 1 thread": OCRConfig(engine="onnxruntime", cpu_threads=1),
    "paddle_static (oneDNN), 2 threads": OCRConfig(engine="paddle_static", cpu_threads=2),
    "paddle_static (oneDNN), 1 thread": OCRConfig(engine="paddle_static", cpu_threads=1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    images = [(name, decode_bgr(data, 10**8)) for name, data in frames()]
    result: dict[str, dict] = {}
    texts: dict[str, dict[str, list[str]]] = {}
    for variant, config in VARIANTS.items():
        start = time.perf_counter()
        reader = TextReader(config)
        startup_s = time.perf_counter() - start
        reader.read([images[0][1]])  # warm-up
        per_image = {}
        for name, image in images:
            times = []
            for _ in range(args.reps):
                t = time.perf_counter()
                lines = reader.read([image])[0]
                times.append((time.perf_counter() - t) * 1000)
            per_image[name] = summary(times)["p50"]
            texts.setdefault(variant, {})[name] = [line.text for line in lines]
        result[variant] = {
            "startup_s": round(startup_s, 2),
            "p50_ms": per_image,
            "sum_p50_ms": round(sum(per_image.values()), 1),
        }
    baseline = next(iter(texts.values()))
    out = {
        "engines": result,
        "same_text_everywhere": all(t == baseline for t in texts.values()),
        "command": f"python -m bench.engines --reps {args.reps}",
    }
    write_json(ROOT / "docs" / "bench" / "engines.json", out)
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
