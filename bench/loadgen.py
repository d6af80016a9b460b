"""An asyncio WebSocket load generator for the streaming OCR protocol (v1, binary frames).

    python -m bench.loadgen --url http://127.0.0.1:8000 --phases 3x10,30x15,3x10 --fps 4

The scripts of docs/benchmarks.md (burst, many connections, ceiling) drive it
from Python: a schedule of :class:`Phase` (how many streams for how long),
each stream sending at a fixed rate (open loop: a slow server does not slow
the sender) or keeping a fixed number of frames in flight (closed loop,
``window``). Every frame shows new text: frames come from a pre-rendered pool
of distinct label images (``frame_pool``), and consecutive frames of a stream
always differ, so change detection never skips one.

Recorded per frame: send and answer time, the outcome (``ok``,
``skipped:<reason>``, ``error:<code>``), how many answers it got (the
protocol promises exactly one; more or none is reported, never raised). Per
stream: frames, reads, ``{"type": "ping"}`` round trips. Per run: connection
errors and close codes, and how late the generator itself sent (it shares the
cores with the service: a late generator is part of the result).

:func:`analyse` turns a :class:`LoadResult` into JSON: totals, per phase
(reads per stream and Jain's fairness index), and a per-second time series.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bench.common import percentile, summary
from serve_app.protocol import encode_binary_frame

READ = "ok"
_WORDS = ("LOT", "EXP", "REF", "BATCH", "PRICE", "NET", "CODE", "SKU", "ITEM", "ORDER")

# --- frames -------------------------------------------------------------------


def render_label(
    lines: Sequence[str],
    *,
    width: int = 640,
    height: int = 480,
    quality: int = 90,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> bytes:
    """A light card with dark text lines on a grey background, as JPEG."""
    image = np.full((height, width, 3), 225, np.uint8)
    scale = width / 640
    margin_x, margin_y = int(40 * scale), int(50 * scale)
    cv2.rectangle(image, (margin_x, margin_y), (width - margin_x, height - margin_y), (250, 250, 250), -1)
    step = (height - 2 * margin_y) / (len(lines) + 1)
    for i, text in enumerate(lines):
        y = int(margin_y + step * (i + 1) + 12 * scale)
        cv2.putText(
            image,
            text,
            (margin_x + int(25 * scale), y),
            cv2.FONT_HERSHEY_SIMPLEX,
            1.2 * scale,
            (20, 20, 20),
            max(1, round(2 * scale)),
        )
    if noise > 0:
        rng = rng if rng is not None else np.random.default_rng()
        grain = rng.normal(0.0, noise, image.shape)
        image = np.clip(image.astype(np.float32) + grain, 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def label_text(index: int, rng: random.Random) -> list[str]:
    """Four lines, the first with the frame's counter: no two frames of a pool read alike."""
    word = rng.choice(_WORDS)
    return [
        f"FRAME {index:06d}",
        f"{word} {rng.randint(10_000, 99_999)}",
        f"EXP 20{rng.randint(26, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        f"EUR {rng.randint(1, 99)}.{rng.randint(0, 99):02d}",
    ]


def frame_pool(
    n: int,
    *,
    width: int = 640,
    height: int = 480,
    quality: int = 90,
    noise: float = 0.0,
    seed: int = 0,
) -> list[bytes]:
    """``n`` distinct label JPEGs (rendered once: the generator must stay cheap)."""
    rng = random.Random(seed)
    grain = np.random.default_rng(seed)
    return [
        render_label(label_text(i, rng), width=width, height=height, quality=quality, noise=noise, rng=grain)
        for i in range(n)
    ]


def sized_pool(n: int, target_bytes: int, *, seed: int = 0) -> list[bytes]:
    """``n`` distinct 640x480 labels at the JPEG quality whose frames come closest to ``target_bytes``."""

    def mean_size(quality: int) -> float:
        frames = frame_pool(8, quality=quality, seed=seed)
        return sum(len(f) for f in frames) / len(frames)

    best = min(range(40, 100, 5), key=lambda q: abs(mean_size(q) - target_bytes))
    return frame_pool(n, quality=best, seed=seed)


