"""One stream's sampling with a stand-in model and a stand-in detector (no Ray, no images)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from serve_app.config import SamplerConfig
from serve_app.dedup import LineChange
from serve_app.jobs import Job, ReadReply
from serve_app.protocol import ErrorAnswer, ErrorCode, Line, ProtocolError, ResultAnswer, Roi, TextEvent
from serve_app.sampling import StreamSampler


@dataclass
class Same:
    same: bool
    lines: LineChange | None = None


def box(i: int) -> list[list[int]]:
    """The stand-in's box of line ``i``."""
    return [[0, 10 * i], [10, 10 * i], [10, 10 * i + 5], [0, 10 * i + 5]]


class StandInDetector:
    """Content = the image bytes, lines split by b"|"; b"bad..." is an undecodable image. Counts
    what it decodes. Content of several lines, compared ``full`` with the boxes of as many lines,
    says which lines changed (single-line content never does: reads stay whole)."""

    def __init__(self) -> None:
        self.decoded: list[bytes] = []
        self.rois: list[Roi | None] = []
        self.compared = 0
        self.unboxed = 0  # compares with a reference whose lines were not known
        self.cpu_ms = 0.0  # CPU each fingerprint burns (a real one of a 640x480 frame: ~1-2 ms)

    def fingerprint(self, data: bytes, max_pixels: int, roi: Roi | None = None) -> bytes:
        end = time.thread_time() + self.cpu_ms / 1000.0
        while time.thread_time() < end:
            pass
        self.decoded.append(data)
        self.rois.append(roi)
        if data.startswith(b"bad"):
            raise ProtocolError(ErrorCode.BAD_IMAGE, "image bytes could not be decoded")
        return data

    def compare(self, a: bytes, b: bytes, boxes: Any = None, *, full: bool = False) -> Same:
        self.compared += 1
        self.unboxed += not boxes
        old, new = a.split(b"|"), b.split(b"|")
        if a == b or not full or not boxes or not len(boxes) == len(old) == len(new) > 1:
            return Same(a == b)
        changed = tuple(i for i, (x, y) in enumerate(zip(old, new, strict=True)) if x != y)
        return Same(False, LineChange(boxes=boxes, changed=changed))


