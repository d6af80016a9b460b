"""Soak: minutes of steady load; memory and open files of every Serve process over time.

    python -m bench.soak                           # 10 min, real model, Ray in this process
    python -m bench.soak --minutes 2 --streams 4   # a quick look

The load: ``--streams`` streams at ``--fps`` each, showing labels that change
every ``--hold`` frames (so frames are read, skipped by rate and found
duplicate, the paths a camera takes). Every ``--round-s`` seconds all streams
close and new ones with new ``stream_id`` s open: the state of an ended stream
must be freed. Every ``--sample-s`` the RSS, USS and open file descriptors of
every Serve process (proxy, controller, each replica) are sampled, with the
streams the ingress and the sampler hold (read from the replicas' objects).

The verdict per process: the growth over the last two thirds of the run
(the first third is warm-up: allocator pools, model caches), as a least-squares
slope in MiB per 10 minutes, and the change of open files.

Writes docs/bench/soak.json and docs/bench/soak.png. Not run in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import numpy as np

from bench.common import (
    ROOT,
    Periodic,
    machine_info,
    process_name,
    running_app,
    wait_for_no_ray,
    write_json,
)
from bench.loadgen import LoadGen, LoadSpec, Phase, analyse, frame_pool

OUT = ROOT / "docs" / "bench"
MIB = 1024 * 1024


def serve_processes() -> dict[int, str]:
    """pid -> name of the Serve processes on this machine (``ServeReplica:ocr:OCRModel``, ...)."""
    import psutil

    out = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if title.startswith(("ray::ServeReplica", "ray::ProxyActor", "ray::ServeController")):
            out[proc.info["pid"]] = process_name(title)
    return out


def held_streams() -> dict[str, int]:
    """Streams held by the ingress (open sessions) and the sampler (per-stream state), per replica."""
    import ray

    def count(actor_name: str) -> int:
        def peek(_: Any) -> int:
            from ray.serve.context import _get_internal_replica_context

            user = _get_internal_replica_context().servable_object
            return len(user._sessions) if hasattr(user, "_sessions") else len(user._sampler._streams)

        return ray.get(ray.get_actor(actor_name, namespace="serve").__ray_call__.remote(peek), timeout=10)

    out: dict[str, int] = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        name = actor["name"]
        for deployment in ("StreamIngress", "FrameSampler"):
            if name.startswith(f"SERVE_REPLICA::ocr#{deployment}#"):
                out[deployment] = out.get(deployment, 0) + count(name)
    return out


class Sampler(Periodic):
    """Memory, open files and held streams of every Serve process, every ``period_s``."""

    def __init__(self, period_s: float) -> None:
        super().__init__(period_s, "soak-sampler")

    def sample(self) -> dict[str, Any]:
        import psutil

        row: dict[str, Any] = {"t": round(self.elapsed(), 1), "processes": {}}
        for pid, name in serve_processes().items():
            try:
                proc = psutil.Process(pid)
                memory = proc.memory_full_info()
                row["processes"][f"{name} ({pid})"] = {
                    "rss_mib": round(memory.rss / MIB, 1),
                    "uss_mib": round(memory.uss / MIB, 1),
                    "fds": proc.num_fds(),
                }
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        try:
            row["streams_held"] = held_streams()
        except Exception as exc:  # a peek must never lose the row
            row["streams_held"] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        return row


def labels(n: int, hold: int) -> list[bytes]:
    """``n`` distinct labels, each ``hold`` times in a row (the same bytes: a still camera)."""
    return [frame for frame in frame_pool(n, seed=7) for _ in range(hold)]


async def load(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Rounds of ``--round-s``: each round new streams (new ids); the per-round totals."""
    frames = labels(64, args.hold)
    rounds = []
    end = time.monotonic() + args.minutes * 60
    k = 0
    while time.monotonic() < end:
        duration = min(args.round_s, end - time.monotonic())
        spec = LoadSpec(
            url=url,
            phases=[Phase(args.streams, duration)],
            frames=frames,
            fps=args.fps,
            stream_fps=args.stream_fps,
            drain_s=30.0,
            stream_prefix=f"soak{k}",
            seed=k,
        )
        totals = analyse(await LoadGen(spec).run())["totals"]
        rounds.append(
            {
                "round": k,
                **{
                    key: totals[key]
                    for key in ("frames_sent", "unanswered", "every_frame_answered_once", "abnormal_closes")
                },
                "outcomes": totals["outcomes"]["counts"],
                "read_p99_ms": totals["read_latency_ms"]["p99"],
            }
        )
        print(f"round {k}: {rounds[-1]}", flush=True)
        k += 1
    return rounds


