"""Property-based fuzzing of the message parser and the ingress (hypothesis).

The property is the protocol's core rule, checked by full accounting: every message gets exactly one
answer of the kind its bytes call for -- a ``pong`` for a ping, a ``config`` for a valid config, and
for anything else one answer carrying the message's frame_id when a valid one can be read from it
(``null`` otherwise, then always ``bad_message``). No exception escapes, nothing is answered twice.

(a) Ray-free, :class:`serve_app.session.StreamSession` with a stand-in sampler (that sometimes fails),
    a per-connection quota on a fake clock and small size limits, over >= 10,000 generated messages.
(b) The real service (configs/serve.yaml, real PaddleOCR) over ONE WebSocket: a few thousand generated
    messages, then a real frame must still read right and a ping must still be answered.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import random
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from serve_app.config import IngressConfig, LimitsConfig
from serve_app.jobs import Job, ReadReply
from serve_app.protocol import (
    MAX_FRAME_ID,
    ErrorCode,
    Frame,
    ProtocolError,
    Roi,
    encode_binary_frame,
    parse_binary,
    parse_text,
)
from serve_app.security import ConnectionQuota, TokenBucket
from serve_app.session import StreamSession
from tests.serve_app.test_session import sampler_for

Message = bytes | str
PONG, CONFIG = "pong", "config"

# --- the oracle: what a message must be answered with, read from its bytes alone -------------------------


def _readable_frame_id(obj: Any) -> int | None:
    if not isinstance(obj, dict):
        return None
    value = obj.get("frame_id")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_FRAME_ID:
        return value
    return None


def _valid_fps(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        fps = float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return math.isfinite(fps) and fps > 0


def _json(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except Exception:  # not JSON at all, bad UTF-8, nested too deep: no frame_id can be read
        return None


def expected(message: Message) -> tuple[str, int | None]:
    """("pong" | "config" | "answer", frame_id of the answer)."""
    if isinstance(message, bytes):
        if len(message) < 4:
            return "answer", None
        (n,) = struct.unpack_from(">I", message)
        if n == 0 or n > len(message) - 4:
            return "answer", None
        try:
            header = message[4 : 4 + n].decode("utf-8")  # the protocol's header is UTF-8 JSON
        except UnicodeDecodeError:
            return "answer", None
        return "answer", _readable_frame_id(_json(header))
    obj = _json(message)
    if isinstance(obj, dict) and obj.get("type") == "ping":
        return PONG, None
    if isinstance(obj, dict) and obj.get("type") == "config":
        return (CONFIG, None) if _valid_fps(obj.get("fps")) else ("answer", None)
    return "answer", _readable_frame_id(obj)


def account(messages: list[Message], answers: list[dict[str, Any]]) -> None:
    """Every message answered exactly once, as :func:`expected` says."""
    want = Counter(expected(m) for m in messages)
    got: Counter[tuple[str, int | None]] = Counter()
    for a in answers:
        if a["type"] in (PONG, CONFIG):
            got[a["type"], None] += 1
        else:
            assert a["type"] in ("result", "error"), a
            got["answer", a["frame_id"]] += 1
            if a["frame_id"] is None:
                assert (a["type"], a["code"]) == ("error", "bad_message"), a
    missing, extra = want - got, got - want
    if missing or extra:
        culprits = [repr(m)[:300] for m in messages if expected(m) in missing or expected(m) in extra][:5]
        raise AssertionError(
            f"unanswered: {dict(missing)}; answered but not expected: {dict(extra)}; messages: {culprits}"
        )


# --- generated messages -----------------------------------------------------------------------------------


def _save(fmt: str, size: tuple[int, int], seed: int, mode: str = "RGB", **kw: Any) -> bytes:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(buf, fmt, **kw)
    return buf.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _jpeg_sof_bomb(jpeg: bytes, width: int, height: int) -> bytes:
    data, i = bytearray(jpeg), 2
    while data[i] == 0xFF:
        if data[i + 1] in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, i + 5, height, width)
            return bytes(data)
        i += 2 + struct.unpack_from(">H", data, i + 2)[0]
    raise AssertionError("no SOF")


_JPEG = _save("JPEG", (24, 16), 1, quality=80)
_PNG = _save("PNG", (20, 12), 2)
REAL_IMAGES = [
    _JPEG,
    _PNG,
    _save("PNG", (9, 7), 3, "RGBA"),
    _save("PNG", (1, 1), 4, "L"),
    _save("WEBP", (16, 16), 5),
    _save("BMP", (8, 6), 6),
    _save("GIF", (8, 8), 7, "L"),  # a real image in a format the service does not take
]
BAD_IMAGES = [
    _JPEG[: len(_JPEG) // 2],  # truncated
    _PNG[:40],
    _PNG[:-20],
    _PNG.replace(b"IDAT", b"IDAX"),
    _png_bomb(50_000, 50_000),
    _png_bomb(0, 10),
    _jpeg_sof_bomb(_JPEG, 60_000, 60_000),
    _jpeg_sof_bomb(_JPEG, 0, 0),
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"BM",
    b"RIFF\0\0\0\0WEBP",
]


class Fuzzer:
    """Messages from a seeded ``random.Random``: hypothesis draws the seeds (and shrinks them), this draws
    the bytes. Drawing every byte through hypothesis costs ~5 ms a message here; this, ~0.05 ms."""

    def __init__(self, seed: int, oversize: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.oversize = oversize

    def pick(self, *weighted: tuple[float, Callable[[], Any]]) -> Any:
        weights, makers = zip(*weighted, strict=True)
        return self.rng.choices(makers, weights)[0]()

    # values
    def bytes_(self, n: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, n))

    def text(self, n: int = 12) -> str:
        ranges = [
            (0x20, 0x7E),
            (0x0, 0x1F),
            (0xA0, 0x2FF),
            (0x4E00, 0x9FFF),
            (0x1F300, 0x1FAFF),
            (0xE000, 0xF8FF),
        ]
        out = []
        for _ in range(self.rng.randint(0, n)):
            lo, hi = self.rng.choice(ranges)
            out.append(chr(self.rng.randint(lo, hi)))
        return "".join(out)

    def float_(self) -> float:
        return self.pick(
            (3, lambda: self.rng.uniform(-1e6, 1e9)),
            (1, lambda: self.rng.choice([0.0, -0.0, 1e-300, 1e308, -1e308, math.inf, -math.inf, math.nan])),
            (1, lambda: float(self.rng.randint(0, 100))),
        )

    def json_value(self, depth: int = 0) -> Any:
        leaves: list[tuple[float, Callable[[], Any]]] = [
            (1, lambda: None),
            (1, lambda: self.rng.random() < 0.5),
            (
                2,
                lambda: (
                    self.rng.randint(-(2**70), 2**70) if self.rng.random() < 0.3 else self.rng.randint(-9, 99)
                ),
            ),
            (1, self.float_),
            (2, self.text),
        ]
        if depth < 3:
            leaves += [
                (1, lambda: [self.json_value(depth + 1) for _ in range(self.rng.randint(0, 3))]),
                (
                    1,
                    lambda: {self.text(5): self.json_value(depth + 1) for _ in range(self.rng.randint(0, 3))},
                ),
            ]
        return self.pick(*leaves)

    def frame_id(self) -> Any:
        return self.pick(
            (8, lambda: self.rng.randint(0, MAX_FRAME_ID)),
            (2, lambda: self.rng.choice([0, 1, 2, MAX_FRAME_ID])),
            (1, lambda: -self.rng.randint(1, 2**64)),
            (1, lambda: MAX_FRAME_ID + self.rng.randint(1, 2**80)),
            (1, self.float_),
            (1, lambda: self.rng.random() < 0.5),
            (1, lambda: None),
            (1, lambda: str(self.rng.randint(0, 100))),
            (1, lambda: [self.rng.randint(0, 9)]),
        )

    def ts(self) -> Any:
        return self.pick((6, lambda: self.rng.uniform(0, 2e9)), (2, self.float_), (1, self.json_value))

    def fps(self) -> Any:
        return self.pick(
            (4, lambda: self.rng.uniform(0.1, 60)),
            (2, self.float_),
            (1, lambda: self.rng.randint(-5, 100)),
            (1, lambda: self.rng.choice(["5", " 2 ", "1e3", "inf", "nan", "-1", "0x10", "", None, True])),
            (1, self.json_value),
        )

    # parts of messages
    def header(self) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for _ in range(self.rng.choice([0, 0, 0, 1, 2])):
            obj[self.text(5)] = self.json_value(1)
        if self.rng.random() < 0.9:
            obj["frame_id"] = self.frame_id()
        if self.rng.random() < 0.5:
            obj["ts"] = self.ts()
        if self.rng.random() < 0.1:
            obj["type"] = self.json_value(2)
        return obj

    def image(self) -> bytes:
        def flipped() -> bytes:
            image = bytearray(self.rng.choice(REAL_IMAGES))
            for _ in range(self.rng.randint(1, 4)):
                image[self.rng.randrange(len(image))] = self.rng.randrange(256)
            return bytes(image)

        options: list[tuple[float, Callable[[], bytes]]] = [
            (6, lambda: self.rng.choice(REAL_IMAGES)),
            (3, lambda: self.rng.choice(BAD_IMAGES)),
            (2, lambda: self.bytes_(48)),
            (1, lambda: b""),
            (1, lambda: self.rng.choice(REAL_IMAGES) + self.bytes_(16)),
            (2, flipped),
        ]
        if self.oversize is not None:  # over the soft limit, sometimes over the hard one (close 1009)
            size = self.oversize
            options.append((0.5, lambda: b"\xff\xd8" + bytes(self.rng.randint(size // 2, size * 3 // 2))))
        return self.pick(*options)

    # messages
    def binary(self) -> bytes:
        kind = self.rng.choices(["random", "structured", "good"], [1, 4, 3])[0]
        if kind == "random":
            return self.bytes_(64)
        image = self.image()
        if kind == "good":
            return encode_binary_frame(self.rng.randint(0, MAX_FRAME_ID), image, ts=self.ts_or_none())
        header = self.pick(
            (6, lambda: json.dumps(self.header()).encode()),
            (1, lambda: json.dumps(self.header(), ensure_ascii=False).encode("utf-16")),
            (1, lambda: json.dumps(self.json_value()).encode()),  # valid JSON, maybe not an object
            (1, lambda: self.bytes_(24)),
            (1, lambda: b"\xff" + json.dumps(self.header()).encode()),  # not UTF-8
            (0.3, lambda: b"[" * self.rng.randint(1, 3000) + b"]"),  # deep nesting, unbalanced
            (0.3, lambda: (lambda n: b"[" * n + b"]" * n)(self.rng.randint(1, 3000))),  # balanced
        )
        length = self.pick(
            (6, lambda: len(header)),
            (1, lambda: max(0, len(header) + self.rng.randint(-3, 3))),
            (1, lambda: self.rng.randint(0, 2**32 - 1)),
            (1, lambda: len(header) + len(image)),
        )
        message = struct.pack(">I", length) + header + image
        return message[: self.rng.randint(0, 6)] if self.rng.random() < 0.05 else message

    def ts_or_none(self) -> float | None:
        return None if self.rng.random() < 0.3 else self.rng.uniform(0, 2e9)

    def text_message(self) -> str:
        kind = self.rng.choices(["unicode", "json", "frame", "ping", "config"], [1, 1, 5, 1, 1])[0]
        if kind == "unicode":
            return self.text(40)
        if kind == "json":
            return json.dumps(self.json_value())
        if kind == "ping":
            extra = {self.text(4): self.json_value(2) for _ in range(self.rng.choice([0, 0, 1, 2]))}
            return json.dumps({"type": "ping", **extra})
        if kind == "config":
            return json.dumps({"type": "config", "fps": self.fps()})
        obj = self.header()
        obj["image"] = self.pick(
            (8, lambda: base64.b64encode(self.image()).decode()),
            (1, self.text),
            (1, self.json_value),
        )
        if self.rng.random() < 0.6:
            obj["type"] = self.pick(
                (6, lambda: "frame"),
                (1, lambda: self.rng.choice(["ping", "config", "bogus", "FRAME"])),
                (1, self.json_value),
            )
        return json.dumps(obj, ensure_ascii=self.rng.random() < 0.5)

    def message(self) -> Message:
        return self.binary() if self.rng.random() < 0.55 else self.text_message()

    def messages(self, n: int) -> list[Message]:
        return [self.message() for _ in range(n)]


# --- (a) the session, Ray-free -----------------------------------------------------------------------------

SOFT, HARD = 4096, 6144  # small limits: oversized messages stay cheap


class FlakyModel:
    """Reads every frame; every 5th read fails (the frame is answered `internal`, the stream goes on)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, job: Job, roi: Roi | None, boxes: Any = None) -> ReadReply:
        self.calls += 1
        await asyncio.sleep(0)
        if self.calls % 5 == 0:
            return ReadReply(error_code=ErrorCode.INTERNAL, error_message="the model failed")
        return ReadReply(lines=[])


