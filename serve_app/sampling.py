"""One stream's sampling, where the stream lives (its ingress session); Ray-free.

Every frame of the stream passes through a :class:`StreamSampler`, which answers
it exactly once:

- **dedup** first: the frame is compared with the frame last read, with the
  boxes of that read's lines; the same content is answered ``duplicate`` with
  those lines, so a change is noticed on the frame that shows it, whatever
  the rate. While a change is being read there is nothing to compare with
  yet: the newest frame waits for that read's lines and is compared then (the
  ones before it are ``superseded`` undecoded). A refresh read leaves the
  lines read before standing, so frames are compared with them meanwhile;
- a changed frame is **read** at once if the stream has no read in flight and
  a read token: the rate is a token bucket (``fps`` per second, ``burst``
  deep), so a change after a still spell is read at once and only steady
  change is capped;
- with ``settle_s`` > 0 (off by default), **reads wait for the view to
  settle**: while it keeps changing (a card sliding in, a badge raised, a page
  turning: a frame unlike the frame compared before it), the stream reads at
  most once per ``settle_s``; the first frame of a change is read at once, and
  so is the frame the view settles on;
- **latest frame wins**: one changed frame waits at a time (for the read in
  flight, or for a token); a newer one replaces it (``superseded``, or
  ``rate`` while the stream waits for a token: then frames are not even
  decoded, only the newest is compared when the token comes);
- a stream whose every frame is new is **read uncompared while reads are
  cheaper than compares**: after ``uncompared_after`` compares in a row found
  a change, while the model reads a frame (``ReadReply.frame_ms``, a batching
  GPU's ~1.6 ms) in less time than the stream's compare takes (2-8 ms of the
  ingress' CPU), up to ``uncompared_reads`` frames are read undecoded; then a
  frame is fingerprinted and the next compared again. Each run after which
  the frame changed again is followed by one twice as long (up to
  ``max_uncompared_reads``); a compare that finds the frame the same ends
  it. The CPU model (a read ~200 ms) is always compared for;
- a frame is read again, same or not, ``refresh_s`` after the last read, and
  when the text tracker asks for a read to confirm a candidate text;
- with ``line_reads``, a frame whose text changed only inside lines the last
  read found is **read line by line**: the model recognises those lines again
  (no detection), the others keep their text, their boxes moved with them.

Only reads leave the ingress (``read``: one call to the sampler for many
streams' frames); docs/design.md explains why.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from serve_app.config import SamplerConfig
from serve_app.jobs import Boxes, Job, ReadReply
from serve_app.protocol import (
    ErrorAnswer,
    ErrorCode,
    Line,
    ProtocolError,
    ResultAnswer,
    Roi,
    SkipReason,
    TextEvent,
    Timing,
)
from serve_app.security import TokenBucket

# Read a frame (only its roi), or only the lines in the given boxes (one line back per box).
ReadFn = Callable[[Job, Roi | None, Boxes | None], Awaitable[ReadReply]]
AnswerFn = Callable[[Job, ResultAnswer | ErrorAnswer], None]
EventFn = Callable[[TextEvent], None]

logger = logging.getLogger(__name__)


class Detector(Protocol):
    """The change detector (``serve_app.dedup.ChangeDetector``)."""

    def fingerprint(self, data: bytes, max_pixels: int, roi: Roi | None = None) -> Any: ...

    def compare(
        self, reference: Any, frame: Any, boxes: Boxes | None = None, *, full: bool = False
    ) -> Any: ...


class Tracker(Protocol):
    """Text events of the stream (``serve_app.tracking.TextTracker``)."""

    def wants_read(self, ts: float) -> bool: ...

    def read(self, frame_id: int, ts: float, lines: list[Line], *, forced: bool) -> list[TextEvent]: ...

    def same(self, frame_id: int, ts: float) -> list[TextEvent]: ...

    def skipped(self, frame_id: int, ts: float) -> list[TextEvent]: ...


@dataclass(slots=True, eq=False)
class _Reference:
    """The frame last read (or being read): what later frames are compared with."""

    frame_id: int
    fingerprint: Any
    lines: list[Line] | None = None  # None while it is being read
    read_at: float = 0.0  # time.monotonic() when its read completed
    # Lines of the read before it: a read that found fewer (a hand, a blur?) is not read line by line
    # from, since a line it missed would stay missed.
    lines_before: int = 0
    digest: bytes = b""  # of its image bytes: a frame of the very same bytes needs no decoding


@dataclass(slots=True)
class _Candidate:
    """The one frame waiting to be read; compared unless it came while tokens ran out."""

    job: Job
    fingerprint: Any = None
    digest: bytes = b""
    compared: bool = False
    # Like the frame compared before it: the view is not in the middle of changing.
    settled: bool = True
    forced: bool = False  # the same content, read again because the text tracker asks to confirm
    refresh: bool = False  # the same content, read again because ``refresh_s`` has passed
    lines: _LineRead | None = None  # changed only inside the reference's lines: read those


@dataclass(frozen=True, slots=True)
class _LineRead:
    """A frame to read line by line: ``of``'s lines, the ``changed`` ones read again in ``boxes``."""

    of: _Reference
    boxes: Boxes  # each of ``of``'s lines where the frame shows it
    changed: tuple[int, ...]

    def merged(self, read: list[Line]) -> list[Line]:
        """``of``'s lines with the ``changed`` ones as ``read`` (one per changed box; empty: gone)."""
        new = dict(zip(self.changed, read, strict=True))
        old = self.of.lines or []
        lines = [
            new[i] if i in new else Line(text=line.text, score=line.score, box=box)
            for i, (line, box) in enumerate(zip(old, self.boxes, strict=True))
        ]
        return [line for line in lines if line.text]