class StandInModel:
    """Reads the image bytes as the text, a line per b"|"-separated part (or the parts in the boxes
    asked for); can be held, fail, or answer overloaded."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.boxes: list[Any] = []  # of each read: None (whole), or the boxes of the lines read
        self.started: list[float] = []  # time.monotonic() of each read
        self.gate = asyncio.Event()
        self.gate.set()
        self.reply: ReadReply | None = None
        self.frame_ms = 5.0  # what it says a read costs it (a batching GPU's: ~1.6 ms)

    async def __call__(self, job: Job, roi: Roi | None, boxes: Any = None) -> ReadReply:
        self.reads.append(job.image)
        self.boxes.append(boxes)
        self.started.append(time.monotonic())
        await self.gate.wait()
        if self.reply is not None:
            return self.reply
        parts = job.image.decode().split("|")
        if boxes is None:
            lines = [Line(text=part, score=1.0, box=box(i)) for i, part in enumerate(parts)]
        else:
            lines = [Line(text=parts[b[0][1] // 10], score=1.0, box=b) for b in boxes]
        return ReadReply(lines=lines, ocr_ms=5.0, frame_ms=self.frame_ms)


class Stream:
    """A StreamSampler and everything it answered, by frame id."""

    def __init__(self, tracker: Any = None, on_uncompared: Any = None, **config: Any) -> None:
        self.model = StandInModel()
        self.detector = StandInDetector()
        self.answers: dict[int, list[dict[str, Any]]] = {}
        self.events: list[TextEvent] = []
        # One feature at a time: no compare rate, no wait for the view to settle unless asked.
        settings = {"default_fps": 30.0, "compare_fps": 1000.0, "settle_s": 0.0, **config}
        self.sampler = StreamSampler(
            SamplerConfig(**settings),
            detector=self.detector,
            read=self.model,
            answer=self._answer,
            max_pixels=10**8,
            tracker=tracker,
            emit=self.events.append,
            on_uncompared=on_uncompared,
        )
        self._seq = 0

    def _answer(self, job: Job, answer: ResultAnswer | ErrorAnswer) -> None:
        self.answers.setdefault(job.frame_id, []).append(answer.model_dump(mode="json", exclude_none=True))

    def send(self, frame_id: int, content: bytes) -> None:
        self._seq += 1
        now = time.time()
        self.sampler.offer(Job(self._seq, frame_id, content, now, now))

    async def send_held(self, frames: list[tuple[int, bytes]]) -> None:
        """Send ``frames`` 20 ms apart while the model holds its reads, then let it answer."""
        self.model.gate.clear()
        for frame_id, content in frames:
            self.send(frame_id, content)
            await asyncio.sleep(0.02)
        self.model.gate.set()

    def answer(self, frame_id: int) -> dict[str, Any]:
        got = self.answers[frame_id]
        assert len(got) == 1, f"frame {frame_id} answered {len(got)} times"
        return got[0]

    async def settle(self, frames: int, timeout: float = 5.0) -> None:
        """Wait until ``frames`` frames have their answer."""
        deadline = time.monotonic() + timeout
        while len(self.answers) < frames and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert len(self.answers) == frames, f"{len(self.answers)} of {frames} frames answered"
        assert all(len(a) == 1 for a in self.answers.values()), "exactly one answer per frame"


async def test_first_frame_is_read_and_a_repeat_is_a_duplicate_with_its_lines() -> None:
    s = Stream()
    s.send(1, b"LOT 1")
    await s.settle(1)
    s.send(2, b"LOT 1")
    await s.settle(2)
    first = s.answer(1)
    assert first["status"] == "ok" and first["lines"][0]["text"] == "LOT 1"
    assert {k: v for k, v in s.answer(2).items() if k != "timing"} == {
        "type": "result",
        "frame_id": 2,
        "status": "skipped",
        "reason": "duplicate",
        "ref_frame_id": 1,
        "lines": first["lines"],
    }
    assert s.model.reads == [b"LOT 1"]


async def test_the_very_bytes_of_the_reference_are_a_duplicate_without_decoding() -> None:
    s = Stream()
    s.send(1, b"STILL SCREEN")
    await s.settle(1)
    for i in range(2, 5):  # a still screen sends the same JPEG bytes again
        s.send(i, b"STILL SCREEN")
        await s.settle(i)
    assert [s.answer(i)["reason"] for i in (2, 3, 4)] == ["duplicate"] * 3
    assert s.detector.decoded == [b"STILL SCREEN"], "only the frame read was decoded"
    s.send(5, b"NEW SCREEN")
    await s.settle(5)
    assert s.answer(5)["status"] == "ok" and s.detector.decoded[-1] == b"NEW SCREEN"


async def test_a_change_after_a_still_spell_is_read_on_the_frame_that_shows_it() -> None:
    s = Stream(default_fps=1.0)  # a low rate: the change must not wait for it
    s.send(1, b"LOT 1")
    await s.settle(1)
    for i in range(2, 6):
        s.send(i, b"LOT 1")
        await s.settle(i)
    s.send(6, b"LOT 2")
    await s.settle(6)
    assert s.answer(6)["status"] == "ok" and s.model.reads == [b"LOT 1", b"LOT 2"]


async def test_steady_change_is_held_to_the_rate_and_skipped_frames_are_not_decoded() -> None:
    s = Stream(default_fps=10.0, burst=1.0)
    start = time.monotonic()
    for i in range(40):  # new content every frame, 200 frames/s for 0.2 s (longer on a busy box)
        s.send(i, f"T{i}".encode())
        await asyncio.sleep(0.005)
    await s.settle(40)
    elapsed = time.monotonic() - start
    reads = [i for i in range(40) if s.answer(i)["status"] == "ok"]
    assert 2 <= len(reads) <= 1 + elapsed * 10 + 1, reads  # a burst of 1, then 10/s
    rate = [i for i in range(40) if s.answer(i).get("reason") == "rate"]
    assert rate, "frames waiting for a read token are answered `rate`"
    # Only the frame that waits when tokens run out and the newest when one comes are decoded.
    assert len(s.detector.decoded) <= 2 * len(reads) + 1, "frames answered `rate` are not decoded"
    assert all(s.answer(i)["ref_frame_id"] > i for i in rate), "it names the newer frame that replaced it"


async def test_latest_frame_wins_while_a_read_is_in_flight() -> None:
    s = Stream()
    s.model.gate.clear()
    s.send(1, b"A")
    await asyncio.sleep(0.02)
    for i, content in enumerate((b"B", b"C", b"D"), start=2):
        s.send(i, content)
        await asyncio.sleep(0.02)
    assert [s.answer(i)["reason"] for i in (2, 3)] == ["superseded", "superseded"]
    s.model.gate.set()
    await s.settle(4)
    assert s.model.reads == [b"A", b"D"] and s.answer(4)["status"] == "ok"


async def test_a_frame_like_the_one_being_read_waits_for_its_lines() -> None:
    s = Stream()
    s.model.gate.clear()
    s.send(1, b"A")
    await asyncio.sleep(0.02)
    s.send(2, b"A")
    await asyncio.sleep(0.02)
    assert 2 not in s.answers
    s.model.gate.set()
    await s.settle(2)
    assert s.answer(2)["reason"] == "duplicate" and s.answer(2)["lines"] == s.answer(1)["lines"]


async def test_a_failed_read_is_an_error_and_the_same_content_is_read_again() -> None:
    s = Stream()
    s.model.reply = ReadReply(error_code=ErrorCode.INTERNAL, error_message="the model failed")
    await s.send_held([(1, b"A"), (2, b"A")])  # 2 waits for 1's lines: there are none, so it is read
    await s.settle(2)
    assert s.answer(1)["code"] == "internal" and s.answer(2)["code"] == "internal"
    assert s.model.reads == [b"A", b"A"]
    s.model.reply = None
    s.send(3, b"A")
    await s.settle(3)
    assert s.answer(3)["status"] == "ok", "nothing to compare with: read, not called a duplicate"


async def test_no_read_slot_in_time_is_overloaded_and_the_frame_after_it_is_read() -> None:
    s = Stream()
    s.model.reply = ReadReply(overloaded=True)
    await s.send_held([(1, b"A"), (2, b"A")])
    await s.settle(2)
    assert [s.answer(i)["reason"] for i in (1, 2)] == ["overloaded", "overloaded"]
    assert s.model.reads == [b"A", b"A"], "frame 2 waited for 1's lines; there were none: read"


async def test_bad_image_is_an_error_and_the_stream_goes_on() -> None:
    s = Stream()
    s.send(1, b"bad")
    await s.settle(1)
    s.send(2, b"A")
    await s.settle(2)
    assert s.answer(1)["code"] == "bad_image" and s.answer(2)["status"] == "ok"


async def test_still_content_is_read_again_after_refresh_s() -> None:
    s = Stream(refresh_s=0.1)
    s.send(1, b"A")
    await s.settle(1)
    s.send(2, b"A")
    await s.settle(2)
    await asyncio.sleep(0.15)
    s.send(3, b"A")
    await s.settle(3)
    assert [s.answer(i)["status"] for i in (1, 2, 3)] == ["ok", "skipped", "ok"]


async def test_a_frame_read_whatever_it_shows_is_not_compared() -> None:
    s = Stream(refresh_s=0.5)  # frames 3 and 4 come well within it, even on a busy machine
    s.send(1, b"A")
    await s.settle(1)
    await asyncio.sleep(0.6)  # a stream that sends a frame now and then: each is read
    s.send(2, b"B")
    await s.settle(2)
    assert s.answer(2)["status"] == "ok" and s.answer(2)["lines"][0]["text"] == "B"
    assert s.detector.compared == 0 and s.detector.decoded == [b"A", b"B"]
    s.send(3, b"C")  # within refresh_s of the last read: compared, changed, read
    await s.settle(3)
    assert s.detector.compared == 1 and s.answer(3)["lines"][0]["text"] == "C"
    s.send(4, b"D")
    await s.settle(4)
    assert s.detector.compared == 2 and s.model.reads == [b"A", b"B", b"C", b"D"]


async def test_frames_after_an_uncompared_read_never_take_the_lines_before_it() -> None:
    s = Stream(refresh_s=0.1)
    s.send(1, b"A")
    await s.settle(1)
    await asyncio.sleep(0.15)
    s.model.gate.clear()
    s.send(2, b"B")  # read as a refresh, not compared: the text is new
    await asyncio.sleep(0.02)
    s.send(3, b"B")  # compared with what stands (A) while 2 is read: not the same, waits
    await asyncio.sleep(0.02)
    assert s.answers == {1: s.answers[1]}
    s.model.gate.set()
    await s.settle(3)
    assert [s.answer(i)["lines"][0]["text"] for i in (2, 3)] == ["B", "B"]


async def test_frames_like_a_refresh_in_flight_are_answered_at_once_with_the_lines_known() -> None:
    s = Stream(refresh_s=0.1)
    s.send(1, b"A")
    await s.settle(1)
    await asyncio.sleep(0.15)
    s.model.gate.clear()
    s.send(2, b"A")  # refreshed: read again
    await asyncio.sleep(0.02)
    s.send(3, b"A")
    await s.settle(2)  # frame 3 did not wait for frame 2's read
    assert 2 not in s.answers and s.answer(3)["ref_frame_id"] == 1
    assert s.answer(3)["lines"] == s.answer(1)["lines"]
    s.model.gate.set()
    await s.settle(3)
    s.send(4, b"A")
    await s.settle(4)
    assert s.answer(2)["status"] == "ok" and s.answer(4)["ref_frame_id"] == 2, (
        "the refresh is the reference now"
    )
    assert s.model.reads == [b"A", b"A"]


async def test_a_refresh_that_fails_leaves_the_lines_known_and_only_it_is_an_error() -> None:
    s = Stream(refresh_s=0.1)
    s.send(1, b"A")
    await s.settle(1)
    await asyncio.sleep(0.15)
    s.model.reply = ReadReply(overloaded=True)
    await s.send_held([(2, b"A"), (3, b"A")])
    await s.settle(3)
    assert s.answer(2)["reason"] == "overloaded"
    assert s.answer(3)["reason"] == "duplicate" and s.answer(3)["lines"] == s.answer(1)["lines"]


class WantsOneRead:
    """A stand-in tracker that asks for one more read after the first, then is content."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool]] = []

    def wants_read(self, ts: float) -> bool:
        return len([c for c in self.calls if c[0] == "read"]) == 1

    def read(self, frame_id: int, ts: float, lines: list[Line], *, forced: bool) -> list[TextEvent]:
        self.calls.append(("read", frame_id, forced))
        if len(self.calls) == 1:
            return []
        return [TextEvent(event="appeared", track_id=1, text=lines[0].text, frame_id=frame_id)]

    def same(self, frame_id: int, ts: float) -> list[TextEvent]:
        self.calls.append(("same", frame_id, False))
        return []

    def skipped(self, frame_id: int, ts: float) -> list[TextEvent]:
        self.calls.append(("skipped", frame_id, False))
        return []