async def run_session(batch: list[Message]) -> tuple[int, list[Message], list[dict[str, Any]]]:
    """Feed ``batch`` as the ingress does: stop at a close code and flush. Returns how many messages were
    consumed (the one that closed with 1009 included), those that must be answered, and the answers."""
    sent: list[dict[str, Any]] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    now = [0.0]

    def clock() -> float:
        return now[0]

    # 1 frame/s on a clock 0.25 s a message: some frames are rate_limited, now and then 8 in 10 s close.
    quota = ConnectionQuota(
        [TokenBucket(1.0, 3.0, clock)], [TokenBucket(4 * SOFT, 8 * SOFT, clock)], 8, 10.0, clock
    )
    config = IngressConfig(max_message_bytes=SOFT, hard_max_message_bytes=HARD)
    session = StreamSession("fuzz", config, sampler=sampler_for(FlakyModel()), send=send, quota=quota)
    writer = asyncio.create_task(session.run())
    read: list[Message] = []
    code = None
    for message in batch:
        now[0] += 0.25
        code = session.receive(message)
        assert code in (None, 1008, 1009), code
        if code != 1009:  # over the hard limit: closed unread, no answer
            read.append(message)
        if code is not None:
            break
        await asyncio.sleep(0)
    consumed = len(read) + (code == 1009)
    if code is not None:
        await session.flush()
    deadline = time.monotonic() + 5
    while len(sent) < len(read) and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.002)  # room for an answer too many
    writer.cancel()
    await session.close()
    return consumed, read, sent