def _repeats(ref: _Reference | None, digest: bytes) -> bool:
    """The frame has the very bytes of ``ref``'s (compared with dedup on only)."""
    return ref is not None and ref.fingerprint is not None and ref.digest == digest


def _moving_mean(mean: float | None, value: float) -> float:
    """An exponential moving mean over about the last five values (None: none yet)."""
    return value if mean is None else mean + 0.2 * (value - mean)


def read_answer(job: Job, reply: ReadReply, started: float) -> ResultAnswer | ErrorAnswer:
    """A read frame's answer: its lines, ``overloaded``, or the error (``started``: when it was sent)."""
    if reply.lines is not None:
        queue_ms = (started - job.received) * 1000.0 + reply.queue_ms
        timing = Timing(total_ms=0.0, ocr_ms=round(reply.ocr_ms, 1), queue_ms=round(queue_ms, 1))
        return ResultAnswer(frame_id=job.frame_id, status="ok", lines=reply.lines, timing=timing)
    if reply.overloaded:
        return ResultAnswer(frame_id=job.frame_id, status="skipped", reason=SkipReason.OVERLOADED)
    code = ErrorCode(reply.error_code or ErrorCode.INTERNAL)
    return ErrorAnswer(frame_id=job.frame_id, code=code, message=reply.error_message)