# --- the schedule -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phase:
    """``streams`` streams for ``duration_s``; new streams of the phase open ``ramp_per_s`` a second."""

    streams: int
    duration_s: float
    ramp_per_s: float | None = None

    @classmethod
    def parse(cls, text: str) -> list[Phase]:
        """``3x10,30x15,3x10``: streams x seconds, comma-separated."""
        phases = []
        for part in text.split(","):
            streams, seconds = part.lower().split("x")
            phases.append(cls(int(streams), float(seconds)))
        return phases


def phase_bounds(phases: Sequence[Phase]) -> list[tuple[float, float]]:
    out, t = [], 0.0
    for phase in phases:
        out.append((t, t + phase.duration_s))
        t += phase.duration_s
    return out


def stream_intervals(phases: Sequence[Phase], stream: int) -> list[tuple[float, float]]:
    """The contiguous spans (seconds from the start) in which ``stream`` is active.

    A stream that opens in a ramping phase starts ``stream_rank / ramp_per_s``
    after the phase start, where the rank counts the streams new in that phase.
    """
    spans: list[tuple[float, float]] = []
    previous = 0
    for phase, (start, end) in zip(phases, phase_bounds(phases), strict=True):
        if stream < phase.streams:
            opens = start
            if stream >= previous and phase.ramp_per_s:
                opens = min(end, start + (stream - previous) / phase.ramp_per_s)
            if spans and spans[-1][1] == start:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((opens, end))
        previous = phase.streams
    return spans


# --- records ------------------------------------------------------------------


@dataclass(slots=True)
class FrameRecord:
    stream: int
    frame_id: int
    sent: float  # seconds since the run started
    late: float  # how far behind its schedule the generator sent it (open loop)
    answered: float | None = None
    outcome: str | None = None
    answers: int = 0
    ocr_ms: float | None = None
    queue_ms: float | None = None  # the server's timing of a read frame


@dataclass(slots=True)
class StreamStats:
    stream: int
    frames: list[FrameRecord] = field(default_factory=list)
    pings: list[tuple[float, float]] = field(default_factory=list)  # (sent, rtt_s)
    pings_unanswered: int = 0
    connects: list[tuple[float, float | None]] = field(default_factory=list)  # (open, close)
    connect_errors: list[str] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)  # abnormal closes while the stream was active
    unknown_answers: int = 0  # answers naming a frame this stream never sent
    null_errors: int = 0  # error answers with frame_id null


@dataclass(slots=True)
class LoadResult:
    phases: list[Phase]
    fps: float | None
    window: int | None
    streams: list[StreamStats]
    started: float  # time.time() at t = 0
    wall_s: float
    stopped_opening_at: float | None = None  # adaptive ramps: when new streams stopped opening


@dataclass(slots=True)
class LoadSpec:
    url: str  # http://host:port of the service
    phases: list[Phase]
    frames: list[bytes]
    fps: float | None = 4.0  # open loop: frames per second per stream
    window: int | None = None  # closed loop: frames in flight per stream (fps ignored)
    max_frames: int | None = None  # per stream, then the stream stops sending
    stream_fps: float | None = None  # the ``fps`` query parameter (target processing rate)
    ping_interval_s: float | None = 1.0
    ping_every_nth: int = 1  # only streams whose number is a multiple of this ping (many connections)
    drain_s: float = 30.0  # after a stream's last frame: wait at most this long for answers
    open_timeout_s: float = 30.0
    keepalive_s: float | None = 20.0  # the websockets client's own keepalive (library default)
    stream_prefix: str = "load"
    seed: int = 0


