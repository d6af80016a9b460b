"""CPU per frame by path, and the serving ceiling, with model stand-ins (bench/standin.py).

    flock /tmp/ray.lock python -m bench.ceiling                      # all four parts (~7 min)
    flock /tmp/ray.lock python -m bench.ceiling --parts floor,paths --seconds 15
    flock /tmp/ray.lock python -m bench.ceiling --parts paths --seconds 15
    flock /tmp/ray.lock python -m bench.ceiling --parts streams --steps 8,16,24,32,40
    flock /tmp/ray.lock python -m bench.ceiling --parts gpu --gpu-steps 16,32,64
    python -m bench.ceiling --plot-only

The service is the real graph on Serve's Python proxy (what ``serve run
configs/serve.yaml`` ships), in this process' Ray (``running_app``), with a
model stand-in: these numbers measure the serving path, never PaddleOCR.
CPU is every process of the run but this one (the load generator): proxy,
replicas, raylet, gcs, controller, agents (``bench.common.process_cpu``),
minus what the same processes take idle (measured first, ``--idle-s``).

- ``floor``: the ``rate`` load of ``paths`` (below) against the stand-in
  ingress of bench/serving_paths.py (no sampler, no model: it answers every
  frame ``rate`` itself) on the same proxy path: what Serve's WebSocket path
  costs per message at this rate, before any of our code.
- ``paths`` (issue goal 2; ``StandInModel``, answers every read at once):
  ``--streams`` open-loop streams, one run per path: ``rate`` (30 fps, new
  text in every frame, ``fps=1``, and the ingress' ``compare_fps`` set to 1
  for this run through its live knobs: 29 of 30 frames answered ``rate``
  undecoded; with the default 15, half the frames would be decoded and
  compared first),
  ``duplicate`` (30 fps, a still label on the conveyor scene with camera
  noise, default settings) and ``read`` (new text in every frame, the
  stream's ``fps`` and the sampler's ``max_fps`` 10,000, at ``--read-fps``
  so that every frame is read, none superseded). Each run's frames are a
  mix; the cost of one outcome is solved in the order read, rate, duplicate:
  read = run CPU / frames; rate = (run CPU - reads x read) / the other
  frames; duplicate likewise minus reads and rate answers (``compare_fps``
  answers some still frames ``rate``).
- ``streams`` (goal 3, ``StandInModel``): N cameras at 30 fps, default
  settings, each looping a rendered conveyor scene (text changing every 4-12
  s: duplicates, rate skips and reads), N raised by ``--steps`` until the
  answers fall behind (answer p99 over 300 ms, a frame unanswered, or fewer
  answered than sent).
- ``gpu`` (goal 3, ``GPUShapedModel``: a batch of up to 16 in ~25 ms,
  sleeping): N streams, every frame new and read, closed loop (each stream
  sends its next frame when the last is answered); reads/s by N.

Writes docs/bench/ceiling.json (the parts run replace theirs) and docs/bench/ceiling.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from bench.camera import iter_scene
from bench.cameras import short_name
from bench.common import (
    ROOT,
    cpu_delta,
    machine_info,
    process_cpu,
    running_app,
    wait_for_no_ray,
    write_json,
)
from bench.loadgen import READ, LoadGen, LoadSpec, Phase, analyse, frame_pool
from bench.serving_paths import PATHS as SERVING_PATHS
from bench.serving_paths import paths_app
from bench.standin import GPUShapedModel, StandInModel
from serve_app.config import SamplerConfig, _merged

OUT = ROOT / "docs" / "bench" / "ceiling.json"
LOADGEN = "benchmark (this process)"
FPS = 30.0
BEHIND_P99_MS = 300.0
_LIMITS = {"frames_per_s": 10_000, "frames_burst": 10_000, "bytes_per_s": 1e9, "bytes_burst": 1e9}
APP_ARGS: dict[str, Any] = {
    "ingress": {"security": {"limits": _LIMITS}},
    "sampler": {"max_fps": 10_000.0},
}
# gpu: as a GPU deployment is configured (configs/serve.gpu.yaml): the model's batch, two batches in flight.
PART_APP_ARGS: dict[str, dict[str, Any]] = {
    "gpu": {
        "ocr": {"max_batch_size": GPUShapedModel.MAX_BATCH},
        "sampler": {"max_reads_in_flight": 2 * GPUShapedModel.MAX_BATCH},
    }
}
RATE, DUPLICATE = "skipped:rate", "skipped:duplicate"
PATHS = ("read", "rate", "duplicate")
GOALS_MS = {"rate": 0.5, "duplicate": 3.0, "read": 5.0}


def still_label(seconds: float) -> list[bytes]:
    return [f.jpeg for f in iter_scene("conveyor", seconds, fps=FPS, seed=7, hold_s=(1000.0, 1000.0))]


def camera_loop(seconds: float) -> list[bytes]:
    return [f.jpeg for f in iter_scene("conveyor", seconds, fps=FPS, seed=3, hold_s=(4.0, 12.0))]


def service_cpu(cpu: dict[str, float]) -> dict[str, float]:
    """CPU seconds by short process name, the load generator (this process) left out."""
    out: dict[str, float] = defaultdict(float)
    for name, seconds in cpu.items():
        if name != LOADGEN:
            out[short_name(name)] += seconds
    return dict(out)


async def idle_rate(seconds: float) -> dict[str, float]:
    """CPU seconds per second of each service process with no stream open."""
    before = process_cpu()
    start = time.monotonic()
    await asyncio.sleep(seconds)
    cpu = service_cpu(cpu_delta(before, process_cpu()))
    wall = time.monotonic() - start
    return {k: round(v / wall, 4) for k, v in cpu.items()}


async def load(spec: LoadSpec, idle: dict[str, float]) -> dict[str, Any]:
    """One run: totals, and CPU seconds by process above idle (``cpu_s``), and the load generator's."""
    machine = machine_info()
    before = process_cpu()
    start = time.monotonic()
    result = await LoadGen(spec).run()
    wall = time.monotonic() - start
    raw = cpu_delta(before, process_cpu())
    cpu = {k: round(v - idle.get(k, 0.0) * wall, 3) for k, v in service_cpu(raw).items()}
    totals = analyse(result)["totals"]
    return {
        "loadavg_1min_at_start": machine["loadavg_1min"],
        "wall_s": round(wall, 1),
        "frames_sent": totals["frames_sent"],
        "answered": totals["answered"],
        "every_frame_answered_once": totals["every_frame_answered_once"],
        "outcomes": totals["outcomes"]["counts"],
        "answer_latency_ms": totals["answer_latency_ms"],
        "read_latency_ms": totals["read_latency_ms"],
        "server_timing_of_reads_ms": totals["server_timing_of_reads_ms"],
        "connection_errors": totals["connection_errors"],
        "cpu_s_above_idle": dict(sorted(cpu.items(), key=lambda kv: -kv[1])),
        "load_generator_cpu_s": round(raw.get(LOADGEN, 0.0), 3),
    }


