"""Plain data that crosses deployment handles (no Ray, no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field

from serve_app.protocol import Line, Roi

Boxes = list[list[list[int]]]  # text boxes, 4 points each, px of the whole upright frame


@dataclass(slots=True)
class Job:
    """One frame of a stream at its ingress, from receipt to answer."""

    seq: int  # unique per connection: frame_ids may repeat, answers must not
    frame_id: int
    image: bytes
    ts: float  # capture time, or the ingress' receive time when the client sent none
    received: float  # wall clock at the ingress (time.time())


@dataclass(slots=True)
class ReadRequest:
    """A frame the ingress wants read: one item of a call to the sampler (many streams per call)."""

    id: int  # unique per ingress replica: replies name it
    stream_id: str  # fair admission shares the model between streams
    image: bytes
    received: float  # wall clock at the ingress (time.time())
    roi: Roi | None = None  # read only this region (``box`` stays in whole-frame pixels)
    # Read only the lines in these boxes (4 points each, whole-frame px): recognition, no detection;
    # the reply has one line per box, in order, its text empty where nothing reads.
    boxes: Boxes | None = None


@dataclass(slots=True)
class ReadReply:
    """What became of one read: the model's lines, an error, or no slot in time (``overloaded``)."""

    lines: list[Line] | None = None
    error_code: str | None = None
    error_message: str = ""
    overloaded: bool = False  # no read slot within the sampler's admission timeout
    ocr_ms: float = 0.0  # the model's time for the batch this frame was read in
    # What a read costs the model: its time per frame when its batches are full (ocr_ms over the
    # frames a batch holds; ocr_ms itself for a model that reads one frame at a time).
    frame_ms: float = 0.0
    queue_ms: float = 0.0  # from arrival at the model replica to the start of its batch
    # Of that, the time spent behind earlier batches (not waiting for its own batch to fill):
    # the model's backlog, which admission adapts its window on.
    backlog_ms: float = 0.0
    # How long the model replica's thread had been idle when the frame came: room for more reads.
    idle_ms: float = 0.0


@dataclass(slots=True)
class ReaderInfo:
    engine: str
    device: str
    models: list[dict[str, str]] = field(default_factory=list)
