"""An asyncio client of the streaming OCR service (wire protocol v1, binary frames).

Every frame sent yields exactly one item from ``results()``: the server's ``result`` or
``error``, or a local ``error`` (code ``internal``) when none could be had. A dropped
connection is reopened with jittered exponential backoff under the same ``stream_id``;
each frame then unanswered is re-sent once, and reported failed if that connection drops too.
With ``events=True`` the stream asks for text events, which ``events()`` yields.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ocr_client.protocol import (
    WS_1008_POLICY_VIOLATION,
    ErrorAnswer,
    ErrorCode,
    PongAnswer,
    ProtocolError,
    ResultAnswer,
    TextEvent,
    encode_binary_frame,
    parse_server_message,
)

Answer = ResultAnswer | ErrorAnswer
T = TypeVar("T")
log = logging.getLogger(__name__)


class OCRClientError(Exception):
    """The client cannot go on: raised by ``send``, ``ping`` and ``results``."""


class ConnectionRefused(OCRClientError):
    """The server cannot be reached (or could not be reached again after a drop)."""


class AuthRejected(OCRClientError):
    """The server refused the token: HTTP 401/403 on the handshake, or close 1008."""


_ENDPOINTS = ("/v1/stream", "/v1/ocr")


def _endpoint_url(url: str, endpoint: str, websocket: bool) -> str:
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    if parts.scheme not in ("http", "https", "ws", "wss"):
        raise ValueError(f"expected a ws://, wss://, http:// or https:// URL, got {url!r}")
    path = parts.path.rstrip("/")
    for known in _ENDPOINTS:  # a base URL, possibly under a route prefix, or an endpoint's URL
        path = path.removesuffix(known)
    scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    return urlunsplit((scheme, parts.netloc, path + endpoint, "", ""))


def stream_url(url: str) -> str:
    """``ws(s)://`` URL of the stream endpoint from a ws(s):// or http(s):// URL or base URL."""
    return _endpoint_url(url, "/v1/stream", websocket=True)


def ocr_url(url: str) -> str:
    """``http(s)://`` URL of ``POST /v1/ocr`` (one image) from the same URLs as :func:`stream_url`."""
    return _endpoint_url(url, "/v1/ocr", websocket=False)


def _lost(frame_id: int, why: str) -> ErrorAnswer:
    return ErrorAnswer(frame_id=frame_id, code=ErrorCode.INTERNAL, message=f"no answer: {why}")


@dataclass(slots=True)
class _Pending:
    image: bytes
    ts: float | None
    sends: int = 0


