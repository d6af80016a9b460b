"""Per-stream sampling and fair admission to the model (the sampler's logic, Ray-free).

For each stream: a target rate on capture timestamps gates the frames first
(cheap: no decoding); a frame that passes the gate is compared with the frame
last read (content dedup); a changed frame waits for a read slot, and a newer
frame replaces it while it waits (latest frame wins); at most one read per
stream is in flight. Across streams: an adaptive number of reads in flight,
handed to the waiting stream served least recently (fair share), with a
deadline after which a waiting frame is answered ``overloaded``. Every job
handed to :meth:`Sampler.submit` is answered exactly once. docs/design.md
explains why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from serve_app.config import SamplerConfig
from serve_app.dedup import ChangeDetector, Fingerprint
from serve_app.jobs import Job, Notice, Outcome, ReadReply
from serve_app.protocol import ErrorAnswer, ErrorCode, Line, ProtocolError, ResultAnswer, SkipReason, Timing

logger = logging.getLogger(__name__)

ReadFn = Callable[[Job, int], Awaitable[ReadReply]]  # (job, demand: reads wanted right now)
_RATE_TOLERANCE = 0.9  # a frame up to 10% early for its slot is read: camera clocks jitter
_CLOCK_JUMP_S = 2.0  # a capture clock that goes back further than this restarted


@dataclass(slots=True, eq=False)
class _Ticket:
    job: Job
    deliver: Callable[[Outcome], None]
    fingerprint: Fingerprint | None = None
    error: ProtocolError | None = None
    answered: bool = False
    timer: asyncio.TimerHandle | None = None
    parked: bool = False  # its sender was told it waits: a free slot asks the sender for a newer frame

    def notify(self, notice: Notice) -> None:
        if not self.answered:
            self.deliver(Outcome(self.job.seq, notice=notice))

    def answer(self, answer: ResultAnswer | ErrorAnswer) -> None:
        if not self.answered:
            self.answered = True
            self.job.image = b""
            if self.timer is not None:
                self.timer.cancel()
            self.deliver(Outcome(self.job.seq, answer))

    def skip(self, reason: SkipReason, ref: int | None, lines: list[Line] | None = None) -> None:
        self.answer(
            ResultAnswer(
                frame_id=self.job.frame_id, status="skipped", reason=reason, ref_frame_id=ref, lines=lines
            )
        )

    def fail(self, code: ErrorCode, message: str) -> None:
        self.answer(ErrorAnswer(frame_id=self.job.frame_id, code=code, message=message))


@dataclass(slots=True, eq=False)
class _Reference:
    """The frame last read for a stream: what later frames are compared with."""

    frame_id: int
    fingerprint: Fingerprint | None
    read_at: float
    lines: list[Line] | None = None  # None while it is being read
    followers: list[_Ticket] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Stream:
    id: str
    fps: float
    oneshot: bool
    last_seen: float
    ref: _Reference | None = None
    waiting: _Ticket | None = None
    granted: _Ticket | None = None  # a parked frame whose slot is held until its sender claims it
    reading: bool = False
    served_at: float = 0.0  # when its last read started (monotonic): fair share goes to the oldest
    next_read_ts: float | None = None
    last_ts: float | None = None


class Sampler:
    def __init__(
        self, config: SamplerConfig, *, read: ReadFn, detector: ChangeDetector, max_pixels: int
    ) -> None:
        self.config = config
        self._read = read
        self._detector = detector
        self._max_pixels = max_pixels
        self._streams: dict[str, _Stream] = {}
        self._ready: dict[str, _Stream] = {}  # streams with a frame waiting for a read slot
        self._in_flight = 0
        self._window = float(config.min_reads_in_flight)  # admission window, adapted per reply
        self.reads = 0  # reads started, ever (for metrics)

    # --- public API ---------------------------------------------------------

    def reconfigure(self, config: SamplerConfig, detector: ChangeDetector) -> None:
        self.config = config
        self._detector = detector
        self._window = min(max(self._window, config.min_reads_in_flight), config.max_reads_in_flight)

    def effective_fps(self, fps: float | None) -> float:
        return min(fps or self.config.default_fps, self.config.max_fps)

    def configure(self, stream_id: str, fps: float) -> float:
        stream = self._stream(stream_id, fps, oneshot=False)
        stream.fps = self.effective_fps(fps)
        stream.next_read_ts = None
        return stream.fps

    def close(self, stream_id: str) -> None:
        stream = self._streams.pop(stream_id, None)
        self._ready.pop(stream_id, None)
        if stream is not None and stream.waiting is not None:
            stream.waiting.skip(SkipReason.SUPERSEDED, None)
            stream.waiting = None
        if stream is not None and stream.granted is not None:
            stream.granted.skip(SkipReason.SUPERSEDED, None)
            stream.granted = None
            self._in_flight -= 1  # the slot it held
            self._pump()

    def expire_idle(self, now: float | None = None) -> int:
        cutoff = (now or time.monotonic()) - self.config.stream_idle_timeout_s
        idle = [s.id for s in self._streams.values() if s.last_seen < cutoff and not s.reading]
        for stream_id in idle:
            self.close(stream_id)
        return len(idle)

    @property
    def demand(self) -> int:
        """Reads wanted right now: in flight plus streams with a frame waiting (autoscaling signal)."""
        return self._in_flight + len(self._ready)

    @property
    def stats(self) -> dict[str, float]:
        return {
            "streams": len(self._streams),
            "reads_in_flight": self._in_flight,
            "waiting": len(self._ready),
            "window": round(self._window, 2),
        }

    async def submit(
        self,
        stream_id: str,
        jobs: list[Job],
        *,
        fps: float | None = None,
        oneshot: bool = False,
        claim: bool = False,
    ) -> AsyncIterator[list[Outcome]]:
        """Answers for ``jobs``: first those decided at once (maybe none), then the rest as they come.

        Notices ride along: :attr:`Notice.WAITING` when the last of ``jobs`` waits for a read slot
        (the ingress then holds newer frames itself, so frames that would only supersede each
        other here never cross), :attr:`Notice.GRANTED` when that slot is free; the ingress answers
        it with a ``claim``: its newest frame, read at once in that slot, or nothing.
        """
        outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        stream = self._stream(stream_id, fps, oneshot)
        tickets = [_Ticket(job, outcomes.put_nowait) for job in jobs]
        if claim and stream.granted is not None:
            self._claim(stream, tickets)
        else:
            for ticket in tickets:
                await self._decide(stream, ticket)
                self._pump()  # a frame that starts its read now is the reference of the next
        waiting = stream.waiting
        if waiting is not None and not stream.oneshot and any(t is waiting for t in tickets):
            waiting.parked = True
            waiting.notify(Notice.WAITING)
        remaining = len(jobs)
        first = True
        while remaining or first:
            batch = [] if first and outcomes.empty() else [await outcomes.get()]
            while not outcomes.empty():
                batch.append(outcomes.get_nowait())
            remaining -= sum(1 for outcome in batch if outcome.answer is not None)
            first = False
            yield batch

    # --- decisions ----------------------------------------------------------

    def _stream(self, stream_id: str, fps: float | None, oneshot: bool) -> _Stream:
        stream = self._streams.get(stream_id)
        now = time.monotonic()
        if stream is None:
            stream = _Stream(stream_id, self.effective_fps(fps), oneshot, now)
            self._streams[stream_id] = stream
        elif fps is not None:
            stream.fps = self.effective_fps(fps)
        stream.last_seen = now
        return stream

    async def _fingerprint(self, ticket: _Ticket) -> bool:
        """Decode and fingerprint off the event loop; a frame that cannot be read is answered."""
        if not self.config.dedup.enabled or ticket.fingerprint is not None:
            return True
        try:
            ticket.fingerprint = await asyncio.to_thread(
                self._detector.fingerprint, ticket.job.image, self._max_pixels
            )
        except ProtocolError as exc:
            ticket.fail(exc.code, exc.message)
            return False
        return True

    async def _decide(self, stream: _Stream, ticket: _Ticket) -> None:
        """Cheapest checks first: only frames that pass the rate gate are decoded.

        Decoding yields to the event loop, and other calls for this stream may run meanwhile:
        what the stream holds (its reference, its waiting frame) is read again after it.
        """
        if stream.oneshot or stream.waiting is not None:
            self._wait(stream, ticket)  # fingerprinted when it gets its read slot
        elif self._too_soon(stream, ticket.job.ts):
            ticket.skip(SkipReason.RATE, stream.ref.frame_id if stream.ref else None)
        elif await self._fingerprint(ticket):
            stream.next_read_ts = ticket.job.ts + _RATE_TOLERANCE / stream.fps
            ref = stream.ref
            if ref is not None and self._same(ref, ticket):
                if ref.lines is None:
                    ref.followers.append(ticket)  # answered when the reference's read completes
                    ticket.job.image = b""
                else:
                    ticket.skip(SkipReason.DUPLICATE, ref.frame_id, ref.lines)
            else:
                self._wait(stream, ticket)

    def _same(self, ref: _Reference, ticket: _Ticket) -> bool:
        if ref.fingerprint is None or ticket.fingerprint is None:
            return False
        stale = ref.lines is not None and time.monotonic() - ref.read_at >= self.config.refresh_s
        return not stale and self._detector.compare(ref.fingerprint, ticket.fingerprint).same

    @staticmethod
    def _too_soon(stream: _Stream, ts: float) -> bool:
        last, stream.last_ts = stream.last_ts, ts
        if last is not None and ts < last - _CLOCK_JUMP_S:
            stream.next_read_ts = None  # the client's clock restarted
        return stream.next_read_ts is not None and ts < stream.next_read_ts

    # --- admission ----------------------------------------------------------

    def _wait(self, stream: _Stream, ticket: _Ticket) -> None:
        """``ticket`` waits for a read slot; of two frames waiting, the one received last wins."""
        held = stream.waiting
        if held is not None and held.job.received > ticket.job.received:
            ticket.skip(SkipReason.SUPERSEDED, held.job.frame_id)
            return
        if held is not None:
            held.skip(SkipReason.SUPERSEDED, ticket.job.frame_id)
        stream.waiting = ticket
        ticket.timer = asyncio.get_running_loop().call_later(
            self.config.admission_timeout_s, self._overloaded, stream, ticket
        )
        self._enqueue(stream)

    def _enqueue(self, stream: _Stream) -> None:
        if not stream.reading and stream.waiting is not None and self._streams.get(stream.id) is stream:
            self._ready[stream.id] = stream

    def _overloaded(self, stream: _Stream, ticket: _Ticket) -> None:
        if stream.waiting is ticket:
            stream.waiting = None
            self._ready.pop(stream.id, None)
            ticket.timer = None
            ticket.skip(SkipReason.OVERLOADED, stream.ref.frame_id if stream.ref else None)

    def _pump(self) -> None:
        """Hand free read slots to the waiting streams served least recently."""
        while self._in_flight < int(self._window) and self._ready:
            stream = min(self._ready.values(), key=lambda s: s.served_at)
            del self._ready[stream.id]
            ticket = stream.waiting
            if ticket is None:
                continue
            stream.waiting = None
            if ticket.timer is not None:
                ticket.timer.cancel()
            stream.reading = True
            stream.served_at = time.monotonic()
            self._in_flight += 1
            if ticket.parked:  # its sender may hold newer frames: ask for the newest
                stream.granted = ticket
                ticket.timer = asyncio.get_running_loop().call_later(
                    self.config.claim_timeout_s, self._claim, stream, []
                )
                ticket.notify(Notice.GRANTED)
            else:
                self._start(stream, ticket)

    def _claim(self, stream: _Stream, newer: list[_Ticket]) -> None:
        """Fill the slot held for a granted frame: with the newest of ``newer``, else that frame."""
        chosen, stream.granted = stream.granted, None
        if chosen is None:
            return
        if chosen.timer is not None:
            chosen.timer.cancel()
            chosen.timer = None
        for ticket in newer:
            chosen.skip(SkipReason.SUPERSEDED, ticket.job.frame_id)
            chosen = ticket
        self._start(stream, chosen)

    def _start(self, stream: _Stream, ticket: _Ticket) -> None:
        self.reads += 1
        ref = _Reference(ticket.job.frame_id, ticket.fingerprint, time.monotonic())
        if not stream.oneshot:
            stream.ref = ref  # later frames are compared with this one from now on
        asyncio.get_running_loop().create_task(self._read_one(stream, ticket, ref))

    async def _read_one(self, stream: _Stream, ticket: _Ticket, ref: _Reference) -> None:
        started = time.time()
        if stream.oneshot or await self._fingerprint(ticket):
            ref.fingerprint = ticket.fingerprint
            reply = await self._read_with_retry(ticket.job)
        else:  # answered bad_image by _fingerprint; nothing to read
            reply = ReadReply(error_code=ErrorCode.BAD_IMAGE)
        self._adapt(reply)
        self._in_flight -= 1
        stream.reading = False
        if reply.lines is not None:
            ref.lines, ref.read_at = reply.lines, time.monotonic()
            queue_ms = (started - ticket.job.received) * 1000.0 + reply.queue_ms
            ticket.answer(
                ResultAnswer(
                    frame_id=ticket.job.frame_id,
                    status="ok",
                    lines=reply.lines,
                    timing=Timing(total_ms=0.0, ocr_ms=round(reply.ocr_ms, 1), queue_ms=round(queue_ms, 1)),
                )
            )
            for follower in ref.followers:
                follower.skip(SkipReason.DUPLICATE, ref.frame_id, ref.lines)
        else:
            if stream.ref is ref:
                stream.ref = None  # nothing to compare with: the next frame is read
            ticket.fail(
                ErrorCode(reply.error_code or ErrorCode.INTERNAL), reply.error_message
            )  # no-op if answered
            for follower in ref.followers:
                follower.fail(
                    ErrorCode.INTERNAL, f"frame {ref.frame_id}, which this one repeats, was not read"
                )
        ref.followers.clear()
        self._enqueue(stream)
        self._pump()

    def _adapt(self, reply: ReadReply) -> None:
        """AIMD on the admission window: back off as soon as reads queue at the model.

        A read that waited at the model for more than half a batch time means
        the model replicas hold a backlog: shrink by a quarter. A read that
        started at once while the window was full and streams were waiting
        means there may be room: grow by 1/window (one slot per window of
        completed reads). The window follows the model's capacity as replicas
        come and go, with no replica count needed.
        """
        low, high = self.config.min_reads_in_flight, self.config.max_reads_in_flight
        if reply.lines is None:
            return  # a failed read says nothing about capacity
        batch_ms = max(reply.ocr_ms, 1.0)  # a model that answers at once still counts as 1 ms
        if reply.queue_ms > 0.5 * batch_ms:
            self._window = max(low, self._window * 0.75)
        elif reply.queue_ms < 0.1 * batch_ms and self._in_flight >= int(self._window) and self._ready:
            self._window = min(high, self._window + 1.0 / self._window)

    async def _read_with_retry(self, job: Job) -> ReadReply:
        """One retry when a replica fails (dies, restarts): never a retry storm."""
        for attempt in (1, 2):
            try:
                return await asyncio.wait_for(self._read(job, self.demand), self.config.read_timeout_s)
            except TimeoutError:
                return ReadReply(
                    error_code=ErrorCode.INTERNAL, error_message="the model did not answer in time"
                )
            except Exception as exc:  # a replica died or failed: Ray wraps it
                logger.warning("read of frame %s failed (attempt %d): %s", job.frame_id, attempt, _brief(exc))
        return ReadReply(error_code=ErrorCode.INTERNAL, error_message="the model failed to read this frame")


def _brief(exc: Any) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
