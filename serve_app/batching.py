"""A model's batches, formed when the model is free (Ray-free).

The model replica reads frames of all streams in batches of up to
``max_size``. A batch is taken from the queue only once the previous one has
finished: every frame that came while the model was busy goes into the next
batch. Ray 2.60's ``@serve.batch`` forms a batch as soon as its first frame has
waited ``batch_wait_timeout_s``, also while another batch runs, and queues the
formed batches behind ``max_concurrent_batches``: under load a model of 16
frames in 25 ms then ran batches of 1-2 frames back to back, and reads queued
behind them (docs/benchmarks.md, "The GPU-shaped model").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """``await batcher(item)``: ``item`` read in the next batch, its result back.

    ``run`` takes a batch and returns one result per item, in order; one batch
    runs at a time. ``wait_s``: how long a batch that is not full waits for
    more items once the model is free (0: take what has queued).
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], *, max_size: int, wait_s: float) -> None:
        self.max_size = max_size
        self.wait_s = wait_s
        self._run = run
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())
        return await future

    async def _work(self) -> None:
        while self._queue:
            await self._fill()
            batch = [(item, future) for item, future in self._queue[: self.max_size] if not future.done()]
            del self._queue[: self.max_size]
            if batch:
                await self._run_batch(batch)

    async def _fill(self) -> None:
        """Wait up to ``wait_s`` for the batch to fill."""
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while len(self._queue) < self.max_size:
            self._arrived.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._arrived.wait()
            except TimeoutError:
                return

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
