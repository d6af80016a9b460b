"""A model's batches form when the model is free: what came while it was busy goes together (no Ray)."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.batching import Batcher


class StandInModel:
    """Doubles each item; each batch runs until the test lets it finish."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.running = asyncio.Event()
        self.finish = asyncio.Event()
        self.fail = False

    async def run(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.running.set()
        await self.finish.wait()
        self.running.clear()
        if self.fail:
            raise RuntimeError("the model failed")
        return [2 * item for item in items]


async def test_frames_that_come_while_a_batch_runs_make_the_next_batch() -> None:
    model = StandInModel()
    batcher = Batcher(model.run, max_size=16, wait_s=0.0)
    first = asyncio.ensure_future(batcher(1))
    await model.running.wait()
    # Six reads come one by one while the model is busy, each long after the one before.
    later = []
    for item in range(2, 8):
        later.append(asyncio.ensure_future(batcher(item)))
        await asyncio.sleep(0.01)
    model.finish.set()
    assert await first == 2
    assert await asyncio.gather(*later) == [4, 6, 8, 10, 12, 14]
    assert model.batches == [[1], [2, 3, 4, 5, 6, 7]]


async def test_a_batch_holds_at_most_max_size_and_the_rest_waits_its_turn() -> None:
    model = StandInModel()
    model.finish.set()
    batcher = Batcher(model.run, max_size=3, wait_s=0.0)
    assert await asyncio.gather(*(batcher(i) for i in range(7))) == [0, 2, 4, 6, 8, 10, 12]
    assert model.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_free_model_waits_wait_s_for_its_batch_to_fill() -> None:
    model = StandInModel()
    model.finish.set()
    batcher = Batcher(model.run, max_size=4, wait_s=5.0)  # long: a busy box must not end it early
    first = asyncio.ensure_future(batcher(1))
    await asyncio.sleep(0.02)
    assert model.batches == []  # still filling
    rest = [asyncio.ensure_future(batcher(i)) for i in (2, 3, 4)]
    await asyncio.gather(first, *rest)
    assert model.batches == [[1, 2, 3, 4]]  # full: it went before wait_s was over


async def test_a_read_given_up_is_left_out_of_its_batch() -> None:
    model = StandInModel()
    batcher = Batcher(model.run, max_size=16, wait_s=0.0)
    first = asyncio.ensure_future(batcher(1))
    await model.running.wait()
    given_up, kept = asyncio.ensure_future(batcher(2)), asyncio.ensure_future(batcher(3))
    await asyncio.sleep(0)
    given_up.cancel()
    model.finish.set()
    assert (await first, await kept) == (2, 6)
    assert model.batches == [[1], [3]]


async def test_a_failed_batch_fails_each_of_its_reads_and_the_next_batch_runs() -> None:
    model = StandInModel()
    batcher = Batcher(model.run, max_size=16, wait_s=0.0)
    model.fail = True
    model.finish.set()
    failed = await asyncio.gather(batcher(1), batcher(2), return_exceptions=True)
    assert [str(exc) for exc in failed] == ["the model failed"] * 2
    model.fail = False
    assert await batcher(3) == 6


async def test_a_model_that_answers_short_fails_the_batch_instead_of_hanging() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = Batcher(short, max_size=16, wait_s=0.0)
    with pytest.raises(RuntimeError, match="a batch of 2 gave 1 results"):
        await asyncio.gather(batcher(1), batcher(2))
