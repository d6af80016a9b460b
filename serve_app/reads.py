"""An ingress replica's reads: the frames of all its streams to the sampler, many per call (Ray-free).

Each stream has at most one read in flight (its :class:`~serve_app.sampling.StreamSampler`
keeps it so). The reads asked for in one turn of the event loop go together in one
streaming call to the sampler, which yields each reply as its read completes, so
a busy replica pays one handle call for many frames. A call that fails (the
sampler replica died) is made once more for the reads it had not answered; a
read that fails twice is answered ``internal``, never lost.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable

from serve_app.jobs import Job, ReadReply, ReadRequest
from serve_app.protocol import ErrorCode, Roi

logger = logging.getLogger(__name__)

Replies = AsyncIterator[list[tuple[int, ReadReply]]]
CallFn = Callable[[list[ReadRequest]], Replies]  # the sampler's ``read``


class ReadBatcher:
    def __init__(self, call: CallFn) -> None:
        self._call = call
        self._ids = itertools.count(1)
        self._queue: list[tuple[ReadRequest, asyncio.Future[ReadReply]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # sampler calls made (metrics, tests)

    async def read(self, stream_id: str, job: Job, roi: Roi | None = None) -> ReadReply:
        request = ReadRequest(next(self._ids), stream_id, job.image, job.received, roi)
        reply: asyncio.Future[ReadReply] = asyncio.get_running_loop().create_future()
        if not self._queue:
            asyncio.get_running_loop().call_soon(self._flush)
        self._queue.append((request, reply))
        return await reply

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(batch, retry=True))
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
            logger.warning("sampler call with %d reads failed: %s", len(batch), exc)
        left = [(request, reply) for request, reply in batch if request.id in waiting and not reply.done()]
        if left and retry:
            await self._send(left, retry=False)
            return
        for _, reply in left:
            if not reply.done():
                message = "the frame could not be read; the stream goes on"
                reply.set_result(ReadReply(error_code=ErrorCode.INTERNAL, error_message=message))
