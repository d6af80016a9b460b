"""StreamIngress: the WebSocket and HTTP edge (FastAPI under ``@serve.ingress``).

No ``from __future__ import annotations`` here: FastAPI must see real
annotations (``WebSocket``, ``Request``) on the methods Serve binds.

Connections, limits, answers and each stream's sampling live here, with the
stream (serve_app/session.py, serve_app/sampling.py): a frame that is not read
costs no handle call. Frames to read go to the sampler, many streams' frames
per call (serve_app/reads.py). Nothing slow runs on this event loop: image
headers are probed here, frames are fingerprinted in worker threads.
"""

import asyncio
import functools
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import cv2
import ray
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.websockets import WebSocketDisconnect

import serve_app
from deployments.options import READ_CALL, UNARY_CALL, on_serve_loop
from serve_app.autoscaling import BUSY, CpuShare
from serve_app.config import IngressConfig, SamplerConfig
from serve_app.dedup import ChangeDetector
from serve_app.gc_freeze import GcFreezer
from serve_app.images import probe
from serve_app.jobs import Boxes, Job, ReaderInfo, ReadReply, ReadRequest
from serve_app.metrics import IngressMetrics
from serve_app.protocol import (
    PROTOCOL_VERSION,
    WS_1001_GOING_AWAY,
    WS_1008_POLICY_VIOLATION,
    WS_1009_MESSAGE_TOO_BIG,
    WS_1012_SERVICE_RESTART,
    ErrorCode,
    ProtocolError,
    Roi,
    parse_flag,
    parse_fps,
    parse_roi,
    validate_stream_id,
)
from serve_app.reads import ReadBatcher, Replies, one_reply
from serve_app.sampling import StreamSampler, read_answer
from serve_app.security import Authenticator, AuthError, ConnectionLimiter, ConnectionQuota, QuotaDecision
from serve_app.session import ByteBudget, LoadShedder, StreamSession
from serve_app.tracking import TextTracker

logger = logging.getLogger("ray.serve")

DEFAULT_DEPLOYMENT_OPTIONS: dict[str, Any] = {
    "name": "StreamIngress",
    # Every open WebSocket is one ongoing request for its whole life.
    "max_ongoing_requests": 5000,
    "ray_actor_options": {"num_cpus": 0.5},
}
_HTTP_STATUS = {
    ErrorCode.BAD_MESSAGE: 400,
    ErrorCode.BAD_IMAGE: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
}
_EXPIRY_PERIOD_S = 0.25
_GC_PAUSE_LOGGED_MS = 100.0

STATIC = resources.files("serve_app") / "static"


def _host(client: Any) -> str | None:
    return client.host if client is not None else None


def _replica_draining() -> bool:
    """Whether Serve has begun to stop this replica (downscale, rolling upgrade, delete).

    Ray 2.60 gives user code no drain signal: it waits until no request is
    ongoing (every open WebSocket is one) before it calls ``__del__``, so
    closing the sockets there would only happen after the grace period. The
    replica actor sets ``_shutting_down`` the moment the stop begins (it is
    what its data-plane health check reports as DRAINING); read that. Should
    Ray move it, this reads False and ``__del__`` still answers and closes.
    """
    worker = ray._private.worker.global_worker
    actor = worker.actors.get(worker.actor_id)
    return bool(getattr(getattr(actor, "_replica_impl", None), "_shutting_down", False))


