"""OCRModel: PaddleOCR in a Serve replica, frames batched across streams.

One pipeline per replica, called only from this replica's single model
thread; a :class:`~serve_app.batching.Batcher` gathers the frames of all
streams that came while the model was busy into its next call.
Ready means warmed up: ``__init__`` reads a generated image before the
replica takes traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import ray

from serve_app.autoscaling import DEMAND, DemandBook
from serve_app.batching import Batcher
from serve_app.config import OCRConfig
from serve_app.images import decode_bgr
from serve_app.jobs import Boxes, ReaderInfo, ReadReply, ReadRequest
from serve_app.metrics import ModelMetrics
from serve_app.protocol import ErrorCode, Line, ProtocolError, Roi
from serve_app.reader import TextReader, choose_device
from serve_app.reads import replies_of

logger = logging.getLogger("ray.serve")

# A frame to read: its bytes, its roi, the boxes of the only lines to read, when it arrived.
_Item = tuple[bytes, Roi | None, Boxes | None, float]

DEFAULT_DEPLOYMENT_OPTIONS: dict[str, Any] = {
    "name": "OCRModel",
    "max_ongoing_requests": 32,
    "ray_actor_options": {"num_cpus": 1},
}


def warmup_image() -> np.ndarray:
    image = np.full((96, 320, 3), 255, np.uint8)
    cv2.putText(image, "WARM UP 2026", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 3)
    return image


class OCRModel:
    def __init__(self, config: OCRConfig, *, max_pixels: int) -> None:
        self._config = config
        self._max_pixels = max_pixels
        device = choose_device(config.device, config.engine, ray.get_gpu_ids())
        self._reader = TextReader(config, device)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paddleocr")
        self._demand = DemandBook()
        self._metrics = ModelMetrics()
        self._reader.read([warmup_image()])
        self._free_at = time.time()  # when the model thread finished its last batch
        self._batches = Batcher(
            self._read_batch, max_size=config.max_batch_size, wait_s=config.batch_wait_timeout_s
        )
        logger.info("OCRModel ready on %s (engine %s)", device, config.engine)

    @classmethod
    def get_deployment_options(cls, config: OCRConfig) -> dict[str, Any]:
        return {**DEFAULT_DEPLOYMENT_OPTIONS, **config.deployment_config}

    async def read(
        self, requests: list[ReadRequest], demand: tuple[str, int] | None = None
    ) -> list[tuple[int, ReadReply]]:
        """Read each frame (only its ``roi``, if given; boxes in whole-frame pixels), or only the
        lines in its ``boxes``; replies by request id.

        The frames of one call, and of all calls, are read in batches
        together; a call carries at most a batch of frames (the sampler sends
        it so), read in one batch or two, so its replies come together.
        ``demand`` is (sampler replica, reads it wants now), for autoscaling.
        """
        if demand is not None:
            self._demand.report(*demand)
        return await replies_of(requests, self._read_one)

    async def _read_one(self, request: ReadRequest) -> ReadReply:
        return await self._batches((request.image, request.roi, request.boxes, time.time()))

    async def _read_batch(self, items: list[_Item]) -> list[ReadReply]:
        replies = await asyncio.get_running_loop().run_in_executor(self._thread, self._read_sync, items)
        self._metrics.batch_size.observe(len(items))
        line_reads = sum(1 for _, _, boxes, _ in items if boxes is not None)
        if line_reads:  # Ray's Counter.inc refuses 0
            self._metrics.line_reads.inc(line_reads)
        self._metrics.latency.observe(replies[0].ocr_ms)
        for reply in replies:
            self._metrics.queue.observe(reply.queue_ms)
        return replies

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom autoscaling metric: the demand the samplers report (serve_app/autoscaling.py)."""
        demand = self._demand.total()
        self._metrics.demand.set(demand)
        return {DEMAND: float(demand)}

    def _read_sync(self, items: list[_Item]) -> list[ReadReply]:
        start = time.time()
        replies = [
            ReadReply(
                queue_ms=(start - queued) * 1000.0,
                backlog_ms=max(0.0, self._free_at - queued) * 1000.0,
                idle_ms=max(0.0, queued - self._free_at) * 1000.0,
            )
            for *_, queued in items
        ]
        images, readable, offsets = [], [], []
        by_line, line_replies = [], []
        for reply, (data, roi, boxes, _) in zip(replies, items, strict=True):
            try:
                image = decode_bgr(data, self._max_pixels)
            except ProtocolError as exc:
                reply.error_code, reply.error_message = exc.code, exc.message
                continue
            if boxes is not None:
                by_line.append((image, boxes))
                line_replies.append(reply)
                continue
            x0, y0 = 0, 0
            if roi is not None:
                x0, y0, x1, y1 = roi.pixels(image.shape[1], image.shape[0])
                image = image[y0:y1, x0:x1]
            images.append(image)
            readable.append(reply)
            offsets.append((x0, y0))
        if images:
            self._run(readable, lambda: list(map(_shifted, self._reader.read(images), offsets)))
        if by_line:
            self._run(line_replies, lambda: self._reader.read_lines(by_line))
        self._free_at = time.time()
        ocr_ms = (self._free_at - start) * 1000.0
        for reply in replies:
            reply.ocr_ms, reply.frame_ms = ocr_ms, ocr_ms / self._config.max_batch_size
        return replies

    @staticmethod
    def _run(replies: list[ReadReply], read: Callable[[], list[list[Line]]]) -> None:
        """Each reply gets its frame's lines from ``read``, or, when the model fails, an error."""
        try:
            for reply, lines in zip(replies, read(), strict=True):
                reply.lines = lines
        except Exception:
            logger.exception("the model failed on a batch of %d frames", len(replies))
            for reply in replies:
                reply.error_code, reply.error_message = ErrorCode.INTERNAL, "the model failed on this frame"

    def info(self) -> ReaderInfo:
        models = [{"name": m.name, "hash": m.hash} for m in self._reader.models]
        return ReaderInfo(engine=self._reader.engine, device=self._reader.device, models=models)

    def ready(self) -> bool:
        return True

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live knobs (batching) without reloading the model."""
        self._config = self._config.updated(user_config)  # type: ignore[assignment]
        self._batches.max_size = self._config.max_batch_size
        self._batches.wait_s = self._config.batch_wait_timeout_s


def _shifted(lines: list[Line], offset: tuple[int, int]) -> list[Line]:
    """Boxes of a region read back in the whole frame's pixels."""
    dx, dy = offset
    if dx == dy == 0:
        return lines
    for line in lines:
        line.box = [[x + dx, y + dy] for x, y in line.box]
    return lines
