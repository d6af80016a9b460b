"""Text events on generated streams with ground truth: simulated (Ray-free), or the real service.

    python -m bench.events [--seconds 120] [--streams 4] [--seed 0]
    python -m bench.events --service [--seconds 75] [--streams 1] [--no-compare]   # real model, Ray

No images and no model: three generated scenes say, per frame of a 30 fps
stream, which text lines are in view and where; a simulated reader turns them
into OCR lines with the misreads a real one makes; a simulated sampler decides
for each frame what the ingress would learn (rate gate at ``default_fps``,
dedup: a frame whose content is unchanged since the last read is ``same``,
except a refresh read every ``refresh_s``; ``overloaded`` now and then); and
when :meth:`TextTracker.wants_read` asks for it the next frame that passes the
rate gate is read even if unchanged (a forced read). The variant
``forced_next_frame`` forces the very next frame instead (a sampler that lets
forced reads past the rate gate).

Scenes (per stream, seeded):

- ``conveyor``: a label with a serial at a station, a new label every 4-12 s
  (the old one slides out, the new one in: partial reads of moving text), a
  fixed sign above it;
- ``screen``: a price display whose number changes every 1-3 s (half of the
  changes one digit) under a fixed caption;
- ``documents``: pages of 5-9 lines held 3-8 s, 0.4 s page turns (nothing
  readable), each page placed a little differently, a slow drift of the view.

Misread bait: a character hidden for 2-4 frames (every ~5 s), blur for 2-4
frames that misreads a character of half the lines the same way (every ~4 s),
random one-character errors in ``error_rate`` of line reads, lines dropped in
``drop_rate`` of line reads, spaces dropped (no change: the tracker ignores
spaces). Box jitter of 2 px, as a shaking camera gives.

Scored with the functions below (reusable with events and answers from the real
service): event precision and recall, false events from bait, delay of each
announced text from the first frame that showed it, extra (forced) reads per
change; and what a client would show from per-frame results alone (distinct
texts shown, texts shown that were not in view). Writes docs/bench/events_sim.json.

``--service``: the cameras of ``bench/camera.py`` (``conveyor``: label cards, a
new card or a reprint every 4-12 s; ``screen``: an order, a total and a
quantity changing every 1-3 s; ``document``: pages turned every 4-12 s; half
of the changes one character; misread bait: a fingertip over a character for
2-4 frames, 2-3 motion-blurred frames) are rendered, then streamed in real time
(30 fps, ``ts`` = capture time, binary frames) with ``events=1`` through the
application of configs/serve.yaml with the real model (``running_app``), one
stream at a time; each is also streamed with events off first (``--no-compare``
skips that), to count the reads events add. Every answer and event is kept and
scored as above. The real model may read a line as several (``LOT`` and
``B62-7967``): texts are compared without spaces, and a true line shows, for a
client following the events, the texts of the confirmed tracks whose box
centres lie in its box (grown by half its height), joined left to right
(:func:`line_events`; per-frame reads the same way, :func:`read_texts`).
Writes docs/bench/events_service.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.camera import CameraFrame, iter_scene
from bench.common import ROOT, machine_info, percentile, running_app, wait_for_no_ray, write_json
from bench.loadgen import READ, analyse, closed_loop_latency, frame_pool
from ocr_client.client import OCRStreamClient
from serve_app.config import AppConfig, EventsConfig
from serve_app.protocol import ErrorAnswer, Line, ResultAnswer, TextEvent
from serve_app.tracking import TextTracker, text_key

OUT = ROOT / "docs" / "bench" / "events_sim.json"
FPS = 30
CHAR_W, LINE_H = 14, 30  # pixels of one character and of a line box
VIEW_W = 640
GOALS = {"precision_min": 0.98, "recall_min": 0.98, "bait_false_events_max": 0, "delay_frames_p50_max": 10}


# --- ground truth -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrueLine:
    """A line in view: ``slot`` names its place in the scene; ``shown`` the fraction of it in view."""

    slot: str
    text: str
    x: float
    y: float
    shown: float = 1.0


@dataclass(frozen=True, slots=True)
class Segment:
    """A text fully in view in one slot from frame ``first`` to ``last``: one announcement is due."""

    slot: str
    text: str
    first: int
    last: int
    expect_gone: bool  # its slot then stays empty long enough for a ``gone``
    due: bool = True  # False: still in view when the stream ended, for under 1 s (too soon to confirm)


def segments(frames: Sequence[Sequence[TrueLine]], gone_frames: int) -> list[Segment]:
    """The segments of a stream; a ``gone`` is expected when the slot is empty > ``gone_frames`` + 1 s."""
    runs: dict[str, list[list[Any]]] = {}  # slot -> [[text, first, last], ...]
    for f, lines in enumerate(frames):
        for tl in lines:
            if tl.shown < 1.0:
                continue
            slot_runs = runs.setdefault(tl.slot, [])
            if slot_runs and slot_runs[-1][0] == tl.text and slot_runs[-1][2] == f - 1:
                slot_runs[-1][2] = f
            else:
                slot_runs.append([tl.text, f, f])
    out = []
    for slot, slot_runs in runs.items():
        for i, (text, first, last) in enumerate(slot_runs):
            following = slot_runs[i + 1][1] if i + 1 < len(slot_runs) else len(frames)
            cut_short = last == len(frames) - 1 and last - first < FPS
            out.append(Segment(slot, text, first, last, following - last > gone_frames + FPS, not cut_short))
    return sorted(out, key=lambda s: s.first)


def keys_in_view(segs: Sequence[Segment]) -> Callable[[int], set[str]]:
    def at(frame: int) -> set[str]:
        return {text_key(s.text) for s in segs if s.first <= frame <= s.last}

    return at


# --- scoring (reusable: events and answers of the real service) -----------------


def score_events(events: Sequence[TextEvent], segs: Sequence[Segment]) -> dict[str, Any]:
    """Precision, recall and delay of a stream's events against its ground truth.

    An ``appeared`` or ``changed`` is right when its text is a segment's whose frames
    include the event's ``frame_id`` and no earlier event took it; a ``gone`` when its
    text is a segment's that ended by then and was shown by the track (``last_frame_id``).
    A wrong event whose text was never in view is a false event from bait.
    """
    segs = list(segs)
    announced: set[int] = set()
    gone: set[int] = set()
    delays: list[int] = []
    wrong_events: list[int] = []
    bait = 0
    all_keys = {text_key(s.text) for s in segs}
    for n, e in enumerate(events):
        key = text_key(e.text)
        taken = gone if e.event == "gone" else announced
        fits = [i for i, s in enumerate(segs) if i not in taken and _explains(s, e)]
        # the text's latest segment: a short text may have been in view before, elsewhere
        hit = max(fits, key=lambda i: segs[i].last, default=None)
        if hit is not None and e.event != "gone":
            delays.append(e.frame_id - segs[hit].first)
        if hit is None:
            wrong_events.append(n)
            bait += key not in all_keys
        else:
            taken.add(hit)
    wrong = len(wrong_events)
    gone_found = _gone_found(segs, gone)
    due_gone = sum(s.expect_gone for s in segs)
    due = sum(s.due for s in segs)
    expected = due + due_gone
    found = sum(segs[i].due for i in announced) + gone_found
    return {
        "events": len(events),
        "true_events": len(events) - wrong,
        "false_events": wrong,
        "false_events_never_in_view": bait,
        "expected": expected,
        "found": found,
        "precision": round((len(events) - wrong) / len(events), 4) if events else 1.0,
        "recall": round(found / expected, 4) if expected else 1.0,
        "texts_announced": len(announced),
        "texts_due": due,
        "gone_found": gone_found,
        "gone_due": due_gone,
        "delays": delays,
        "wrong_events": wrong_events,  # indices into ``events``
        "missed": [i for i, seg in enumerate(segs) if seg.due and i not in announced],  # into ``segs``
    }


def _gone_found(segs: Sequence[Segment], gone: set[int]) -> int:
    """Due ``gone`` events found, counted by the frame their texts left the view.

    When lines leave together and fewer come back (a page turned to a shorter one),
    which of the old tracks the new lines continue is a free choice: what is due is
    as many ``gone`` for texts that left then as lines not replaced.
    """
    due = Counter(s.last for s in segs if s.expect_gone)
    reported = Counter(segs[i].last for i in gone)
    return sum(min(n, reported[last]) for last, n in due.items())


def _explains(s: Segment, e: TextEvent) -> bool:
    if text_key(s.text) != text_key(e.text):
        return False
    if e.event == "gone":
        shown = e.last_frame_id if e.last_frame_id is not None else e.frame_id
        return s.first <= shown and s.last <= e.frame_id
    return s.first <= e.frame_id <= s.last


def shown_by_events(events: Sequence[TextEvent], segs: Sequence[Segment]) -> dict[str, Any]:
    """What a client following the events shows: distinct texts, texts shown that were not in view."""
    in_view = keys_in_view(segs)
    shown = [(e.frame_id, text_key(e.text)) for e in events if e.event != "gone"]
    return _shown(shown, in_view, changes=len(events))


def shown_per_frame(answers: Iterable[tuple[int, Sequence[str]]], segs: Sequence[Segment]) -> dict[str, Any]:
    """What a client shows from per-frame results alone: ``answers`` are (frame_id, line texts) of reads."""
    in_view = keys_in_view(segs)
    shown: list[tuple[int, str]] = []
    changes = 0
    before: set[str] = set()
    for frame_id, texts in answers:
        keys = {text_key(t) for t in texts if text_key(t)}
        shown += [(frame_id, k) for k in keys - before]
        changes += keys != before
        before = keys
    return _shown(shown, in_view, changes=changes)


def _shown(shown: list[tuple[int, str]], in_view: Callable[[int], set[str]], changes: int) -> dict[str, Any]:
    return {
        "distinct_texts_shown": len({k for _, k in shown}),
        "display_changes": changes,
        "flicker": sum(k not in in_view(f) for f, k in shown),  # a text shown that was not in view
    }


# --- scenes ---------------------------------------------------------------------

Scene = Callable[[random.Random, int], list[list[TrueLine]]]  # (rng, frames) -> lines in view per frame
_VOCABULARY = """invoice total amount due date order number customer account payment terms net shipping
address street city postal code item quantity unit price tax subtotal reference contact phone email bank
transfer delivery note page signed approved"""
WORDS = tuple(_VOCABULARY.split())


def conveyor(rng: random.Random, n: int) -> list[list[TrueLine]]:
    frames: list[list[TrueLine]] = []
    sign = TrueLine("sign", "LINE 3 STATION B", 40, 60)
    while len(frames) < n:
        text = f"SN-{rng.randrange(10_000, 100_000)}"
        width = CHAR_W * len(text)
        for x in range(-width, 200, 45):  # slides in from the left edge
            frames.append([sign, TrueLine("serial", text, x, 220, min(1.0, (x + width) / width))])
        frames += [
            [sign, TrueLine("serial", text, 200, 220)] for _ in range(rng.randrange(4 * FPS, 12 * FPS))
        ]
        for x in range(250, VIEW_W, 50):  # slides out to the right
            frames.append([sign, TrueLine("serial", text, x, 220, min(1.0, (VIEW_W - x) / width))])
    return frames[:n]


def screen(rng: random.Random, n: int) -> list[list[TrueLine]]:
    frames: list[list[TrueLine]] = []
    cents = rng.randrange(100, 99_999)
    while len(frames) < n:
        shown = [
            TrueLine("caption", "TOTAL EUR", 60, 80),
            TrueLine("number", f"{cents // 100}.{cents % 100:02d}", 60, 160),
        ]
        frames += [shown] * rng.randrange(FPS, 3 * FPS)
        old = cents
        while cents == old:
            cents = (
                cents - cents % 10 + rng.randrange(10) if rng.random() < 0.5 else rng.randrange(100, 99_999)
            )
    return frames[:n]


def documents(rng: random.Random, n: int) -> list[list[TrueLine]]:
    frames: list[list[TrueLine]] = []
    while len(frames) < n:
        texts = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 6)))
            for _ in range(rng.randrange(5, 10))
        ]
        ox, oy = rng.uniform(-12, 12), rng.uniform(-12, 12)
        for _ in range(rng.randrange(3 * FPS, 8 * FPS)):
            drift = 20 * math.sin(len(frames) / (4 * FPS))  # a hand-held page, slowly
            frames.append(
                [TrueLine(f"line{i}", t, 40 + ox + drift, 60 + oy + 45 * i) for i, t in enumerate(texts)]
            )
        frames += [[] for _ in range(12)]  # page turn: nothing readable
    return frames[:n]


SCENES: dict[str, Scene] = {"conveyor": conveyor, "screen": screen, "documents": documents}


# --- the reader and the sampler, simulated ---------------------------------------

CONFUSABLE = {"0": "O8", "1": "7I", "2": "Z", "3": "8", "4": "A", "5": "S6", "6": "8G", "7": "1", "8": "B3"}


def confuse(ch: str, rng: random.Random) -> str:
    if ch in CONFUSABLE:
        return rng.choice(CONFUSABLE[ch])
    if ch.isalpha():
        return rng.choice([c for c in "ecoaniltrsuCEOIL" if c != ch] or ["x"])
    return "."


@dataclass(slots=True)
class Bait:
    """Visual disturbances of a stream: (first frame, last frame, slot or None for all, char index, char)."""

    hidden: list[tuple[int, int, str, float]] = field(default_factory=list)
    blur: list[tuple[int, int, int]] = field(default_factory=list)  # (first, last, seed of its confusions)

    @classmethod
    def draw(cls, rng: random.Random, n: int, slots: list[str]) -> Bait:
        bait = cls()
        f = rng.randrange(FPS)
        while (f := f + int(rng.expovariate(1 / (5 * FPS)))) < n:
            bait.hidden.append((f, f + rng.randrange(1, 4), rng.choice(slots), rng.random()))
        f = rng.randrange(FPS)
        while (f := f + int(rng.expovariate(1 / (4 * FPS)))) < n:
            bait.blur.append((f, f + rng.randrange(1, 4), rng.randrange(2**32)))
        return bait

    def at(self, frame: int) -> tuple[tuple[str, float] | None, int | None]:
        hidden = next(((s, c) for a, b, s, c in self.hidden if a <= frame <= b), None)
        blur = next((seed for a, b, seed in self.blur if a <= frame <= b), None)
        return hidden, blur


@dataclass(frozen=True, slots=True)
class Reader:
    error_rate: float = 0.03
    drop_rate: float = 0.01
    space_drop_rate: float = 0.05

    def read(self, lines: Sequence[TrueLine], frame: int, bait: Bait, rng: random.Random) -> list[Line]:
        hidden, blur = bait.at(frame)
        out = []
        for tl in lines:
            text, score = tl.text, rng.uniform(0.9, 0.99)
            if tl.shown < 1.0:  # partly in view: the visible characters
                keep = int(len(text) * tl.shown)
                text, score = (text[-keep:] if tl.x < 0 else text[:keep]), rng.uniform(0.6, 0.9)
            if not text or rng.random() < self.drop_rate:
                continue
            if hidden is not None and hidden[0] == tl.slot:
                i = int(hidden[1] * len(text))
                text = text[:i] + text[i + 1 :]
            if blur is not None:
                blur_rng = random.Random(f"{blur}-{tl.slot}")  # the same confusion all along the blur
                if blur_rng.random() < 0.5:
                    i = blur_rng.randrange(len(text))
                    text, score = (
                        text[:i] + confuse(text[i], blur_rng) + text[i + 1 :],
                        rng.uniform(0.6, 0.85),
                    )
            if rng.random() < self.error_rate:
                i = rng.randrange(len(text))
                text, score = text[:i] + confuse(text[i], rng) + text[i + 1 :], rng.uniform(0.7, 0.95)
            if " " in text and rng.random() < self.space_drop_rate:
                text = text.replace(" ", "", 1)
            x, y = tl.x + rng.uniform(-2, 2), tl.y + rng.uniform(-2, 2)
            w = CHAR_W * len(text)
            box = [
                [round(x), round(y)],
                [round(x + w), round(y)],
                [round(x + w), round(y + LINE_H)],
                [round(x), round(y + LINE_H)],
            ]
            out.append(Line(text=text, score=round(score, 3), box=box))
        return out


def content(lines: Sequence[TrueLine], frame: int, bait: Bait) -> tuple[Any, ...]:
    """What dedup compares: the texts, their places (it forgives motion < 16 px), the bait in view."""
    return (
        tuple((tl.slot, tl.text, tl.shown, round(tl.x / 16), round(tl.y / 16)) for tl in lines),
        bait.at(frame),
    )


@dataclass(slots=True)
class Run:
    events: list[TextEvent] = field(default_factory=list)
    reads: list[tuple[int, list[str]]] = field(default_factory=list)  # (frame, texts) of every read
    forced: int = 0
    read_ms: list[float] = field(default_factory=list)  # time of each TextTracker.read call


def simulate(
    frames: Sequence[Sequence[TrueLine]],
    bait: Bait,
    rng: random.Random,
    config: EventsConfig,
    *,
    fps: float = 5.0,
    refresh_s: float = 5.0,
    overloaded_rate: float = 0.01,
    forced_next_frame: bool = False,
    reader: Reader = Reader(),
) -> Run:
    """One stream through a simulated sampler and reader into a :class:`TextTracker`."""
    tracker = TextTracker(config)
    run = Run()
    next_read_ts: float | None = None
    ref: tuple[Any, ...] | None = None
    ref_ts = 0.0
    for f, lines in enumerate(frames):
        ts = f / FPS
        seen = content(lines, f, bait)
        forced = tracker.wants_read(ts) and seen == ref and ts - ref_ts < refresh_s
        if forced_next_frame and forced:
            gated = True
        elif next_read_ts is not None and ts < next_read_ts:
            run.events += tracker.skipped(f, ts)  # rate
            continue
        else:
            gated = rng.random() >= overloaded_rate
            next_read_ts = ts + 0.9 / fps
        if not gated:
            run.events += tracker.skipped(f, ts)  # overloaded
        elif seen != ref or ts - ref_ts >= refresh_s or forced:
            got = reader.read(lines, f, bait, rng)
            start = time.perf_counter()
            run.events += tracker.read(f, ts, got, forced=forced)
            run.read_ms.append((time.perf_counter() - start) * 1000)
            run.reads.append((f, [line.text for line in got]))
            run.forced += forced
            ref, ref_ts = seen, ts
        else:
            run.events += tracker.same(f, ts)
    return run


# --- the benchmark ----------------------------------------------------------------


def measure(
    scene: str, streams: int, seconds: float, seed: int, config: EventsConfig, forced_next_frame: bool
) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    delays: list[int] = []
    read_ms: list[float] = []
    for i in range(streams):
        rng = random.Random(f"{scene}-{seed}-{i}")
        frames = SCENES[scene](rng, int(seconds * FPS))
        segs = segments(frames, round(config.gone_after_s * FPS))
        bait = Bait.draw(rng, len(frames), sorted({tl.slot for lines in frames for tl in lines}))
        run = simulate(frames, bait, rng, config, forced_next_frame=forced_next_frame)
        scored = score_events(run.events, segs)
        delays += scored.pop("delays")
        del scored["wrong_events"], scored["missed"]
        read_ms += run.read_ms
        per_frame = shown_per_frame(run.reads, segs)
        by_events = shown_by_events(run.events, segs)
        for key, value in [
            *scored.items(),
            ("reads", len(run.reads)),
            ("forced_reads", run.forced),
            ("bait_episodes", len(bait.hidden) + len(bait.blur)),
            *((f"per_frame_{k}", v) for k, v in per_frame.items()),
            *((f"events_{k}", v) for k, v in by_events.items()),
        ]:
            totals[key] = totals.get(key, 0) + value
        totals["texts_in_view"] = totals.get("texts_in_view", 0) + len({text_key(s.text) for s in segs})
    totals["precision"] = round(totals["true_events"] / totals["events"], 4) if totals["events"] else 1.0
    totals["recall"] = round(totals["found"] / totals["expected"], 4)
    totals["delay_frames"] = {
        "p50": round(percentile(delays, 50), 1),
        "p90": round(percentile(delays, 90), 1),
        "max": max(delays, default=0),
        "mean": round(statistics.fmean(delays), 2) if delays else None,
    }
    totals["tracker_read_ms"] = {"p50": round(percentile(read_ms, 50), 3), "max": round(max(read_ms), 3)}
    totals["forced_reads_per_text"] = round(totals["forced_reads"] / totals["texts_due"], 3)
    return totals


# --- the real service (--service) -------------------------------------------------

SERVICE_OUT = ROOT / "docs" / "bench" / "events_service.json"
SERVICE_SCENES: dict[str, tuple[float, float]] = {  # a scene of bench/camera.py: seconds between changes
    "conveyor": (4.0, 12.0),
    "screen": (1.0, 3.0),
    "document": (4.0, 12.0),
}
Box = Sequence[Sequence[float]]  # 4 corners


def true_lines(frames: Sequence[CameraFrame]) -> list[list[TrueLine]]:
    """The camera frames' lines for :func:`segments`: ``slot`` = the line's place on its object
    (card, screen, page). While a change is under way (a card sliding, a page turning) no line is
    fully shown, but a line with the same text before and after it stays in view all along (a page
    turned to the same page with one character changed)."""
    out = [
        [
            TrueLine(
                f"line{k}", text, min(p[0] for p in box), min(p[1] for p in box), 0.5 if f.moving else 1.0
            )
            for k, (text, box) in enumerate(zip(f.lines, f.boxes, strict=True))
        ]
        for f in frames
    ]
    start = 0
    for moving, run in itertools.groupby(range(len(frames)), key=lambda i: frames[i].moving):
        end = start + len(list(run))
        if moving and start > 0 and end < len(frames):
            after = {tl.slot: tl.text for tl in out[end]}
            kept = [tl for tl in out[start - 1] if after.get(tl.slot) == tl.text]
            out[start:end] = [kept] * (end - start)
        start = end
    return out


def compose(items: Sequence[tuple[str, Box]], frame: CameraFrame) -> tuple[dict[int, list[int]], list[int]]:
    """Which OCR items (text, box) make up each true line of ``frame``, and which none.

    The model may read one line as several (``LOT`` and ``B62-7967``): an item belongs to the
    true line whose box (grown by half its height to the left and right) holds the item's
    centre. Of items that overlap along the line (by more than half the narrower), the later in
    ``items`` (the newer) is kept and the other is in no line: two texts at one place are not one
    line read in parts.
    Returns true line index -> item indices left to right, and the items of no line.
    """
    by_line: dict[int, list[int]] = {}
    stray = []
    for i in reversed(range(len(items))):
        x0, _, x1, _ = _extent(items[i][1])
        k = _line_of(items[i][1], frame)
        members = by_line.setdefault(k, []) if k is not None else None
        if members is None or any(
            min(x1, b1) - max(x0, b0) > min(x1 - x0, b1 - b0) / 2
            for b0, _, b1, _ in (_extent(items[j][1]) for j in members)
        ):
            stray.append(i)
        else:
            members.append(i)
    for members in by_line.values():
        members.sort(key=lambda i: _extent(items[i][1])[0])
    return {k: m for k, m in by_line.items() if m}, sorted(stray)


def _line_of(box: Box, frame: CameraFrame) -> int | None:
    cx, cy = sum(p[0] for p in box) / 4, sum(p[1] for p in box) / 4
    for k, true_box in enumerate(frame.boxes):
        x0, y0, x1, y1 = _extent(true_box)
        grow = (y1 - y0) / 2
        if x0 - grow <= cx <= x1 + grow and y0 <= cy <= y1:
            return k
    return None


def _extent(box: Box) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in box], [p[1] for p in box]
    return min(xs), min(ys), max(xs), max(ys)


def read_texts(lines: Sequence[Line], frame: CameraFrame) -> list[str]:
    """A read as a client shows it per true line: the line's items joined; stray items as they are."""
    items = [(line.text, line.box) for line in lines]
    by_line, stray = compose(items, frame)
    return ["".join(text_key(items[i][0]) for i in members) for members in by_line.values()] + [
        items[i][0] for i in stray
    ]


