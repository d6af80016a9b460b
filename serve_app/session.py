"""One WebSocket stream at the ingress: parse, check, forward, answer (Ray-free).

The ledger is the heart of the "exactly one answer" rule: every frame that is
accepted gets a ledger entry, every answer removes one, and whatever is left
when something fails (the sampler call, a deadline, shutdown) is answered from
the ledger. Answers arriving for frames no longer in the ledger are dropped.

Frames cross to the sampler in batches: while one batch is being decided, the
frames that arrive meanwhile wait here (bounded; oldest dropped first) and go
together in the next call, so a fast stream pays one handle hop per batch, not
per frame. While one of the stream's frames waits at the sampler for a read
slot (``Notice.WAITING``), newer frames are held here instead, newest wins,
and cross only when the slot is granted (``Notice.GRANTED``, answered with a
claim): under overload a frame that would only be superseded costs no hop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from serve_app.config import IngressConfig
from serve_app.images import probe
from serve_app.jobs import Job, Notice, Outcome
from serve_app.protocol import (
    WS_1008_POLICY_VIOLATION,
    WS_1009_MESSAGE_TOO_BIG,
    ConfigAnswer,
    ConfigRequest,
    ErrorAnswer,
    ErrorCode,
    Frame,
    PingRequest,
    PongAnswer,
    ProtocolError,
    ResultAnswer,
    SkipReason,
    Timing,
    parse_binary,
    parse_text,
)
from serve_app.security import ConnectionQuota, QuotaDecision

logger = logging.getLogger(__name__)

SubmitFn = Callable[[list[Job], bool], AsyncIterator[list[Outcome]]]  # (jobs, claim)
ConfigureFn = Callable[[float], Awaitable[float]]
SendFn = Callable[[str], Awaitable[None]]


class Observer(Protocol):
    """What the session reports (metrics); ``serve_app.metrics.IngressMetrics`` in the service."""

    def received(self) -> None: ...

    def answered(self, answer: ResultAnswer | ErrorAnswer) -> None: ...


@dataclass(slots=True)
class _Entry:
    frame_id: int
    received: float  # time.monotonic()
    nbytes: int


class ByteBudget:
    """Image bytes an ingress replica holds for unanswered frames, all connections together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, nbytes: int) -> bool:
        if self.held + nbytes > self.limit:
            return False
        self.held += nbytes
        return True

    def give(self, nbytes: int) -> None:
        self.held -= nbytes


class LoadShedder:
    """Edge shedding for one ingress replica, driven by its event loop's lag.

    Serve's WebSocket path has no backpressure: messages the loop cannot keep
    up with queue in front of it and everything (answers, pings) lags behind
    them. While the lag measured each tick is over ``max_lag_s``, the share of
    new frames answered ``overloaded`` at once (no sampler call, the most
    expensive step) grows by 0.1; below it, it shrinks by 0.05. Some frames
    always go on (at most 95% shed), so every stream keeps being read.
    """

    def __init__(self, max_lag_s: float, chance: Callable[[], float] = random.random) -> None:
        self.max_lag_s = max_lag_s
        self.share = 0.0
        self._chance = chance

    def observe(self, lag_s: float) -> None:
        step = 0.1 if lag_s > self.max_lag_s else -0.05
        self.share = min(0.95, max(0.0, self.share + step))

    def shed(self) -> bool:
        return self.share > 0.0 and self._chance() < self.share


