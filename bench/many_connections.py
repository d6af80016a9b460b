"""Many connections: K mostly idle streams, opened gradually, held; how many with p99 bounded?

    flock /tmp/ray.lock python -m bench.many_connections --steps 500,1000,2000,5000 --frame-interval 30
    python -m bench.many_connections --target 5000         # one step: stand-in model, 1 frame/s per stream
    python -m bench.many_connections --real-model          # PaddleOCR instead of the stand-in
    python -m bench.many_connections --app-args '{"ingress": {...}}'   # settings merged into APP_ARGS

Opens streams at ``--ramp`` a second up to each of ``--steps`` in turn (or
``--target``), holding each step ``--hold`` seconds. Before the load, the
single frame: ``PROBE_STREAMS`` new streams, one after the other, each send
one frame (its first, so it is read) and the read time (send -> answer) is
taken. In the middle of each step's hold, the same probe: a step holds when
the probe's read p50 is within 2x the single frame's and every stream of the
step is open; after the first step that fails, no more streams are opened
(the open ones are held to the end of the schedule). Every stream sends one
small JPEG (160x120, new text each time) every ``--frame-interval`` seconds;
every ``--ping-every``-th stream pings once a second. Without ``--steps``:
when the read latency p99 (frames answered in the last 3 s) stays over
``--bound-ms`` for 3 s, no more streams are opened (``--no-stop`` keeps
ramping) and the streams open so far are held; with ``--steps`` that breach
is only recorded.

By default the model is the do-nothing stand-in (bench/standin.py): this
measures the serving path, not PaddleOCR. All clients are tenant
``anonymous`` (auth off), so the per-tenant connection limit and the ingress'
``max_ongoing_requests`` are raised for the run (``APP_ARGS``) and reported.

Writes docs/bench/many_connections.json (one key per ``--label``) and
docs/bench/many_connections_<label>.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from bench.common import (
    ROOT,
    cpu_delta,
    ingress_gc_pauses,
    machine_info,
    percentile,
    process_cpu,
    raise_nofile,
    running_app,
    summary,
    wait_for_no_ray,
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
    phase_bounds,
    print_totals,
)
from bench.plots import plot_runs
from bench.standin import StandInModel
from serve_app.config import _merged

OUT = ROOT / "docs" / "bench"
APP_ARGS: dict[str, Any] = {
    "ingress": {
        "security": {"limits": {"max_connections_per_tenant": 20_000}},
        "deployment_config": {"max_ongoing_requests": 10_000},
    }
}
WINDOW_S = 3.0
PROBE_STREAMS = 5


class BreachWatch:
    """Stops opening streams once the recent read p99 stays over the bound for ``patience`` ticks."""

    def __init__(self, bound_ms: float, patience: int = 3, enabled: bool = True) -> None:
        self.bound_ms = bound_ms
        self.patience = patience
        self.enabled = enabled
        self.over = 0
        self.breached_at: float | None = None
        self.connections_at_breach: int | None = None

    def __call__(self, gen: LoadGen) -> None:
        now = gen.now()
        recent = [
            (r.answered - r.sent) * 1000.0
            for s in gen.stats
            for r in s.frames[-int(WINDOW_S * 4) - 2 :]
            if r.answered is not None and r.outcome == READ and now - r.answered <= WINDOW_S
        ]
        self.over = self.over + 1 if recent and percentile(recent, 99) > self.bound_ms else 0
        if self.over >= self.patience and self.breached_at is None:
            self.breached_at = round(now, 1)
            self.connections_at_breach = gen.open_connections
            if self.enabled:
                gen.stop_opening()


def held(analysis: dict[str, Any], bound_ms: float) -> dict[str, Any]:
    """The most connections open in a second whose read p99 was within the bound (before any breach)."""
    best, first_breach = 0, None
    for row in analysis["timeseries"]:
        p99 = row["read_p99_ms"]
        if p99 is not None and p99 > bound_ms:
            first_breach = row["t"]
            break
        best = max(best, row["open_connections"])
    return {"max_connections_with_read_p99_within_bound": best, "first_second_over_bound": first_breach}


def hold_stats(analysis: dict[str, Any], since: float) -> dict[str, Any]:
    rows = [r for r in analysis["timeseries"] if r["t"] >= since and r["sent"]]
    p99s = [r["read_p99_ms"] for r in rows if r["read_p99_ms"] is not None]
    pings = [r["ping_max_ms"] for r in rows if r["ping_max_ms"] is not None]
    return {
        "from_s": since,
        "seconds": len(rows),
        "open_connections": max((r["open_connections"] for r in rows), default=0),
        "frames_per_s": round(sum(r["sent"] for r in rows) / len(rows), 1) if rows else 0,
        "worst_second_read_p99_ms": max(p99s, default=None),
        "worst_second_ping_max_ms": max(pings, default=None),
    }


def steps_phases(steps: list[int], ramp: float, hold: float) -> list[Phase]:
    previous, phases = 0, []
    for n in steps:
        phases.append(Phase(n, (n - previous) / ramp + hold, ramp_per_s=ramp))
        previous = n
    return phases


async def probe(url: str, frames: list[bytes]) -> dict[str, Any]:
    """New streams one after the other, one frame each (``frames[i]``): its read latency."""
    ms, outcomes = [], []
    for image in frames[:PROBE_STREAMS]:
        records = [r for s in (await closed_loop_latency(url, [image], 1)).streams for r in s.frames]
        if not records:  # the connection failed: no frame was sent
            outcomes.append("connection_error")
            continue
        outcomes.append(records[0].outcome)
        if records[0].answered is not None and records[0].outcome == READ:
            ms.append((records[0].answered - records[0].sent) * 1000.0)
    return {"read_ms": summary(ms), "outcomes": outcomes}


async def step_probes(
    url: str, frames: list[bytes], gen: LoadGen, steps: list[int], hold: float, single_ms: float
) -> list[dict[str, Any]]:
    """One probe in the middle of each step's hold; the first step that fails stops the opening."""
    out = []
    for n, (_, end) in zip(steps, phase_bounds(gen.spec.phases), strict=True):
        await asyncio.sleep(max(0.0, end - hold / 2 - gen.now()))
        if gen.stopped_opening_at is not None:
            break
        row = await probe(url, frames)
        out.append({"streams": n, "open_connections": gen.open_connections, "t": round(gen.now(), 1), **row})
        if not (
            row["read_ms"]["n"] and row["read_ms"]["p50"] <= 2.0 * single_ms and gen.open_connections >= n
        ):
            gen.stop_opening()
    return out


