"""The serving ceiling: frames/s the graph takes in, with the do-nothing stand-in model.

    python -m bench.ceiling [--seconds 10] [--variants plain,haproxy]

The model is the stand-in of bench/standin.py (answers every read at once):
this measures the serving path, never PaddleOCR. Frames are ~20 KB JPEGs,
each with new text. Three shapes, closed loop (a connection sends its next
frame when an answer frees a slot):

- 1 connection, 1 frame in flight
- 1 connection, 8 frames in flight
- 8 connections, 4 frames in flight each

each twice: with the stream at the configured maximum target rate
(``fps=30``: the sampler rate-skips every frame beyond 30/s of a stream, so
most frames of a fast stream are answered ``skipped``/``rate`` after one hop
and only ~30/s per stream cross to the model), and with every frame read
(``read_all``: the sampler's ``max_fps`` and the stream's ``fps`` raised to
10,000). The per-connection frame limits are raised for the run
(``APP_ARGS``), or ``rate_limited`` would cap them.

Variants: ``plain`` (the Serve proxy) and ``haproxy``
(``RAY_SERVE_ENABLE_HA_PROXY=1``); each runs in its own subprocess because
Serve reads the flag at import. Where the time goes: CPU seconds of every
process of the run (Ray workers by name, psutil) per answered frame.

Writes docs/bench/ceiling.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    cpu_delta,
    machine_info,
    process_cpu,
    running_app,
    wait_for_no_ray,
    write_json,
)
from bench.loadgen import READ, LoadGen, LoadSpec, Phase, analyse, sized_pool
from bench.standin import StandInModel

OUT = ROOT / "docs" / "bench"
SHAPES = ((1, 1), (1, 8), (8, 4))  # (connections, frames in flight per connection)
MODES = {"fps30": 30.0, "read_all": 10_000.0}  # the stream's fps query parameter
_LIMITS = {"frames_per_s": 10_000, "frames_burst": 10_000, "bytes_per_s": 1e9, "bytes_burst": 1e9}
APP_ARGS: dict[str, Any] = {
    "ingress": {"security": {"limits": _LIMITS}},
    "sampler": {"max_fps": 10_000.0},
}
VARIANT_ENV = {"plain": {}, "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"}}


async def shape(
    url: str, frames: list[bytes], conns: int, window: int, fps: float, seconds: float
) -> dict[str, Any]:
    spec = LoadSpec(
        url=url,
        phases=[Phase(conns, seconds)],
        frames=frames,
        window=window,
        stream_fps=fps,
        ping_interval_s=None,
        drain_s=10.0,
        stream_prefix=f"ceiling-{conns}x{window}-{fps:g}",
    )
    machine = machine_info()
    before = process_cpu()
    result = await LoadGen(spec).run()
    cpu = cpu_delta(before, process_cpu())
    totals = analyse(result)["totals"]
    answered = totals["answered"]
    reads = totals["outcomes"]["counts"].get(READ, 0)
    return {
        "connections": conns,
        "in_flight_per_connection": window,
        "stream_fps": fps,
        "seconds": seconds,
        "frames_per_s_answered": round(answered / seconds, 1),
        "frames_per_s_read": round(reads / seconds, 1),
        "share_read": round(reads / answered, 3) if answered else None,
        "outcomes": totals["outcomes"]["counts"],
        "answer_latency_ms": totals["answer_latency_ms"],
        "every_frame_answered_once": totals["every_frame_answered_once"],
        "connection_errors": totals["connection_errors"],
        "loadavg_1min_at_start": machine["loadavg_1min"],
        "cpu_s_by_process": cpu,
        "cpu_ms_per_answer": {k: round(v * 1000 / answered, 2) for k, v in cpu.items()} if answered else {},
        "cpu_ms_per_answer_total": round(sum(cpu.values()) * 1000 / answered, 2) if answered else None,
    }


async def all_shapes(url: str, seconds: float) -> list[dict[str, Any]]:
    frames = sized_pool(400, 20_000)
    rows = []
    for mode, fps in MODES.items():
        for conns, window in SHAPES:
            row = await shape(url, frames, conns, window, fps, seconds)
            row["mode"] = mode
            print(
                f"  {mode:8s} {conns} conn x {window} in flight: {row['frames_per_s_answered']} answered/s, "
                f"{row['frames_per_s_read']} read/s, {row['cpu_ms_per_answer_total']} ms CPU/answer",
                flush=True,
            )
            rows.append(row)
    return rows


def child(variant: str, seconds: float, port: int, out: Path) -> None:
    started = time.time()
    try:
        with running_app(APP_ARGS, model_cls=StandInModel, port=port) as url:
            rows = asyncio.run(all_shapes(url, seconds))
        result: dict[str, Any] = {"variant": variant, "rows": rows, "started": started}
    except Exception as exc:
        result = {"variant": variant, "error": f"{type(exc).__name__}: {exc}"[:500], "started": started}
    write_json(out, result)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per shape")
    parser.add_argument("--variants", default="plain,haproxy")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds, args.port, args.child_out)
        return

    variants: dict[str, Any] = {}
    for variant in args.variants.split(","):
        wait_for_no_ray()
        print(f"variant {variant}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "child.json"
            cmd = [sys.executable, "-m", "bench.ceiling", "--child", variant, "--child-out", str(out)]
            cmd += ["--seconds", str(args.seconds), "--port", str(args.port)]
            env = {**os.environ, **VARIANT_ENV[variant]}
            proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=600, check=False)
            variants[variant] = (
                json.loads(out.read_text()) if out.exists() else {"error": f"child exited {proc.returncode}"}
            )
    report = {
        "model": "do-nothing stand-in (bench/standin.py): the serving path only, no OCR",
        "frames": "640x480 JPEG labels, ~20 KB, new text in every frame",
        "app_args_overrides": APP_ARGS,
        "note": "fps30: the stream asks for the configured max (30 fps); frames above it are answered "
        "skipped/rate by the sampler. read_all: every frame crosses to the model.",
        "variants": variants,
        "command": "python -m bench.ceiling " + " ".join(sys.argv[1:]),
        "machine": machine_info() | {"note": "the load generator runs on the same cores as the service"},
    }
    write_json(OUT / "ceiling.json", report)
    for name, variant in variants.items():
        for row in variant.get("rows", []):
            print(
                name,
                row["mode"],
                f"{row['connections']}x{row['in_flight_per_connection']}",
                row["frames_per_s_answered"],
                row["share_read"],
                row["cpu_ms_per_answer_total"],
            )
        if "error" in variant:
            print(name, "error:", variant["error"])


if __name__ == "__main__":
    main()
