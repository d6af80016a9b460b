"""Burst: 3 streams at 4 fps, then 10x the streams for 15 s, then back to 3; every frame new text.

    python -m bench.burst                    # the service, real model (in-process Ray, running_app)
    python -m bench.burst --baseline         # then the design it replaces, same load, side by side
    python -m bench.burst --baseline-only    # only the old design (bench/baseline_server.py)
    python -m bench.burst --url http://127.0.0.1:8000 [--ray-address auto]   # a running `serve run`
    python -m bench.burst --phases 3x10,30x15,3x20,0x90 --out docs/bench/burst_autoscale.json \
        --app-args '{"ocr": {"deployment_config": {"autoscaling_config": {"max_replicas": 2}}}}'

Before the burst, in the same run: the unloaded single-frame latency (one
stream, one frame at a time). Then the schedule ``--phases`` (default
``3x10,30x15,3x10``: streams x seconds) at ``--fps`` per stream; after the
last phase every stream waits at most ``--drain-s`` for its answers and the
unanswered frames are reported. With Ray in this process, the RUNNING replicas
of each deployment are sampled once per second.

Writes docs/bench/burst.json (the keys ``service`` and ``baseline``; a run
updates only the ones it ran) and docs/bench/burst.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    ReplicaPoller,
    cpu_delta,
    ingress_gc_pauses,
    machine_info,
    process_cpu,
    running_app,
    summary,
    wait_for_no_ray,
    wait_healthy,
    write_json,
)
from bench.loadgen import (
    READ,
    LoadGen,
    LoadSpec,
    Phase,
    analyse,
    closed_loop_latency,
    frame_pool,
    print_totals,
)
from bench.plots import plot_runs

OUT = ROOT / "docs" / "bench"
WARMUP_FRAMES = 2


async def measure(url: str, args: argparse.Namespace, poller: ReplicaPoller | None) -> dict[str, Any]:
    """The single-frame latency, then the burst, against ``url``."""
    frames = frame_pool(args.pool, seed=args.seed)
    single = await closed_loop_latency(
        url, frame_pool(args.single_frames + WARMUP_FRAMES, seed=99), args.single_frames + WARMUP_FRAMES
    )
    single_ms = [
        (r.answered - r.sent) * 1000.0
        for r in single.streams[0].frames[WARMUP_FRAMES:]
        if r.answered is not None and r.outcome == READ
    ]
    spec = LoadSpec(
        url=url,
        phases=Phase.parse(args.phases),
        frames=frames,
        fps=args.fps,
        ping_interval_s=args.ping_s,
        drain_s=args.drain_s,
        stream_prefix="burst",
        seed=args.seed,
    )
    machine = machine_info()
    before = process_cpu()
    if poller is not None:
        poller.start()
    try:
        result = await LoadGen(spec).run()
        # Trailing phases without streams (e.g. ``0x90``): keep watching the replicas scale down.
        await asyncio.sleep(max(0.0, sum(p.duration_s for p in spec.phases) - result.wall_s))
    finally:
        replicas = poller.stop() if poller is not None else []
    analysis = analyse(result)
    analysis["machine_at_start"] = machine
    analysis["single_frame_ms"] = summary(single_ms)
    analysis["replicas"] = replicas
    if poller is not None and poller.error:
        analysis["replicas_error"] = poller.error
    analysis["cpu_s_by_process"] = cpu_delta(before, process_cpu())
    analysis["ingress_full_gc_over_100ms"] = ingress_gc_pauses()
    analysis["verdict"] = verdict(analysis)
    return analysis


def verdict(analysis: dict[str, Any]) -> dict[str, Any]:
    totals = analysis["totals"]
    single = analysis["single_frame_ms"]["p50"]
    p99 = totals["read_latency_ms"]["p99"]
    burst = max(analysis["phases"], key=lambda p: p["streams"])
    counts = totals["outcomes"]["counts"]
    return {
        "answered": f"{totals['answered']} of {totals['frames_sent']}",
        "every_frame_answered_exactly_once": totals["every_frame_answered_once"],
        "unanswered": totals["unanswered"],
        "connection_errors": totals["connection_errors"],
        "abnormal_closes": sum(totals["abnormal_closes"].values()),
        "single_frame_p50_ms": single,
        "read_p99_ms": p99,
        "read_p99_over_single": round(p99 / single, 1) if single and not math.isnan(p99) else None,
        "read_p99_within_3x_single": bool(p99 <= 3 * single) if single and not math.isnan(p99) else False,
        "jain_fairness_of_reads_in_burst": burst["jain_fairness_of_reads"],
        "reads_per_stream_in_burst": burst["reads_per_stream"],
        "burst_read_p99_ms": burst["read_latency_ms"]["p99"],
        "share": totals["outcomes"]["share"],
        "reads": counts.get(READ, 0),
        "ping_max_ms": totals["ping_rtt_ms"]["max"],
        "ping_max_within_100ms": bool(totals["ping_rtt_ms"]["max"] <= 100.0),
    }


@contextlib.contextmanager
def baseline_server(port: int, lifetime_s: float) -> Iterator[str]:
    """bench/baseline_server.py as a subprocess (stopped by SIGTERM, killed if it lingers)."""
    log = (Path(tempfile.gettempdir()) / "baseline_server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.baseline_server",
            "--port",
            str(port),
            "--max-lifetime-s",
            str(lifetime_s),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, timeout_s=180)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def run_service(args: argparse.Namespace) -> dict[str, Any]:
    if args.url:
        poller = None
        if args.ray_address:
            import ray

            ray.init(address=args.ray_address, log_to_driver=False, configure_logging=False)
            poller = ReplicaPoller()
        analysis = asyncio.run(measure(args.url, args, poller))
        analysis["target"] = f"{args.url} (a running service)"
        return analysis
    wait_for_no_ray()
    overrides = json.loads(args.app_args) if args.app_args else None
    with running_app(overrides, port=args.port) as url:
        analysis = asyncio.run(measure(url, args, ReplicaPoller()))
    analysis["target"] = "the service (configs/serve.yaml, real PaddleOCR model), in-process Ray"
    analysis["app_args_overrides"] = overrides
    return analysis


def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    phases = Phase.parse(args.phases)
    lifetime = 240 + sum(p.duration_s for p in phases) + 2 * args.drain_s
    with baseline_server(args.baseline_port, lifetime) as url:
        analysis = asyncio.run(measure(url, args, None))
    analysis["target"] = (
        "the design this replaces (bench/baseline_server.py: websockets, PaddleOCR in a "
        "thread pool of 2, 15 fps window)"
    )
    return analysis


def side_by_side(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key in ("service", "baseline"):
        if key in report:
            rows.append({"run": key, **report[key]["verdict"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phases", default="3x10,30x15,3x10", help="streams x seconds, comma-separated")
    parser.add_argument("--fps", type=float, default=4.0, help="frames/s of every stream")
    parser.add_argument("--single-frames", type=int, default=10, help="frames of the unloaded latency")
    parser.add_argument("--drain-s", type=float, default=30.0, help="max wait for answers after the load")
    parser.add_argument("--ping-s", type=float, default=1.0, help="ping period of every stream")
    parser.add_argument("--pool", type=int, default=600, help="distinct frames rendered")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=8123, help="port of the in-process service")
    parser.add_argument("--url", default=None, help="target a running service instead")
    parser.add_argument("--ray-address", default=None, help="with --url: Ray to poll replicas from")
    parser.add_argument("--baseline", action="store_true", help="also run the old design")
    parser.add_argument("--baseline-only", action="store_true")
    parser.add_argument("--baseline-port", type=int, default=8200)
    parser.add_argument("--out", type=Path, default=OUT / "burst.json")
    parser.add_argument(
        "--app-args", default=None, help="JSON merged into configs/serve.yaml's args (in-process service)"
    )
    args = parser.parse_args()

    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    command = "python -m bench.burst " + " ".join(sys.argv[1:])
    if not args.baseline_only:
        started = time.time()
        report["service"] = run_service(args) | {"command": command, "started": started}
        print_totals("service", report["service"])
    if args.baseline or args.baseline_only:
        started = time.time()
        report["baseline"] = run_baseline(args) | {"command": command, "started": started}
        print_totals("baseline", report["baseline"])
    report["side_by_side"] = side_by_side(report)
    write_json(args.out, report)
    runs = {k: report[k] for k in ("service", "baseline") if k in report}
    plot_runs(runs, args.out.with_suffix(".png"), f"Burst {args.phases} at {args.fps:g} fps per stream")
    print(json.dumps(report["side_by_side"], indent=2))


if __name__ == "__main__":
    main()