class StreamSession:
    def __init__(
        self,
        stream_id: str,
        config: IngressConfig,
        *,
        submit: SubmitFn,
        configure: ConfigureFn,
        send: SendFn,
        quota: ConnectionQuota | None = None,
        observer: Observer | None = None,
        budget: ByteBudget | None = None,
        shedder: LoadShedder | None = None,
    ) -> None:
        self.stream_id = stream_id
        self._quota = quota
        self._observer = observer
        self._budget = budget or ByteBudget(config.max_held_bytes)
        self._shedder = shedder
        self.config = config
        self._submit = submit
        self._configure = configure
        self._send = send
        self._ledger: dict[int, _Entry] = {}
        self._pending: list[Job] = []
        self._pending_bytes = 0
        self._seq = 0
        self._parked: int | None = None  # seq of the frame waiting at the sampler for a read slot
        self._claim = False  # its slot was granted: the next call hands over the newest frame
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    @property
    def unanswered(self) -> int:
        return len(self._ledger)

    # --- inbound ------------------------------------------------------------

    def receive(self, message: bytes | str) -> int | None:
        """Handle one client message; returns a close code when the connection must close."""
        size = len(message) if isinstance(message, bytes) else len(message.encode())
        if size > self.config.hard_max_message_bytes:
            return WS_1009_MESSAGE_TOO_BIG
        parsed: Frame | ConfigRequest | PingRequest | None = None
        try:
            parsed = parse_binary(message) if isinstance(message, bytes) else parse_text(message)
            if isinstance(parsed, PingRequest):
                self._post(PongAnswer(ts=time.time()).encode())
            elif isinstance(parsed, ConfigRequest):
                self._spawn(self._set_fps(parsed.fps))
            else:
                if self._observer is not None:
                    self._observer.received()
                return self._admit(parsed, size)
        except ProtocolError as exc:
            if parsed is None and self._observer is not None:
                self._observer.received()  # an unreadable message answered as a frame
            self._reply(exc.to_answer())
        return None

    def _admit(self, frame: Frame, size: int) -> int | None:
        decision = self._quota.check(size) if self._quota is not None else QuotaDecision.OK
        if decision is QuotaDecision.OK:
            self._accept(frame, size)
            return None
        message = "over the connection's frame or byte rate"
        self._reply(ErrorAnswer(frame_id=frame.frame_id, code=ErrorCode.RATE_LIMITED, message=message))
        return WS_1008_POLICY_VIOLATION if decision is QuotaDecision.CLOSE else None

    def _accept(self, frame: Frame, size: int) -> None:
        if size > self.config.max_message_bytes:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"message of {size} bytes is over {self.config.max_message_bytes}",
                frame.frame_id,
            )
        try:
            probe(frame.image, self.config.max_pixels)
        except ProtocolError as exc:
            exc.frame_id = frame.frame_id
            raise
        shed = self._shedder is not None and self._shedder.shed()
        if shed or not self._budget.take(len(frame.image)):
            # The loop is behind, or memory is bounded: shed at once rather than hold more frames.
            answer = ResultAnswer(frame_id=frame.frame_id, status="skipped", reason=SkipReason.OVERLOADED)
            answer.timing = Timing(total_ms=0.0)
            self._reply(answer)
            return
        self._seq += 1
        now = time.time()
        job = Job(self._seq, frame.frame_id, frame.image, frame.ts if frame.ts is not None else now, now)
        self._ledger[job.seq] = _Entry(frame.frame_id, time.monotonic(), len(frame.image))
        self._pending.append(job)
        self._pending_bytes += len(job.image)
        limit = 1 if self._parked is not None else self.config.max_pending_frames
        while len(self._pending) > limit or (
            self._pending_bytes > self.config.max_pending_bytes and len(self._pending) > 1
        ):
            old = self._pending.pop(0)
            self._pending_bytes -= len(old.image)
            self._skip(old.seq, SkipReason.SUPERSEDED, job.frame_id)
        self._wake.set()

    async def _set_fps(self, fps: float) -> None:
        try:
            self._post(ConfigAnswer(fps=await self._configure(fps)).encode())
        except Exception as exc:
            logger.warning("stream %s: config failed: %s", self.stream_id, exc)
            self._post(ErrorAnswer(frame_id=None, code=ErrorCode.INTERNAL, message="config failed").encode())

    # --- outbound -----------------------------------------------------------

    def _post(self, text: str) -> None:
        self._outbox.put_nowait(text)

    def _reply(self, answer: ResultAnswer | ErrorAnswer) -> None:
        """Every frame's one answer goes out through here."""
        if self._observer is not None:
            self._observer.answered(answer)
        self._post(answer.encode())

    def _notice(self, outcome: Outcome) -> None:
        if outcome.notice is Notice.WAITING:
            if outcome.seq in self._ledger:
                self._parked = outcome.seq
            return
        if self._parked == outcome.seq:  # GRANTED
            self._parked = None
        self._claim = True
        self._wake.set()

    def deliver(self, outcome: Outcome) -> None:
        answer = outcome.answer
        if answer is None:
            self._notice(outcome)
            return
        if outcome.seq == self._parked:
            self._parked = None
            self._wake.set()
        entry = self._ledger.pop(outcome.seq, None)
        if entry is None:
            return  # answered already (deadline, retry): exactly one answer
        self._budget.give(entry.nbytes)
        if isinstance(answer, ResultAnswer):
            total_ms = round((time.monotonic() - entry.received) * 1000.0, 1)
            if answer.timing is None:
                answer.timing = Timing(total_ms=total_ms)
            else:
                answer.timing.total_ms = total_ms
        self._reply(answer)

    def _skip(self, seq: int, reason: SkipReason, ref: int | None) -> None:
        entry = self._ledger.get(seq)
        if entry is not None:
            answer = ResultAnswer(frame_id=entry.frame_id, status="skipped", reason=reason, ref_frame_id=ref)
            self.deliver(Outcome(seq, answer))

    def _fail(self, seq: int, message: str) -> None:
        entry = self._ledger.get(seq)
        if entry is not None:
            answer = ErrorAnswer(frame_id=entry.frame_id, code=ErrorCode.INTERNAL, message=message)
            self.deliver(Outcome(seq, answer))

    def expire(self, now: float) -> None:
        """Answer ``overloaded`` every frame older than the deadline (oldest first)."""
        cutoff = now - self.config.frame_deadline_s
        expired = []
        for seq, entry in self._ledger.items():  # oldest first: stop at the first young one
            if entry.received > cutoff:
                break
            expired.append(seq)
        for seq in expired:
            self._skip(seq, SkipReason.OVERLOADED, None)

    # --- tasks --------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Forward frames and write answers until :meth:`close`."""
        self._spawn(self._pump())
        try:
            while True:
                await self._send(await self._outbox.get())
        finally:
            self.closed = True

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (self._pending and self._parked is None) or self._claim:
                claim, self._claim = self._claim, False
                jobs = [job for job in self._pending if job.seq in self._ledger]
                self._pending, self._pending_bytes = [], 0
                if jobs or claim:
                    decided: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._spawn(self._forward(jobs, decided, retry=True, claim=claim))
                    await decided  # one batch at a time is being decided

    async def _forward(
        self, jobs: list[Job], decided: asyncio.Future[None], *, retry: bool, claim: bool = False
    ) -> None:
        try:
            async for outcomes in self._submit(jobs, claim):
                for outcome in outcomes:
                    self.deliver(outcome)
                if not decided.done():
                    decided.set_result(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            left = [job for job in jobs if job.seq in self._ledger]
            logger.warning(
                "stream %s: sampler call failed (%s), %d frames open", self.stream_id, exc, len(left)
            )
            if any(job.seq == self._parked for job in jobs):
                self._parked = None  # a new sampler replica does not know it
                self._wake.set()
            if left and retry:
                await self._forward(left, decided, retry=False)
            for job in left:
                self._fail(job.seq, "the frame could not be processed; the stream goes on")
        finally:
            if not decided.done():
                decided.set_result(None)

    async def drain(self, timeout_s: float) -> None:
        """Shutdown: let open frames get their real answers (bounded), then :meth:`flush`."""
        deadline = time.monotonic() + timeout_s
        while self._ledger and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.flush()

    async def flush(self, timeout_s: float = 2.0) -> None:
        """Answer every open frame now (the connection is closing) and send what is queued."""
        for seq in list(self._ledger):
            self._fail(seq, "the connection is closing")
        deadline = time.monotonic() + timeout_s
        while not self._outbox.empty() and not self.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Stop (the client is gone): give back what the unanswered frames held."""
        for entry in self._ledger.values():
            self._budget.give(entry.nbytes)
        self._ledger.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
