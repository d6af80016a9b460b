"""Cameras per box: N cameras at 30 fps with default settings, raised in steps, through the real service.

    flock /tmp/ray.lock python -m bench.cameras                  # steps 1,2,3,4,6,8,12,16,20,24
    flock /tmp/ray.lock python -m bench.cameras --steps 1,2 --warmup-s 2 --hold-s 5 --out /tmp/cameras.json
    python -m bench.cameras --plot-only                          # redraw the PNG from the JSON

The service is the real graph with the real PaddleOCR model, configured by
configs/serve.yaml (``running_app``: in-process Ray, as the other benchmarks).
Each camera is one WebSocket (plain ``websockets``, no compression) sending
binary frames at 30 fps with no ``fps`` parameter (the service's defaults),
showing ``bench.camera.iter_scene("conveyor", ...)`` with its own seed: a
label on a conveyor, text changing every 4-12 s. ``--loop-s`` of each camera
are rendered in memory once and looped (frame ids and ``ts`` keep growing; the
loop point is a text change like any other). Cameras start at staggered phases
of the frame period; each sends ``{"type": "ping"}`` once a second. All cameras
run in this one asyncio process.

Each step opens N new streams, runs ``--warmup-s`` (not scored), then
``--hold-s`` scored seconds, then waits at most ``--drain-s`` for the last
answers and closes. Scored: the frames sent, and the pings sent, in the hold.

- every frame answered exactly once; the share answered within 300 ms (late
  and unanswered frames count against it); answer and read (status ``ok``)
  latency, client side (send -> answer); the outcomes of the late answers;
- pings: round trip p99 and max;
- text right: the client holds the lines of the newest frame (by frame id)
  whose ``ok`` or ``duplicate`` answer has arrived; when a frame's answer
  arrives, the held text (lines joined by "\\n", spaces removed) is compared
  with that frame's true text (spaces removed); ``held_wrong_spans``: each
  run of 15 or more frames of one camera holding the same wrong text, what
  was held and the truth (a misread or a missed change, held until a read);
- change delay: for each change of the true text that then stays for at
  least ``--settle-frames``, the first answer (in arrival order, a frame at or
  after the change) whose lines show the new text: its arrival minus the send
  of the change frame, in frame periods (``frames``), and the frame ids
  between the change and that answer's frame (``frame_ids``);
- CPU seconds by process during the hold (``bench.common.process_cpu``;
  ``load generator`` is this process: the cameras, plus the idle Ray driver),
  per second, and per frame sent; first, for ``--idle-s``, the CPU of the
  service with no stream open, and per step the CPU per frame above it.

A step **holds** when every frame is answered exactly once, >= 99% of answers
arrive within 300 ms, read p99 <= 1 s, ping max <= 300 ms and text right >=
90%. The run stops after the first step that fails badly (a frame unanswered,
< 80% of answers within 300 ms, text right < 80% or a ping over 1 s) unless
``--keep-going``.

Writes docs/bench/cameras.json and docs/bench/cameras.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

from bench.camera import iter_scene
from bench.common import (
    ROOT,
    cpu_delta,
    machine_info,
    percentile,
    process_cpu,
    running_app,
    running_replicas,
    summary,
    wait_for_no_ray,
    write_json,
)
from bench.loadgen import READ, _close_text
from ocr_client.protocol import encode_binary_frame

OUT = ROOT / "docs" / "bench" / "cameras.json"
FPS = 30.0
ON_TIME_MS = 300.0
GOALS = {
    "answered_within_300ms_share_min": 0.99,
    "read_p99_ms_max": 1000.0,
    "ping_max_ms_max": 300.0,
    "text_right_share_min": 0.90,
}
BAD = {"answered_within_300ms_share_min": 0.80, "text_right_share_min": 0.80, "ping_max_ms_max": 1000.0}
# Ray process names (bench.common.process_name) -> the names of the report.
SHORT_NAMES = {
    "ProxyActor": "proxy",
    "ServeController": "controller",
    "gcs_server": "gcs",
    "benchmark (this process)": "load generator",
}


def short_name(name: str) -> str:
    return SHORT_NAMES.get(name, name.rsplit(":", 1)[-1])


def normalise(text: str) -> str:
    return text.replace(" ", "")


def lines_text(lines: Sequence[dict[str, Any]]) -> str:
    return normalise("\n".join(line["text"] for line in lines))


@dataclass(frozen=True, slots=True)
class Camera:
    """A camera's loop: JPEG bytes and the true text (normalised) of each frame."""

    seed: int
    jpegs: tuple[bytes, ...]
    truth: tuple[str, ...]