def line_events(events: Sequence[TextEvent], frames: Sequence[CameraFrame]) -> list[TextEvent]:
    """The events as a client following them shows each true line, to score with :func:`score_events`.

    The client holds the confirmed tracks (text, box). After the events of a frame, the tracks
    that make up a true line of that frame (:func:`compose`) show the line as their texts joined;
    when that differs from what the line showed, it is one event (the triggering event with the
    joined text). A track in no true line is its own line. A ``gone`` is reported for a line's
    text once the last track that showed it is gone. With one track per line (the model reads a
    line as one line) this is the events unchanged.
    """
    tracks: dict[int, TextEvent] = {}  # confirmed track -> its latest appeared/changed
    shown_in: dict[int, tuple[str, str]] = {}  # track -> (the line it shows, that line's text)
    shown: dict[str, str] = {}  # line -> the text it shows
    out: list[TextEvent] = []
    for frame_id, batch in itertools.groupby(events, key=lambda e: e.frame_id):
        touched: set[int] = set()
        for e in batch:
            if e.event != "gone":
                tracks[e.track_id] = e
                touched.add(e.track_id)
                continue
            tracks.pop(e.track_id, None)
            where, text = shown_in.pop(e.track_id, (f"track{e.track_id}", e.text))
            if all(w != where for w, _ in shown_in.values()):
                shown.pop(where, None)
                out.append(e.model_copy(update={"text": text}))
        if not touched:
            continue
        ids = list(tracks)
        by_line, stray = compose([(tracks[t].text, tracks[t].box or []) for t in ids], frames[frame_id])
        groups = [(f"line{k}", [ids[i] for i in members]) for k, members in by_line.items()]
        groups += [(f"track{ids[i]}", [ids[i]]) for i in stray]
        for where, members in groups:
            trigger = next((t for t in members if t in touched), None)
            if trigger is None:
                continue
            text = "".join(text_key(tracks[t].text) for t in members)
            for t, (line, _) in list(shown_in.items()):
                if line == where and t not in members:  # replaced: it shows only itself now
                    shown_in[t] = (f"track{t}", tracks[t].text)
            shown_in.update((t, (where, text)) for t in members)
            if shown.get(where) != text:
                shown[where] = text
                out.append(tracks[trigger].model_copy(update={"text": text}))
    return out


