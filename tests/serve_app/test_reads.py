"""An ingress replica's reads: many streams' frames per sampler call, retried once (no Ray)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from serve_app.jobs import Job, ReadReply, ReadRequest
from serve_app.reads import ReadBatcher


class StandInSampler:
    """Yields each read's reply (no text); fails the first ``failures`` calls after ``yielded`` replies."""

    def __init__(self, failures: int = 0, yielded: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.failures = failures
        self.yielded = yielded

    async def read(self, requests: list[ReadRequest]) -> AsyncIterator[list[tuple[int, ReadReply]]]:
        self.calls.append([r.stream_id for r in requests])
        failing = self.failures > 0
        self.failures -= 1
        for n, request in enumerate(requests):
            if failing and n == self.yielded:
                raise RuntimeError("sampler replica died")
            await asyncio.sleep(0)
            yield [(request.id, ReadReply(lines=[]))]


def job(frame_id: int) -> Job:
    return Job(frame_id, frame_id, b"img", 0.0, time.time())


async def test_reads_asked_for_together_cross_in_one_call() -> None:
    sampler = StandInSampler()
    batcher = ReadBatcher(sampler.read)
    replies = await asyncio.gather(*(batcher.read(f"s{i}", job(i)) for i in range(5)))
    assert all(r.lines == [] for r in replies)
    assert sampler.calls == [["s0", "s1", "s2", "s3", "s4"]]


async def test_a_failed_call_is_made_again_for_the_reads_it_had_not_answered() -> None:
    sampler = StandInSampler(failures=1, yielded=2)
    batcher = ReadBatcher(sampler.read)
    replies = await asyncio.gather(*(batcher.read(f"s{i}", job(i)) for i in range(4)))
    assert all(r.lines == [] for r in replies)
    assert sampler.calls == [["s0", "s1", "s2", "s3"], ["s2", "s3"]]


async def test_a_read_that_fails_twice_is_internal_never_lost() -> None:
    sampler = StandInSampler(failures=2)
    batcher = ReadBatcher(sampler.read)
    reply = await batcher.read("s", job(1))
    assert reply.error_code == "internal" and len(sampler.calls) == 2