async def test_the_tracker_gets_one_forced_read_to_confirm_then_duplicates_again() -> None:
    tracker = WantsOneRead()
    s = Stream(tracker=tracker)
    for i in range(1, 5):
        s.send(i, b"SN-1")
        await s.settle(i)
    assert [s.answer(i)["status"] for i in range(1, 5)] == ["ok", "ok", "skipped", "skipped"]
    assert tracker.calls[:2] == [("read", 1, False), ("read", 2, True)]
    assert [e.event for e in s.events] == ["appeared"] and s.events[0].frame_id == 2


async def test_a_region_of_interest_is_compared_and_read_and_a_new_one_reads_afresh() -> None:
    s = Stream()
    s.send(1, b"A")
    await s.settle(1)
    roi = Roi(0.1, 0.2, 0.5, 0.6)
    s.sampler.set_roi(roi)
    s.send(2, b"A")
    await s.settle(2)
    assert s.answer(2)["status"] == "ok", "a new region: nothing to compare with yet"
    assert s.detector.rois[-1] == roi


async def test_at_a_low_rate_a_change_is_answered_rate_at_once_not_held_for_a_token() -> None:
    s = Stream(default_fps=0.01, burst=1.0)  # one read per 100 s
    s.send(1, b"A")
    await s.settle(1)
    s.send(2, b"B")
    await s.settle(2, timeout=1.0)
    assert (s.answer(2)["reason"], s.answer(2)["ref_frame_id"]) == ("rate", 1)