def spec(url: str, frames: list[bytes], streams: int, seconds: float, prefix: str, **kw: Any) -> LoadSpec:
    return LoadSpec(
        url=url,
        phases=[Phase(streams, seconds)],
        frames=frames,
        ping_interval_s=None,
        drain_s=10.0,
        stream_prefix=prefix,
        **kw,
    )


def per_frame(cpu: dict[str, float], frames: float) -> dict[str, float]:
    return {k: round(v * 1000.0 / frames, 3) for k, v in cpu.items()} if frames > 0 else {}


def rate_spec(url: str, frames: list[bytes], args: argparse.Namespace) -> LoadSpec:
    return spec(url, frames, args.streams, args.seconds, "path-rate", fps=FPS, stream_fps=1.0)


async def floor(url: str, args: argparse.Namespace) -> dict[str, Any]:
    idle = await idle_rate(args.idle_s)
    row = await load(rate_spec(url, frame_pool(300, seed=1), args), idle)
    n = row["answered"]
    row["cpu_ms_per_frame_by_process"] = per_frame(row["cpu_s_above_idle"], n)
    row["cpu_ms_per_frame"] = round(sum(row["cpu_s_above_idle"].values()) * 1000.0 / n, 3) if n else None
    print(
        f"  floor: {row['cpu_ms_per_frame']} ms CPU/frame; {row['cpu_ms_per_frame_by_process']}", flush=True
    )
    return {"idle_cpu_s_per_s": idle, "streams": args.streams, "fps": FPS, "rate": row}


