"""Wire protocol v1 (``docs/protocol.md``): message parsing and encoding.

Stdlib and pydantic only: the one copy of the protocol, shared by the server (through
``serve_app.protocol``), the Python client and the tests. Parsing never raises anything
but :class:`ProtocolError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

PROTOCOL_VERSION = "1"
MAX_FRAME_ID = 2**53 - 1
STREAM_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_HEADER_LEN = struct.Struct(">I")

# WebSocket close codes the server uses (RFC 6455), named as Starlette names them.
WS_1001_GOING_AWAY = 1001
WS_1008_POLICY_VIOLATION = 1008
WS_1009_MESSAGE_TOO_BIG = 1009
WS_1012_SERVICE_RESTART = 1012


class ErrorCode(StrEnum):
    BAD_MESSAGE = "bad_message"
    BAD_IMAGE = "bad_image"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"


class SkipReason(StrEnum):
    RATE = "rate"
    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"
    OVERLOADED = "overloaded"


class ProtocolError(Exception):
    """A message or frame that gets an ``error`` answer; the stream goes on."""

    def __init__(self, code: ErrorCode, message: str, frame_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id

    def to_answer(self) -> ErrorAnswer:
        return ErrorAnswer(frame_id=self.frame_id, code=self.code, message=self.message)


# --- client -> server ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    frame_id: int
    image: bytes
    ts: float | None = None


@dataclass(frozen=True, slots=True)
class ConfigRequest:
    """A ``config`` message: each field is None when the message leaves it as it is."""

    fps: float | None = None
    events: bool | None = None
    roi: Roi | None = None
    clear_roi: bool = False  # ``"roi": null``: compare and read the whole frame again


@dataclass(frozen=True, slots=True)
class PingRequest:
    pass


ClientMessage = Frame | ConfigRequest | PingRequest


def _frame_id(value: Any) -> int:
    # bool is an int in Python; JSON true is not a frame id.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "frame_id must be an integer")
    if not 0 <= value <= MAX_FRAME_ID:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"frame_id must be between 0 and {MAX_FRAME_ID}")
    return value


def _readable_frame_id(obj: Any) -> int | None:
    """The frame id of a message, if it has a valid one (for error answers)."""
    if not isinstance(obj, dict):
        return None
    try:
        return _frame_id(obj.get("frame_id"))
    except ProtocolError:
        return None


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "ts must be a finite number of seconds")
    return float(value)


def parse_fps(value: Any) -> float:
    """A target rate as sent in the query string or a ``config`` message."""
    try:
        fps = float(value)
    except (TypeError, ValueError):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "fps must be a number > 0") from None
    if isinstance(value, bool) or not math.isfinite(fps) or fps <= 0:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "fps must be a number > 0")
    return fps


@dataclass(frozen=True, slots=True)
class Roi:
    """A region of interest in fractions of the frame's width and height (0 <= x0 < x1 <= 1)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` in pixels of a ``width`` x ``height`` image, at least 1 px each way."""
        x0, y0 = int(self.x0 * width), int(self.y0 * height)
        return x0, y0, max(x0 + 1, round(self.x1 * width)), max(y0 + 1, round(self.y1 * height))

    def to_list(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]


def parse_roi(value: Any) -> Roi:
    """``[x0, y0, x1, y1]`` (JSON) or ``"x0,y0,x1,y1"`` (query string), fractions of the frame."""
    parts = value.split(",") if isinstance(value, str) else value
    error = ProtocolError(ErrorCode.BAD_MESSAGE, "roi must be 4 numbers x0,y0,x1,y1 with 0 <= x0 < x1 <= 1")
    if not isinstance(parts, list) or len(parts) != 4:
        raise error
    try:
        numbers = [float(p) for p in parts if not isinstance(p, bool)]
    except (TypeError, ValueError):
        raise error from None
    if len(numbers) != 4 or not all(math.isfinite(n) for n in numbers):
        raise error
    roi = Roi(*numbers)
    if not (0.0 <= roi.x0 < roi.x1 <= 1.0 and 0.0 <= roi.y0 < roi.y1 <= 1.0):
        raise error
    return roi


