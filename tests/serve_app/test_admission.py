"""Fair admission of reads in a sampler replica, with a stand-in model (no Ray)."""

from __future__ import annotations

import asyncio
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

    async def __call__(self, request: ReadRequest, demand: int) -> ReadReply:
        self.reads.append(request.image)
        await self.gate.wait()
        await asyncio.sleep(self.delay)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("replica died")
        line = Line(text=request.image.decode(), score=1.0, box=[[0, 0], [1, 0], [1, 1], [0, 1]])
        return ReadReply(lines=[line], ocr_ms=self.delay * 1000)


def make(delay: float = 0.0, **overrides: Any) -> tuple[Admission, StandInModel]:
    model = StandInModel(delay)
    config = SamplerConfig(**{"min_reads_in_flight": 1, "max_reads_in_flight": 1, **overrides})
    return Admission(config, read=model), model


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


async def test_one_retry_when_the_model_fails_then_internal() -> None:
    admission, model = make()
    model.failures = 1
    assert (await admission.read(request("s", b"A"))).lines is not None
    model.failures = 2
    reply = await admission.read(request("s", b"B"))
    assert reply.error_code == "internal" and reply.lines is None


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
    admission._window = 8.0
    admission._adapt(ReadReply(lines=[], ocr_ms=100.0, queue_ms=200.0))
    assert admission.stats["window"] == 6.0


async def test_demand_counts_reads_in_flight_and_waiting() -> None:
    admission, model = make()
    model.gate.clear()
    reads = [asyncio.create_task(admission.read(request(f"s{i}", b"A"))) for i in range(3)]
    await asyncio.sleep(0.01)
    assert admission.demand == 3
    model.gate.set()
    await asyncio.gather(*reads)
    assert admission.demand == 0