async def paths(url: str, args: argparse.Namespace) -> dict[str, Any]:
    idle = await idle_rate(args.idle_s)
    new_text = frame_pool(300, seed=1)
    runs = {
        "read": spec(
            url, new_text, args.streams, args.seconds, "path-read", fps=args.read_fps, stream_fps=1e4
        ),
        "duplicate": spec(url, still_label(10.0), args.streams, args.seconds, "path-dup", fps=FPS),
        "rate": rate_spec(url, new_text, args),
    }
    out: dict[str, Any] = {"idle_cpu_s_per_s": idle, "streams": args.streams, "fps": FPS}
    out["read_fps"] = args.read_fps
    cost: dict[str, float] = {}  # ms of CPU per frame of each outcome, solved in PATHS order
    sampling = _merged(APP_ARGS, json.loads(args.app_args)).get("sampler", {})
    compare_fps = sampling.get("compare_fps", SamplerConfig().compare_fps)  # the app's, restored after `rate`
    for path in PATHS:
        await _ingress_knobs({"compare_fps": 1.0 if path == "rate" else compare_fps})
        row = await load(runs[path], idle)
        n = row["answered"]
        counts = row["outcomes"]
        total_ms = sum(row["cpu_s_above_idle"].values()) * 1000.0
        known = {READ: cost.get("read"), RATE: cost.get("rate"), DUPLICATE: cost.get("duplicate")}
        others_ms = sum(counts.get(o, 0) * c for o, c in known.items() if c is not None and o != _key(path))
        others_n = sum(counts.get(o, 0) for o, c in known.items() if c is not None and o != _key(path))
        cost[path] = (total_ms - others_ms) / (n - others_n) if n > others_n else float("nan")
        row["cpu_ms_per_frame_by_process"] = per_frame(row["cpu_s_above_idle"], n)
        row["cpu_ms_per_frame"] = round(total_ms / n, 3) if n else None
        row["cpu_ms_per_" + path] = round(cost[path], 3)
        row["goal_ms"] = GOALS_MS[path]
        out[path] = row
        print(
            f"  {path:9s} {n} frames {counts}: {row['cpu_ms_per_frame']} ms CPU/frame, "
            f"{cost[path]:.2f} ms per {path}; {row['cpu_ms_per_frame_by_process']}",
            flush=True,
        )
    return out


async def _ingress_knobs(changes: dict[str, Any]) -> None:
    """The ingress replica's live sampling knobs, set as a ``user_config`` update sets them."""
    from ray import serve

    await serve.get_deployment_handle("StreamIngress", "ocr").reconfigure.remote(changes)


def _key(path: str) -> str:
    return {"read": READ, "duplicate": DUPLICATE, "rate": RATE}[path]


def behind(row: dict[str, Any]) -> bool:
    return (
        row["answered"] < row["frames_sent"]
        or not row["every_frame_answered_once"]
        or row["answer_latency_ms"]["p99"] > BEHIND_P99_MS
    )


