"""Connection churn: does the ingress give back what closed connections held?

    flock /tmp/ray.lock python -m bench.churn          # 6 rounds of 500 streams
    python -m bench.churn --app-args '{"ingress": {"freeze_gc": false}}' --label freeze_off

Each round opens ``--streams`` streams at ``--ramp`` a second, holds them
``--hold`` seconds (each sends a small JPEG every ``--frame-interval`` seconds,
every ``--ping-every``-th pings once a second), closes them all and waits
``--gap`` seconds. The ingress replica's resident memory is sampled every
second; a leak per closed connection shows as memory that grows round after
round at the gaps (taken when each gap has the fewest connections open).
What it checks: ``ingress.freeze_gc`` (on by default; serve_app/gc_freeze.py)
freezes what survives each full garbage collection, and a frozen object that
becomes part of a closed connection's reference cycles is freed only after
the next unfreeze.

The model is the do-nothing stand-in (bench/standin.py): serving path only.
Writes docs/bench/churn.json (one key per ``--label``) and docs/bench/churn.png
(every label in the file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import psutil

from bench.common import (
    ROOT,
    Periodic,
    cpu_delta,
    ingress_gc_pauses,
    machine_info,
    process_cpu,
    process_name,
    raise_nofile,
    running_app,
    wait_for_no_ray,
    write_json,
)
from bench.loadgen import LoadGen, Phase, analyse, phase_bounds, print_totals
from bench.many_connections import APP_ARGS, idle_streams
from bench.standin import StandInModel
from serve_app.config import _merged

OUT = ROOT / "docs" / "bench"
INGRESS = "ServeReplica:ocr:StreamIngress"


class IngressMemory(Periodic):
    """Resident memory (MiB) of the ingress replica(s), and how many connections are open."""

    def __init__(self, gen: LoadGen) -> None:
        super().__init__(1.0, "ingress-memory")
        self.gen = gen

    def sample(self) -> dict[str, Any]:
        rss = 0
        for proc in psutil.Process().children(recursive=True):
            try:
                if process_name(" ".join(proc.cmdline())) == INGRESS:
                    rss += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return {"t": self.elapsed(), "rss_mib": round(rss / 2**20, 1), "open": self.gen.open_connections}


def churn_phases(rounds: int, streams: int, ramp: float, hold: float, gap: float) -> list[Phase]:
    phases = []
    for _ in range(rounds):
        phases += [Phase(streams, streams / ramp + hold, ramp_per_s=ramp), Phase(0, gap)]
    return phases


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    phases = churn_phases(args.rounds, args.streams, args.ramp, args.hold, args.gap)
    spec = idle_streams(url, phases, args, prefix="churn")
    machine = machine_info()
    before = process_cpu()
    gen = LoadGen(spec)
    memory = IngressMemory(gen)
    memory.start()
    try:
        result = await gen.run()
    finally:
        samples = memory.stop()
    analysis = analyse(result)
    analysis.pop("per_stream")
    analysis["machine_at_start"] = machine
    analysis["cpu_s_by_process"] = cpu_delta(before, process_cpu())
    analysis["memory"] = samples
    gaps = []  # each gap's fewest open connections, and the ingress' memory then
    for phase, (start, end) in zip(phases, phase_bounds(phases), strict=True):
        rows = [s for s in samples if start <= s["t"] <= end]
        if phase.streams == 0 and rows:
            fewest = min(rows, key=lambda s: (s["open"], -s["t"]))
            gaps.append({"open": fewest["open"], "rss_mib": fewest["rss_mib"]})
    analysis["result"] = {
        "rounds": args.rounds,
        "streams_per_round": args.streams,
        "ingress_rss_mib_at_each_gap": gaps,
        "ingress_rss_mib_max": max((s["rss_mib"] for s in samples), default=None),
        "growth_mib_per_round_after_the_first": round(
            (gaps[-1]["rss_mib"] - gaps[0]["rss_mib"]) / (len(gaps) - 1), 1
        )
        if len(gaps) > 1
        else None,
        "connection_errors": analysis["totals"]["connection_errors"],
        "every_frame_answered_once": analysis["totals"]["every_frame_answered_once"],
        "read_latency_ms": analysis["totals"]["read_latency_ms"],
        "ping_rtt_ms": analysis["totals"]["ping_rtt_ms"],
        "ingress_full_gc_over_100ms": ingress_gc_pauses(),
    }
    return analysis


def plot(report: dict[str, dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, conns) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for label, run in report.items():
        t = [s["t"] for s in run["memory"]]
        mem.plot(t, [s["rss_mib"] for s in run["memory"]], label=label)
        conns.plot(t, [s["open"] for s in run["memory"]], label=label)
    mem.set_ylabel("ingress resident memory (MiB)")
    conns.set_ylabel("open connections")
    conns.set_xlabel("seconds since the start of the load")
    for ax in (mem, conns):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Connection churn: the ingress replica's memory")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--streams", type=int, default=500, help="connections opened each round")
    parser.add_argument("--ramp", type=float, default=100.0, help="connections opened per second")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds all are held each round")
    parser.add_argument("--gap", type=float, default=15.0, help="seconds after closing each round")
    parser.add_argument(
        "--frame-interval", type=float, default=30.0, help="seconds between frames of a stream"
    )
    parser.add_argument("--ping-every", type=int, default=50, help="every n-th stream pings once a second")
    parser.add_argument("--drain-s", type=float, default=5.0, help="max wait for a closing stream's answers")
    parser.add_argument("--pool", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--label", default="freeze_on", help="key in the JSON")
    parser.add_argument("--app-args", default="{}", help="JSON merged into APP_ARGS")
    args = parser.parse_args()
    app_args = _merged(APP_ARGS, json.loads(args.app_args))

    nofile = raise_nofile(4 * args.streams + 4096)
    wait_for_no_ray()
    started = time.time()
    with running_app(app_args, model_cls=StandInModel, port=args.port) as url:
        analysis = asyncio.run(measure(url, args))
    analysis["model"] = "do-nothing stand-in (bench/standin.py): serving path only"
    analysis["app_args_overrides"] = app_args
    analysis["rlimit_nofile"] = nofile
    analysis["command"] = "python -m bench.churn " + " ".join(sys.argv[1:])
    analysis["started"] = started
    print_totals(args.label, analysis)
    print(json.dumps(analysis["result"], indent=2))

    path = OUT / "churn.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report[args.label] = analysis
    write_json(path, report)
    plot(report, OUT / "churn.png")


if __name__ == "__main__":
    main()