@dataclass(slots=True)
class ServiceRun:
    answers: dict[int, ResultAnswer | ErrorAnswer] = field(default_factory=dict)
    events: list[TextEvent] = field(default_factory=list)
    received_s: list[float] = field(default_factory=list)  # when each event came, s since the first send
    late_s: float = 0.0  # how far behind real time the sender fell at worst
    wall_s: float = 0.0


async def stream_scene(url: str, frames: Sequence[CameraFrame], stream_id: str, events: bool) -> ServiceRun:
    """``frames`` sent in real time (``ts`` = capture time) over one WebSocket; answers and events kept."""
    run = ServiceRun()
    async with OCRStreamClient(url, stream_id=stream_id, events=events, max_in_flight=100_000) as client:
        t0 = time.perf_counter()

        async def answers() -> None:
            async for answer in client.results():
                run.answers[answer.frame_id] = answer  # type: ignore[index]

        async def texts() -> None:
            async for event in client.events():
                run.events.append(event)
                run.received_s.append(round(time.perf_counter() - t0, 3))

        tasks = [asyncio.create_task(answers()), *([asyncio.create_task(texts())] if events else [])]
        for frame in frames:
            delay = frame.ts - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            run.late_s = max(run.late_s, -delay)
            await client.send(frame.jpeg, ts=frame.ts)
        await client.close(timeout=60.0)
        await asyncio.gather(*tasks)
        run.wall_s = time.perf_counter() - t0
    return run