def step_verdicts(
    analysis: dict[str, Any], probes: list[dict[str, Any]], single_ms: float, steps: list[int]
) -> list[dict[str, Any]]:
    out = []
    for n, phase in zip(steps, analysis["phases"], strict=True):
        found = [p for p in probes if p["streams"] == n]
        p50 = found[0]["read_ms"]["p50"] if found and found[0]["read_ms"]["n"] else None
        start, end = phase["window_s"]
        seconds = [r["open_connections"] for r in analysis["timeseries"] if start <= r["t"] < end]
        opened = max(seconds, default=0)
        ratio = round(p50 / single_ms, 2) if p50 is not None and single_ms else None
        holds = bool(ratio is not None and ratio <= 2.0 and opened >= n)
        out.append(
            {
                "streams": n,
                "open_connections_max": opened,
                "new_stream_read_p50_ms": p50,
                "over_single_frame": ratio,
                "read_latency_ms": phase["read_latency_ms"],
                "outcomes": phase["outcomes"]["counts"],
                "holds": holds,
            }
        )
    return out


def idle_streams(url: str, phases: list[Phase], args: argparse.Namespace, *, prefix: str) -> LoadSpec:
    """Mostly idle streams: a small JPEG (new text) every ``args.frame_interval`` seconds each, every
    ``args.ping_every``-th pinging once a second."""
    return LoadSpec(
        url=url,
        phases=phases,
        frames=frame_pool(args.pool, width=160, height=120, quality=80, seed=args.seed),
        fps=1.0 / args.frame_interval,
        ping_interval_s=1.0,
        ping_every_nth=args.ping_every,
        drain_s=args.drain_s,
        open_timeout_s=60.0,
        stream_prefix=prefix,
        seed=args.seed,
    )


