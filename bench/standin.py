"""Model stand-ins (serving benchmarks only, never in end-to-end tests)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from serve_app.batching import Batcher
from serve_app.config import OCRConfig
from serve_app.jobs import ReaderInfo, ReadReply, ReadRequest
from serve_app.reads import replies_of


class StandInModel:
    """Answers every read at once with no lines: measures the serving path alone."""

    def __init__(self, config: OCRConfig, *, max_pixels: int) -> None:
        self._config = config

    async def read(
        self, requests: list[ReadRequest], demand: tuple[str, int] | None = None
    ) -> list[tuple[int, ReadReply]]:
        return await replies_of(requests, self._read_one)

    async def _read_one(self, request: ReadRequest) -> ReadReply:
        return ReadReply(lines=[])

    def info(self) -> ReaderInfo:
        return ReaderInfo(engine="stand-in", device="cpu", models=[])

    def ready(self) -> bool:
        return True

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        pass


class GPUShapedModel(StandInModel):
    """A GPU-shaped stand-in: reads a batch of up to 16 frames in ~25 ms, whatever its size.

    Its time is a sleep, not CPU: it shows whether the serving path can keep a fast model fed.
    """

    BATCH_S = 0.025
    MAX_BATCH = 16

    def __init__(self, config: OCRConfig, *, max_pixels: int) -> None:
        super().__init__(config, max_pixels=max_pixels)
        self._free_at = 0.0
        self._batches = Batcher(self._read_batch, max_size=self.MAX_BATCH, wait_s=config.batch_wait_timeout_s)

    async def _read_one(self, request: ReadRequest) -> ReadReply:
        return await self._batches(time.time())

    async def _read_batch(self, queued: list[float]) -> list[ReadReply]:
        start, free_at = time.time(), self._free_at
        await asyncio.sleep(self.BATCH_S)
        self._free_at = time.time()
        ocr_ms = (self._free_at - start) * 1000.0
        return [
            ReadReply(
                lines=[],
                ocr_ms=ocr_ms,
                frame_ms=ocr_ms / self.MAX_BATCH,
                queue_ms=(start - q) * 1000.0,
                backlog_ms=max(0.0, free_at - q) * 1000.0,
            )
            for q in queued
        ]