async def test_frames_beyond_compare_fps_are_rate_undecoded_and_the_newest_is_compared() -> None:
    s = Stream(compare_fps=10.0)
    s.send(1, b"A")
    await s.settle(1)
    for i in range(2, 8):  # 6 frames in ~30 ms, all the same but the last
        s.send(i, b"A" if i < 7 else b"B")
        await asyncio.sleep(0.005)
    await s.settle(7)
    assert [s.answer(i)["reason"] for i in range(2, 7)] == ["rate"] * 5
    assert s.answer(7)["status"] == "ok", "the newest frame is compared when a token comes: a change"
    assert s.detector.decoded == [b"A", b"B"]


class MovingObjectDetector(StandInDetector):
    """``b"LOT 1~2"`` is ``b"LOT 1"`` moved: the same text, but only a compare knowing the boxes says so."""

    def __init__(self, slow: bytes = b"") -> None:
        super().__init__()
        self.slow = slow  # a frame whose compare with boxes takes a while (its thread is busy)

    def compare(self, a: bytes, b: bytes, boxes: Any = None, *, full: bool = False) -> Same:
        if boxes:
            if b == self.slow:
                time.sleep(0.2)
            return Same(a.split(b"~")[0] == b.split(b"~")[0])
        return Same(a == b)