class _Reader:
    """Reads one client's messages, until the expiry loop stops it: the connection idled too long,
    or the replica drains.

    A draining replica stops reading: frames it never read are not its to answer, and the client
    re-sends them on its next connection (the ASGI receive queue is safe to cancel). The stop
    cancels the connection's task in its wait for a message; each message costs a turn of the loop
    and a plain await (a wait on a second future and a timeout per message cost ~30 us more).
    """

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._task = asyncio.current_task()
        self._receiving = False
        self.last_message = time.monotonic()
        self.stopped: tuple[int, str] | None = None  # why: the close code and reason

    async def receive(self) -> dict[str, Any] | None:
        """The next client message, or None once stopped (``stopped`` says why)."""
        if self.stopped is not None:
            return None
        self._receiving = True
        try:
            # One message a turn of the event loop: a client whose messages are queued already
            # must not hold the loop from the other streams, or from its own compares and answers.
            await asyncio.sleep(0)
            message = await self._ws.receive()
        except asyncio.CancelledError:
            if self.stopped is None or self._task is None or self._task.cancelling() > 1:
                raise  # not (only) our stop: the task itself is being cancelled
            self._task.uncancel()
            return None
        finally:
            self._receiving = False
        self.last_message = time.monotonic()
        return message

    def stop(self, reason: tuple[int, str]) -> None:
        if self.stopped is None:
            self.stopped = reason
            if self._receiving and self._task is not None:
                self._task.cancel()


app = FastAPI(title="Streaming OCR", version=serve_app.__version__)
app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")