async def measure(url: str, args: argparse.Namespace, watch: BreachWatch) -> dict[str, Any]:
    steps = [int(s) for s in args.steps.split(",")] if args.steps else [args.target]
    probe_frames = frame_pool(PROBE_STREAMS, width=160, height=120, quality=80, seed=99)
    single = await probe(url, probe_frames)
    spec = idle_streams(url, steps_phases(steps, args.ramp, args.hold), args, prefix="many")
    machine = machine_info()
    before = process_cpu()
    gen = LoadGen(spec)
    running = asyncio.create_task(gen.run(monitor=watch))
    await asyncio.sleep(0)  # the run has started its clock
    probes = await step_probes(url, probe_frames, gen, steps, args.hold, single["read_ms"]["p50"])
    result = await running
    analysis = analyse(result)
    analysis["machine_at_start"] = machine
    analysis.pop("per_stream")  # thousands of rows; the totals say it
    analysis["cpu_s_by_process"] = cpu_delta(before, process_cpu())
    ramp_end = sum(p.duration_s for p in spec.phases) - args.hold
    hold_from = min(ramp_end, result.stopped_opening_at or ramp_end)
    single_ms = single["read_ms"]["p50"]
    verdicts = step_verdicts(analysis, probes, single_ms, steps)
    analysis["single_frame"] = single
    analysis["probes"] = probes
    analysis["steps"] = verdicts
    analysis["result"] = {
        "most_streams_held": max((v["streams"] for v in verdicts if v["holds"]), default=0),
        "single_frame_read_p50_ms": single_ms,
        **held(analysis, args.bound_ms),
        "bound_ms": args.bound_ms,
        "target_connections": steps[-1],
        "stopped_opening_at_s": result.stopped_opening_at,
        "connections_at_breach": watch.connections_at_breach,
        "hold": hold_stats(analysis, hold_from),
        "connection_errors": analysis["totals"]["connection_errors"],
        "abnormal_closes": analysis["totals"]["abnormal_closes"],
        "read_latency_ms": analysis["totals"]["read_latency_ms"],
        "ping_rtt_ms": analysis["totals"]["ping_rtt_ms"],
        "every_frame_answered_once": analysis["totals"]["every_frame_answered_once"],
        "ingress_full_gc_over_100ms": ingress_gc_pauses(),
    }
    return analysis


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", type=int, default=5000, help="connections to open (one step)")
    parser.add_argument("--steps", default=None, help="connections per step, e.g. 500,1000,2000,5000")
    parser.add_argument("--ramp", type=float, default=500.0, help="connections opened per second")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds held after the ramp")
    parser.add_argument(
        "--frame-interval", type=float, default=1.0, help="seconds between frames of a stream"
    )
    parser.add_argument("--bound-ms", type=float, default=1000.0, help="read p99 bound")
    parser.add_argument("--no-stop", action="store_true", help="keep opening after the bound is exceeded")
    parser.add_argument("--ping-every", type=int, default=50, help="every n-th stream pings once a second")
    parser.add_argument("--drain-s", type=float, default=20.0)
    parser.add_argument("--pool", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--real-model", action="store_true", help="PaddleOCR instead of the stand-in")
    parser.add_argument("--label", default=None, help="key in the JSON (default from the settings)")
    parser.add_argument("--app-args", default="{}", help="JSON merged into APP_ARGS (the ingress' scaling)")
    args = parser.parse_args()
    app_args = _merged(APP_ARGS, json.loads(args.app_args))

    label = args.label or f"{'real' if args.real_model else 'standin'}_every_{args.frame_interval:g}s"
    most = max(int(s) for s in args.steps.split(",")) if args.steps else args.target
    nofile = raise_nofile(4 * most + 4096)  # before Ray starts: its workers inherit it
    wait_for_no_ray()
    model_cls = None
    if not args.real_model:
        model_cls = StandInModel
    watch = BreachWatch(args.bound_ms, enabled=not (args.no_stop or args.steps))
    started = time.time()
    with running_app(app_args, model_cls=model_cls, port=args.port) as url:
        analysis = asyncio.run(measure(url, args, watch))
    analysis["model"] = (
        "PaddleOCR (real)" if args.real_model else "do-nothing stand-in (bench/standin.py): serving path only"
    )
    analysis["app_args_overrides"] = app_args
    analysis["rlimit_nofile"] = nofile
    analysis["command"] = "python -m bench.many_connections " + " ".join(sys.argv[1:])
    analysis["started"] = started
    print_totals(label, analysis)
    print(json.dumps(analysis["result"], indent=2))

    path = OUT / "many_connections.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report[label] = analysis
    write_json(path, report)
    plot_runs({label: analysis}, OUT / f"many_connections_{label}.png", f"Many connections ({label})")


if __name__ == "__main__":
    main()
