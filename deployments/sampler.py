"""FrameSampler: fair admission of reads to the OCR replicas.

Each stream's sampling (rate, dedup, latest frame wins, text events) runs where
the stream lives, in its ingress session (serve_app/sampling.py); only frames
to read come here, many streams' frames per call (serve_app/reads.py). This
deployment shares the model between them fairly, sheds what cannot be read in
time (``overloaded``) and reports demand for the model's autoscaling; the reads
it admits go to the model a batch per call. It keeps no per-stream state that
matters, so it runs several replicas behind Serve's default router, and losing
one costs its reads in flight one retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.options import UNARY_CALL, on_serve_loop
from serve_app.admission import Admission
from serve_app.config import SamplerConfig
from serve_app.jobs import ReaderInfo, ReadReply, ReadRequest
from serve_app.metrics import SamplerMetrics
from serve_app.reads import ReadBatcher, Replies, one_reply, replies_as_completed, replies_of

_TICK_S = 1.0  # metrics
_EXPIRY_TICKS = 5  # idle streams are looked for every 5 ticks

DEFAULT_DEPLOYMENT_OPTIONS: dict[str, Any] = {
    "name": "FrameSampler",
    # Each ingress replica holds about one call open here per turn of its event loop with reads.
    "max_ongoing_requests": 1000,
    "ray_actor_options": {"num_cpus": 0.25},
}


class FrameSampler:
    def __init__(self, config: SamplerConfig, *, ocr: DeploymentHandle, model_batch: int) -> None:
        self._ocr = ocr
        self._model = ReadBatcher(self._call_model, max_per_call=model_batch)
        self._admission = Admission(config, read=self._read, model_batch=model_batch)
        self._id = serve.get_replica_context().replica_id.unique_id
        self._metrics = SamplerMetrics()
        self._ticker: asyncio.Task[None] | None = None

    @classmethod
    def get_deployment_options(cls, config: SamplerConfig) -> dict[str, Any]:
        return on_serve_loop(DEFAULT_DEPLOYMENT_OPTIONS, config.deployment_config)

    async def _read(self, request: ReadRequest) -> ReadReply:
        return await self._model.read(
            request.stream_id, request.image, request.received, request.roi, request.boxes
        )

    def _call_model(self, requests: list[ReadRequest]) -> Replies:
        call = self._ocr.options(**UNARY_CALL).read.remote(requests, (self._id, self._admission.demand))
        return one_reply(call)

    async def _tick(self) -> None:
        reported, ticks = 0, 0
        while True:
            await asyncio.sleep(_TICK_S)
            ticks += 1
            if ticks % _EXPIRY_TICKS == 0:
                self._admission.expire_idle()
            self._metrics.update(self._admission.stats, self._admission.reads - reported)
            reported = self._admission.reads

    async def read(self, requests: list[ReadRequest]) -> AsyncIterator[list[tuple[int, ReadReply]]]:
        """Read each of ``requests`` (or answer it ``overloaded``); replies as they come, by request id."""
        self._start_ticking()
        async for replies in replies_as_completed(requests, self._admission.read):
            yield replies

    async def read_all(self, requests: list[ReadRequest]) -> list[tuple[int, ReadReply]]:
        """:meth:`read` as a unary call: every reply at once (the ingress' calls of one read)."""
        self._start_ticking()
        return await replies_of(requests, self._admission.read)

    def _start_ticking(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def ready(self) -> bool:
        return await self._ocr.ready.remote()

    async def info(self) -> ReaderInfo:
        return await self._ocr.info.remote()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live admission knobs, no restart."""
        self._admission.reconfigure(self._admission.config.updated(user_config))  # type: ignore[arg-type]