class StreamSampler:
    def __init__(
        self,
        config: SamplerConfig,
        *,
        detector: Detector,
        read: ReadFn,
        answer: AnswerFn,
        max_pixels: int,
        fps: float | None = None,
        roi: Roi | None = None,
        tracker: Tracker | None = None,
        emit: EventFn | None = None,
        executor: Executor | None = None,
        on_uncompared: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._detector = detector
        self._read = read
        self._answer = answer
        self._max_pixels = max_pixels
        self.fps = self.effective_fps(config, fps)
        self._bucket = TokenBucket(self.fps, config.burst)
        self.roi = roi
        self.tracker = tracker
        self._emit = emit
        self._executor = executor  # where frames are decoded and compared (the replica's compare threads)
        self._ref: _Reference | None = None
        self._reading = False
        self._next: Job | None = None  # arrived, waiting for the compare in progress or a compare token
        self._comparing = False
        self._compare_bucket = TokenBucket(config.compare_fps, 1.0)
        self._compare_wait = False  # the compare loop waits for a token: frames replaced now are `rate`
        self._candidate: _Candidate | None = None
        self._token_timer: asyncio.TimerHandle | None = None
        self._previous: Any = None  # fingerprint of the frame compared last: has the view settled?
        self._read_started = -math.inf  # time.monotonic() of the last read's start
        self._settle_timer: asyncio.TimerHandle | None = None
        # Is comparing worth it? Compares in a row that found a change, the CPU one takes (ms, the
        # compare thread's), the model's time per frame (ms), the longest run of uncompared reads
        # since the last compare that started none (0: none), and frames left to read uncompared.
        self._changed = 0
        self._compare_ms: float | None = None
        self._read_ms: float | None = None
        self._run = 0
        self._uncompared = 0
        self._on_uncompared = on_uncompared  # counts them (metrics)
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def effective_fps(config: SamplerConfig, fps: float | None) -> float:
        return min(fps or config.default_fps, config.max_fps)

    # --- settings -------------------------------------------------------------

    def set_fps(self, fps: float) -> float:
        self.fps = self._bucket.rate = self.effective_fps(self.config, fps)
        return self.fps

    def set_roi(self, roi: Roi | None) -> None:
        """Compare and read only inside ``roi`` from now on: the next frame is read afresh."""
        self.roi = roi
        self._ref = self._previous = None

    def reconfigure(self, config: SamplerConfig, detector: Detector) -> None:
        self.config, self._detector = config, detector
        self._bucket.burst = config.burst

    # --- frames ---------------------------------------------------------------

    def offer(self, job: Job) -> None:
        """Take one frame: it gets exactly one answer through ``answer``, now or later."""
        candidate = self._candidate
        if candidate is not None and self._token_timer is not None:
            # Out of tokens: the newest frame takes the waiting one's place undecoded.
            self._skip(candidate.job, SkipReason.RATE, job.frame_id)
            self._candidate = _Candidate(job)
            return
        if self._next is not None:
            reason = SkipReason.RATE if self._compare_wait else SkipReason.SUPERSEDED
            self._skip(self._next, reason, job.frame_id)
        self._next = job
        self._compare_next()

    def close(self) -> None:
        """The stream ends: stop deciding (its session answers what is still open)."""
        for timer in (self._token_timer, self._settle_timer):
            if timer is not None:
                timer.cancel()
        for task in self._tasks:
            task.cancel()

    def _changing(self) -> bool:
        """A change is being read: its lines, what the next frame is compared with, are not known yet."""
        return self._reading and self._ref is not None and self._ref.lines is None

    def _compare_next(self) -> None:
        """Compare the waiting frame, unless a change is being read: then it waits for its lines."""
        if self._next is not None and not self._comparing and not self._changing():
            self._comparing = True  # now, not when the task starts: one compare loop per stream
            self._spawn(self._compare_loop())

    def _hold(self, job: Job) -> None:
        """``job`` waits for the change being read, unless a newer frame already does."""
        if self._next is None:
            self._next = job
        else:
            self._skip(job, SkipReason.SUPERSEDED, self._next.frame_id)

    async def _compare_loop(self) -> None:
        """Compare the newest frame, at most ``compare_fps`` a second (newer frames replace it meanwhile)."""
        try:
            while self._next is not None and not self._changing():
                wait_s = (1.0 - self._compare_bucket.tokens()) / self._compare_bucket.rate
                if wait_s > 0.0:
                    self._compare_wait = True
                    try:
                        await asyncio.sleep(wait_s)
                    finally:
                        self._compare_wait = False
                    continue
                self._compare_bucket.take()
                job, self._next = self._next, None
                judged = self._read_uncompared(job) if self._uncompared else await self._judge(job)
                if judged is not None:
                    self._decide(*judged)
        finally:
            self._comparing = False

    async def _judge(self, job: Job) -> tuple[_Candidate, bool] | None:
        """The frame as a compared candidate, and whether it is the same as the reference; decoded
        and compared off the event loop (the very bytes of the reference, a still screen or a frame
        sent again, are the same undecoded). Settled: the same as the reference or as the frame
        compared before it.

        None, after an error answer, when the frame cannot be decoded, or when a change began to be
        read meanwhile: then the frame waits for its lines (:meth:`_hold`). A refresh that lands
        meanwhile changes the reference: the frame is compared again with the one that stands.
        """
        ref, previous = self._ref, self._previous
        loop = asyncio.get_running_loop()
        try:
            digest, fingerprint, same, lines, settled, cpu_ms = await loop.run_in_executor(
                self._executor,
                self._fingerprint_and_compare,
                job.image,
                ref,
                previous,
                self._refresh_due(ref),
            )
            self._previous = fingerprint
            # Not compared (None): read as a refresh, if it still is one now that the verdict is made.
            while self._ref is not ref or (same is None and not self._refresh_due(ref)):
                if self._changing():
                    self._hold(job)
                    return None
                ref = self._ref
                same, lines = (
                    (True, None)
                    if _repeats(ref, digest)
                    else await loop.run_in_executor(self._executor, self._compare, ref, fingerprint)
                )
        except ProtocolError as exc:
            self._fail(job, exc.code, exc.message)
            return None
        except Exception:  # a bug in the detector must not leave the frame unanswered
            logger.exception("frame %s could not be compared", job.frame_id)
            self._fail(job, ErrorCode.INTERNAL, "the frame could not be compared; the stream goes on")
            return None
        if same is not None and ref is not None and ref.fingerprint is not None:
            self._count(same, cpu_ms)
        same = True if same is None else same
        candidate = _Candidate(job, fingerprint, digest, compared=True, settled=settled or same, lines=lines)
        return candidate, same

    def _count(self, same: bool, cpu_ms: float) -> None:
        """A compare's verdict: after ``uncompared_after`` changes in a row, while the model reads a
        frame in less time than a compare takes, the next frames are read uncompared (each compare
        would save no read, and cost more than the read): ``uncompared_reads`` at most, twice as
        many as the run before when this compare came right after one, up to ``max_uncompared_reads``."""
        if cpu_ms > 0.0:
            self._compare_ms = _moving_mean(self._compare_ms, cpu_ms)
        self._changed = 0 if same else self._changed + 1
        read_ms, compare_ms, c = self._read_ms, self._compare_ms, self.config
        measured = read_ms is not None and compare_ms is not None  # a read and a compare
        if not (measured and 0 < c.uncompared_after <= self._changed and read_ms < compare_ms):
            self._run = 0
            return
        self._run = min(2 * self._run, c.max_uncompared_reads) if self._run else c.uncompared_reads
        # Between half and all of them: streams that started together do not compare together.
        self._uncompared = random.randint((self._run + 1) // 2, self._run)

    def _read_uncompared(self, job: Job) -> tuple[_Candidate, bool]:
        """A frame read as changed without decoding it: the frame after the last of these has no
        reference to be compared with, so it is only fingerprinted (and read), and the one after
        it is compared again."""
        self._uncompared -= 1
        self._previous = None
        if self._on_uncompared is not None:
            self._on_uncompared()
        return _Candidate(job, compared=True), False

    def _refresh_due(self, ref: _Reference | None) -> bool:
        """A frame now is read whatever it shows: as a change, or as a refresh of ``ref``'s content."""
        return (
            ref is not None
            and ref.lines is not None
            and not self._reading
            and time.monotonic() - ref.read_at >= self.config.refresh_s
        )

    def _fingerprint_and_compare(
        self, image: bytes, ref: _Reference | None, previous: Any, refresh_due: bool
    ) -> tuple[bytes, Any, bool | None, _LineRead | None, bool, float]:
        """(digest, fingerprint, same as ``ref``, the lines to read if only they changed, settled,
        ms of this thread's CPU the fingerprint and compare took); a changed frame is also compared
        with ``previous``. The very bytes of ``ref``'s frame are the same undecoded. ``refresh_due``:
        the frame is read whatever it shows, so it is not compared (same None), only fingerprinted
        for the frames after it (a stream that sends a frame every few seconds is never compared)."""
        if not self.config.dedup.enabled:
            return b"", None, False, None, True, 0.0
        digest = hashlib.blake2b(image, digest_size=16).digest()
        if _repeats(ref, digest):
            return digest, ref.fingerprint, True, None, True, 0.0
        start = time.thread_time()
        fingerprint = self._detector.fingerprint(image, self._max_pixels, self.roi)
        if refresh_due:
            return digest, fingerprint, None, None, True, 0.0
        same, lines = self._compare(ref, fingerprint)
        settled = (
            same
            or previous is None
            or self.config.settle_s == 0.0
            or bool(self._detector.compare(previous, fingerprint).same)
        )
        return digest, fingerprint, same, lines, settled, (time.thread_time() - start) * 1000.0

    def _compare(self, ref: _Reference | None, fingerprint: Any) -> tuple[bool, _LineRead | None]:
        """Is ``fingerprint`` the same as ``ref``; if not, the lines to read when only they changed."""
        if ref is None or ref.fingerprint is None or fingerprint is None:
            return False, None
        lines = ref.lines
        boxes = [line.box for line in lines] if lines else None
        full = bool(self.config.line_reads and lines and len(lines) >= ref.lines_before)
        verdict = self._detector.compare(ref.fingerprint, fingerprint, boxes, full=full)
        change = verdict.lines if full else None
        if verdict.same or change is None:
            return bool(verdict.same), None
        return False, _LineRead(ref, change.boxes, change.changed)

    def _decide(self, candidate: _Candidate, same: bool) -> None:
        """A compared frame (the reference has its lines): a duplicate, or a read."""
        job, ref = candidate.job, self._ref
        if ref is not None and same:
            # A read in flight while the reference has its lines is a refresh of this content.
            if self._reading or time.monotonic() - ref.read_at < self.config.refresh_s:
                if self.tracker is None or not self.tracker.wants_read(job.ts):
                    self._duplicate(job, ref)
                    return
                candidate.forced = True  # a candidate text waits for a second read
            else:
                candidate.refresh = True
        if self._candidate is not None:
            self._skip(self._candidate.job, SkipReason.SUPERSEDED, job.frame_id)
        self._candidate = candidate
        self._start()

    # --- reads ----------------------------------------------------------------

    def _start(self) -> None:
        """Read the waiting candidate if the stream has no read in flight and a token."""
        candidate = self._candidate
        if candidate is None or self._reading or self._token_timer is not None:
            return
        if candidate.compared and not candidate.settled:
            # The view is still changing: this change was read already, the frame it settles on is.
            wait_s = self._read_started + self.config.settle_s - time.monotonic()
            if wait_s > 0.0:
                if self._settle_timer is None:
                    self._settle_timer = asyncio.get_running_loop().call_later(wait_s, self._settle_ready)
                return
        tokens = self._bucket.tokens()
        if tokens < 1.0:
            wait_s = (1.0 - tokens) / self._bucket.rate
            if wait_s > self.config.max_rate_wait_s:  # a low rate: answer now, a later frame is read
                self._candidate = None
                self._skip(candidate.job, SkipReason.RATE, self._ref.frame_id if self._ref else None)
            else:
                self._token_timer = asyncio.get_running_loop().call_later(wait_s, self._token_ready)
            return
        self._candidate = None
        if not candidate.compared:  # it came while tokens ran out: compare it first
            self.offer(candidate.job)
            return
        self._bucket.take()
        self._reading = True
        self._read_started = time.monotonic()
        ref = _Reference(candidate.job.frame_id, candidate.fingerprint, digest=candidate.digest)
        # A refresh reads content already known: the reference keeps answering with its lines until
        # the refresh lands (frames like it do not wait for a read whose answer they already have).
        known = self._ref.lines if self._ref is not None else None
        ref.lines_before = len(known or ())
        stands = self._ref if candidate.refresh and known is not None else None
        # Line by line only against the reference it was compared with, whose lines stand now.
        lines = candidate.lines if candidate.lines is not None and candidate.lines.of is self._ref else None
        if stands is None:
            self._ref = ref
        self._spawn(self._read_one(candidate.job, ref, candidate.forced, stands, lines))

    def _token_ready(self) -> None:
        self._token_timer = None
        self._start()

    def _settle_ready(self) -> None:
        self._settle_timer = None
        self._start()

    async def _read_one(
        self, job: Job, ref: _Reference, forced: bool, stands: _Reference | None, lines: _LineRead | None
    ) -> None:
        """Read ``job`` (the frame of ``ref``), whole or ``lines`` only; a refresh's ``ref`` replaces
        ``stands`` once it lands."""
        started = time.time()
        boxes = None if lines is None else [lines.boxes[i] for i in lines.changed]
        try:
            reply = await self._read(job, self.roi, boxes)
            if lines is not None and reply.lines is not None:
                reply.lines = lines.merged(reply.lines)
        except Exception:  # the read path answers errors as replies; a bug must not lose the frame
            logger.exception("frame %s: the read failed", job.frame_id)
            reply = ReadReply(error_code=ErrorCode.INTERNAL, error_message="the frame could not be read")
        self._reading = False
        answer = read_answer(job, reply, started)
        if reply.lines is not None:
            self._read_ms = _moving_mean(self._read_ms, reply.frame_ms)
            ref.lines, ref.read_at = reply.lines, time.monotonic()
            if stands is not None and self._ref is stands:
                self._ref = ref
            job.image = b""
            self._answer(job, answer)
            if self.tracker is not None:
                self._events(self.tracker.read(job.frame_id, job.ts, reply.lines, forced=forced))
        else:
            if self._ref is ref:
                self._ref = None  # nothing to compare with: the next frame is read
            self._deliver(job, answer)
        self._start()
        self._compare_next()  # the frame that waited for this read's lines

    # --- answers --------------------------------------------------------------

    def _duplicate(self, job: Job, ref: _Reference) -> None:
        job.image = b""
        reason, lines = SkipReason.DUPLICATE, ref.lines
        self._answer(
            job,
            ResultAnswer(
                frame_id=job.frame_id, status="skipped", reason=reason, ref_frame_id=ref.frame_id, lines=lines
            ),
        )
        if self.tracker is not None:
            self._events(self.tracker.same(job.frame_id, job.ts))

    def _skip(self, job: Job, reason: SkipReason, ref: int | None) -> None:
        self._deliver(
            job, ResultAnswer(frame_id=job.frame_id, status="skipped", reason=reason, ref_frame_id=ref)
        )

    def _fail(self, job: Job, code: ErrorCode, message: str) -> None:
        self._deliver(job, ErrorAnswer(frame_id=job.frame_id, code=code, message=message))

    def _deliver(self, job: Job, answer: ResultAnswer | ErrorAnswer) -> None:
        """An answer that tells nothing of the stream's text (an error, a skip but ``duplicate``)."""
        job.image = b""
        self._answer(job, answer)
        if self.tracker is not None:
            self._events(self.tracker.skipped(job.frame_id, job.ts))

    def _events(self, events: list[TextEvent]) -> None:
        if self._emit is not None:
            for event in events:
                self._emit(event)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