class OCRStreamClient:
    def __init__(
        self,
        url: str,
        *,
        stream_id: str | None = None,
        fps: float | None = None,
        token: str | None = None,
        max_in_flight: int = 8,
        max_retries: int = 8,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        open_timeout: float = 10.0,
        events: bool = False,
    ) -> None:
        self.stream_id = stream_id or uuid.uuid4().hex
        query = {"stream_id": self.stream_id} | ({"fps": str(fps)} if fps is not None else {})
        self.url = f"{stream_url(url)}?{urlencode(query | ({'events': '1'} if events else {}))}"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._max_retries, self._backoff = max_retries, (backoff_base, backoff_max)
        self._open_timeout = open_timeout
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: dict[int, _Pending] = {}
        self._drained = asyncio.Event()
        self._pongs: deque[asyncio.Future[PongAnswer]] = deque()
        self._results: asyncio.Queue[Answer | OCRClientError | None] = asyncio.Queue()
        # Queued only when asked for: a client that never reads events() keeps none.
        self._events: asyncio.Queue[TextEvent | OCRClientError | None] | None = (
            asyncio.Queue() if events else None
        )
        self._send_lock = asyncio.Lock()
        self._next_id = 0
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed: OCRClientError | None = None  # set once the client can no longer send

    async def __aenter__(self) -> OCRStreamClient:
        self._ws = await self._connect()
        self._runner = asyncio.create_task(self._run(self._ws))
        self._drained.set()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        await self.close(timeout=30.0 if exc_type is None else 0.0)

    async def send(self, image: bytes, ts: float | None = None) -> int:
        """Send one encoded image; waits while ``max_in_flight`` frames are unanswered."""
        if self._closed:
            raise self._closed
        await self._slots.acquire()
        if self._closed:
            self._slots.release()  # wakes the next waiter, which raises too
            raise self._closed
        frame_id, self._next_id = self._next_id, self._next_id + 1
        self._pending[frame_id] = _Pending(image, ts)
        self._drained.clear()
        async with self._send_lock:
            if self._ws is not None:  # else the runner sends it once reconnected
                await self._transmit(self._ws, frame_id)
        return frame_id

    async def ping(self, timeout: float = 10.0) -> float:
        """Round-trip time of a ``ping`` in seconds."""
        if self._closed or self._ws is None:
            raise self._closed or OCRClientError("not connected (reconnecting)")
        future: asyncio.Future[PongAnswer] = asyncio.get_running_loop().create_future()
        self._pongs.append(future)
        start = time.monotonic()
        try:
            with contextlib.suppress(ConnectionClosed):  # then the runner fails the future
                await self._ws.send(json.dumps({"type": "ping"}))
            await asyncio.wait_for(future, timeout)
        finally:
            if future in self._pongs:
                self._pongs.remove(future)
        return time.monotonic() - start

    async def results(self) -> AsyncIterator[Answer]:
        """One answer per frame sent; ends after :meth:`close`, raises if the client failed."""
        async for answer in _until_end(self._results):
            yield answer

    async def events(self) -> AsyncIterator[TextEvent]:
        """The stream's text events in the order sent (needs ``events=True``); ends as :meth:`results`."""
        if self._events is None:
            raise OCRClientError("text events were not asked for: OCRStreamClient(..., events=True)")
        async for event in _until_end(self._events):
            yield event

    async def close(self, timeout: float = 30.0) -> None:
        """Wait up to ``timeout`` s for unanswered frames (then fail them) and disconnect."""
        if self._closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)
        if self._events is not None and self._ws is not None and self._drained.is_set() and timeout > 0:
            # The server answers a ping after the messages it queued before it: once the pong
            # is in, so are the events that the last answers confirmed.
            with contextlib.suppress(OCRClientError, TimeoutError):
                await self.ping(timeout=min(timeout, 5.0))
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        self._finish(None)

    async def _connect(self) -> ClientConnection:
        try:
            # No permessage-deflate: images do not compress, and deflating a 5 MB frame blocks this
            # event loop for ~0.3 s (long enough, with many, to miss the server's keepalive pings).
            return await connect(
                self.url, additional_headers=self._headers, open_timeout=self._open_timeout, compression=None
            )
        except InvalidStatus as exc:
            status, body = exc.response.status_code, (exc.response.body or b"").decode(errors="replace")
            detail = f"HTTP {status}: {body.strip()[:200]}" if body.strip() else f"HTTP {status}"
            if status in (401, 403):
                raise AuthRejected(f"the server refused the connection ({detail}), check the token") from None
            raise ConnectionRefused(f"{self.url}: the handshake failed ({detail})") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectionRefused(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None

    async def _run(self, ws: ClientConnection) -> None:
        try:
            while True:
                await self._read(ws)
                self._ws = None
                self._fail_pongs()
                ws = await self._reconnect()
                async with self._send_lock:
                    for frame_id, pending in list(self._pending.items()):
                        if pending.sends > 1:  # sent, and re-sent once already
                            self._answer(frame_id, _lost(frame_id, "its connection dropped twice"))
                        else:
                            await self._transmit(ws, frame_id)
                    self._ws = ws
        except OCRClientError as exc:
            self._finish(exc)

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for text in ws:
                self._handle(text)
        if ws.close_code == WS_1008_POLICY_VIOLATION:
            raise AuthRejected(f"the server closed the stream with 1008: {ws.close_reason or 'policy'}")
        log.info("connection closed (%s %s); reconnecting", ws.close_code, ws.close_reason)

    def _handle(self, text: str | bytes) -> None:
        try:
            msg = parse_server_message(text)
        except ProtocolError as exc:
            log.warning("ignoring a server message: %s", exc.message)
            return
        if isinstance(msg, PongAnswer) and self._pongs:
            self._pongs.popleft().set_result(msg)
        elif isinstance(msg, TextEvent) and self._events is not None:
            self._events.put_nowait(msg)
        elif isinstance(msg, ResultAnswer | ErrorAnswer) and msg.frame_id in self._pending:
            self._answer(msg.frame_id, msg)

    async def _reconnect(self) -> ClientConnection:
        """Back off and reconnect. A refused handshake is retried too: while a replica restarts,
        Serve's proxy refuses WebSocket upgrades with 403, the same status as a bad token; a
        token that is really refused still ends the stream once the retries are spent."""
        base, cap = self._backoff
        last: OCRClientError = ConnectionRefused(f"could not reconnect to {self.url}")
        for attempt in range(self._max_retries):
            await asyncio.sleep(min(cap, base * 2**attempt) * random.uniform(0.5, 1.0))
            try:
                return await self._connect()
            except (ConnectionRefused, AuthRejected) as exc:
                log.info("reconnect attempt %d failed: %s", attempt + 1, exc)
                last = exc
        raise type(last)(f"{last} (after {self._max_retries} reconnect attempts)")

    async def _transmit(self, ws: ClientConnection, frame_id: int) -> None:
        pending = self._pending[frame_id]
        pending.sends += 1
        with contextlib.suppress(ConnectionClosed):  # the runner sees the drop and re-sends it
            await ws.send(encode_binary_frame(frame_id, pending.image, pending.ts))

    def _answer(self, frame_id: int, answer: Answer) -> None:
        del self._pending[frame_id]
        self._slots.release()
        if not self._pending:
            self._drained.set()
        self._results.put_nowait(answer)

    def _fail_pongs(self) -> None:
        while self._pongs:
            self._pongs.popleft().set_exception(OCRClientError("connection lost during ping"))

    def _finish(self, error: OCRClientError | None) -> None:
        if self._closed:
            return
        self._closed = error or OCRClientError("the client is closed")
        for frame_id in list(self._pending):
            self._answer(frame_id, _lost(frame_id, str(error) if error else "the client closed"))
        self._fail_pongs()
        self._results.put_nowait(error)
        if self._events is not None:
            self._events.put_nowait(error)


async def _until_end(queue: asyncio.Queue[T | OCRClientError | None]) -> AsyncIterator[T]:
    """The items of ``queue`` up to its end mark: None (closed) or the client's error (raised)."""
    while (item := await queue.get()) is not None and not isinstance(item, OCRClientError):
        yield item
    queue.put_nowait(item)  # for any later call
    if item is not None:
        raise item