async def streams(url: str, args: argparse.Namespace) -> dict[str, Any]:
    idle = await idle_rate(args.idle_s)
    frames = camera_loop(args.loop_s)
    steps = []
    for n in (int(s) for s in args.steps.split(",")):
        row = await load(spec(url, frames, n, args.seconds, f"cam{n}", fps=FPS), idle)
        row |= {
            "streams": n,
            "frames_per_s_sent": round(row["frames_sent"] / args.seconds, 1),
            "frames_per_s_answered": round(row["answered"] / args.seconds, 1),
            "cpu_ms_per_frame": round(sum(row["cpu_s_above_idle"].values()) * 1000.0 / row["answered"], 3)
            if row["answered"]
            else None,
            "behind": behind(row),
        }
        steps.append(row)
        print(
            f"  {n} streams: {row['frames_per_s_answered']}/s answered of {row['frames_per_s_sent']}/s, "
            f"answer p99 {row['answer_latency_ms']['p99']} ms, {row['outcomes']}, "
            f"{row['cpu_ms_per_frame']} ms CPU/frame, behind: {row['behind']}",
            flush=True,
        )
        if row["behind"]:
            break
    held = [s for s in steps if not s["behind"]]
    return {
        "idle_cpu_s_per_s": idle,
        "steps": steps,
        "ceiling_frames_per_s": max((s["frames_per_s_answered"] for s in held), default=0.0),
        "goal_frames_per_s": 1000,
    }


async def gpu(url: str, args: argparse.Namespace) -> dict[str, Any]:
    idle = await idle_rate(args.idle_s)
    frames = frame_pool(400, seed=2)
    steps = []
    for n in (int(s) for s in args.gpu_steps.split(",")):
        run = spec(url, frames, n, args.seconds, f"gpu{n}", window=1, stream_fps=10_000.0)
        row = await load(run, idle)
        reads = row["outcomes"].get(READ, 0)
        row |= {"streams": n, "reads_per_s": round(reads / args.seconds, 1)}
        steps.append(row)
        print(
            f"  {n} streams: {row['reads_per_s']} reads/s, read p50/p99 {row['read_latency_ms']['p50']}/"
            f"{row['read_latency_ms']['p99']} ms, server {row['server_timing_of_reads_ms']}, "
            f"CPU {row['cpu_s_above_idle']}",
            flush=True,
        )
    return {
        "idle_cpu_s_per_s": idle,
        "steps": steps,
        "best_reads_per_s": max((s["reads_per_s"] for s in steps), default=0.0),
        "goal_reads_per_s": 200,
    }


@contextmanager
def floor_app(port: int, overrides: dict[str, Any]) -> Iterator[str]:
    with paths_app(SERVING_PATHS["proxy"], port) as app:
        yield app["urls"]["port_8000"]


def service(
    model_cls: type, app_args: dict[str, Any] | None = None
) -> Callable[[int, dict[str, Any]], AbstractContextManager[str]]:
    base = _merged(APP_ARGS, app_args or {})
    return lambda port, overrides: running_app(_merged(base, overrides), model_cls=model_cls, port=port)


PARTS: dict[str, tuple[str, Callable[[int, dict[str, Any]], AbstractContextManager[str]], Any]] = {
    "floor": ("StandInIngress (bench/serving_paths.py): answers every frame itself", floor_app, floor),
    "paths": ("StandInModel (bench/standin.py)", service(StandInModel), paths),
    "streams": ("StandInModel (bench/standin.py)", service(StandInModel), streams),
    "gpu": ("GPUShapedModel (bench/standin.py)", service(GPUShapedModel, PART_APP_ARGS["gpu"]), gpu),
}


MAIN_PROCESSES = ("proxy", "StreamIngress", "FrameSampler", "OCRModel", "raylet", "gcs")
OTHER = "other Ray processes"


