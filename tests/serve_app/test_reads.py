"""Reads many per call, retried once; the receiving side answers every request (no Ray)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from serve_app.jobs import ReadReply, ReadRequest
from serve_app.reads import ReadBatcher, one_reply, replies_as_completed, replies_of


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


def frame(n: int) -> tuple[bytes, float]:
    return f"img{n}".encode(), time.time()


async def test_reads_asked_for_together_cross_in_one_call() -> None:
    sampler = StandInSampler()
    batcher = ReadBatcher(sampler.read)
    replies = await asyncio.gather(*(batcher.read(f"s{i}", *frame(i)) for i in range(5)))
    assert all(r.lines == [] for r in replies)
    assert sampler.calls == [["s0", "s1", "s2", "s3", "s4"]]


async def test_a_failed_call_is_made_again_for_the_reads_it_had_not_answered() -> None:
    sampler = StandInSampler(failures=1, yielded=2)
    batcher = ReadBatcher(sampler.read)
    replies = await asyncio.gather(*(batcher.read(f"s{i}", *frame(i)) for i in range(4)))
    assert all(r.lines == [] for r in replies)
    assert sampler.calls == [["s0", "s1", "s2", "s3"], ["s2", "s3"]]


async def test_a_read_that_fails_twice_is_internal_never_lost() -> None:
    sampler = StandInSampler(failures=2)
    batcher = ReadBatcher(sampler.read)
    reply = await batcher.read("s", *frame(1))
    assert reply.error_code == "internal" and len(sampler.calls) == 2


async def test_at_most_max_per_call_reads_cross_in_one_call() -> None:
    sampler = StandInSampler()
    batcher = ReadBatcher(sampler.read, max_per_call=2)
    await asyncio.gather(*(batcher.read(f"s{i}", *frame(i)) for i in range(5)))
    assert sampler.calls == [["s0", "s1"], ["s2", "s3"], ["s4"]]


async def test_the_receiving_side_yields_replies_as_they_complete_and_answers_a_read_that_raises() -> None:
    async def read(request: ReadRequest) -> ReadReply:
        if request.image == b"bad":
            raise ValueError("boom")
        await asyncio.sleep(0.05 if request.image == b"slow" else 0)
        return ReadReply(lines=[])

    requests = [ReadRequest(i, "s", image, time.time()) for i, image in enumerate((b"slow", b"fast", b"bad"))]
    batches = [batch async for batch in replies_as_completed(requests, read)]
    order = [request_id for batch in batches for request_id, _ in batch]
    assert sorted(order) == [0, 1, 2] and order[-1] == 0
    replies = dict(reply for batch in batches for reply in batch)
    assert replies[2].error_code == "internal" and replies[1].lines == []


async def test_a_unary_call_answers_its_reads_together_and_a_failed_one_is_made_once_more() -> None:
    calls: list[list[str]] = []

    async def model(requests: list[ReadRequest]) -> list[tuple[int, ReadReply]]:
        calls.append([r.stream_id for r in requests])
        if len(calls) == 1:
            raise RuntimeError("model replica died")

        async def read(request: ReadRequest) -> ReadReply:
            if request.stream_id == "bad":
                raise ValueError("boom")
            return ReadReply(lines=[])

        return await replies_of(requests, read)

    batcher = ReadBatcher(lambda requests: one_reply(model(requests)))
    replies = await asyncio.gather(*(batcher.read(s, *frame(i)) for i, s in enumerate(("a", "bad", "c"))))
    assert calls == [["a", "bad", "c"]] * 2, "one call, then once more for the reads it had not answered"
    assert [r.error_code for r in replies] == [None, "internal", None]