def slope(t: np.ndarray, values: np.ndarray) -> float | None:
    return round(float(np.polyfit(t, values, 1)[0]), 1) if len(t) > 2 else None


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per process seen all along: growth over the last two thirds (slope) and the fd change."""
    if not rows:
        return {}
    names = set(rows[0]["processes"]).intersection(*(r["processes"] for r in rows))
    tail = [r for r in rows if r["t"] >= rows[-1]["t"] / 3]
    out = {}
    for name in sorted(names):
        t = np.array([r["t"] for r in tail]) / 600.0  # in units of 10 minutes
        rss = np.array([r["processes"][name]["rss_mib"] for r in tail])
        uss = np.array([r["processes"][name]["uss_mib"] for r in tail])
        fds = [r["processes"][name]["fds"] for r in rows]
        out[name] = {
            "rss_mib_start_end": [rows[0]["processes"][name]["rss_mib"], float(rss[-1])],
            "rss_mib_per_10min_after_warmup": slope(t, rss),
            "uss_mib_per_10min_after_warmup": slope(t, uss),
            "fds_start_max_end": [fds[0], max(fds), fds[-1]],
        }
    return out


def plot(report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["samples"]
    names = sorted({name for r in rows for name in r["processes"]})
    fig, (mem, fds) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name in names:
        points = [(r["t"] / 60, r["processes"][name]) for r in rows if name in r["processes"]]
        t = [p[0] for p in points]
        mem.plot(t, [p[1]["rss_mib"] for p in points], label=name)
        fds.plot(t, [p[1]["fds"] for p in points], label=name)
    mem.set_ylabel("RSS (MiB)")
    fds.set_ylabel("open file descriptors")
    fds.set_xlabel("minutes")
    for ax in (mem, fds):
        ax.grid(alpha=0.3)
    for r in report["rounds"][1:]:
        for ax in (mem, fds):
            ax.axvline(r["round"] * report["args"]["round_s"] / 60, color="grey", alpha=0.2, lw=0.8)
    mem.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    args = report["args"]
    fig.suptitle(
        f"Soak: {args['streams']} streams x {args['fps']:g} fps for {args['minutes']:g} min, "
        f"new streams every {args['round_s']:g} s (grey lines)"
    )
    fig.tight_layout()
    fig.savefig(OUT / "soak.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=6)
    parser.add_argument("--fps", type=float, default=10.0, help="frames sent per second per stream")
    parser.add_argument("--stream-fps", type=float, default=5.0, help="the target rate (the fps query)")
    parser.add_argument("--hold", type=int, default=10, help="frames each label is shown")
    parser.add_argument("--round-s", type=float, default=60.0, help="streams are replaced this often")
    parser.add_argument("--sample-s", type=float, default=5.0)
    args = parser.parse_args()
    wait_for_no_ray()
    machine = machine_info()
    with running_app() as url:
        sampler = Sampler(args.sample_s).start()
        rounds = asyncio.run(load(url, args))
        time.sleep(2 * args.sample_s)  # the streams of the last round end: their state must go
        samples = sampler.stop()
    report = {
        "command": " ".join(
            ["python -m bench.soak", *(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())]
        ),
        "machine": machine,
        "args": vars(args),
        "verdict": verdict(samples),
        "rounds": rounds,
        "samples": samples,
    }
    write_json(OUT / "soak.json", report)
    plot(report)
    for name, v in report["verdict"].items():
        print(f"{name}: {v}", flush=True)


if __name__ == "__main__":
    main()
