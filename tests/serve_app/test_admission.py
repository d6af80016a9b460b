"""Fair admission of reads in a sampler replica, with a stand-in model (no Ray)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

from serve_app.admission import Admission
from serve_app.config import SamplerConfig
from serve_app.jobs import ReadReply, ReadRequest
from serve_app.protocol import Line


class StandInModel:
    """Reads the image bytes as the text after ``delay``; can be held, or made to fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.reads: list[bytes] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.delay = delay
        self.failures = 0

    async def __call__(self, request: ReadRequest) -> ReadReply:
        self.reads.append(request.image)
        await self.gate.wait()
        await asyncio.sleep(self.delay)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("replica died")
        line = Line(text=request.image.decode(), score=1.0, box=[[0, 0], [1, 0], [1, 1], [0, 1]])
        return ReadReply(lines=[line], ocr_ms=self.delay * 1000)


def make(delay: float = 0.0, model_batch: int = 1, **overrides: Any) -> tuple[Admission, StandInModel]:
    model = StandInModel(delay)
    config = SamplerConfig(**{"min_reads_in_flight": 1, "max_reads_in_flight": 1, **overrides})
    return Admission(config, read=model, model_batch=model_batch), model


_ids = iter(range(1, 10**9))


def request(stream: str, image: bytes) -> ReadRequest:
    return ReadRequest(next(_ids), stream, image, time.time())


async def test_a_read_is_read() -> None:
    admission, model = make()
    reply = await admission.read(request("s", b"LOT 1"))
    assert reply.lines is not None and reply.lines[0].text == "LOT 1" and model.reads == [b"LOT 1"]