def render_camera(seed: int, seconds: float) -> Camera:
    frames = list(iter_scene("conveyor", seconds, fps=FPS, seed=seed, hold_s=(4.0, 12.0)))
    return Camera(seed, tuple(f.jpeg for f in frames), tuple(normalise(f.text) for f in frames))


# --- one camera's stream ----------------------------------------------------------------


@dataclass(slots=True)
class CameraRun:
    """What one camera sent and got in a step; times in seconds since the step started."""

    camera: Camera
    offset_s: float
    sent: list[float] = field(default_factory=list)  # by frame id
    late: list[float] = field(default_factory=list)  # how far behind its schedule each frame was sent
    answered: list[float] = field(default_factory=list)  # first answer's arrival, NaN if none
    answers: list[int] = field(default_factory=list)
    outcome: list[str] = field(default_factory=list)
    held_right: list[bool] = field(default_factory=list)  # held text right when the frame's answer came
    held: list[str | None] = field(default_factory=list)  # the text held then
    ocr_ms: list[float] = field(default_factory=list)  # server's ocr_ms of the reads
    shown: list[tuple[float, int, str]] = field(default_factory=list)  # (arrival, frame id, text): ok/dup
    pings: list[tuple[float, float]] = field(default_factory=list)  # (sent, round trip)
    pings_pending: deque[float] = field(default_factory=deque)
    unknown_answers: int = 0
    close: str | None = None
    held_id: int = -1
    held_text: str | None = None

    def truth(self, frame_id: int) -> str:
        return self.camera.truth[frame_id % len(self.camera.truth)]

    def on_answer(self, answer: dict[str, Any], now: float) -> None:
        frame_id = answer.get("frame_id")
        if not isinstance(frame_id, int) or not 0 <= frame_id < len(self.sent):
            self.unknown_answers += 1
            return
        self.answers[frame_id] += 1
        if self.answers[frame_id] > 1:
            return
        self.answered[frame_id] = now
        status = answer.get("status")
        if answer.get("type") == "error":
            self.outcome[frame_id] = f"error:{answer.get('code')}"
        else:
            self.outcome[frame_id] = READ if status == READ else f"skipped:{answer.get('reason')}"
        if status == READ:
            self.ocr_ms.append((answer.get("timing") or {}).get("ocr_ms") or math.nan)
        if answer.get("lines") is not None and (status == READ or answer.get("reason") == "duplicate"):
            text = lines_text(answer["lines"])
            self.shown.append((now, frame_id, text))
            if frame_id > self.held_id:
                self.held_id, self.held_text = frame_id, text
        self.held[frame_id] = self.held_text
        self.held_right[frame_id] = self.held_text == self.truth(frame_id)

    def outstanding(self) -> int:
        return sum(1 for n in self.answers if n == 0)


async def run_camera(url: str, run: CameraRun, stream_id: str, t0: float, end: float, drain_s: float) -> None:
    ws = await websockets.connect(
        f"{url.replace('http://', 'ws://')}/v1/stream?stream_id={stream_id}",
        max_size=None,
        compression=None,
        open_timeout=30,
        ping_interval=None,
        close_timeout=5,
    )
    closing = False

    async def receive() -> None:
        try:
            async for message in ws:
                now = time.perf_counter() - t0
                answer = json.loads(message)
                kind = answer.get("type")
                if kind == "pong" and run.pings_pending:
                    sent = run.pings_pending.popleft()
                    run.pings.append((sent, now - sent))
                elif kind in ("result", "error"):
                    run.on_answer(answer, now)
        except ConnectionClosed as exc:
            if not closing:
                run.close = _close_text(exc)

    receiver = asyncio.create_task(receive())
    jpegs = run.camera.jpegs
    per_ping = round(FPS)
    try:
        frame_id = 0
        while True:
            due = run.offset_s + frame_id / FPS
            if due >= end:
                break
            delay = due - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter() - t0
            run.sent.append(now)
            run.late.append(max(0.0, now - due))
            run.answered.append(math.nan)
            run.answers.append(0)
            run.outcome.append("unanswered")
            run.held_right.append(False)
            run.held.append(None)
            await ws.send(encode_binary_frame(frame_id, jpegs[frame_id % len(jpegs)], ts=frame_id / FPS))
            if frame_id % per_ping == 0:
                run.pings_pending.append(time.perf_counter() - t0)
                await ws.send('{"type":"ping"}')
            frame_id += 1
        deadline = time.perf_counter() + drain_s
        while (run.outstanding() or run.pings_pending) and time.perf_counter() < deadline:
            if receiver.done():
                break
            await asyncio.sleep(0.05)
    except ConnectionClosed as exc:
        run.close = run.close or _close_text(exc)
    finally:
        closing = True
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)