def reads_of(run: ServiceRun) -> list[tuple[int, list[Line]]]:
    return [
        (i, a.lines or [])
        for i, a in sorted(run.answers.items())
        if isinstance(a, ResultAnswer) and a.status == "ok"
    ]


def score_service(
    frames: Sequence[CameraFrame], run: ServiceRun, config: EventsConfig, reads_without_events: int | None
) -> dict[str, Any]:
    """One stream of the real service against its ground truth (see ``--service``)."""
    segs = segments(true_lines(frames), round(config.gone_after_s * FPS))
    shown_events = line_events(run.events, frames)
    scored = score_events(shown_events, segs)
    delays, wrong, missed = scored.pop("delays"), scored.pop("wrong_events"), scored.pop("missed")
    reads = [(i, read_texts(lines, frames[i])) for i, lines in reads_of(run)]
    still = [f.text for f in frames if not f.moving]
    changes = 1 + sum(a != b for a, b in itertools.pairwise(still))  # the first text counts as one
    bait = [f.bait is not None for f in frames]

    def truth(i: int) -> list[str]:
        return [text_key(t) for t in frames[i].lines]

    def near(first: int, last: int) -> list[dict[str, Any]]:
        return [{"frame": i, "read": texts} for i, texts in reads if first <= i <= last][:8]

    bait_reads = [(i, texts) for i, texts in reads if bait[i]]
    out = scored | {
        "frames": len(frames),
        "answered": len(run.answers),
        "outcomes": dict(Counter(_outcome(a) for a in run.answers.values())),
        "error_messages": sorted({a.message for a in run.answers.values() if isinstance(a, ErrorAnswer)})[:5],
        "bait_frames": sum(bait),
        "bait_reads": len(bait_reads),
        "bait_reads_misread": sum(sorted(texts) != sorted(truth(i)) for i, texts in bait_reads),
        "false_events_touching_bait": sum(
            any(
                bait[
                    shown_events[n].first_frame_id or shown_events[n].frame_id : shown_events[n].frame_id + 1
                ]
            )
            for n in wrong
        ),
        "delay_frames": {
            "p50": percentile(delays, 50),
            "p90": percentile(delays, 90),
            "max": max(delays, default=None),
        },
        "delays": delays,
        "changes": changes,
        "reads": len(reads),
        "reads_without_events": reads_without_events,
        "extra_reads_per_change": round((len(reads) - changes) / changes, 3),
        "reads_added_by_events_per_change": None
        if reads_without_events is None
        else round((len(reads) - reads_without_events) / changes, 3),
        "texts_in_view": len({text_key(s.text) for s in segs}),
        **{f"per_frame_{k}": v for k, v in shown_per_frame(reads, segs).items()},
        **{f"events_{k}": v for k, v in shown_by_events(shown_events, segs).items()},
        "raw_events": len(run.events),
        "sender_late_max_s": round(run.late_s, 3),
        "wall_s": round(run.wall_s, 1),
        "wrong": [
            {
                "event": shown_events[n].model_dump(exclude_none=True, exclude={"type", "box"}),
                "truth": frames[shown_events[n].frame_id].lines,
                "reads": near(shown_events[n].first_frame_id or 0, shown_events[n].frame_id),
            }
            for n in wrong
        ],
        "missed": [
            {
                "text": segs[k].text,
                "frames": [segs[k].first, segs[k].last],
                "reads": near(segs[k].first, segs[k].last),
                "events": [
                    e.model_dump(exclude_none=True, exclude={"type", "box"})
                    for e in run.events
                    if segs[k].first <= e.frame_id <= segs[k].last
                ],
            }
            for k in missed
        ],
        "read_log": [[i, [line.text for line in lines]] for i, lines in reads_of(run)],
        "event_log": [
            e.model_dump(exclude_none=True, exclude={"type"})
            | {"received_s": t, "truth": " | ".join(frames[e.frame_id].lines)}
            for e, t in zip(run.events, run.received_s, strict=True)
        ],
    }
    out["goals_met"] = goals_met(out)
    return out