async def test_fair_share_between_a_fast_and_a_slow_stream() -> None:
    """A stream with reads always waiting does not make one that reads now and then wait behind it."""
    admission, model = make(delay=0.01)
    waits: list[float] = []

    async def stream(name: str, n: int, gap: float) -> None:
        for i in range(n):
            start = time.monotonic()
            reply = await admission.read(request(name, f"{name}{i}".encode()))
            waits.append(time.monotonic() - start - reply.ocr_ms / 1000) if name == "slow" else None
            await asyncio.sleep(gap)

    fast = [asyncio.create_task(stream("fast", 1000, 0.0)) for _ in range(4)]  # four reads always waiting
    await asyncio.sleep(0.05)
    await stream("slow", 8, 0.02)
    for task in fast:
        task.cancel()
    await asyncio.gather(*fast, return_exceptions=True)
    reads = Counter(r[:4].decode() for r in model.reads)
    assert reads["slow"] == 8 and reads["fast"] > 8, reads
    # FIFO would make each slow read wait for the four fast ones ahead of it (~40 ms)
    assert sorted(waits)[len(waits) // 2] < 0.025, waits


async def test_overloaded_when_no_read_slot_in_time() -> None:
    admission, model = make(admission_timeout_s=0.1)
    model.gate.clear()
    first = asyncio.create_task(admission.read(request("a", b"A")))
    await asyncio.sleep(0.01)
    assert (await admission.read(request("b", b"B"))).overloaded
    model.gate.set()
    assert (await first).lines is not None
    assert admission.stats["reads_in_flight"] == 0 and admission.stats["waiting"] == 0


async def test_a_failed_read_gives_its_slot_back() -> None:
    """Retrying a failed model call is the model batcher's (tests/serve_app/test_reads.py)."""
    admission, model = make()
    model.failures = 1
    reads = [admission.read(request("s", b"A")), admission.read(request("t", b"B"))]
    failed, read = await asyncio.gather(*reads, return_exceptions=True)
    assert isinstance(failed, RuntimeError) and isinstance(read, ReadReply) and read.lines is not None
    assert admission.stats["reads_in_flight"] == 0


async def test_a_model_that_does_not_answer_in_time_is_internal() -> None:
    admission, model = make(read_timeout_s=0.05)
    model.gate.clear()
    reply = await admission.read(request("s", b"A"))
    assert reply.error_code == "internal" and "in time" in reply.error_message
    model.gate.set()


async def test_a_cancelled_read_gives_its_slot_back() -> None:
    admission, model = make()
    model.gate.clear()
    held = asyncio.create_task(admission.read(request("a", b"A")))
    waiting = asyncio.create_task(admission.read(request("b", b"B")))
    await asyncio.sleep(0.01)
    held.cancel()
    waiting.cancel()
    await asyncio.gather(held, waiting, return_exceptions=True)
    model.gate.set()
    assert admission.stats["reads_in_flight"] == 0 and admission.stats["waiting"] == 0
    assert (await admission.read(request("c", b"C"))).lines is not None


async def test_the_window_shrinks_when_reads_queue_at_the_model() -> None:
    admission, _ = make(min_reads_in_flight=1, max_reads_in_flight=8)
    admission._window, admission.reads = 8.0, 8
    admission._adapt(ReadReply(lines=[], ocr_ms=100.0, queue_ms=200.0, backlog_ms=200.0), started=8)
    assert admission.stats["window"] == 6.0


async def test_a_batch_that_met_a_backlog_shrinks_the_window_once() -> None:
    """16 replies of one batch that waited are one signal: a quarter off, not 0.75^16."""
    admission, _ = make(model_batch=16, min_reads_in_flight=1, max_reads_in_flight=32)
    admission._window, admission.reads = 32.0, 32
    waited = ReadReply(lines=[], ocr_ms=25.0, queue_ms=60.0, backlog_ms=50.0)  # behind two batches
    for started in range(17, 33):
        admission._adapt(waited, started)
    assert admission.stats["window"] == 24.0
    admission.reads = 40  # reads started after the shrink that meet a backlog again
    admission._adapt(waited, started=33)
    assert admission.stats["window"] == 18.0


class BatchingModel:
    """A GPU-shaped stand-in: reads wait up to FILL_S for their batch (up to 16), which takes BATCH_S."""

    FILL_S, BATCH_S = 0.005, 0.025

    def __init__(self) -> None:
        self.batches: list[int] = []
        self._queue: list[tuple[float, asyncio.Future[ReadReply]]] = []
        self._free_at = 0.0
        self._worker: asyncio.Task[None] | None = None

    async def __call__(self, request: ReadRequest) -> ReadReply:
        reply: asyncio.Future[ReadReply] = asyncio.get_running_loop().create_future()
        self._queue.append((time.time(), reply))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        return await reply

    async def _run(self) -> None:
        while self._queue:
            await asyncio.sleep(self.FILL_S)
            batch, self._queue = self._queue[:16], self._queue[16:]
            start, free_at = time.time(), self._free_at
            await asyncio.sleep(self.BATCH_S)
            self._free_at = time.time()
            self.batches.append(len(batch))
            for queued, reply in batch:
                if reply.done():  # its reader was cancelled
                    continue
                backlog = max(0.0, free_at - queued) * 1000
                ocr_ms = (self._free_at - start) * 1000
                reply.set_result(
                    ReadReply(lines=[], ocr_ms=ocr_ms, queue_ms=(start - queued) * 1000, backlog_ms=backlog)
                )


async def test_a_batching_model_gets_its_batches_filled() -> None:
    """The wait for a batch to fill is not a backlog: the window grows until batches are full."""
    model = BatchingModel()
    admission = Admission(
        SamplerConfig(min_reads_in_flight=1, max_reads_in_flight=64), read=model, model_batch=16
    )

    async def stream(name: str) -> None:
        while True:
            await admission.read(request(name, b"A"))

    streams = [asyncio.create_task(stream(f"s{i}")) for i in range(40)]
    deadline = time.monotonic() + 10.0  # 1.5 s on a quiet box; longer when the CPU is busy
    await asyncio.sleep(1.5)

    def filled() -> bool:
        return admission.stats["window"] >= 12 and max(model.batches[-5:], default=0) >= 12

    while not filled() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    assert admission.stats["window"] >= 12
    assert max(model.batches[-5:]) >= 12, model.batches


class OneAtATimeReplicas:
    """CPU-shaped stand-in: ``n`` model replicas, each reading one frame at a time in READ_S; a call
    goes to a replica with the fewest reads (as Serve's router does); replies say how long the
    frame waited behind other reads and how long its replica had been idle, as the OCR replica's do."""

    READ_S = 0.03

    def __init__(self, n: int) -> None:
        self.locks = [asyncio.Lock() for _ in range(n)]
        self.ongoing = [0] * n
        self.free_at = [time.time()] * n
        self.reads = [0] * n
        self.backlogs: list[float] = []
        self.rng = random.Random(0)

    async def __call__(self, request: ReadRequest) -> ReadReply:
        fewest = min(self.ongoing)
        i = self.rng.choice([i for i, n in enumerate(self.ongoing) if n == fewest])
        self.ongoing[i] += 1
        queued = time.time()
        try:
            async with self.locks[i]:
                start, free_at = time.time(), self.free_at[i]
                await asyncio.sleep(self.READ_S)
                self.free_at[i] = time.time()
        finally:
            self.ongoing[i] -= 1
        self.reads[i] += 1
        backlog = max(0.0, free_at - queued) * 1000
        self.backlogs.append(backlog)
        return ReadReply(
            lines=[],
            ocr_ms=(self.free_at[i] - start) * 1000,
            queue_ms=(start - queued) * 1000,
            backlog_ms=backlog,
            idle_ms=max(0.0, queued - free_at) * 1000,
        )


async def _saturated(replicas: OneAtATimeReplicas) -> Admission:
    """Admission to ``replicas`` after a second of eight streams, each with a read waiting all the time."""
    admission = Admission(
        SamplerConfig(min_reads_in_flight=1, max_reads_in_flight=16, admission_timeout_s=5.0),
        read=replicas,
        model_batch=1,
    )

    async def stream(name: str) -> None:
        while True:
            await admission.read(request(name, b"A"))

    streams = [asyncio.create_task(stream(f"s{i}")) for i in range(8)]
    await asyncio.sleep(1.0)
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    return admission


async def test_a_model_that_reads_one_frame_at_a_time_gets_one_read_per_replica() -> None:
    """On the CPU a read queued behind the running one only waits: one replica keeps one read in
    flight under any demand (its reads do not queue), two replicas get two."""
    one = OneAtATimeReplicas(1)
    admission = await _saturated(one)
    assert admission.stats["window"] < 2, admission.stats
    assert sum(b > 0.5 * 1000 * one.READ_S for b in one.backlogs) <= 2, one.backlogs

    two = OneAtATimeReplicas(2)
    admission = await _saturated(two)
    assert 2 <= admission.stats["window"] < 3, admission.stats
    assert min(two.reads) >= 0.3 * sum(two.reads), two.reads


async def test_demand_counts_reads_in_flight_and_waiting() -> None:
    admission, model = make()
    model.gate.clear()
    reads = [asyncio.create_task(admission.read(request(f"s{i}", b"A"))) for i in range(3)]
    await asyncio.sleep(0.01)
    assert admission.demand == 3
    model.gate.set()
    await asyncio.gather(*reads)
    assert admission.demand == 0
