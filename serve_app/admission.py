"""Fair admission of reads to the model, in one sampler replica (Ray-free).

Reads come from the ingress replicas, each the one read in flight of its
stream (the stream's ingress session keeps it so). An adaptive number of them
is at the model at once (the window, AIMD on how long reads queue there); a
free slot goes to the waiting stream served least recently (fair share), and
a read that waits longer than ``admission_timeout_s`` is answered
``overloaded``. Nothing here is per-stream state that matters: any replica can
take any read, so the sampler runs as many replicas as it needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from serve_app.config import SamplerConfig
from serve_app.jobs import ReadReply, ReadRequest
from serve_app.protocol import ErrorCode

ModelFn = Callable[[ReadRequest], Awaitable[ReadReply]]  # retries a failed call once itself (reads.py)


@dataclass(slots=True, eq=False)
class _Waiter:
    request: ReadRequest
    slot: asyncio.Future[None]
    started: int = 0  # its number among the reads started (``Admission.reads``)


class Admission:
    """``model_batch``: frames the model reads in one batch (``ocr.max_batch_size``)."""

    def __init__(self, config: SamplerConfig, *, read: ModelFn, model_batch: int) -> None:
        self.config = config
        self._read = read
        self._model_batch = model_batch
        self._waiting: list[_Waiter] = []
        self._served: dict[str, float] = {}  # stream -> when its last read started (monotonic)
        self._in_flight = 0
        self._window = float(config.min_reads_in_flight)
        self._shrunk_at = 0  # reads started when the window last shrank
        self.reads = 0  # reads started, ever (metrics)

    def reconfigure(self, config: SamplerConfig) -> None:
        self.config = config
        self._window = min(max(self._window, config.min_reads_in_flight), config.max_reads_in_flight)

    @property
    def demand(self) -> int:
        """Reads wanted right now: in flight plus waiting (the autoscaling signal)."""
        return self._in_flight + len(self._waiting)

    @property
    def stats(self) -> dict[str, float]:
        return {
            "streams": len(self._served),
            "reads_in_flight": self._in_flight,
            "waiting": len(self._waiting),
            "window": round(self._window, 2),
        }

    def expire_idle(self, now: float | None = None) -> int:
        """Forget the fair-share turn of streams not read for ``stream_idle_timeout_s``."""
        cutoff = (now or time.monotonic()) - self.config.stream_idle_timeout_s
        idle = [stream for stream, at in self._served.items() if at < cutoff]
        for stream in idle:
            del self._served[stream]
        return len(idle)

    async def read(self, request: ReadRequest) -> ReadReply:
        """Read ``request`` once a slot is free, or answer it ``overloaded`` after the admission timeout."""
        waiter = _Waiter(request, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        self._pump()
        try:
            await asyncio.wait((waiter.slot,), timeout=self.config.admission_timeout_s)
            if not waiter.slot.done():
                self._waiting.remove(waiter)
                return ReadReply(overloaded=True)
        except asyncio.CancelledError:
            if waiter.slot.done():
                self._release()
            else:
                self._waiting.remove(waiter)
            raise
        try:
            reply = await self._read_in_time(request)
        finally:
            self._release()
        self._adapt(reply, waiter.started)
        return reply

    def _release(self) -> None:
        self._in_flight -= 1
        self._pump()

    def _pump(self) -> None:
        """Hand free slots to the waiting streams served least recently."""
        while self._in_flight < int(self._window) and self._waiting:
            waiter = min(self._waiting, key=lambda w: self._served.get(w.request.stream_id, 0.0))
            self._waiting.remove(waiter)
            self._served[waiter.request.stream_id] = time.monotonic()
            self._in_flight += 1
            self.reads += 1
            waiter.started = self.reads
            waiter.slot.set_result(None)

    def _adapt(self, reply: ReadReply, started: int) -> None:
        """AIMD on the window: back off as soon as reads queue at the model.

        A batching model: a read that waited behind earlier batches
        (``backlog_ms``; the wait for its own batch to fill does not count, or a
        batching model would never get more than one read) for more than one
        and a half batch times means the model replicas hold a backlog: shrink.
        Waiting for the one batch running is how the next batch fills while a
        model runs one batch at a time (with half a batch as the limit, reads
        that came while a batch ran always shrank the window, and a model of 16
        frames in 25 ms got one read at a time: 33 reads/s). A read that waited
        at most about one batch while the window was full and reads were
        waiting means there may be room: grow.

        A model that reads one frame at a time (the CPU) has no next batch to
        fill: a read queued behind the running one only waits, as long again
        (a window of 2-3 on one CPU replica made the burst's reads ~400 ms
        slower). So: shrink once reads wait half a read, and grow only when a
        replica had been idle half a read when the frame came (``idle_ms``:
        there are more replicas than slots); one replica keeps one read.

        A shrink is by a quarter, once per window: the reads started before the
        last shrink (``started``, their number) met the backlog it answered, and
        a batch of 16 such replies must shrink it once, not 16 times (0.75^16).
        A grow is by 1/window (one slot per window of completed reads). The
        window follows the model's capacity as replicas come and go, with no
        replica count needed.
        """
        low, high = self.config.min_reads_in_flight, self.config.max_reads_in_flight
        if reply.lines is None:
            return  # a failed read says nothing about capacity
        batch_ms = max(reply.ocr_ms, 1.0)  # a model that answers at once still counts as 1 ms
        if self._model_batch == 1:
            crowded, room = reply.backlog_ms > 0.5 * batch_ms, reply.idle_ms > 0.5 * batch_ms
        else:
            crowded, room = reply.backlog_ms > 1.5 * batch_ms, reply.backlog_ms <= batch_ms
        if crowded:
            if started > self._shrunk_at:
                self._window = max(low, self._window * 0.75)
                self._shrunk_at = self.reads
        elif room and self._in_flight + 1 >= int(self._window) and self._waiting:
            self._window = min(high, self._window + 1.0 / self._window)

    async def _read_in_time(self, request: ReadRequest) -> ReadReply:
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation.
            async with asyncio.timeout(self.config.read_timeout_s):
                return await self._read(request)
        except TimeoutError:
            return ReadReply(error_code=ErrorCode.INTERNAL, error_message="the model did not answer in time")
