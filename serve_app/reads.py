"""Reads crossing a hop many per call: ingress -> sampler, and sampler -> model (Ray-free).

An ingress replica's streams each have at most one read in flight (their
:class:`~serve_app.sampling.StreamSampler` keeps it so); a sampler replica
admits reads for many streams. On either side, the reads asked for in one turn
of the event loop go together in one streaming call to the next stage (at most
``max_per_call`` of them: the sampler sends the model one batch per call, so
calls still spread over model replicas as batches would), which yields each
reply as its read completes (:func:`replies_as_completed`): a busy replica
pays one handle call for many frames. A call that fails (the replica died) is
made once more for the reads it had not answered; a read that fails twice is
answered ``internal``, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from serve_app.jobs import Boxes, ReadReply, ReadRequest
from serve_app.protocol import ErrorCode, Roi

logger = logging.getLogger(__name__)

Replies = AsyncIterator[list[tuple[int, ReadReply]]]
CallFn = Callable[[list[ReadRequest]], Replies]  # the next stage's ``read``


async def replies_as_completed(
    requests: list[ReadRequest], read: Callable[[ReadRequest], Awaitable[ReadReply]]
) -> Replies:
    """The receiving side of a call: ``read`` each request concurrently; yield replies as they complete.

    A read that raises is answered ``internal``: the call always ends, with one reply per request.
    """
    replies: asyncio.Queue[tuple[int, ReadReply]] = asyncio.Queue()

    async def one(request: ReadRequest) -> None:
        try:
            reply = await read(request)
        except Exception:
            logger.exception("a read of stream %s failed", request.stream_id)
            reply = ReadReply(error_code=ErrorCode.INTERNAL, error_message="the frame could not be read")
        replies.put_nowait((request.id, reply))

    tasks = [asyncio.ensure_future(one(request)) for request in requests]
    try:
        remaining = len(requests)
        while remaining:
            batch = [await replies.get()]
            while not replies.empty():
                batch.append(replies.get_nowait())
            remaining -= len(batch)
            yield batch
    finally:
        for task in tasks:
            task.cancel()


async def replies_of(
    requests: list[ReadRequest], read: Callable[[ReadRequest], Awaitable[ReadReply]]
) -> list[tuple[int, ReadReply]]:
    """The receiving side of a unary call: every reply, once all are in (see :func:`replies_as_completed`).

    A call cancelled meanwhile cancels its reads at once."""
    async with contextlib.aclosing(replies_as_completed(requests, read)) as stream:
        return [reply async for replies in stream for reply in replies]


async def one_reply(call: Awaitable[list[tuple[int, ReadReply]]]) -> Replies:
    """A unary call's replies as the one item of a :data:`CallFn`'s stream."""
    yield await call


class ReadBatcher:
    def __init__(self, call: CallFn, *, max_per_call: int | None = None) -> None:
        self._call = call
        self._max_per_call = max_per_call
        self._ids = itertools.count(1)
        self._queue: list[tuple[ReadRequest, asyncio.Future[ReadReply]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # calls made (metrics, tests)

    async def read(
        self,
        stream_id: str,
        image: bytes,
        received: float,
        roi: Roi | None = None,
        boxes: Boxes | None = None,
    ) -> ReadReply:
        request = ReadRequest(next(self._ids), stream_id, image, received, roi, boxes)
        reply: asyncio.Future[ReadReply] = asyncio.get_running_loop().create_future()
        if not self._queue:
            asyncio.get_running_loop().call_soon(self._flush)
        self._queue.append((request, reply))
        return await reply

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        size = self._max_per_call or len(queue)
        for start in range(0, len(queue), size):
            task = asyncio.get_running_loop().create_task(self._send(queue[start : start + size], retry=True))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[ReadRequest, asyncio.Future[ReadReply]]], *, retry: bool) -> None:
        waiting = {request.id: reply for request, reply in batch if not reply.done()}
        if not waiting:
            return
        self.calls += 1
        try:
            async for replies in self._call([request for request, _ in batch if request.id in waiting]):
                for request_id, reply in replies:
                    future = waiting.pop(request_id, None)
                    if future is not None and not future.done():
                        future.set_result(reply)
        except Exception as exc:  # the sampler replica died or failed: Ray wraps it
            logger.warning("a call with %d reads failed: %s", len(batch), exc)
        left = [(request, reply) for request, reply in batch if request.id in waiting and not reply.done()]
        if left and retry:
            await self._send(left, retry=False)
            return
        for _, reply in left:
            if not reply.done():
                message = "the frame could not be read; the stream goes on"
                reply.set_result(ReadReply(error_code=ErrorCode.INTERNAL, error_message=message))
