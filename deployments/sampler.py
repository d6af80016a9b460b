"""FrameSampler: per-stream sampling and fair admission between ingress and model.

Stream state lives in the replica that sees the stream's frames. Ray 2.60's
``ConsistentHashRouter`` (strict affinity by ``session_id``) loses calls made
concurrently from inside a replica (docs/design.md, "Stream affinity"), so
this deployment uses Serve's default router and runs as one replica in the
shipped configs; with several replicas a stream's state is split between
them, which costs extra reads but never an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.config import SamplerConfig
from serve_app.dedup import ChangeDetector
from serve_app.jobs import Job, Outcome, ReaderInfo, ReadReply
from serve_app.metrics import SamplerMetrics
from serve_app.sampling import Sampler

_TICK_S = 1.0  # metrics
_EXPIRY_TICKS = 5  # idle streams are looked for every 5 ticks

DEFAULT_DEPLOYMENT_OPTIONS: dict[str, Any] = {
    "name": "FrameSampler",
    # Each stream holds up to two calls open here (one batch being decided,
    # one waiting for its read): this is a connection count, not a queue.
    "max_ongoing_requests": 20_000,
    "ray_actor_options": {"num_cpus": 0.5},
}


class FrameSampler:
    def __init__(self, config: SamplerConfig, *, ocr: DeploymentHandle, max_pixels: int) -> None:
        self._ocr = ocr
        self._sampler = Sampler(
            config, read=self._read, detector=ChangeDetector(config.dedup), max_pixels=max_pixels
        )
        self._id = serve.get_replica_context().replica_id.unique_id
        self._metrics = SamplerMetrics()
        self._ticker: asyncio.Task[None] | None = None

    @classmethod
    def get_deployment_options(cls, config: SamplerConfig) -> dict[str, Any]:
        return {**DEFAULT_DEPLOYMENT_OPTIONS, **config.deployment_config}

    async def _read(self, job: Job, demand: int) -> ReadReply:
        return await self._ocr.read.remote(job.image, (self._id, demand))

    async def _tick(self) -> None:
        reported, ticks = 0, 0
        while True:
            await asyncio.sleep(_TICK_S)
            ticks += 1
            if ticks % _EXPIRY_TICKS == 0:
                self._sampler.expire_idle()
            self._metrics.update(self._sampler.stats, self._sampler.reads - reported)
            reported = self._sampler.reads

    async def submit(
        self,
        stream_id: str,
        jobs: list[Job],
        fps: float | None = None,
        oneshot: bool = False,
        claim: bool = False,
    ) -> AsyncIterator[list[Outcome]]:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
        async for outcomes in self._sampler.submit(stream_id, jobs, fps=fps, oneshot=oneshot, claim=claim):
            yield outcomes
        if oneshot:
            self._sampler.close(stream_id)

    async def configure(self, stream_id: str, fps: float) -> float:
        return self._sampler.configure(stream_id, fps)

    async def close_stream(self, stream_id: str) -> None:
        self._sampler.close(stream_id)

    async def ready(self) -> bool:
        return await self._ocr.ready.remote()

    async def info(self) -> dict[str, Any]:
        reader: ReaderInfo = await self._ocr.info.remote()
        config = self._sampler.config
        return {
            "engine": reader.engine,
            "device": reader.device,
            "models": reader.models,
            "fps_default": config.default_fps,
            "fps_max": config.max_fps,
        }

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live knobs (fps, dedup thresholds, admission) for every stream, no restart."""
        config: SamplerConfig = self._sampler.config.updated(user_config)  # type: ignore[assignment]
        self._sampler.reconfigure(config, ChangeDetector(config.dedup))