def test_session_fuzz() -> None:
    totals = Counter[str]()

    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(seed=st.integers(0, 2**64 - 1), n=st.integers(180, 400))
    def check(seed: int, n: int) -> None:
        batch = Fuzzer(seed, oversize=SOFT).messages(n)
        while batch:  # a closed connection: the client connects again and goes on
            consumed, read, answers = asyncio.run(run_session(batch))
            account(read, answers)
            totals["messages"] += consumed
            totals["sessions"] += 1
            totals["frame answers"] += sum(a.get("frame_id") is not None for a in answers)
            totals["rate_limited"] += sum(a.get("code") == "rate_limited" for a in answers)
            batch = batch[consumed:]

    check()
    assert totals["messages"] >= 10_000, totals
    assert totals["sessions"] > 60 and totals["rate_limited"] > 100, totals  # both closes were met
    print(f"session fuzz: {dict(totals)}")


def test_oracle_on_known_messages() -> None:
    """The oracle itself, on messages whose answers are known."""
    assert expected(encode_binary_frame(7, b"x")) == ("answer", 7)
    assert expected(struct.pack(">I", 999) + b'{"frame_id": 1}') == ("answer", None)
    assert expected(b'\0\0\0\x0f{"frame_id": -1}') == ("answer", None)
    assert expected('{"type": "ping", "frame_id": 3}') == (PONG, None)
    assert expected('{"type": "config", "fps": "5"}') == (CONFIG, None)
    assert expected('{"type": "config", "fps": 0, "frame_id": 3}') == ("answer", None)
    assert expected('{"type": "bogus", "frame_id": 3}') == ("answer", 3)
    assert expected('{"frame_id": true, "image": ""}') == ("answer", None)
    assert expected("[1, 2]") == ("answer", None)


