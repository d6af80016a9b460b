"""Model stand-ins (serving benchmarks only, never in end-to-end tests)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray import serve

from serve_app.config import OCRConfig
from serve_app.jobs import ReaderInfo, ReadReply
from serve_app.protocol import Roi


class StandInModel:
    """Answers every read at once with no lines: measures the serving path alone."""

    def __init__(self, config: OCRConfig, *, max_pixels: int) -> None:
        self._config = config

    async def read(
        self, image: bytes, roi: Roi | None = None, demand: tuple[str, int] | None = None
    ) -> ReadReply:
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

    async def read(
        self, image: bytes, roi: Roi | None = None, demand: tuple[str, int] | None = None
    ) -> ReadReply:
        return await self._read_batch(time.time())

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _read_batch(self, queued: list[float]) -> list[ReadReply]:
        start = time.time()
        await asyncio.sleep(self.BATCH_S)
        ocr_ms = (time.time() - start) * 1000.0
        return [ReadReply(lines=[], ocr_ms=ocr_ms, queue_ms=(start - q) * 1000.0) for q in queued]