def _outcome(answer: ResultAnswer | ErrorAnswer) -> str:
    if isinstance(answer, ErrorAnswer):
        return f"error:{answer.code}"
    return "ok" if answer.status == "ok" else f"skipped:{answer.reason}"


def goals_met(r: dict[str, Any]) -> dict[str, bool]:
    return {
        "precision": r["precision"] >= GOALS["precision_min"],
        "recall": r["recall"] >= GOALS["recall_min"],
        # a false event from bait: its agreeing reads include a bait frame (a misread confirmed
        # on frames without bait is the model's, counted in false_events_never_in_view)
        "bait_false_events": r["false_events_touching_bait"] <= GOALS["bait_false_events_max"],
        "delay_frames_p50": r["delay_frames"]["p50"] <= GOALS["delay_frames_p50_max"],
    }


def run_service(args: argparse.Namespace) -> dict[str, Any]:
    """Every scene's streams through the real application, one stream at a time."""
    config = AppConfig.from_file(ROOT / "configs" / "serve.yaml").sampler.events
    t = time.monotonic()
    streams = {
        (scene, k): list(iter_scene(scene, args.seconds, FPS, seed=args.seed + k, bait=True, hold_s=hold))
        for scene, hold in SERVICE_SCENES.items()
        if scene in args.scenes.split(",")
        for k in range(args.streams)
    }
    print(f"rendered {sum(map(len, streams.values()))} frames in {time.monotonic() - t:.0f} s", flush=True)
    wait_for_no_ray()
    report: dict[str, Any] = {
        "config": config.model_dump(),
        "stream": {"fps": FPS, "seconds": args.seconds, "streams_per_scene": args.streams, "seed": args.seed},
        "hold_s": SERVICE_SCENES,
        "goals": GOALS,
        "machine_at_start": machine_info(),
        "app_args_overrides": args.app_args,
        "scenes": {},
    }
    with running_app(args.app_args, port=args.port) as url:
        warm = analyse(asyncio.run(closed_loop_latency(url, frame_pool(5, seed=7), 5, stream_fps=30.0)))
        if not warm["totals"]["outcomes"]["counts"].get(READ):
            raise RuntimeError(f"the warm-up read nothing: {warm['totals']['outcomes']}")
        for (scene, k), frames in streams.items():
            without = None
            if args.compare:
                plain = asyncio.run(stream_scene(url, frames, f"events-off-{scene}-{k}", events=False))
                without = len(reads_of(plain))
            run = asyncio.run(stream_scene(url, frames, f"events-{scene}-{k}", events=True))
            r = score_service(frames, run, config, without) | {
                "loadavg_1min_after": machine_info()["loadavg_1min"]
            }
            report["scenes"].setdefault(scene, []).append(r)
            print(
                f"{scene:9s} seed {args.seed + k}: precision {r['precision']:.3f} recall {r['recall']:.3f} "
                f"({r['found']}/{r['expected']}) false {r['false_events']} "
                f"(bait {r['false_events_touching_bait']}, never in view {r['false_events_never_in_view']}) "
                f"delay p50 {r['delay_frames']['p50']} "
                f"p90 {r['delay_frames']['p90']} | reads {r['reads']} (events off {without}) changes "
                f"{r['changes']} | shown per-frame {r['per_frame_distinct_texts_shown']} (flicker "
                f"{r['per_frame_flicker']}) events {r['events_distinct_texts_shown']} (flicker "
                f"{r['events_flicker']}) of {r['texts_in_view']} | {r['outcomes']}",
                flush=True,
            )
    return report