async def test_frames_that_come_while_a_change_is_read_wait_for_its_lines_undecoded() -> None:
    """While a change is read there is nothing to compare with: the frames that come are not
    decoded; the newest waits for the read's lines and is compared with its boxes (a moved label
    is the same), the ones before it are superseded at once."""
    s = Stream()
    s.detector = s.sampler._detector = MovingObjectDetector()
    s.model.gate.clear()
    s.send(1, b"LOT 1")
    await asyncio.sleep(0.02)
    for i in (2, 3, 4):
        s.send(i, f"LOT 1~{i}".encode())
        await asyncio.sleep(0.02)
    assert [s.answer(i)["reason"] for i in (2, 3)] == ["superseded", "superseded"]
    assert [s.answer(i)["ref_frame_id"] for i in (2, 3)] == [3, 4]
    assert 4 not in s.answers and s.detector.decoded == [b"LOT 1"]
    s.model.gate.set()
    await s.settle(4)
    assert s.answer(4)["reason"] == "duplicate" and s.answer(4)["ref_frame_id"] == 1
    assert s.answer(4)["lines"] == s.answer(1)["lines"]
    assert s.model.reads == [b"LOT 1"] and s.detector.decoded == [b"LOT 1", b"LOT 1~4"]
    s.send(5, b"LOT 2~1")  # a real change is still read
    await s.settle(5)
    assert s.answer(5)["status"] == "ok" and s.model.reads == [b"LOT 1", b"LOT 2~1"]
    assert s.detector.unboxed == 0, "every compare had the reference's boxes"


