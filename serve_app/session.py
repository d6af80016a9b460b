"""One WebSocket stream at the ingress: parse, check, sample, answer (Ray-free).

The ledger is the heart of the "exactly one answer" rule: every frame that is
accepted gets a ledger entry, every answer removes one, and whatever is left
when something fails (a deadline, shutdown) is answered from the ledger.
Answers arriving for frames no longer in the ledger are dropped.

The stream's state lives here, with its connection: its
:class:`~serve_app.sampling.StreamSampler` decides each frame (rate, dedup,
latest frame wins) and only the frames to read leave the ingress; its text
tracker (``events``) turns answers into text events.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from serve_app.config import IngressConfig
from serve_app.images import probe
from serve_app.jobs import Job
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
    TextEvent,
    Timing,
    parse_binary,
    parse_text,
)
from serve_app.sampling import AnswerFn, EventFn, StreamSampler, Tracker
from serve_app.security import ConnectionQuota, QuotaDecision

logger = logging.getLogger(__name__)

SamplerFactory = Callable[[AnswerFn, EventFn], StreamSampler]  # (answer, emit)
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
        sampler: SamplerFactory,
        send: SendFn,
        tracker: Callable[[], Tracker] | None = None,
        events: bool = False,
        quota: ConnectionQuota | None = None,
        observer: Observer | None = None,
        budget: ByteBudget | None = None,
        shedder: LoadShedder | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.config = config
        self.sampler = sampler(self._answered, self._event)
        self._new_tracker = tracker
        self._send = send
        self._quota = quota
        self._observer = observer
        self._budget = budget or ByteBudget(config.max_held_bytes)
        self._shedder = shedder
        self._ledger: dict[int, _Entry] = {}
        self._seq = 0
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self.closed = False
        if events:
            self._set_events(True)

    @property
    def unanswered(self) -> int:
        return len(self._ledger)

    @property
    def events(self) -> bool:
        return self.sampler.tracker is not None

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
                self._configure(parsed)
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
        self.sampler.offer(job)

    def _configure(self, request: ConfigRequest) -> None:
        """A ``config`` message: this stream's rate, text events, region of interest."""
        if request.fps is not None:
            self.sampler.set_fps(request.fps)
        if request.events is not None:
            self._set_events(request.events)
        if request.roi is not None or request.clear_roi:
            self.sampler.set_roi(request.roi)
        roi = self.sampler.roi
        answer = ConfigAnswer(
            fps=self.sampler.fps, events=self.events or None, roi=roi.to_list() if roi else None
        )
        self._post(answer.encode())

    def _set_events(self, on: bool) -> None:
        if not on:
            self.sampler.tracker = None
        elif self.sampler.tracker is None and self._new_tracker is not None:
            self.sampler.tracker = self._new_tracker()

    # --- outbound -----------------------------------------------------------

    def _post(self, text: str) -> None:
        self._outbox.put_nowait(text)

    def _reply(self, answer: ResultAnswer | ErrorAnswer) -> None:
        """Every frame's one answer goes out through here."""
        if self._observer is not None:
            self._observer.answered(answer)
        self._post(answer.encode())

    def _answered(self, job: Job, answer: ResultAnswer | ErrorAnswer) -> None:
        self._deliver(job.seq, answer)

    def _event(self, event: TextEvent) -> None:
        self._post(event.encode())

    def _deliver(self, seq: int, answer: ResultAnswer | ErrorAnswer) -> None:
        entry = self._ledger.pop(seq, None)
        if entry is None:
            return  # answered already (deadline, shutdown): exactly one answer
        self._budget.give(entry.nbytes)
        if isinstance(answer, ResultAnswer):
            total_ms = round((time.monotonic() - entry.received) * 1000.0, 1)
            if answer.timing is None:
                answer.timing = Timing(total_ms=total_ms)
            else:
                answer.timing.total_ms = total_ms
        self._reply(answer)

    def expire(self, now: float) -> None:
        """Answer ``overloaded`` every frame older than the deadline (oldest first)."""
        cutoff = now - self.config.frame_deadline_s
        expired = []
        for seq, entry in self._ledger.items():  # oldest first: stop at the first young one
            if entry.received > cutoff:
                break
            expired.append((seq, entry.frame_id))
        for seq, frame_id in expired:
            self._deliver(
                seq, ResultAnswer(frame_id=frame_id, status="skipped", reason=SkipReason.OVERLOADED)
            )

    # --- lifetime -----------------------------------------------------------

    async def run(self) -> None:
        """Write answers and events until the connection ends."""
        try:
            while True:
                await self._send(await self._outbox.get())
        finally:
            self.closed = True

    async def drain(self, timeout_s: float) -> None:
        """Shutdown: let open frames get their real answers (bounded), then :meth:`flush`."""
        deadline = time.monotonic() + timeout_s
        while self._ledger and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.flush()

    async def flush(self, timeout_s: float = 2.0) -> None:
        """Answer every open frame now (the connection is closing) and send what is queued."""
        for seq, entry in list(self._ledger.items()):
            message = "the connection is closing"
            self._deliver(seq, ErrorAnswer(frame_id=entry.frame_id, code=ErrorCode.INTERNAL, message=message))
        deadline = time.monotonic() + timeout_s
        while not self._outbox.empty() and not self.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Stop (the client is gone): give back what the unanswered frames held."""
        self.sampler.close()
        for entry in self._ledger.values():
            self._budget.give(entry.nbytes)
        self._ledger.clear()
