"""Plain data that crosses deployment handles (no Ray, no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from serve_app.protocol import ErrorAnswer, Line, ResultAnswer


@dataclass(slots=True)
class Job:
    """One frame on its way from the ingress to the model."""

    seq: int  # unique per connection: frame_ids may repeat, answers must not
    frame_id: int
    image: bytes
    ts: float  # capture time, or the ingress' receive time when the client sent none
    received: float  # wall clock at the ingress (time.time())


class Notice(StrEnum):
    """What the sampler tells the ingress about a job it has not answered yet."""

    WAITING = "waiting"  # it waits for a read slot: hold newer frames at the ingress, newest wins
    GRANTED = "granted"  # its slot is free: hand over the newest frame held (a claim), or none


@dataclass(slots=True)
class Outcome:
    """The sampler's answer to a job (``timing.total_ms`` is set by the ingress), or a notice."""

    seq: int
    answer: ResultAnswer | ErrorAnswer | None = None
    notice: Notice | None = None


@dataclass(slots=True)
class ReadReply:
    """What an OCR replica returns for one image."""

    lines: list[Line] | None = None
    error_code: str | None = None
    error_message: str = ""
    ocr_ms: float = 0.0
    queue_ms: float = 0.0


@dataclass(slots=True)
class ReaderInfo:
    engine: str
    device: str
    models: list[dict[str, str]] = field(default_factory=list)
