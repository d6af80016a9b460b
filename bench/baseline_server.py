"""The design this service replaces, for side-by-side benchmarks (never for production).

A plain ``websockets`` server: every connection has a 15 fps time-window
sampler (a frame less than 1/15 s after the last processed one is answered
``skipped`` / ``rate``); every other frame goes to a thread pool of 2 that runs
PaddleOCR (ONNX Runtime, the OCR config of configs/serve.yaml) and is answered
when its read is done. Nothing bounds the pool's queue: that is the point.
Each of the 2 threads owns its own :class:`~serve_app.reader.TextReader` (one
pipeline must not be called from two threads at once).

It speaks protocol v1 on ``/v1/stream`` (binary and text frames, ``ping``,
``config``; answers in the result format) and answers ``GET /healthz`` once
both readers are warm.

    python -m bench.baseline_server --port 8200 [--max-lifetime-s 900]

Stops on SIGTERM/SIGINT, or by itself after ``--max-lifetime-s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bench.common import ROOT
from bench.loadgen import render_label
from serve_app.config import AppConfig, OCRConfig
from serve_app.images import decode_bgr
from serve_app.protocol import (
    ConfigAnswer,
    ConfigRequest,
    ErrorAnswer,
    ErrorCode,
    Frame,
    PingRequest,
    PongAnswer,
    ProtocolError,
    ResultAnswer,
    SkipReason,
    Timing,
    parse_binary,
    parse_text,
)

logger = logging.getLogger("baseline")

WINDOW_FPS = 15.0
THREADS = 2


class ReaderPool:
    """A thread pool of ``THREADS`` threads, each with its own PaddleOCR pipeline."""

    def __init__(self, config: OCRConfig, max_pixels: int, threads: int = THREADS) -> None:
        self._config = config
        self._max_pixels = max_pixels
        self._local = threading.local()
        self._init_lock = threading.Lock()  # pipelines are built one at a time
        self._pool = ThreadPoolExecutor(
            threads, thread_name_prefix="paddleocr", initializer=self._init_thread
        )
        barrier = threading.Barrier(threads)
        # One warm-up per thread; the barrier makes each lands on its own thread.
        for future in [self._pool.submit(self._warm, barrier) for _ in range(threads)]:
            future.result()

    def _init_thread(self) -> None:
        from serve_app.reader import TextReader

        with self._init_lock:
            self._local.reader = TextReader(self._config)

    def _warm(self, barrier: threading.Barrier) -> None:
        barrier.wait(timeout=300)
        image = render_label(["WARM UP 2026"], width=320, height=96)
        self._local.reader.read([decode_bgr(image, self._max_pixels)])

    def _read(self, image: bytes, queued: float) -> tuple[list[Any], float, float]:
        start = time.monotonic()
        lines = self._local.reader.read([decode_bgr(image, self._max_pixels)])[0]
        return lines, (start - queued) * 1000.0, (time.monotonic() - start) * 1000.0

    async def read(self, image: bytes) -> tuple[list[Any], float, float]:
        """(lines, queue_ms, ocr_ms)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._read, image, time.monotonic())

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class BaselineServer:
    def __init__(self, pool: ReaderPool) -> None:
        self._pool = pool
        self._tasks: set[asyncio.Task[None]] = set()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/healthz"):
            return connection.respond(HTTPStatus.OK, '{"status": "ok"}\n')
        if not request.path.startswith("/v1/stream"):
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._stream(ws)

    async def _stream(self, ws: ServerConnection) -> None:
        last_processed = float("-inf")
        async for message in ws:
            try:
                parsed = parse_binary(message) if isinstance(message, bytes) else parse_text(message)
            except ProtocolError as exc:
                await _send(ws, exc.to_answer().encode())
                continue
            if isinstance(parsed, PingRequest):
                await _send(ws, PongAnswer(ts=time.time()).encode())
            elif isinstance(parsed, ConfigRequest):
                await _send(ws, ConfigAnswer(fps=WINDOW_FPS).encode())
            else:
                now = time.monotonic()
                if now - last_processed < 1.0 / WINDOW_FPS:
                    skipped = ResultAnswer(frame_id=parsed.frame_id, status="skipped", reason=SkipReason.RATE)
                    await _send(ws, skipped.encode())
                    continue
                last_processed = now
                task = asyncio.create_task(self._answer(ws, parsed, now))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _answer(self, ws: ServerConnection, frame: Frame, received: float) -> None:
        try:
            lines, queue_ms, ocr_ms = await self._pool.read(frame.image)
        except ProtocolError as exc:
            exc.frame_id = frame.frame_id
            await _send(ws, exc.to_answer().encode())
            return
        except Exception:
            logger.exception("read failed")
            error = ErrorAnswer(frame_id=frame.frame_id, code=ErrorCode.INTERNAL, message="read failed")
            await _send(ws, error.encode())
            return
        total_ms = (time.monotonic() - received) * 1000.0
        timing = Timing(total_ms=round(total_ms, 1), ocr_ms=round(ocr_ms, 1), queue_ms=round(queue_ms, 1))
        await _send(
            ws, ResultAnswer(frame_id=frame.frame_id, status="ok", lines=lines, timing=timing).encode()
        )


async def _send(ws: ServerConnection, text: str) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.send(text)


async def serve_baseline(port: int, max_lifetime_s: float) -> None:
    config = AppConfig.from_file(ROOT / "configs" / "serve.yaml")
    start = time.monotonic()
    pool = ReaderPool(config.ocr, config.ingress.max_pixels)
    logger.info("%d PaddleOCR readers warm after %.1f s", THREADS, time.monotonic() - start)
    server = BaselineServer(pool)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        server.handler,
        "127.0.0.1",
        port,
        process_request=server.process_request,
        max_size=config.ingress.hard_max_message_bytes,
        compression=None,
    ):
        print(f"baseline listening on http://127.0.0.1:{port}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max_lifetime_s)
    pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--max-lifetime-s", type=float, default=900.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve_baseline(args.port, args.max_lifetime_s))


if __name__ == "__main__":
    main()