def parse_flag(value: Any, name: str) -> bool:
    """A boolean as sent in the query string (``1``/``0``, ``true``/``false``) or as JSON."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{name} must be true or false (1 or 0)")


def _parse_config(obj: dict[str, Any]) -> ConfigRequest:
    known = {"fps", "events", "roi"}
    if not known & obj.keys():
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "config message sets none of fps, events, roi")
    roi = obj.get("roi")
    return ConfigRequest(
        fps=parse_fps(obj["fps"]) if "fps" in obj else None,
        events=parse_flag(obj["events"], "events") if "events" in obj else None,
        roi=parse_roi(roi) if roi is not None else None,
        clear_roi="roi" in obj and roi is None,
    )


def _frame_from_header(header: dict[str, Any], image: bytes) -> Frame:
    frame = Frame(frame_id=_frame_id(header.get("frame_id")), ts=None, image=image)
    try:
        ts = _ts(header.get("ts"))
    except ProtocolError as exc:
        exc.frame_id = frame.frame_id
        raise
    if not image:
        raise ProtocolError(ErrorCode.BAD_IMAGE, "the frame carries no image bytes", frame.frame_id)
    return Frame(frame_id=frame.frame_id, ts=ts, image=image)


def _load_json_object(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{what} is not valid UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{what} must be a JSON object")
    return obj


def parse_binary(data: bytes) -> Frame:
    """``4-byte big-endian header length N | N bytes JSON header | image bytes``."""
    if len(data) < _HEADER_LEN.size:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "binary message shorter than its 4-byte header length")
    (n,) = _HEADER_LEN.unpack_from(data)
    if n == 0 or n > len(data) - _HEADER_LEN.size:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"header length {n} does not fit a message of {len(data)} bytes",
        )
    try:
        raw = data[_HEADER_LEN.size : _HEADER_LEN.size + n].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "the frame header is not UTF-8") from None
    header = _load_json_object(raw, "the frame header")
    try:
        return _frame_from_header(header, data[_HEADER_LEN.size + n :])
    except ProtocolError as exc:
        exc.frame_id = exc.frame_id if exc.frame_id is not None else _readable_frame_id(header)
        raise


def parse_text(text: str) -> ClientMessage:
    """A JSON text message: a frame (base64 image), ``config`` or ``ping``."""
    obj = _load_json_object(text, "text message")
    kind = obj.get("type")
    if kind == "ping":
        return PingRequest()
    if kind == "config":
        return _parse_config(obj)
    if kind not in ("frame", None) or (kind is None and "image" not in obj):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"unknown message type {kind!r}" if kind is not None else "message has no type",
            _readable_frame_id(obj),
        )
    frame_id = _frame_id_or_error(obj)
    image = obj.get("image")
    if not isinstance(image, str):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "image must be a base64 string", frame_id)
    try:
        raw = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "image is not valid base64", frame_id) from None
    return _frame_from_header(obj, raw)


def _frame_id_or_error(obj: dict[str, Any]) -> int:
    if "frame_id" not in obj:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "frame has no frame_id")
    return _frame_id(obj["frame_id"])


def validate_stream_id(stream_id: str) -> str:
    if not STREAM_ID_RE.fullmatch(stream_id):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "stream_id must be 1-128 characters of [A-Za-z0-9_.:-]")
    return stream_id


def encode_binary_frame(frame_id: int, image: bytes, ts: float | None = None) -> bytes:
    """The client side of :func:`parse_binary`."""
    header: dict[str, Any] = {"frame_id": frame_id}
    if ts is not None:
        header["ts"] = ts
    raw = json.dumps(header, separators=(",", ":")).encode()
    return _HEADER_LEN.pack(len(raw)) + raw + image


def encode_text_frame(frame_id: int, image: bytes, ts: float | None = None) -> str:
    msg: dict[str, Any] = {"type": "frame", "frame_id": frame_id, "image": base64.b64encode(image).decode()}
    if ts is not None:
        msg["ts"] = ts
    return json.dumps(msg)


# --- server -> client ---------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=True)


class Line(BaseModel):
    text: str
    score: float
    box: list[list[int]]


class Timing(BaseModel):
    total_ms: float
    ocr_ms: float | None = None
    queue_ms: float | None = None


class ResultAnswer(_Answer):
    type: Literal["result"] = "result"
    frame_id: int
    status: Literal["ok", "skipped"]
    lines: list[Line] | None = None
    reason: SkipReason | None = None
    ref_frame_id: int | None = None
    timing: Timing | None = None


class ErrorAnswer(_Answer):
    type: Literal["error"] = "error"
    frame_id: int | None
    code: ErrorCode
    message: str

    def encode(self) -> str:
        # frame_id is null, not absent, when it could not be read.
        return self.model_dump_json()


class PongAnswer(_Answer):
    type: Literal["pong"] = "pong"
    ts: float


class ConfigAnswer(_Answer):
    type: Literal["config"] = "config"
    fps: float
    events: bool | None = None  # present once the stream has asked for text events
    roi: list[float] | None = None  # present while a region of interest is set


class TextEvent(_Answer):
    """Text events (v1 extension): a tracked text line appeared, changed or is gone."""

    type: Literal["text"] = "text"
    event: Literal["appeared", "changed", "gone"]
    track_id: int
    text: str
    previous: str | None = None  # changed: the text the track had
    score: float | None = None  # appeared, changed: confidence of the confirmed text
    box: list[list[int]] | None = None  # appeared, changed: in the frame named by frame_id
    frame_id: int  # the frame whose answer confirmed the event
    first_frame_id: int | None = None  # appeared, changed: the first frame showing the new text
    last_frame_id: int | None = None  # gone: the last frame that showed the line


ServerMessage = ResultAnswer | ErrorAnswer | PongAnswer | ConfigAnswer | TextEvent


def parse_server_message(text: str) -> ServerMessage:
    """Client side: decode one answer of the server."""
    obj = _load_json_object(text, "server message")
    models: dict[str, type[_Answer]] = {
        "result": ResultAnswer,
        "error": ErrorAnswer,
        "pong": PongAnswer,
        "config": ConfigAnswer,
        "text": TextEvent,
    }
    model = models.get(obj.get("type", ""))
    if model is None:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"unknown server message type {obj.get('type')!r}")
    return model.model_validate(obj)  # type: ignore[return-value]