def grouped(cpu: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for name, seconds in cpu.items():
        out[name if name in MAIN_PROCESSES else OTHER] += seconds
    return dict(out)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = {k: v for k, v in report.items() if isinstance(v, dict) and "error" not in v}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    if "paths" in report:
        bottom = [0.0] * len(PATHS)
        for proc in (*MAIN_PROCESSES, OTHER):
            values = []
            for k in PATHS:
                row = report["paths"][k]
                cpu = grouped(row["cpu_s_above_idle"])
                share = cpu.get(proc, 0.0) / max(sum(cpu.values()), 1e-9)
                values.append(max(0.0, share * row["cpu_ms_per_" + k]))
            ax.bar(PATHS, values, bottom=bottom, label=proc)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.scatter(PATHS, [GOALS_MS[k] for k in PATHS], marker="_", s=900, color="red", label="goal")
        if "floor" in report:
            floor_ms = report["floor"]["rate"]["cpu_ms_per_frame"]
            ax.axhline(floor_ms, color="black", ls="--", lw=0.8, label="Serve proxy path alone")
        ax.set_ylabel("ms of CPU per frame (whole service)")
        ax.set_title("CPU per frame by path (stand-in model)")
        ax.legend(fontsize=7)
    ax = axes[1]
    if "streams" in report:
        steps = report["streams"]["steps"]
        xs = [s["streams"] for s in steps]
        ax.plot(xs, [s["frames_per_s_sent"] for s in steps], "o--", label="sent/s")
        ax.plot(xs, [s["frames_per_s_answered"] for s in steps], "o-", label="answered/s")
        ax.axhline(1000, color="red", lw=0.8, label="goal 1,000/s")
        twin = ax.twinx()
        twin.plot(xs, [s["answer_latency_ms"]["p99"] for s in steps], "s:", color="grey", label="answer p99")
        twin.set_ylabel("answer p99 (ms)")
        ax.set_xlabel("30 fps camera streams")
        ax.set_ylabel("frames/s")
        ax.set_title("Ceiling: camera streams, stand-in model")
        ax.legend(fontsize=7, loc="upper left")
    ax = axes[2]
    if "gpu" in report:
        steps = report["gpu"]["steps"]
        xs = [s["streams"] for s in steps]
        ax.plot(xs, [s["reads_per_s"] for s in steps], "o-", label="reads/s")
        ax.axhline(200, color="red", lw=0.8, label="goal 200/s")
        ax.set_xlabel("streams, every frame new, 1 in flight each")
        ax.set_ylabel("reads/s")
        ax.set_title("GPU-shaped stand-in (16 per ~25 ms)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="floor,paths,streams,gpu")
    parser.add_argument("--seconds", type=float, default=15.0, help="per run / step")
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle CPU measured first")
    parser.add_argument("--streams", type=int, default=4, help="paths: streams at 30 fps")
    parser.add_argument("--read-fps", type=float, default=5.0, help="paths: fps of the read run's streams")
    parser.add_argument("--steps", default="8,16,24,32,40,48", help="streams: camera streams per step")
    parser.add_argument("--loop-s", type=float, default=20.0, help="streams: seconds of the camera loop")
    parser.add_argument("--gpu-steps", default="16,32,64", help="gpu: streams per step")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--app-args", default="{}", help="JSON merged into APP_ARGS (diagnostic runs)")
    args = parser.parse_args()

    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    if not args.plot_only:
        report = {k: v for k, v in report.items() if k in PARTS}  # drop the old layout's keys
        for part in args.parts.split(","):
            model, app, measure = PARTS[part]
            wait_for_no_ray()
            print(f"part {part}", flush=True)
            started = time.time()
            overrides = json.loads(args.app_args)
            try:
                with app(args.port, overrides) as url:
                    result = asyncio.run(measure(url, args))
            except Exception as exc:  # a part that cannot start says so; the other parts still run
                result = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            report[part] = result | {
                "model": f"{model}: a stand-in, not PaddleOCR",
                "command": "python -m bench.ceiling " + " ".join(sys.argv[1:]),
                "app_args_overrides": _merged(_merged(APP_ARGS, PART_APP_ARGS.get(part, {})), overrides),
                "started": started,
                "machine": machine_info(),
            }
            write_json(args.out, report)
    plot(report, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