async def run_step(
    url: str, cameras: Sequence[Camera], args: argparse.Namespace
) -> tuple[list[CameraRun], dict[str, float], float]:
    """All ``cameras`` at once; the CPU seconds by process in the scored window, and its length."""
    n = len(cameras)
    runs = [CameraRun(cam, offset_s=k / (n * FPS)) for k, cam in enumerate(cameras)]
    start, stop = args.warmup_s, args.warmup_s + args.hold_s
    t0 = time.perf_counter()
    tasks = [
        asyncio.create_task(run_camera(url, run, f"cam{run.camera.seed}-n{n}", t0, stop, args.drain_s))
        for run in runs
    ]
    await asyncio.sleep(max(0.0, start - (time.perf_counter() - t0)))
    before = await asyncio.to_thread(process_cpu)
    began = time.perf_counter()
    await asyncio.sleep(max(0.0, stop - (time.perf_counter() - t0)))
    after = await asyncio.to_thread(process_cpu)
    window_s = time.perf_counter() - began
    await asyncio.gather(*tasks)
    return runs, grouped_cpu(before, after), window_s


def grouped_cpu(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds between two ``process_cpu`` snapshots, by the report's process names."""
    grouped: dict[str, float] = {}
    for name, seconds in cpu_delta(before, after).items():
        grouped[short_name(name)] = round(grouped.get(short_name(name), 0.0) + seconds, 3)
    return dict(sorted(grouped.items(), key=lambda kv: -kv[1]))


def idle_cores(seconds: float) -> dict[str, float]:
    """CPU cores by process of the service with no stream open (its fixed cost)."""
    before = process_cpu()
    time.sleep(seconds)
    return {k: round(v / seconds, 3) for k, v in grouped_cpu(before, process_cpu()).items()}


# --- analysis -----------------------------------------------------------------------------


def change_delays(run: CameraRun, scored: range, settle: int) -> list[dict[str, Any]]:
    """Each settled text change among the ``scored`` frames: when an answer first showed it."""
    out = []
    sent = len(run.sent)
    for c in scored:
        new = run.truth(c)
        if c == 0 or new == run.truth(c - 1) or c + settle > sent:
            continue
        if any(run.truth(j) != new for j in range(c, c + settle)):
            continue
        first = next(((t, fid) for t, fid, text in run.shown if fid >= c and text == new), None)
        out.append(
            {
                "frames": None if first is None else round((first[0] - run.sent[c]) * FPS, 1),
                "frame_ids": None if first is None else first[1] - c,
            }
        )
    return out


def held_wrong_spans(runs: list[CameraRun], lo: float, hi: float, at_least: int = 15) -> list[dict[str, Any]]:
    """Runs of ``at_least`` or more scored frames of one camera holding the same wrong text: what was
    held against the truth (a misread or a missed change held until the next read)."""
    spans: list[dict[str, Any]] = []
    for run in runs:
        ids = [i for i, t in enumerate(run.sent) if lo <= t < hi]
        for _, group in itertools.groupby(ids, key=lambda i: (run.held_right[i], run.held[i], run.truth(i))):
            same = list(group)
            if not run.held_right[same[0]] and len(same) >= at_least:
                held, truth = run.held[same[0]], run.truth(same[0])
                spans.append(
                    {"camera": run.camera.seed, "frames": [same[0], same[-1]], "held": held, "truth": truth}
                )
    return spans


def analyse_step(
    runs: Sequence[CameraRun],
    cpu: dict[str, float],
    window_s: float,
    idle: dict[str, float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    lo, hi = args.warmup_s, args.warmup_s + args.hold_s
    frames: list[tuple[CameraRun, int]] = []
    changes: list[dict[str, Any]] = []
    for run in runs:
        ids = [i for i, t in enumerate(run.sent) if lo <= t < hi]
        frames += [(run, i) for i in ids]
        if ids:
            changes += change_delays(run, range(ids[0], ids[-1] + 1), args.settle_frames)
    n = len(frames)
    latency = [(r.answered[i] - r.sent[i]) * 1000 for r, i in frames if r.answers[i]]
    read_latency = [(r.answered[i] - r.sent[i]) * 1000 for r, i in frames if r.outcome[i] == READ]
    pings = [rtt * 1000 for r in runs for sent, rtt in r.pings if lo <= sent < hi]
    reads = sum(1 for r, i in frames if r.outcome[i] == READ)
    caught = [c for c in changes if c["frames"] is not None]
    service_cpu = sum(v for k, v in cpu.items() if k != "load generator")
    above_idle = {k: v - idle.get(k, 0.0) * window_s for k, v in cpu.items()}
    result: dict[str, Any] = {
        "cameras": len(runs),
        "frames_sent": n,
        "frames_answered": sum(1 for r, i in frames if r.answers[i]),
        "unanswered": sum(1 for r, i in frames if not r.answers[i]),
        "answered_more_than_once": sum(1 for r, i in frames if r.answers[i] > 1),
        "unknown_answers": sum(r.unknown_answers for r in runs),
        "abnormal_closes": [r.close for r in runs if r.close],
        "outcomes": dict(sorted(Counter(r.outcome[i] for r, i in frames).items())),
        "answered_within_300ms_share": round(sum(1 for ms in latency if ms <= ON_TIME_MS) / n, 4) if n else 0,
        "answer_latency_ms": summary(latency),
        "late_by_outcome": dict(
            sorted(
                Counter(
                    r.outcome[i]
                    for r, i in frames
                    if not r.answers[i] or (r.answered[i] - r.sent[i]) * 1000 > ON_TIME_MS
                ).items()
            )
        ),
        "read_latency_ms": summary(read_latency),
        "server_ocr_ms": summary([ms for r in runs for ms in r.ocr_ms if ms == ms]),
        "ping_ms": summary(pings) | {"max": round(max(pings, default=math.nan), 1)},
        "pings_unanswered": sum(len(r.pings_pending) for r in runs),
        "reads": reads,
        "reads_per_s": round(reads / args.hold_s, 2),
        "text_right_share": round(sum(1 for r, i in frames if r.held_right[i]) / n, 4) if n else 0,
        "held_wrong_spans": held_wrong_spans(runs, lo, hi),
        "changes": len(changes),
        "changes_shown": len(caught),
        "change_delay_frames": _delays([c["frames"] for c in caught]),
        "change_delay_frame_ids": _delays([c["frame_ids"] for c in caught]),
        "generator_late_ms": {
            "p99": round(percentile([r.late[i] * 1000 for r, i in frames], 99), 1),
            "max": round(max((r.late[i] * 1000 for r, i in frames), default=math.nan), 1),
        },
        "window_s": round(window_s, 2),
        "cpu_s": cpu,
        "cpu_cores": {k: round(v / window_s, 3) for k, v in cpu.items()},
        "cpu_ms_per_frame": {k: round(1000 * v / n, 2) for k, v in cpu.items()} if n else {},
        "service_cpu_ms_per_frame": round(1000 * service_cpu / n, 2) if n else None,
        "cpu_ms_per_frame_above_idle": {k: round(1000 * v / n, 2) for k, v in above_idle.items()}
        if n
        else {},
        "service_cpu_ms_per_frame_above_idle": round(
            1000 * sum(v for k, v in above_idle.items() if k != "load generator") / n, 2
        )
        if n
        else None,
        "serving_path_cpu_ms_per_frame": round(
            1000 * sum(cpu.get(k, 0.0) for k in ("proxy", "StreamIngress", "FrameSampler")) / n, 2
        )
        if n
        else None,
        "model_cpu_ms_per_read": round(1000 * cpu.get("OCRModel", 0.0) / reads, 1) if reads else None,
    }
    result["goals_met"] = goals_met(result)
    result["holds"] = all(result["goals_met"].values())
    result["fails_badly"] = (
        result["unanswered"] > 0
        or result["answered_within_300ms_share"] < BAD["answered_within_300ms_share_min"]
        or result["text_right_share"] < BAD["text_right_share_min"]
        or not result["ping_ms"]["max"] <= BAD["ping_max_ms_max"]
    )
    return result


def goals_met(r: dict[str, Any]) -> dict[str, bool]:
    return {
        "every_frame_answered_once": r["unanswered"] == 0
        and r["answered_more_than_once"] == 0
        and r["unknown_answers"] == 0,
        "answered_within_300ms": r["answered_within_300ms_share"] >= GOALS["answered_within_300ms_share_min"],
        # NaN (no read at all) fails.
        "read_p99": r["read_latency_ms"]["p99"] <= GOALS["read_p99_ms_max"],
        "pings": r["ping_ms"]["max"] <= GOALS["ping_max_ms_max"] and r["pings_unanswered"] == 0,
        "text_right": r["text_right_share"] >= GOALS["text_right_share_min"],
    }


def _delays(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": round(percentile(values, 50), 1) if values else None,
        "max": max(values, default=None),
    }


# --- report -------------------------------------------------------------------------------


def last_holding(steps: Sequence[dict[str, Any]]) -> int | None:
    """The most cameras of a step that holds with every step before it holding too."""
    last = None
    for s in steps:
        if not s["holds"]:
            break
        last = s["cameras"]
    return last


def table(steps: Sequence[dict[str, Any]]) -> str:
    """The markdown table of docs/benchmarks.md, one row per step."""
    head = (
        "| cameras | answered | within 300 ms | answer p50 / p99 | read p50 / p99 | ping p99 / max "
        "| reads/s | text right | change delay p50 / max (frames) | service CPU ms/frame (above idle) "
        "| ingress replicas | holds |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for s in steps:
        d = s["change_delay_frames"]
        rows.append(
            f"| {s['cameras']} | {s['frames_answered']} / {s['frames_sent']} "
            f"| {s['answered_within_300ms_share']:.1%} "
            f"| {_p(s['answer_latency_ms'])} | {_p(s['read_latency_ms'])} "
            f"| {s['ping_ms']['p99']:.0f} / {s['ping_ms']['max']:.0f} ms | {s['reads_per_s']:g} "
            f"| {s['text_right_share']:.1%} | {d['p50']} / {d['max']} ({s['changes_shown']}/{s['changes']}) "
            f"| {s['service_cpu_ms_per_frame']} ({s['service_cpu_ms_per_frame_above_idle']}) "
            f"| {s.get('replicas_at_end', {}).get('StreamIngress', '-')} | {'yes' if s['holds'] else 'no'} |"
        )
    return "\n".join([head, *rows])


def _p(s: dict[str, float]) -> str:
    return f"{s['p50']:.0f} / {s['p99']:.0f} ms" if s["n"] else "-"


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = report["steps"]
    x = list(range(len(steps)))
    labels = [str(s["cameras"]) for s in steps]
    colours = ["#2a9d8f" if s["holds"] else "#e63946" for s in steps]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    (on_time, right), (cpu_ax, reads) = axes
    for ax, key, goal, title in (
        (
            on_time,
            "answered_within_300ms_share",
            GOALS["answered_within_300ms_share_min"],
            "answers within 300 ms",
        ),
        (right, "text_right_share", GOALS["text_right_share_min"], "frames whose held text is right"),
    ):
        bars = ax.bar(x, [100 * s[key] for s in steps], color=colours)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.axhline(100 * goal, color="#555555", ls="--", lw=1, label=f"goal {goal:.0%}")
        ax.set_ylim(0, 108)
        ax.set_ylabel("%")
        ax.set_title(title + " (green: the step holds)", loc="left", fontsize=10)
        ax.legend(loc="lower left", fontsize=8)
    names = sorted(
        {k for s in steps for k in s["cpu_cores"]},
        key=lambda k: -max(s["cpu_cores"].get(k, 0) for s in steps),
    )
    shown = names[:8]
    bottom = [0.0] * len(steps)
    for name in [*shown, "other"]:
        values = [
            sum(v for k, v in s["cpu_cores"].items() if k not in shown)
            if name == "other"
            else s["cpu_cores"].get(name, 0.0)
            for s in steps
        ]
        cpu_ax.bar(x, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, s in enumerate(steps):
        cpu_ax.text(
            i,
            bottom[i] + 0.02,
            f"{s['service_cpu_ms_per_frame_above_idle']:.1f}\nms/fr",
            ha="center",
            fontsize=7,
        )
    cpu_ax.axhline(report["machine"]["cpus"], color="#555555", ls="--", lw=1)
    cpu_ax.set_ylabel("CPU cores (CPU s per s of the hold)")
    cpu_ax.set_title(
        "CPU by process (label: service CPU ms per frame sent, above idle)", loc="left", fontsize=10
    )
    cpu_ax.legend(fontsize=7, ncol=2, loc="upper left")
    reads.bar_label(reads.bar(x, [s["reads_per_s"] for s in steps], color=colours), fontsize=8)
    reads.set_ylabel("reads/s (status ok)")
    reads.set_title("OCR reads per second, all cameras", loc="left", fontsize=10)
    for ax in axes.flat:
        ax.set_xticks(x, labels)
        ax.set_xlabel("cameras (30 fps each)")
    fig.suptitle(
        f"Cameras per box: conveyor labels at 30 fps, default settings, "
        f"{report['config']['hold_s']:g} s per step "
        f"(last step that holds: {report['last_step_that_holds']})",
        x=0.01,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", default="1,2,3,4,6,8,12,16,20,24", help="cameras per step, comma-separated"
    )
    parser.add_argument("--warmup-s", type=float, default=5.0, help="seconds of each step not scored")
    parser.add_argument("--hold-s", type=float, default=15.0, help="scored seconds of each step")
    parser.add_argument("--drain-s", type=float, default=15.0, help="max wait for answers after a step")
    parser.add_argument("--loop-s", type=float, default=20.0, help="seconds rendered per camera, looped")
    parser.add_argument("--settle-frames", type=int, default=15, help="a change counts if its text stays")
    parser.add_argument("--idle-s", type=float, default=10.0, help="CPU of the idle service, measured first")
    parser.add_argument("--keep-going", action="store_true", help="do not stop after a step failing badly")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--app-args", default=None, help="JSON merged into configs/serve.yaml's args")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from --out")
    args = parser.parse_args(argv)
    png = args.out.with_suffix(".png")
    if args.plot_only:
        plot(json.loads(args.out.read_text()), png)
        return

    steps = [int(s) for s in args.steps.split(",")]
    overrides = json.loads(args.app_args) if args.app_args else None
    report: dict[str, Any] = {
        "command": "python -m bench.cameras " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": time.time(),
        "target": "the service (configs/serve.yaml, real PaddleOCR model), in-process Ray (running_app)",
        "app_args_overrides": overrides,
        "config": {
            k: getattr(args, k)
            for k in ("steps", "warmup_s", "hold_s", "drain_s", "loop_s", "settle_frames", "idle_s")
        }
        | {"scene": "conveyor", "hold_text_s": [4.0, 12.0], "fps": FPS, "query": "stream_id only (defaults)"},
        "goals": GOALS,
        "fails_badly_when": BAD,
        "steps": [],
    }
    wait_for_no_ray()
    report["machine"] = machine_info()
    cameras: list[Camera] = []
    with running_app(overrides, port=args.port) as url:
        report["idle_cpu_cores"] = idle_cores(args.idle_s)
        print(f"idle: {report['idle_cpu_cores']} cores", flush=True)
        for n in steps:
            t = time.monotonic()
            cameras += [render_camera(seed, args.loop_s) for seed in range(len(cameras), n)]
            print(f"[{n} cameras] rendered in {time.monotonic() - t:.0f} s; running", flush=True)
            load = machine_info()["loadavg_1min"]
            runs, cpu, window_s = asyncio.run(run_step(url, cameras[:n], args))
            step = analyse_step(runs, cpu, window_s, report["idle_cpu_cores"], args)
            step["loadavg_1min_before"] = load
            step["replicas_at_end"] = running_replicas()
            report["steps"].append(step)
            print(
                f"[{n} cameras] within 300 ms {step['answered_within_300ms_share']:.1%}, "
                f"read p99 {step['read_latency_ms']['p99']} ms, ping max {step['ping_ms']['max']} ms, "
                f"text right {step['text_right_share']:.1%}, reads/s {step['reads_per_s']}, "
                f"unanswered {step['unanswered']}, service CPU above idle "
                f"{step['service_cpu_ms_per_frame_above_idle']} ms/frame "
                f"{step['cpu_ms_per_frame_above_idle']}, replicas {step['replicas_at_end']}, "
                f"holds: {step['holds']}",
                flush=True,
            )
            report["last_step_that_holds"] = last_holding(report["steps"])
            write_json(args.out, report)  # after every step: a later failure keeps the earlier ones
            if step["fails_badly"] and not args.keep_going:
                break
    report["table_md"] = table(report["steps"])
    write_json(args.out, report)
    plot(report, png)
    print(report["table_md"])


if __name__ == "__main__":
    main()