def pooled(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The streams of one scene together."""
    summed = [
        "events", "true_events", "false_events", "false_events_never_in_view", "false_events_touching_bait",
        "expected", "found", "texts_due", "texts_announced", "gone_due", "gone_found", "frames",
        "bait_frames", "bait_reads", "bait_reads_misread", "changes", "reads", "raw_events", "texts_in_view",
        "per_frame_distinct_texts_shown", "per_frame_display_changes", "per_frame_flicker",
        "events_distinct_texts_shown", "events_display_changes", "events_flicker",
    ]  # fmt: skip
    out: dict[str, Any] = {key: sum(r[key] for r in runs) for key in summed}
    delays = [d for r in runs for d in r["delays"]]
    without = [r["reads_without_events"] for r in runs]
    out |= {
        "streams": len(runs),
        "precision": round(out["true_events"] / out["events"], 4) if out["events"] else 1.0,
        "recall": round(out["found"] / out["expected"], 4) if out["expected"] else 1.0,
        "delay_frames": {
            "p50": percentile(delays, 50),
            "p90": percentile(delays, 90),
            "max": max(delays, default=None),
        },
        "extra_reads_per_change": round((out["reads"] - out["changes"]) / out["changes"], 3),
        "reads_without_events": None if None in without else sum(without),
    }
    if out["reads_without_events"] is not None:
        out["reads_added_by_events_per_change"] = round(
            (out["reads"] - out["reads_without_events"]) / out["changes"], 3
        )
    out["goals_met"] = goals_met(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--service", action="store_true", help="the real service on rendered streams")
    parser.add_argument("--seconds", type=float, help="length of each stream (120; --service: 75)")
    parser.add_argument("--streams", type=int, help="streams per scene (4; --service: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-compare", dest="compare", action="store_false", help="--service: skip the events-off runs"
    )
    parser.add_argument("--port", type=int, default=8123, help="--service: port of the application")
    parser.add_argument(
        "--scenes", default=",".join(SERVICE_SCENES), help="--service: comma-separated, of the cameras"
    )
    parser.add_argument(
        "--app-args",
        type=json.loads,
        default=None,
        help="--service: JSON merged into configs/serve.yaml's args",
    )
    parser.add_argument(
        "--out", type=Path, help="JSON written (events_sim.json; --service: events_service.json)"
    )
    args = parser.parse_args(argv)
    command = " ".join(["python -m bench.events", *(argv if argv is not None else sys.argv[1:])])
    if args.service:
        args.seconds, args.streams = args.seconds or 75.0, args.streams or 1
        report = {"command": command, "started": time.time()} | run_service(args)
        report["totals"] = {scene: pooled(runs) for scene, runs in report["scenes"].items()}
        write_json(args.out or SERVICE_OUT, report)
        for scene, r in report["totals"].items():
            print(f"{scene:9s} goals met: {r['goals_met']}")
        return
    args.seconds, args.streams = args.seconds or 120.0, args.streams or 4
    config = EventsConfig()
    report: dict[str, Any] = {
        "command": command,
        "config": config.model_dump(),
        "stream": {
            "fps": FPS,
            "seconds": args.seconds,
            "streams_per_scene": args.streams,
            "sampler_fps": 5.0,
        },
        "goals": GOALS,
        "variants": {},
    }
    for variant, next_frame in (("forced_at_next_gated_frame", False), ("forced_next_frame", True)):
        results = {
            scene: measure(scene, args.streams, args.seconds, args.seed, config, next_frame)
            for scene in SCENES
        }
        report["variants"][variant] = results
        for scene, r in results.items():
            print(
                f"{variant:27s} {scene:10s} precision {r['precision']:.4f} recall {r['recall']:.4f} "
                f"false never in view {r['false_events_never_in_view']} "
                f"delay p50 {r['delay_frames']['p50']:.0f} "
                f"p90 {r['delay_frames']['p90']:.0f} forced/text {r['forced_reads_per_text']:.2f} | "
                f"texts {r['texts_in_view']} shown per-frame {r['per_frame_distinct_texts_shown']} "
                f"(flicker {r['per_frame_flicker']}) events {r['events_distinct_texts_shown']} "
                f"(flicker {r['events_flicker']})"
            )
    write_json(args.out or OUT, report)


if __name__ == "__main__":
    main()
