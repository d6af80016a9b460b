"""Sampler/dedup through the service: 30 fps cameras whose text changes, read only what is new.

    python -m bench.dedup_stream [--seconds 40] [--cameras conveyor,handheld,screen,document]
    python -m bench.dedup_stream --plot-only     # redraw the PNG from the JSON

The cameras of ``bench/camera.py`` (a label on a conveyor that jitters and turns
on its belt, a hand-held badge that wobbles, a screen with a blinking cursor and
a roaming mouse pointer, a document whose pages are turned; ``label``: the older
shaking label) with text changing every ``--hold`` seconds (default 0.5-3: the
"OCR work saved" case; 4-12 for the cameras of issue 13), half of the changes
one character, are each streamed in real time (frame i at start + i/30 s,
``ts`` = the frame's capture time) over ONE WebSocket as binary frames, answers
read concurrently, through the real application (``running_app``: real
PaddleOCR, configs/serve.yaml). Modes, each its own application, the cameras
one after the other in it:

1. ``service``: the service as configured (dedup on, the stream asks for no
   ``fps``: the sampler's ``default_fps``); ``settle``: the same with
   ``settle_s`` 0.5 (reads wait for a changing view to settle); ``whole_reads``:
   the same with ``line_reads`` off (every read detects and recognises the
   whole frame);
2. ``fixed_15fps``: the design it replaces, a fixed 15 fps sampler (dedup off,
   ``?fps=15``): a time window, nothing else;
3. ``every_frame``: dedup off and ``?fps=30``: read every frame it can.

Per camera and mode: reads/s and the share of frames NOT read (OCR work saved;
goal >= 95%); the share of frames whose held text is the true text (goal >=
97%): the held text of a frame is the ``lines`` of its own ``ok`` answer, of
its ``duplicate`` answer, or of the frame its ``ref_frame_id`` names (followed
until a read or a duplicate; no ref: nothing held, wrong), normalised (lines
joined, spaces dropped, upper case, O -> 0) like the generator's true text, over
all frames and over the still ones (a sliding card or a turning page has no
settled text); the text changes caught (to a text shown by 10 or more still
frames, not the passing states of a card or a page in motion: a read of a frame
showing the new text before the next change; goal 100%) and their delay in
frames from the change to that read (goal: median <= 2, max <= 5); exactly one
answer per frame; client-side latency (send -> answer) of read frames and of
all frames.

Writes docs/bench/dedup_stream.json and docs/bench/dedup_stream.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from bench.camera import CameraFrame, iter_frames, iter_scene
from bench.common import (
    ROOT,
    cpu_delta,
    machine_info,
    process_cpu,
    running_app,
    summary,
    wait_for_no_ray,
    write_json,
)
from bench.loadgen import READ, analyse, closed_loop_latency, frame_pool
from serve_app.protocol import encode_binary_frame

OUT = ROOT / "docs" / "bench" / "dedup_stream.json"
GOALS = {
    "not_read_share_min": 0.95,
    "held_text_right_share_min": 0.97,
    "changes_caught_share_min": 1.0,
    "change_delay_frames_p50_max": 2,
}
CAMERAS = ("conveyor", "handheld", "screen", "document")
STABLE_FRAMES = 10


@dataclass(frozen=True, slots=True)
class Mode:
    key: str
    label: str
    app_args: dict[str, Any]
    fps: float | None  # the ``fps`` query parameter; None: the service's default


MODES = (
    Mode("service", "service (dedup on, default fps)", {}, None),
    Mode(
        "settle",
        "service, reads waiting for a changing view to settle (settle_s 0.5)",
        {"sampler": {"settle_s": 0.5}},
        None,
    ),
    Mode(
        "whole_reads", "service, every read whole (line_reads off)", {"sampler": {"line_reads": False}}, None
    ),
    Mode("fixed_15fps", "fixed 15 fps sampler (dedup off)", {"sampler": {"dedup": {"enabled": False}}}, 15.0),
    Mode(
        "every_frame",
        "read every frame (dedup off, 30 fps)",
        {"sampler": {"dedup": {"enabled": False}}},
        30.0,
    ),
)


# --- the stream -----------------------------------------------------------------


@dataclass(slots=True)
class Record:
    """One frame as the client saw it; times in seconds since the stream started."""

    index: int
    sent: float = float("nan")
    late: float = 0.0  # how far behind its schedule it was sent
    answered: float | None = None
    answers: int = 0
    answer: dict[str, Any] | None = None  # the first answer


@dataclass(slots=True)
class StreamRun:
    records: list[Record]
    unknown_answers: int = 0  # answers naming a frame never sent
    null_errors: int = 0  # error answers with frame_id null
    close: str | None = None  # an abnormal close while the stream ran
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


async def stream(
    url: str,
    frames: Sequence[CameraFrame],
    *,
    fps: float,
    query_fps: float | None,
    stream_id: str,
    drain_s: float = 30.0,
) -> StreamRun:
    """Send ``frames`` in real time over one WebSocket; every answer recorded as it comes."""
    messages = [encode_binary_frame(f.index, f.jpeg, ts=f.ts) for f in frames]
    run = StreamRun([Record(f.index) for f in frames])
    by_id = {r.index: r for r in run.records}
    ws_url = url.replace("http://", "ws://").rstrip("/") + f"/v1/stream?stream_id={stream_id}"
    if query_fps is not None:
        ws_url += f"&fps={query_fps:g}"
    ws = await websockets.connect(
        ws_url, max_size=None, compression=None, open_timeout=30, ping_interval=None, close_timeout=5
    )
    t0 = time.perf_counter()
    pending = len(messages)
    all_answered = asyncio.Event()

    async def receive() -> None:
        nonlocal pending
        try:
            async for message in ws:
                now = time.perf_counter() - t0
                answer = json.loads(message)
                if answer.get("type") not in ("result", "error"):
                    continue
                frame_id = answer.get("frame_id")
                if frame_id is None:
                    run.null_errors += 1
                    continue
                record = by_id.get(frame_id)
                if record is None or record.sent != record.sent:  # unknown, or not sent (NaN)
                    run.unknown_answers += 1
                    continue
                record.answers += 1
                if record.answers == 1:
                    record.answer, record.answered = answer, now
                    pending -= 1
                    if pending == 0:
                        all_answered.set()
        except websockets.ConnectionClosed as exc:
            run.close = f"{exc.rcvd.code if exc.rcvd else 1006} {exc.rcvd.reason if exc.rcvd else ''}".strip()

    receiver = asyncio.create_task(receive())
    try:
        for i, message in enumerate(messages):
            due = i / fps
            delay = due - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter() - t0
            run.records[i].sent, run.records[i].late = now, max(0.0, now - due)
            await ws.send(message)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_answered.wait(), drain_s)
        await asyncio.sleep(0.5)  # a second answer to any frame would arrive now
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)
    run.wall_s = time.perf_counter() - t0
    return run


# --- analysis ---------------------------------------------------------------------


def normalise(text: str) -> str:
    """Join lines, drop spaces, upper case, O -> 0 (OCR reads them alike)."""
    return "".join(text.split()).upper().replace("O", "0")


def lines_text(lines: list[dict[str, Any]] | None) -> str | None:
    return None if lines is None else normalise("".join(line["text"] for line in lines))


def outcome(record: Record) -> str:
    a = record.answer
    if a is None:
        return "unanswered"
    if a.get("type") == "error":
        return f"error:{a.get('code')}"
    return READ if a.get("status") == READ else f"skipped:{a.get('reason')}"


def held_text(records: Sequence[Record], index: int) -> str | None:
    """The text the client holds for frame ``index`` (normalised), None if nothing.

    ``ok`` and ``duplicate`` answers carry their lines; any other skip stands
    for the frame its ``ref_frame_id`` names (followed, bounded).
    """
    seen: set[int] = set()
    while index not in seen and len(seen) < 64:
        seen.add(index)
        a = records[index].answer if 0 <= index < len(records) else None
        if a is None or a.get("type") != "result":
            return None
        if a.get("lines") is not None and (a.get("status") == READ or a.get("reason") == "duplicate"):
            return lines_text(a["lines"])
        ref = a.get("ref_frame_id")
        if ref is None:
            return None
        index = ref
    return None


def _runs(flags: Sequence[bool]) -> list[list[int]]:
    """[start, end) index ranges where ``flags`` is true."""
    out: list[list[int]] = []
    for i, flag in enumerate(flags):
        if flag and out and out[-1][1] == i:
            out[-1][1] = i + 1
        elif flag:
            out.append([i, i + 1])
    return out


def analyse_run(frames: Sequence[CameraFrame], run: StreamRun, fps: float) -> dict[str, Any]:
    records = run.records
    n = len(records)
    truth = [normalise(f.text) for f in frames]
    outcomes = [outcome(r) for r in records]
    read = [o == READ for o in outcomes]
    held = [held_text(records, i) for i in range(n)]
    right = [held[i] == truth[i] for i in range(n)]
    read_right = [read[i] and lines_text(records[i].answer["lines"]) == truth[i] for i in range(n)]  # type: ignore[index]

    # A change is to a text shown by STABLE_FRAMES or more still frames: not the passing states of
    # a card sliding out of view or a page turning (caught: a read of a frame showing that text).
    starts = [f.index for f in frames if f.changed] + [n]
    changes = [
        c
        for c, nxt in itertools.pairwise(starts)
        if sum(not f.moving for f in frames[c:nxt]) >= STABLE_FRAMES
    ]
    still = [i for i in range(n) if not frames[i].moving]
    caught: list[dict[str, Any]] = []
    for k, c in enumerate(changes):
        end = changes[k + 1] if k + 1 < len(changes) else n
        first = next((j for j in range(c, end) if read[j] and truth[j] == truth[c]), None)
        entry: dict[str, Any] = {
            "frame": c,
            "one_char": frames[c].one_char,
            "frames_until_next_change": end - c,
            "read_frame": first,
            "delay_frames": None if first is None else first - c,
        }
        if first is not None:
            answered = records[first].answered
            entry["read_text_right"] = read_right[first]
            entry["change_to_answer_ms"] = (
                None if answered is None else round((answered - records[c].sent) * 1000, 1)
            )
        else:
            entry["outcomes_until_next_change"] = dict(Counter(outcomes[c:end]))
        caught.append(entry)
    delays = [e["delay_frames"] for e in caught if e["delay_frames"] is not None]
    to_answer = [e["change_to_answer_ms"] for e in caught if e.get("change_to_answer_ms") is not None]

    lat_read = [
        (r.answered - r.sent) * 1000 for r in records if r.answered is not None and outcome(r) == READ
    ]
    lat_all = [(r.answered - r.sent) * 1000 for r in records if r.answered is not None]
    violations = {
        "unanswered": sum(1 for r in records if r.answers == 0),
        "answered_more_than_once": sum(1 for r in records if r.answers > 1),
        "answers_for_unknown_frames": run.unknown_answers,
        "errors_with_null_frame_id": run.null_errors,
    }
    # Why a frame's held text is wrong: the view was moving (no settled text), nothing held, the
    # text of another moment (held too long or too early), or no text the camera ever settled on
    # (a misread, or a read of a passing state).
    settled_texts = {truth[i] for i in still}
    why_wrong = Counter(
        "moving" if frames[i].moving
        else "nothing" if held[i] is None
        else "other_moment" if held[i] in settled_texts
        else "misread"
        for i in range(n)
        if not right[i]
    )  # fmt: skip
    reads = sum(read)
    wrong_reads = [
        {"frame": i, "read": lines_text(records[i].answer["lines"]), "true": truth[i]}  # type: ignore[index]
        for i in range(n)
        if read[i] and not read_right[i]
    ]
    result = {
        "frames": n,
        "change_frames": changes,
        "outcomes": dict(sorted(Counter(outcomes).items())),
        "reads": reads,
        "reads_per_s": round(reads / (n / fps), 2),
        "not_read_share": round(1 - reads / n, 4),
        "held_text_right_share": round(sum(right) / n, 4),
        # Frames of a card sliding or a page turning have no settled text (their truth is what is
        # legible mid-motion): the share over the other frames.
        "held_text_right_share_still": round(sum(right[i] for i in still) / len(still), 4) if still else None,
        "held_text_wrong_frames": n - sum(right),
        "held_nothing_frames": sum(1 for h in held if h is None),
        "held_wrong_why": dict(sorted(why_wrong.items())),
        "reads_text_exact_share": round(sum(read_right) / reads, 4) if reads else None,
        "wrong_reads": wrong_reads[:20],
        "changes": len(changes),
        "changes_one_char": sum(1 for e in caught if e["one_char"]),
        "changes_caught": len(delays),
        "changes_caught_share": round(len(delays) / len(changes), 4) if changes else None,
        "changes_caught_and_read_right": sum(1 for e in caught if e.get("read_text_right")),
        "change_delay_frames": {
            "p50": statistics.median(delays) if delays else None,
            "p90": round(sorted(delays)[int(0.9 * (len(delays) - 1))], 1) if delays else None,
            "max": max(delays, default=None),
        },
        "change_to_answer_ms": summary(to_answer),
        "missed_changes": [e for e in caught if e["delay_frames"] is None],
        "exactly_once_violations": sum(violations.values()),
        "exactly_once": violations,
        "abnormal_close": run.close,
        "latency_ms": {"read": summary(lat_read), "all": summary(lat_all)},
        "server_ocr_ms": summary(
            [r.answer["timing"]["ocr_ms"] for r in records if outcome(r) == READ and r.answer.get("timing")]  # type: ignore[union-attr]
        ),
        "generator_late_ms": {
            "p99": round(sorted(r.late for r in records)[int(0.99 * (n - 1))] * 1000, 1),
            "max": round(max(r.late for r in records) * 1000, 1),
        },
        "wall_s": round(run.wall_s, 1),
        "timeline": {
            "read_frames": [i for i in range(n) if read[i]],
            "read_frames_text_wrong": [i for i in range(n) if read[i] and not read_right[i]],
            "held_wrong_runs": _runs([not r for r in right]),
        },
    }
    result["goals_met"] = {
        "not_read": result["not_read_share"] >= GOALS["not_read_share_min"],
        "held_text_right": result["held_text_right_share"] >= GOALS["held_text_right_share_min"],
        "held_text_right_still": (result["held_text_right_share_still"] or 0)
        >= GOALS["held_text_right_share_min"],
        "changes_caught": (result["changes_caught_share"] or 0) >= GOALS["changes_caught_share_min"],
        "change_delay": delays != [] and statistics.median(delays) <= GOALS["change_delay_frames_p50_max"],
        "exactly_once": result["exactly_once_violations"] == 0,
    }
    return result


# --- runs -----------------------------------------------------------------------------


def run_mode(
    mode: Mode, streams: dict[str, list[CameraFrame]], args: argparse.Namespace, port: int
) -> dict[str, dict[str, Any]]:
    """One application; each camera streamed through it in turn. Results by camera."""
    print(f"[{mode.key}] starting the application ...", flush=True)
    start = time.monotonic()
    results = {}
    with running_app(mode.app_args, port=port) as url:
        startup_s = time.monotonic() - start
        print(f"[{mode.key}] healthy after {startup_s:.0f} s; warm-up, then the cameras", flush=True)
        # Warm-up (excluded): distinct labels, one at a time; its latency is the unloaded read.
        warm = analyse(asyncio.run(closed_loop_latency(url, frame_pool(5, seed=7), 5, stream_fps=30.0)))
        for camera, frames in streams.items():
            load_before = machine_info()["loadavg_1min"]
            cpu_before = process_cpu()
            run = asyncio.run(
                stream(
                    url,
                    frames,
                    fps=args.fps,
                    query_fps=mode.fps,
                    stream_id=f"dedup-{mode.key}-{camera}",
                    drain_s=args.drain_s,
                )
            )
            cpu = cpu_delta(cpu_before, process_cpu())
            results[camera] = {
                "label": f"{camera}: {mode.label}",
                "app_args": mode.app_args,
                "query_fps": mode.fps,
                "startup_s": round(startup_s, 1),
                "unloaded_read_ms": warm["totals"]["read_latency_ms"],
                "loadavg_1min_before": load_before,
                "loadavg_1min_after": machine_info()["loadavg_1min"],
                "cpu_s": cpu,
            } | analyse_run(frames, run, args.fps)
            r = results[camera]
            print(
                f"[{mode.key}/{camera}] reads/s {r['reads_per_s']}, not read {r['not_read_share']:.1%}, "
                f"held right {r['held_text_right_share']:.1%} (still frames "
                f"{r['held_text_right_share_still'] or 0:.1%}; wrong: {r['held_wrong_why']}), changes caught "
                f"{r['changes_caught']}/{r['changes']} (delay p50 {r['change_delay_frames']['p50']}, "
                f"max {r['change_delay_frames']['max']}), violations {r['exactly_once_violations']}, "
                f"outcomes {r['outcomes']}",
                flush=True,
            )
    return results


def table(report: dict[str, Any]) -> str:
    """The markdown table of docs/dedup.md: one row per camera and mode."""
    head = (
        "| camera | mode | reads/s | OCR work saved (frames not read) | held text right: all frames "
        "/ still frames | changes caught (one-char) | change -> read, frames p50 / max "
        "| change -> answer p50 ms | not exactly once |\n" + "|---" * 9 + "|"
    )
    rows = []
    for mode_key, cameras in report["modes"].items():
        for camera, r in cameras.items():
            one = sum(1 for e in r["missed_changes"] if e["one_char"])
            rows.append(
                f"| {camera} | {mode_key} | {r['reads_per_s']} | {r['not_read_share']:.1%} "
                f"| {r['held_text_right_share']:.1%} / {r['held_text_right_share_still'] or 0:.1%} "
                f"| {r['changes_caught']}/{r['changes']} "
                f"({r['changes_one_char'] - one}/{r['changes_one_char']}) "
                f"| {r['change_delay_frames']['p50']} / {r['change_delay_frames']['max']} "
                f"| {r['change_to_answer_ms']['p50'] if r['change_to_answer_ms']['n'] else '-'} "
                f"| {r['exactly_once_violations']} |"
            )
    return "\n".join([head, *rows])


# --- plot -------------------------------------------------------------------------------


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fps = report["fps"]
    runs = [r for cameras in report["modes"].values() for r in cameras.values()]
    fig, axes = plt.subplots(len(runs), 1, figsize=(15, 2.3 * len(runs) + 0.6), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], runs, strict=True):
        t = r["timeline"]
        ax.axhspan(0, 0.4, color="#2a9d8f", alpha=0.35, lw=0)
        for start, end in t["held_wrong_runs"]:
            ax.axvspan(start / fps, end / fps, ymin=0, ymax=0.4 / 1.3, color="#e63946", alpha=0.9, lw=0)
        for c in r["change_frames"]:
            ax.axvline(c / fps, color="#555555", ls=":", lw=0.8)
        wrong = set(t["read_frames_text_wrong"])
        ok_reads = [i / fps for i in t["read_frames"] if i not in wrong]
        bad_reads = [i / fps for i in t["read_frames"] if i in wrong]
        ax.plot(
            ok_reads, [0.85] * len(ok_reads), "|", color="#1d3557", ms=12, mew=1.2, label="read (OCR right)"
        )
        ax.plot(
            bad_reads, [0.85] * len(bad_reads), "|", color="#f4a261", ms=12, mew=1.6, label="read (OCR wrong)"
        )
        ax.set_ylim(0, 1.3)
        ax.set_yticks([0.2, 0.85], ["held text", "reads"])
        ax.set_title(
            f"{r['label']}: {r['reads_per_s']} reads/s, not read {r['not_read_share']:.1%}, held text right "
            f"{r['held_text_right_share']:.1%}, changes caught {r['changes_caught']}/{r['changes']}, "
            f"delay p50 {r['change_delay_frames']['p50']} frames",
            fontsize=10,
            loc="left",
        )
    axes[-1, 0].set_xlim(0, max(r["frames"] for r in runs) / fps)
    axes[-1, 0].set_xlabel("seconds of the stream (capture time); dotted: the true text changes")
    handles, _ = axes[0, 0].get_legend_handles_labels()
    handles += [
        Patch(color="#2a9d8f", alpha=0.35, label="held text right"),
        Patch(color="#e63946", label="held text wrong"),
    ]
    fig.legend(handles=handles, loc="upper right", ncol=4, fontsize=9)
    fig.suptitle(f"cameras at {fps:g} fps through the service, one WebSocket each", x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def frames_of(camera: str, args: argparse.Namespace) -> list[CameraFrame]:
    hold = tuple(args.hold)
    if camera == "label":
        return list(iter_frames(args.seconds, args.fps, args.seed, hold_s=hold))
    return list(iter_scene(camera, args.seconds, args.fps, args.seed, hold_s=hold))


# --- command line ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each camera stream")
    parser.add_argument("--cameras", default=",".join(CAMERAS), help="comma-separated; also: label")
    parser.add_argument("--hold", type=float, nargs=2, default=(0.5, 3.0), help="seconds between changes")
    parser.add_argument("--fps", type=float, default=30.0, help="camera frame rate (sent in real time)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the camera")
    parser.add_argument("--modes", default="service", help=f"comma-separated, of {[m.key for m in MODES]}")
    parser.add_argument("--drain-s", type=float, default=30.0, help="max wait for answers after the stream")
    parser.add_argument("--port", type=int, default=8123, help="port of the first run (+1 per run)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from --out")
    args = parser.parse_args(argv)
    png = args.out.with_suffix(".png")
    if args.plot_only:
        plot(json.loads(args.out.read_text()), png)
        return

    wait_for_no_ray()
    t = time.monotonic()
    streams = {camera: frames_of(camera, args) for camera in args.cameras.split(",")}
    print(f"rendered {sum(map(len, streams.values()))} frames in {time.monotonic() - t:.1f} s", flush=True)
    report: dict[str, Any] = {
        "command": "python -m bench.dedup_stream " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": time.time(),
        "machine": machine_info(),
        "goals": GOALS,
        "fps": args.fps,
        "hold_s": list(args.hold),
        "streams": {
            camera: {
                "seconds": args.seconds,
                "seed": args.seed,
                "frames": len(frames),
                "mean_jpeg_bytes": round(sum(len(f.jpeg) for f in frames) / len(frames)),
                "change_frames": [f.index for f in frames if f.changed],
                "one_char_change_frames": [f.index for f in frames if f.one_char],
            }
            for camera, frames in streams.items()
        },
        "modes": {},
    }
    keys = args.modes.split(",")
    for k, mode in enumerate(m for m in MODES if m.key in keys):
        report["modes"][mode.key] = run_mode(mode, streams, args, args.port + k)
        write_json(args.out, report)  # after every mode: a later failure keeps the earlier ones
    report["table_md"] = table(report)
    write_json(args.out, report)
    plot(report, png)
    print(report["table_md"])


if __name__ == "__main__":
    main()