async def test_a_frame_compared_while_a_change_begins_to_be_read_waits_for_its_lines() -> None:
    """A change read can start while another frame is compared (a change waited for a refresh to
    land): that frame is then compared again, with the new read's boxes, once they are known."""
    s = Stream(refresh_s=0.3)  # longer than the slow compare
    s.detector = s.sampler._detector = MovingObjectDetector(slow=b"LOT 3~1")
    s.send(1, b"LOT 1")
    await s.settle(1)
    await asyncio.sleep(0.35)
    s.model.gate.clear()
    s.send(2, b"LOT 1")  # a refresh read: frame 1's lines stand meanwhile
    await asyncio.sleep(0.02)
    s.send(3, b"LOT 3")  # changed against them: waits for the refresh in flight
    await asyncio.sleep(0.02)
    s.send(4, b"LOT 3~1")  # compared slowly (0.2 s)
    await asyncio.sleep(0.05)
    s.model.gate.set()  # the refresh lands; frame 3's read starts and is held, frame 4 is compared
    s.model.gate.clear()
    await asyncio.sleep(0.3)
    assert s.model.reads == [b"LOT 1", b"LOT 1", b"LOT 3"] and 4 not in s.answers
    s.model.gate.set()
    await s.settle(4)
    assert [s.answer(i)["status"] for i in (2, 3)] == ["ok", "ok"]
    assert s.answer(4)["reason"] == "duplicate" and s.answer(4)["ref_frame_id"] == 3
    assert s.detector.unboxed == 0, "frame 4 was compared again with frame 3's boxes"


async def test_while_the_view_keeps_changing_its_first_frame_and_the_one_it_settles_on_are_read() -> None:
    """A card sliding in: every frame unlike the one before; one read for the motion, one when it stops."""
    s = Stream(settle_s=0.3)
    s.send(1, b"LOT 1")
    await s.settle(1)
    await asyncio.sleep(0.35)  # a still spell
    for i, content in enumerate((b"slide 1", b"slide 2", b"slide 3", b"LOT 2"), start=2):
        s.send(i, content)
        await asyncio.sleep(0.02)
    assert s.model.reads == [b"LOT 1", b"slide 1"], "the first changed frame is read at once, no more"
    s.send(6, b"LOT 2")  # like the frame before it: the view has settled
    await s.settle(6)
    assert s.model.reads == [b"LOT 1", b"slide 1", b"LOT 2"]
    assert s.answer(6)["status"] == "ok", "the frame it settles on is read at once"
    assert [s.answer(i)["reason"] for i in (3, 4, 5)] == ["superseded"] * 3
    assert s.model.started[2] - s.model.started[1] < 0.25, "without waiting out settle_s"


async def test_a_view_that_never_settles_is_read_once_per_settle_s() -> None:
    s = Stream(settle_s=0.1)
    start = time.monotonic()
    for i in range(50):  # new content every frame for 0.5 s
        s.send(i, f"T{i}".encode())
        await asyncio.sleep(0.01)
    await s.settle(50)
    elapsed = time.monotonic() - start
    reads = [i for i in range(50) if s.answer(i)["status"] == "ok"]
    assert 2 <= len(reads) <= 1 + elapsed / 0.1 + 1, reads
    assert reads[-1] == 49, "the newest frame is read when settle_s has passed"


def texts(answer: dict[str, Any]) -> list[str]:
    return [line["text"] for line in answer["lines"]]


async def test_a_change_inside_known_lines_reads_only_those_lines() -> None:
    s = Stream()
    s.send(1, b"SN 1|LOT 7|EXP 9")
    await s.settle(1)
    s.send(2, b"SN 1|LOT 8|EXP 9")  # one line changed, nothing else
    await s.settle(2)
    assert s.model.boxes == [None, [box(1)]], "only the changed line is read again"
    assert s.answer(2)["status"] == "ok" and texts(s.answer(2)) == ["SN 1", "LOT 8", "EXP 9"]
    assert [line["box"] for line in s.answer(2)["lines"]] == [box(0), box(1), box(2)]
    s.send(3, b"SN 1|LOT 8|EXP 9")  # the content the line read made the reference
    await s.settle(3)
    assert s.answer(3)["reason"] == "duplicate" and texts(s.answer(3)) == ["SN 1", "LOT 8", "EXP 9"]
    s.send(4, b"SN 2||EXP 9")  # a line read where the line is gone
    await s.settle(4)
    assert s.model.boxes[-1] == [box(0), box(1)] and texts(s.answer(4)) == ["SN 2", "EXP 9"]