@serve.ingress(app)
class StreamIngress:
    def __init__(self, config: IngressConfig, *, sampler: DeploymentHandle, sampling: SamplerConfig) -> None:
        self._config = config
        self._sampler = sampler
        self._read_streaming = sampler.options(**READ_CALL).read
        self._read_unary = sampler.options(**UNARY_CALL).read_all
        self._reads = ReadBatcher(self._call_sampler)
        self._sampling = sampling
        self._detector = ChangeDetector(sampling.dedup)
        self._compare = ThreadPoolExecutor(config.compare_threads, thread_name_prefix="compare")
        # The compare threads are this replica's parallelism: OpenCV's own worker pool only split
        # each small operation across cores and handed it back (~40% more CPU a compare: docs/dedup.md).
        cv2.setNumThreads(1)
        self._sessions: dict[StreamSession, _Reader] = {}
        self._expiry: asyncio.Task[None] | None = None
        self._draining = asyncio.Event()
        self._info: dict[str, Any] | None = None
        self._metrics = IngressMetrics()
        self._cpu = CpuShare()
        self._budget = ByteBudget(config.max_held_bytes)
        self._shedder = LoadShedder(config.shed_lag_s)
        self._auth = Authenticator(config.security)
        self._limiter = ConnectionLimiter(config.security.limits)
        self._gc = GcFreezer(freeze=config.freeze_gc)
        if not self._auth.enabled:
            logger.warning(
                "client authentication (JWT) is OFF (ingress.security.auth.enabled: false): any client "
                "of this port may connect; local use only"
            )

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom autoscaling metric: the share of a core this replica used (serve_app/autoscaling.py)."""
        return {BUSY: self._cpu.read()}

    @classmethod
    def get_deployment_options(cls, config: IngressConfig) -> dict[str, Any]:
        return on_serve_loop(DEFAULT_DEPLOYMENT_OPTIONS, config.deployment_config)

    # --- HTTP ---------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def page(self) -> FileResponse:
        """The browser client (serve_app/static)."""
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        try:
            await asyncio.wait_for(self._sampler.ready.remote(), self._config.ready_timeout_s)
        except Exception:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/info")
    async def info(self) -> dict[str, Any]:
        if self._info is None:
            model: ReaderInfo = await self._sampler.info.remote()
            self._info = {
                "service_version": serve_app.__version__,
                "protocol_version": PROTOCOL_VERSION,
                "models": model.models,
                "engine": model.engine,
                "device": model.device,
                "limits": {
                    "max_message_bytes": self._config.max_message_bytes,
                    "hard_max_message_bytes": self._config.hard_max_message_bytes,
                    "max_pixels": self._config.max_pixels,
                    "fps_default": self._sampling.default_fps,
                    "fps_max": self._sampling.max_fps,
                },
            }
        return self._info

    @app.post("/v1/ocr")
    async def ocr(self, request: Request) -> JSONResponse:
        try:
            principal = self._auth.authenticate(request.headers, request.query_params, _host(request.client))
            lease = self._limiter.acquire(principal)
        except AuthError as exc:
            logger.info("POST /v1/ocr refused: %s", exc.reason)
            return JSONResponse({"detail": exc.reason}, exc.status, headers=exc.headers)
        with lease:
            return await self._ocr_one(request, lease.quota)

    async def _ocr_one(self, request: Request, quota: ConnectionQuota) -> JSONResponse:
        frame_id = 0
        try:
            image = await self._request_image(request)
            if quota.check(len(image)) is not QuotaDecision.OK:
                raise ProtocolError(ErrorCode.RATE_LIMITED, "over the tenant's frame or byte rate")
            probe(image, self._config.max_pixels)
            now = time.time()
            job = Job(seq=1, frame_id=frame_id, image=image, ts=now, received=now)
            reply = await self._reads.read(f"http:{uuid.uuid4().hex}", job.image, job.received)
            answer = read_answer(job, reply, now)
        except ProtocolError as exc:
            exc.frame_id = frame_id
            return JSONResponse(exc.to_answer().model_dump(mode="json"), status_code=_HTTP_STATUS[exc.code])
        if answer.timing is not None:
            answer.timing.total_ms = round((time.time() - now) * 1000.0, 1)
        status = 200 if answer.type == "result" else _HTTP_STATUS[ErrorCode(answer.code)]
        return JSONResponse(answer.model_dump(mode="json", exclude_none=answer.type == "result"), status)

    async def _request_image(self, request: Request) -> bytes:
        limit = self._config.max_message_bytes
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_part_size=limit)
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise ProtocolError(ErrorCode.BAD_MESSAGE, "multipart body has no file field 'image'")
            data = await upload.read()
        else:
            data = await request.body()
        if len(data) > limit:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"image of {len(data)} bytes is over {limit}")
        if not data:
            raise ProtocolError(ErrorCode.BAD_IMAGE, "the request carries no image bytes")
        return data

    # --- WebSocket ----------------------------------------------------------

    @app.websocket("/v1/stream")
    async def stream(self, ws: WebSocket) -> None:
        if self._draining.is_set():
            await ws.close(WS_1012_SERVICE_RESTART, "server restarting")  # before accept: HTTP 403
            return
        try:
            principal = self._auth.authenticate(ws.headers, ws.query_params, _host(ws.client))
            lease = self._limiter.acquire(principal)
            stream_id = validate_stream_id(ws.query_params.get("stream_id") or f"s-{uuid.uuid4().hex[:16]}")
            query = ws.query_params
            fps = parse_fps(query["fps"]) if "fps" in query else None
            events = parse_flag(query["events"], "events") if "events" in query else False
            roi = parse_roi(query["roi"]) if "roi" in query else None
        except (AuthError, ProtocolError) as exc:
            reason = exc.reason if isinstance(exc, AuthError) else exc.message
            logger.info("WebSocket refused from %s: %s", _host(ws.client), reason)
            await ws.close(WS_1008_POLICY_VIOLATION, reason)  # before accept: HTTP 403
            return
        with lease:
            await ws.accept()
            await self._serve_stream(ws, stream_id, lease.quota, fps=fps, events=events, roi=roi)

    def _call_sampler(self, requests: list[ReadRequest]) -> Replies:
        """A call of one read is unary (~1.5 ms less CPU than streaming: docs/benchmarks.md); of several,
        streaming, so that each reply comes back as its read is admitted and done."""
        if len(requests) == 1:
            return one_reply(self._read_unary.remote(requests))
        return self._read_streaming.remote(requests)

    async def _read_frame(self, stream_id: str, job: Job, roi: Roi | None, boxes: Boxes | None) -> ReadReply:
        return await self._reads.read(stream_id, job.image, job.received, roi, boxes)

    async def _serve_stream(
        self,
        ws: WebSocket,
        stream_id: str,
        quota: ConnectionQuota,
        *,
        fps: float | None,
        events: bool,
        roi: Roi | None,
    ) -> None:
        sampler = functools.partial(
            StreamSampler,
            self._sampling,
            detector=self._detector,
            read=functools.partial(self._read_frame, stream_id),
            max_pixels=self._config.max_pixels,
            fps=fps,
            roi=roi,
            executor=self._compare,
            on_uncompared=self._metrics.uncompared,
        )
        session = StreamSession(
            stream_id,
            self._config,
            sampler=lambda answer, emit: sampler(answer=answer, emit=emit),
            send=ws.send_text,
            tracker=lambda: TextTracker(self._sampling.events),
            events=events,
            quota=quota,
            observer=self._metrics,
            budget=self._budget,
            shedder=self._shedder,
        )
        reader = _Reader(ws)
        self._sessions[session] = reader
        self._start_expiry()
        if self._draining.is_set():
            reader.stop(self._ending_reason())
        writer = asyncio.create_task(session.run())
        close: tuple[int, str] | None = None
        try:
            while not session.closed:
                message = await reader.receive()
                if message is None:
                    close = reader.stopped
                    break
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                code = session.receive(data if data is not None else message.get("text") or "")
                if code is not None:
                    close = (
                        code,
                        "message too big" if code == WS_1009_MESSAGE_TOO_BIG else "limits exceeded",
                    )
                    break
            if close is not None:
                if self._draining.is_set():
                    await session.drain(self._config.frame_deadline_s)
                else:
                    await session.flush()
                await ws.close(*close)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._sessions.pop(session, None)
            writer.cancel()
            await session.close()
            self._gc.closed(len(self._sessions))

    def _ending_reason(self) -> tuple[int, str]:
        if self._draining.is_set():
            return WS_1012_SERVICE_RESTART, "server restarting"
        return WS_1001_GOING_AWAY, "idle timeout"

    def _start_expiry(self) -> None:
        if self._expiry is None:
            self._expiry = asyncio.get_running_loop().create_task(self._expire())

    async def _expire(self) -> None:
        while True:
            slept = time.monotonic()
            await asyncio.sleep(_EXPIRY_PERIOD_S)
            self._shedder.observe(time.monotonic() - slept - _EXPIRY_PERIOD_S)
            self._metrics.shed_share.set(self._shedder.share)
            if not self._draining.is_set() and _replica_draining():
                logger.info("ingress draining: answering %d streams, then closing them", len(self._sessions))
                self._draining.set()
            now = time.monotonic()
            idle_s = self._config.security.limits.idle_timeout_s
            for session, reader in list(self._sessions.items()):
                session.expire(now)
                if self._draining.is_set() or now - reader.last_message > idle_s:
                    reader.stop(self._ending_reason())
            self._metrics.flush()
            self._metrics.streams.set(len(self._sessions))
            self._metrics.pending.set(sum(s.unanswered for s in self._sessions))
            self._report_gc_pauses()

    def _report_gc_pauses(self) -> None:
        for pause_ms in self._gc.take_pauses():
            self._metrics.gc_pause.observe(pause_ms)
            if pause_ms > _GC_PAUSE_LOGGED_MS:
                logger.info(
                    "a full garbage collection stopped this replica for %.0f ms (%d connections open)",
                    pause_ms,
                    len(self._sessions),
                )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live sampling knobs (``SamplerConfig`` fields: fps, refresh, dedup, events) for every stream."""
        self._sampling = self._sampling.updated(user_config)  # type: ignore[assignment]
        self._detector = ChangeDetector(self._sampling.dedup)
        for session in self._sessions:
            session.sampler.reconfigure(self._sampling, self._detector)

    async def __del__(self) -> None:
        """Shutdown: streams answer what they read, then close with 1012 (see :meth:`_serve_stream`)."""
        self._draining.set()
        for reader in self._sessions.values():
            reader.stop(self._ending_reason())
        self._gc.stop()
        deadline = time.monotonic() + self._config.frame_deadline_s + 2.0
        while self._sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        logger.info("ingress shut down; %d streams still open", len(self._sessions))