class LoadGen:
    """One run of a :class:`LoadSpec`; ``stop_opening()`` stops new streams (adaptive ramps)."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        n = max(p.streams for p in spec.phases)
        self.stats = [StreamStats(i) for i in range(n)]
        self._t0 = 0.0
        self._opening = True
        self.stopped_opening_at: float | None = None
        self.open_connections = 0
        self._finish_at = math.inf

    def now(self) -> float:
        return time.perf_counter() - self._t0

    def stop_opening(self) -> None:
        if self._opening:
            self._opening = False
            self.stopped_opening_at = self.now()

    def finish_at(self, t: float) -> None:
        """Every stream stops sending at ``t`` (seconds from the start), whatever the schedule."""
        self._finish_at = min(self._finish_at, t)

    async def run(self, monitor: Callable[[LoadGen], None] | None = None) -> LoadResult:
        self._t0 = time.perf_counter()
        started = time.time()
        rng = random.Random(self.spec.seed)
        offsets = [rng.randrange(len(self.spec.frames)) for _ in self.stats]
        tasks = [asyncio.create_task(self._stream(s, offsets[s.stream])) for s in self.stats]
        ticker = asyncio.create_task(self._tick(monitor)) if monitor is not None else None
        try:
            await asyncio.gather(*tasks)
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
        return LoadResult(
            phases=list(self.spec.phases),
            fps=self.spec.fps if self.spec.window is None else None,
            window=self.spec.window,
            streams=self.stats,
            started=started,
            wall_s=self.now(),
            stopped_opening_at=self.stopped_opening_at,
        )

    async def _tick(self, monitor: Callable[[LoadGen], None]) -> None:
        while True:
            await asyncio.sleep(1.0)
            monitor(self)

    async def _stream(self, stats: StreamStats, offset: int) -> None:
        counter = [0, offset]  # next frame_id, next pool index
        for start, end in stream_intervals(self.spec.phases, stats.stream):
            await asyncio.sleep(max(0.0, start - self.now()))
            if not self._opening or self.now() >= self._finish_at:
                return
            await self._connection(stats, end, counter)

    def _ws_url(self, stats: StreamStats) -> str:
        base = self.spec.url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/")
        query = f"stream_id={self.spec.stream_prefix}-{stats.stream}"
        if self.spec.stream_fps is not None:
            query += f"&fps={self.spec.stream_fps:g}"
        return f"{base}/v1/stream?{query}"

    async def _connection(self, stats: StreamStats, end: float, counter: list[int]) -> None:
        spec = self.spec
        opened = self.now()
        try:
            ws = await websockets.connect(
                self._ws_url(stats),
                max_size=None,
                open_timeout=spec.open_timeout_s,
                ping_interval=spec.keepalive_s,
                ping_timeout=spec.keepalive_s,
                close_timeout=5,
                compression=None,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            stats.connect_errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return
        opened = self.now()  # the handshake is done: the connection counts as open from here
        slot = len(stats.connects)
        stats.connects.append((opened, None))
        self.open_connections += 1
        link = _Link(ws)
        receiver = asyncio.create_task(self._receive(link, stats))
        pinging = spec.ping_interval_s is not None and stats.stream % spec.ping_every_nth == 0
        pinger = asyncio.create_task(self._ping(link, end)) if pinging else None
        try:
            await self._send(link, stats, end, counter)
        except ConnectionClosed:
            pass
        finally:
            if pinger is not None:
                pinger.cancel()
            # Wait (bounded) for the answers of every frame sent.
            if link.outstanding and not receiver.done():
                idle = asyncio.create_task(link.idle.wait())
                await asyncio.wait(
                    {receiver, idle}, timeout=spec.drain_s, return_when=asyncio.FIRST_COMPLETED
                )
                idle.cancel()
            link.closing = True
            receiver.cancel()
            for task in (receiver, pinger):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            stats.pings_unanswered += len(link.pings)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
            stats.connects[slot] = (opened, self.now())
            self.open_connections -= 1

    async def _send(self, link: _Link, stats: StreamStats, end: float, counter: list[int]) -> None:
        spec = self.spec
        pool = spec.frames
        window = spec.window
        period = 1.0 / spec.fps if (spec.fps and window is None) else 0.0
        # Streams start at a random phase of their period: no lock-step across streams.
        next_at = self.now() + (random.Random(stats.stream).random() * period if period else 0.0)
        while True:
            if spec.max_frames is not None and len(stats.frames) >= spec.max_frames:
                return
            if window is not None:
                while len(link.outstanding) >= window:
                    link.room.clear()
                    remaining = end - self.now()
                    if remaining <= 0:
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(link.room.wait(), remaining)
                late = 0.0
            else:
                delay = min(next_at, end) - self.now()  # a stream that sends rarely still ends on time
                if delay > 0:
                    await asyncio.sleep(delay)
                late = max(0.0, self.now() - next_at)
                next_at += period
            now = self.now()
            if now >= end or now >= self._finish_at:
                return
            frame_id = counter[0]
            counter[0] += 1
            image = pool[counter[1] % len(pool)]
            counter[1] += 1
            record = FrameRecord(stats.stream, frame_id, now, late)
            stats.frames.append(record)
            link.outstanding[frame_id] = record
            link.idle.clear()
            await link.ws.send(encode_binary_frame(frame_id, image, ts=self._t0 + now))

    async def _ping(self, link: _Link, end: float) -> None:
        interval = self.spec.ping_interval_s or 1.0
        await asyncio.sleep(random.random() * interval)
        while self.now() < min(end, self._finish_at):
            link.pings.append(self.now())
            await link.ws.send('{"type":"ping"}')
            await asyncio.sleep(interval)

    async def _receive(self, link: _Link, stats: StreamStats) -> None:
        """Match answers to frames (pongs to pings, in order) until cancelled or closed."""
        outstanding = link.outstanding
        by_id: dict[int, FrameRecord] = {}
        try:
            async for message in link.ws:
                now = self.now()
                answer = json.loads(message)
                kind = answer.get("type")
                if kind == "pong":
                    if link.pings:
                        sent = link.pings.popleft()
                        stats.pings.append((sent, now - sent))
                    continue
                if kind not in ("result", "error"):
                    continue
                frame_id = answer.get("frame_id")
                if frame_id is None:
                    stats.null_errors += 1
                    continue
                record = outstanding.pop(frame_id, None)
                if record is None:  # a second answer, or a frame never sent
                    if len(by_id) != len(stats.frames):
                        by_id = {r.frame_id: r for r in stats.frames}
                    again = by_id.get(frame_id)
                    if again is not None:
                        again.answers += 1
                    else:
                        stats.unknown_answers += 1
                    continue
                record.answers += 1
                record.answered = now
                if kind == "error":
                    record.outcome = f"error:{answer.get('code')}"
                elif answer.get("status") == READ:
                    record.outcome = READ
                    timing = answer.get("timing") or {}
                    record.ocr_ms, record.queue_ms = timing.get("ocr_ms"), timing.get("queue_ms")
                else:
                    record.outcome = f"skipped:{answer.get('reason')}"
                link.room.set()
                if not outstanding:
                    link.idle.set()
        except ConnectionClosed as exc:
            if not link.closing:
                stats.closes.append(_close_text(exc))


@dataclass(slots=True)
class _Link:
    """One open connection of a stream and what is in flight on it."""

    ws: Any
    outstanding: dict[int, FrameRecord] = field(default_factory=dict)
    pings: deque[float] = field(default_factory=deque)
    room: asyncio.Event = field(default_factory=asyncio.Event)  # an answer arrived
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # nothing in flight
    closing: bool = False


def _close_text(exc: ConnectionClosed) -> str:
    if exc.rcvd is not None:
        return f"received {exc.rcvd.code} {exc.rcvd.reason}".strip()
    if exc.sent is not None:
        return f"sent {exc.sent.code} {exc.sent.reason}".strip()
    return "1006 (no close frame)"


async def closed_loop_latency(
    url: str, frames: list[bytes], n: int, *, stream_fps: float = 30.0
) -> LoadResult:
    """One stream, one frame at a time, ``n`` frames: the unloaded single-frame latency."""
    spec = LoadSpec(
        url=url,
        phases=[Phase(1, 120.0)],
        frames=frames,
        window=1,
        max_frames=n,
        stream_fps=stream_fps,
        ping_interval_s=None,
        drain_s=30.0,
        stream_prefix="single",
    )
    return await LoadGen(spec).run()


# --- analysis -----------------------------------------------------------------


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return round(total * total / (len(values) * squares), 4) if squares > 0 else float("nan")


def _ms(seconds: list[float]) -> list[float]:
    return [s * 1000.0 for s in seconds]


def _outcomes(records: Sequence[FrameRecord]) -> dict[str, Any]:
    counts = Counter(r.outcome or "unanswered" for r in records)
    n = len(records)
    return {
        "counts": dict(sorted(counts.items())),
        "share": {k: round(v / n, 4) for k, v in sorted(counts.items())} if n else {},
    }


def _latency(records: Sequence[FrameRecord], outcome: str | None = READ) -> dict[str, float]:
    return summary(
        _ms(
            [
                r.answered - r.sent
                for r in records
                if r.answered is not None and (outcome is None or r.outcome == outcome)
            ]
        )
    )


def analyse(result: LoadResult) -> dict[str, Any]:
    """Totals, per phase and per second: the JSON every load benchmark writes."""
    frames = [r for s in result.streams for r in s.frames]
    answered = [r for r in frames if r.answers >= 1]
    pings = [rtt for s in result.streams for _, rtt in s.pings]
    lateness = [r.late for r in frames]
    connect_errors = Counter(e.split(":")[0] for s in result.streams for e in s.connect_errors)
    closes = Counter(c for s in result.streams for c in s.closes)
    totals = {
        "streams": len(result.streams),
        "frames_sent": len(frames),
        "answered": len(answered),
        "unanswered": len(frames) - len(answered),
        "answered_more_than_once": sum(1 for r in frames if r.answers > 1),
        "answers_for_unknown_frames": sum(s.unknown_answers for s in result.streams),
        "errors_with_null_frame_id": sum(s.null_errors for s in result.streams),
        "every_frame_answered_once": len(answered) == len(frames)
        and all(r.answers == 1 for r in frames)
        and not any(s.unknown_answers for s in result.streams),
        "outcomes": _outcomes(frames),
        "read_latency_ms": _latency(frames) | {"max": _max_ms(frames)},
        "answer_latency_ms": _latency(frames, None),
        "server_timing_of_reads_ms": {
            "ocr_ms": summary([r.ocr_ms for r in frames if r.ocr_ms is not None]),
            "queue_ms": summary([r.queue_ms for r in frames if r.queue_ms is not None]),
        },
        "ping_rtt_ms": summary(_ms(pings)) | {"max": round(max(_ms(pings), default=float("nan")), 1)},
        "pings_unanswered": sum(s.pings_unanswered for s in result.streams),
        "connections_opened": sum(len(s.connects) for s in result.streams),
        "connection_errors": sum(connect_errors.values()),
        "connection_errors_by_kind": dict(connect_errors),
        "abnormal_closes": dict(closes),
        "generator_late_ms": {
            "p99": round(percentile(_ms(lateness), 99), 1),
            "max": round(max(_ms(lateness), default=0.0), 1),
        },
        "wall_s": round(result.wall_s, 1),
    }
    return {
        "schedule": {
            "phases": [
                {"streams": p.streams, "duration_s": p.duration_s, "ramp_per_s": p.ramp_per_s}
                for p in result.phases
            ],
            "fps_per_stream": result.fps,
            "frames_in_flight_per_stream": result.window,
        },
        "totals": totals,
        "phases": [_phase(result, i) for i in range(len(result.phases))],
        "per_stream": [
            {
                "stream": s.stream,
                "sent": len(s.frames),
                "answered": sum(1 for r in s.frames if r.answers),
                "read": sum(1 for r in s.frames if r.outcome == READ),
            }
            for s in result.streams
        ],
        "timeseries": timeseries(result),
    }


def _max_ms(records: Sequence[FrameRecord]) -> float:
    values = [(r.answered - r.sent) * 1000 for r in records if r.answered is not None and r.outcome == READ]
    return round(max(values), 1) if values else float("nan")


def _phase(result: LoadResult, index: int) -> dict[str, Any]:
    """Frames SENT within the phase (their answers may come later)."""
    start, end = phase_bounds(result.phases)[index]
    phase = result.phases[index]
    active = [s for s in result.streams if s.stream < phase.streams]
    records = [r for s in active for r in s.frames if start <= r.sent < end]
    reads = [sum(1 for r in s.frames if start <= r.sent < end and r.outcome == READ) for s in active]
    return {
        "streams": phase.streams,
        "window_s": [round(start, 1), round(end, 1)],
        "frames_sent": len(records),
        "answered": sum(1 for r in records if r.answers),
        "outcomes": _outcomes(records),
        "read_latency_ms": _latency(records),
        "reads_per_stream": {"min": min(reads, default=0), "max": max(reads, default=0)},
        "jain_fairness_of_reads": jain(reads) if reads else float("nan"),
    }


def timeseries(result: LoadResult) -> list[dict[str, Any]]:
    """One row per second: sends by send time, answers by answer time, ping max by ping time."""
    frames = [r for s in result.streams for r in s.frames]
    last = max([result.wall_s, *(r.answered or 0.0 for r in frames)])
    rows: list[dict[str, Any]] = [
        {"t": t, "sent": 0, "answered": 0, "read": 0, "skipped": Counter(), "errors": Counter(), "_lat": []}
        for t in range(math.ceil(last) + 1)
    ]
    for r in frames:
        rows[int(r.sent)]["sent"] += 1
        if r.answered is None:
            continue
        row = rows[int(r.answered)]
        row["answered"] += 1
        if r.outcome == READ:
            row["read"] += 1
            row["_lat"].append((r.answered - r.sent) * 1000.0)
        elif r.outcome and r.outcome.startswith("skipped:"):
            row["skipped"][r.outcome.split(":", 1)[1]] += 1
        elif r.outcome:
            row["errors"][r.outcome.split(":", 1)[1]] += 1
    ping_max: dict[int, float] = {}
    for s in result.streams:
        for sent, rtt in s.pings:
            ping_max[int(sent)] = max(ping_max.get(int(sent), 0.0), rtt * 1000.0)
    opens: list[tuple[float, int]] = []
    for s in result.streams:
        for opened, closed in s.connects:
            opens.append((opened, 1))
            opens.append((closed if closed is not None else last + 1, -1))
    opens.sort()
    level, k = 0, 0
    for row in rows:
        while k < len(opens) and opens[k][0] < row["t"] + 1:
            level += opens[k][1]
            k += 1
        lat = row.pop("_lat")
        row["read_p50_ms"] = round(percentile(lat, 50), 1) if lat else None
        row["read_p99_ms"] = round(percentile(lat, 99), 1) if lat else None
        row["ping_max_ms"] = round(ping_max[row["t"]], 1) if row["t"] in ping_max else None
        row["open_connections"] = level
        row["skipped"] = dict(row["skipped"])
        row["errors"] = dict(row["errors"])
    return rows


def print_totals(name: str, analysis: dict[str, Any]) -> None:
    t = analysis["totals"]
    print(
        f"[{name}] sent {t['frames_sent']}, answered {t['answered']} (once each: "
        f"{t['every_frame_answered_once']}), outcomes {t['outcomes']['counts']}, "
        f"read p50/p99 {t['read_latency_ms']['p50']}/{t['read_latency_ms']['p99']} ms, "
        f"ping max {t['ping_rtt_ms']['max']} ms, connection errors {t['connection_errors']}, "
        f"closes {t['abnormal_closes']}",
        flush=True,
    )


# --- command line ---------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--phases", default="3x10", help="streams x seconds, comma-separated")
    parser.add_argument("--fps", type=float, default=4.0)
    parser.add_argument("--window", type=int, default=None, help="closed loop: frames in flight per stream")
    parser.add_argument("--stream-fps", type=float, default=None, help="the fps query parameter")
    parser.add_argument("--pool", type=int, default=512, help="distinct frames rendered")
    parser.add_argument("--drain-s", type=float, default=30.0)
    parser.add_argument("--out", default=None, help="write the analysis here (JSON)")
    args = parser.parse_args()
    spec = LoadSpec(
        url=args.url,
        phases=Phase.parse(args.phases),
        frames=frame_pool(args.pool),
        fps=args.fps,
        window=args.window,
        stream_fps=args.stream_fps,
        drain_s=args.drain_s,
    )
    analysis = analyse(asyncio.run(LoadGen(spec).run()))
    print_totals("loadgen", analysis)
    if args.out:
        from pathlib import Path

        from bench.common import write_json

        write_json(Path(args.out), analysis)


if __name__ == "__main__":
    main()