async def test_line_reads_off_reads_every_change_whole() -> None:
    s = Stream(line_reads=False)
    s.send(1, b"SN 1|LOT 7")
    await s.settle(1)
    s.send(2, b"SN 1|LOT 8")
    await s.settle(2)
    assert s.model.boxes == [None, None] and texts(s.answer(2)) == ["SN 1", "LOT 8"]


async def test_a_line_read_planned_against_lines_a_refresh_replaced_is_read_whole() -> None:
    s = Stream(refresh_s=0.3)
    s.send(1, b"SN 1|LOT 7")
    await s.settle(1)
    await asyncio.sleep(0.35)
    s.model.gate.clear()
    s.send(2, b"SN 1|LOT 7")  # a refresh: read while frame 1's lines still stand
    await asyncio.sleep(0.02)
    s.send(3, b"SN 1|LOT 8")  # changed inside frame 1's lines: waits for the refresh in flight
    await asyncio.sleep(0.02)
    s.model.gate.set()
    await s.settle(3)
    assert s.model.boxes == [None, None, None], "the refresh's lines stand now: frame 3 is read whole"
    assert texts(s.answer(3)) == ["SN 1", "LOT 8"]


class BrokenDetector(StandInDetector):
    """Raises (a bug, not a bad image) on content b"boom"."""

    def compare(self, a: bytes, b: bytes, boxes: Any = None, *, full: bool = False) -> Same:
        if b == b"boom":
            raise RuntimeError("a bug in the detector")
        return super().compare(a, b, boxes, full=full)


async def test_a_detector_that_raises_answers_the_frame_internal_and_the_stream_goes_on() -> None:
    s = Stream()
    s.detector = s.sampler._detector = BrokenDetector()
    s.send(1, b"A")
    await s.settle(1)
    s.send(2, b"boom")
    await s.settle(2)
    assert s.answer(2)["type"] == "error" and s.answer(2)["code"] == "internal"
    s.send(3, b"A")
    await s.settle(3)
    assert s.answer(3)["reason"] == "duplicate"


async def test_a_read_function_that_raises_answers_the_frame_internal_and_the_stream_goes_on() -> None:
    s = Stream()

    async def broken(job: Job, roi: Roi | None, boxes: Any = None) -> ReadReply:
        raise TypeError("a bug on the read path")

    s.sampler._read = broken
    s.send(1, b"A")
    await s.settle(1)
    assert s.answer(1)["type"] == "error" and s.answer(1)["code"] == "internal"
    s.sampler._read = s.model
    s.send(2, b"A")  # nothing was read: the same content is read now
    await s.settle(2)
    assert s.answer(2)["status"] == "ok"


async def test_after_a_read_that_lost_lines_the_next_change_is_read_whole() -> None:
    """A read that found fewer lines than the one before (a hand, a blur) may have missed a line:
    reading line by line from it would keep it missed."""
    s = Stream()
    s.send(1, b"SN 1|LOT 7|EXP 9")
    await s.settle(1)
    s.send(2, b"SN 1|LOT 7")  # a line not read this time
    await s.settle(2)
    s.send(3, b"SN 1|LOT 8")  # changed inside the known lines
    await s.settle(3)
    assert s.model.boxes == [None, None, None] and texts(s.answer(3)) == ["SN 1", "LOT 8"]
    s.send(4, b"SN 1|LOT 9")  # the read before found as many lines: line by line again
    await s.settle(4)
    assert s.model.boxes[-1] == [box(1)]