# --- (b) the real service over one WebSocket ----------------------------------------------------------------

N_REAL = 2500
# Below the per-connection frame rate of the service (configs/serve.yaml keeps the default limits), so
# the fuzz is never closed for violations; only messages that can be frames are paced.
PACE = LimitsConfig().frames_per_s * 0.75


def seeds(k: int) -> list[int]:
    """``k`` seeds drawn by hypothesis, deterministically."""
    out: list[int] = []

    @settings(max_examples=k, deadline=None, derandomize=True, database=None, phases=[Phase.generate])
    @given(st.integers(0, 2**64 - 1))
    def collect(seed: int) -> None:
        out.append(seed)

    collect()
    return out


def generated(n: int) -> list[Message]:
    """``n`` messages, no valid ``config`` among them: see test_config_burst_is_answered."""
    per_seed = 250
    fuzz = [m for seed in seeds(-(-n // per_seed)) for m in Fuzzer(seed).messages(per_seed)]
    return [m for m in fuzz if expected(m)[0] != CONFIG][:n]


def is_frame(message: Message) -> bool:
    """Parses as a frame: counts against the connection's frame quota (pace it)."""
    try:
        parsed = parse_binary(message) if isinstance(message, bytes) else parse_text(message)
    except ProtocolError:
        return False
    return isinstance(parsed, Frame)


async def fuzz_one_websocket(
    url: str, fuzz: list[Message], good: bytes, text: str, headers: dict[str, str] | None = None
) -> float:
    """Send ``fuzz`` over one WebSocket (frames paced under the connection's quota) and account for
    every answer; then the stream must still be sound: a real frame ``good`` reads ``text`` and a
    ping is answered. Returns the seconds the sending took."""
    conn = await websockets.connect(url, max_size=None, open_timeout=30, additional_headers=headers)
    answers: list[dict[str, Any]] = []

    async def reader() -> None:
        async for message in conn:
            answers.append(json.loads(message))

    reading = asyncio.create_task(reader())
    bucket = TokenBucket(PACE, PACE / 2)
    started = time.monotonic()
    for message in fuzz:
        if is_frame(message):
            while not bucket.try_take():
                await asyncio.sleep(0.01)
        await conn.send(message)
    sent_s = time.monotonic() - started

    deadline = time.monotonic() + 60
    while len(answers) < len(fuzz) and time.monotonic() < deadline and not reading.done():
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # room for an answer too many
    assert not reading.done(), f"the connection closed: {conn.close_code} {conn.close_reason}"
    account(fuzz, answers)

    seen = len(answers)
    await conn.send('{"type": "config", "fps": 30}')
    await asyncio.sleep(0.5)
    await conn.send(encode_binary_frame(MAX_FRAME_ID, good))
    await conn.send('{"type": "ping"}')
    deadline = time.monotonic() + 60
    while len(answers) < seen + 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    tail = answers[seen:]
    assert [a["type"] for a in tail if a["type"] != "result"] == ["config", "pong"], tail
    results = [a for a in tail if a["type"] == "result"]
    assert len(results) == 1 and results[0]["frame_id"] == MAX_FRAME_ID, tail
    assert results[0]["status"] == "ok" and [x["text"] for x in results[0]["lines"]] == [text], tail
    await conn.close()
    reading.cancel()
    return sent_s


@pytest.mark.timeout(90)
@pytest.mark.serve
async def test_service_fuzz_over_one_websocket(ws_url: str, images: Path) -> None:
    fuzz = generated(N_REAL)
    assert len(fuzz) > N_REAL * 0.9
    good = (images / "text_rec.jpg").read_bytes()
    sent_s = await fuzz_one_websocket(ws_url + "?stream_id=fuzz-1", fuzz, good, "韩国小馆")
    print(f"fuzz: {len(fuzz)} messages sent in {sent_s:.1f} s over one WebSocket")


@pytest.mark.serve
async def test_config_burst_is_answered(ws_url: str) -> None:
    """Found by the fuzz: config messages sent together must each get their answer."""
    conn = await websockets.connect(ws_url + "?stream_id=config-burst", open_timeout=30)
    for fps in range(1, 11):
        await conn.send(json.dumps({"type": "config", "fps": fps}))
    got = []
    try:
        for _ in range(10):
            got.append(json.loads(await asyncio.wait_for(conn.recv(), 15)))
    except TimeoutError:
        pass
    finally:
        await conn.close()
    assert sorted(a["fps"] for a in got) == [float(f) for f in range(1, 11)], got