async def test_a_line_read_answered_with_the_wrong_number_of_lines_is_an_error_not_a_lost_frame() -> None:
    s = Stream()
    s.send(1, b"SN 1|LOT 7")
    await s.settle(1)
    s.model.reply = ReadReply(lines=[Line(text=t, score=1.0, box=box(1)) for t in ("LOT 8", "?")], ocr_ms=5.0)
    s.send(2, b"SN 1|LOT 8")  # one line asked for, two came back
    await s.settle(2)
    assert s.model.boxes[-1] == [box(1)]
    assert s.answer(2)["type"] == "error" and s.answer(2)["code"] == "internal"


@pytest.mark.parametrize(
    ("frame_ms", "uncompared_after", "uncompared"),
    [(0.3, 3, True), (5.0, 3, False), (0.3, 0, False)],
    ids=["fast model: stops comparing", "model slower than a compare", "uncompared_after 0"],
)
async def test_a_stream_whose_every_frame_is_new_is_read_uncompared_only_while_reads_are_cheaper(
    frame_ms: float, uncompared_after: int, uncompared: bool
) -> None:
    counted: list[None] = []
    s = Stream(
        on_uncompared=lambda: counted.append(None),
        uncompared_after=uncompared_after,
        uncompared_reads=8,
        max_uncompared_reads=8,
    )
    s.detector.cpu_ms, s.model.frame_ms = 2.0, frame_ms  # against a compare of 2 ms
    for i in range(1, 31):  # every frame new, each sent once the one before is answered
        s.send(i, f"T{i}".encode())
        await s.settle(i)
    assert all(s.answer(i)["status"] == "ok" for i in range(1, 31)), "every new frame is read"
    new_decoded = len(s.detector.decoded)
    if uncompared:  # 3 compares found a change, 4-8 uncompared, one only fingerprinted, one compared...
        assert new_decoded <= 12, f"{new_decoded} of 30 new frames decoded"
    else:
        assert new_decoded == 30
    assert len(counted) == 30 - new_decoded, "each frame taken uncompared is counted (metrics)"
    for i in range(31, 51):  # the stream turns still
        s.send(i, b"STILL")
        await s.settle(i)
    reads = [i for i in range(31, 51) if s.answer(i)["status"] == "ok"]
    assert len(reads) <= (10 if uncompared else 1), reads  # at most uncompared_reads + 2
    assert all(s.answer(i)["reason"] == "duplicate" for i in range(max(reads) + 1, 51))
    assert max(reads) <= 41


async def test_a_stream_of_new_frames_is_compared_less_and_less_and_soon_again_once_still() -> None:
    """Each run of uncompared reads that the next compare finds was needed is followed by one twice
    as long (8, 16, 32, then 64 at most); once the stream turns still, its frames are duplicates
    again after at most 64 more reads."""
    s = Stream(uncompared_after=3, uncompared_reads=8, max_uncompared_reads=64)
    s.detector.cpu_ms, s.model.frame_ms = 2.0, 0.3
    for i in range(1, 201):
        s.send(i, f"T{i}".encode())
        await s.settle(i)
    assert all(s.answer(i)["status"] == "ok" for i in range(1, 201)), "every new frame is read"
    # 3 compared, then per run: 1 fingerprinted and 1 compared; runs of 4-8, 8-16, 16-32, 32-64...
    assert len(s.detector.decoded) <= 20, f"{len(s.detector.decoded)} of 200 new frames decoded"
    for i in range(201, 281):  # the stream turns still
        s.send(i, b"STILL")
        await s.settle(i)
    reads = [i for i in range(201, 281) if s.answer(i)["status"] == "ok"]
    assert max(reads) <= 201 + 64 + 1, reads  # the run under way, the fingerprinted frame
    assert all(s.answer(i)["reason"] == "duplicate" for i in range(max(reads) + 1, 281))
    s.send(281, b"NEW")  # a change after a still spell is compared, and read at once
    await s.settle(281)
    assert s.answer(281)["status"] == "ok" and s.detector.decoded[-1] == b"NEW"
