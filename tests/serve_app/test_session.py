"""The ingress' per-connection logic with a stand-in sampler (no Ray, no sockets)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from serve_app.config import IngressConfig, LimitsConfig, SamplerConfig, SecurityConfig
from serve_app.jobs import Job, ReadReply
from serve_app.protocol import Line, Roi, TextEvent, encode_binary_frame
from serve_app.sampling import AnswerFn, EventFn, StreamSampler
from serve_app.security import ConnectionLimiter, Principal, TenantLimits
from serve_app.session import ByteBudget, LoadShedder, StreamSession
from tests.serve_app.test_sampling import StandInDetector


def png(width: int = 32, height: int = 16) -> bytes:
    """A black PNG: frames of other sizes are other content to the stand-in detector."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


class StandInModel:
    """Reads every frame after ``delay`` (no text)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.reads: list[int] = []
        self.delay = delay

    async def __call__(self, job: Job, roi: Roi | None, boxes: Any = None) -> ReadReply:
        self.reads.append(job.frame_id)
        await asyncio.sleep(self.delay)
        return ReadReply(
            lines=[Line(text=f"F{job.frame_id}", score=0.9, box=[[0, 0], [9, 0], [9, 9], [0, 9]])]
        )


def sampler_for(model: StandInModel, **config: Any) -> Any:
    def make(answer: AnswerFn, emit: EventFn) -> StreamSampler:
        settings = SamplerConfig(**{"default_fps": 30.0, "compare_fps": 1000.0, **config})
        detector = StandInDetector()
        return StreamSampler(
            settings, detector=detector, read=model, answer=answer, emit=emit, max_pixels=10**8
        )

    return make


class Sent(list[dict[str, Any]]):
    async def __call__(self, text: str) -> None:
        self.append(json.loads(text))

    def answers(self) -> list[dict[str, Any]]:
        return [m for m in self if m["type"] in ("result", "error")]


def session_for(model: StandInModel, sent: Sent, **kw: Any) -> StreamSession:
    config = kw.pop("config", IngressConfig())
    return StreamSession("s", config, sampler=sampler_for(model), send=sent, **kw)


async def run_session(
    messages: list[bytes | str], model: StandInModel, *, wait: float = 0.3, **config: Any
) -> tuple[Sent, list[int | None]]:
    sent = Sent()
    session = session_for(model, sent, config=IngressConfig(**config))
    writer = asyncio.create_task(session.run())
    codes = [session.receive(m) for m in messages]
    await asyncio.sleep(wait)
    writer.cancel()
    await session.close()
    return sent, codes


async def test_every_frame_answered_once() -> None:
    model = StandInModel(delay=0.01)
    sent, _ = await run_session([encode_binary_frame(i, png(8 + i)) for i in range(20)], model)
    assert sorted(a["frame_id"] for a in sent.answers()) == list(range(20))
    assert 1 <= len(model.reads) < 20, "frames that arrive while one is read are not all read"


async def test_timing_total_ms_on_every_result() -> None:
    sent, _ = await run_session([encode_binary_frame(1, png())], StandInModel())
    assert sent[0]["timing"]["total_ms"] >= 0


async def test_deadline_answers_overloaded() -> None:
    sent = Sent()
    session = session_for(StandInModel(delay=5.0), sent, config=IngressConfig(frame_deadline_s=0.1))
    writer = asyncio.create_task(session.run())
    session.receive(encode_binary_frame(1, png()))
    await asyncio.sleep(0.05)
    session.expire(time.monotonic())  # not yet past the deadline
    await asyncio.sleep(0.1)
    session.expire(time.monotonic())
    await asyncio.sleep(0.05)
    writer.cancel()
    await session.close()
    assert [(a["frame_id"], a.get("reason")) for a in sent] == [(1, "overloaded")]


async def test_errors_are_not_read() -> None:
    model = StandInModel()
    sent, codes = await run_session(["{bad", encode_binary_frame(2, b"junk")], model)
    assert [(a["frame_id"], a["code"]) for a in sent] == [(None, "bad_message"), (2, "bad_image")]
    assert model.reads == [] and codes == [None, None]


async def test_hard_limit_closes_1009() -> None:
    _, codes = await run_session(
        [b"\0" * 2048], StandInModel(), max_message_bytes=1024, hard_max_message_bytes=1024
    )
    assert codes == [1009]


async def test_ping_and_config() -> None:
    sent, _ = await run_session(['{"type": "ping"}', '{"type": "config", "fps": 99}'], StandInModel())
    assert sent[0]["type"] == "pong" and sent[1] == {"type": "config", "fps": 30.0}


async def test_config_sets_a_region_of_interest_and_clears_it() -> None:
    sent, _ = await run_session(
        ['{"type": "config", "roi": [0.1, 0.2, 0.5, 0.6]}', '{"type": "config", "roi": null}'], StandInModel()
    )
    assert sent == [
        {"type": "config", "fps": 30.0, "roi": [0.1, 0.2, 0.5, 0.6]},
        {"type": "config", "fps": 30.0},
    ]


class OneEventTracker:
    """A stand-in tracker: every read announces its first line."""

    def wants_read(self, ts: float) -> bool:
        return False

    def read(self, frame_id: int, ts: float, lines: list[Line], *, forced: bool) -> list[TextEvent]:
        return [TextEvent(event="appeared", track_id=frame_id, text=lines[0].text, frame_id=frame_id)]

    def same(self, frame_id: int, ts: float) -> list[TextEvent]:
        return []

    def skipped(self, frame_id: int, ts: float) -> list[TextEvent]:
        return []


async def test_events_asked_for_by_config_follow_the_answer_that_confirmed_them() -> None:
    model, sent = StandInModel(), Sent()
    session = session_for(model, sent, tracker=OneEventTracker)
    writer = asyncio.create_task(session.run())
    session.receive(encode_binary_frame(1, png(8)))
    await asyncio.sleep(0.05)
    session.receive('{"type": "config", "events": true}')
    session.receive(encode_binary_frame(2, png(9)))
    await asyncio.sleep(0.05)
    writer.cancel()
    await session.close()
    assert [(m["type"], m.get("frame_id")) for m in sent] == [
        ("result", 1),
        ("config", None),
        ("result", 2),
        ("text", 2),
    ], "no events before they were asked for; an event after the answer that confirmed it"
    assert sent[1] == {"type": "config", "fps": 30.0, "events": True}


async def test_rate_limit_then_close_1008() -> None:
    limits = LimitsConfig(frames_per_s=1, frames_burst=2, violations_before_close=3)
    lease = ConnectionLimiter(limits).acquire(Principal("t", TenantLimits.from_config(limits)))
    sent = Sent()
    config = IngressConfig(security=SecurityConfig(limits=limits))
    session = session_for(StandInModel(), sent, config=config, quota=lease.quota)
    writer = asyncio.create_task(session.run())
    codes = [session.receive(encode_binary_frame(i, png(8 + i))) for i in range(6)]
    await asyncio.sleep(0.1)
    writer.cancel()
    await session.close()
    assert codes[:2] == [None, None] and 1008 in codes
    limited = [a["frame_id"] for a in sent if a.get("code") == "rate_limited"]
    assert limited and min(limited) == 2
    answered = sorted(a["frame_id"] for a in sent)
    assert answered == sorted(set(answered)), "exactly one answer per frame"


async def test_held_bytes_are_bounded_across_connections() -> None:
    budget = ByteBudget(3 * len(png()))
    model, sent = StandInModel(delay=0.3), Sent()
    sessions = [session_for(model, sent, budget=budget) for _ in range(4)]
    writers = [asyncio.create_task(s.run()) for s in sessions]
    for i in range(4):
        sessions[i].receive(encode_binary_frame(i, png()))
    assert budget.held == 3 * len(png())
    await asyncio.sleep(0.5)
    for w in writers:
        w.cancel()
    for s in sessions:
        await s.close()
    assert sorted(a["frame_id"] for a in sent) == [0, 1, 2, 3]
    assert [a["reason"] for a in sent if a["frame_id"] == 3] == ["overloaded"]
    assert budget.held == 0, "bytes are given back when frames are answered"


async def test_drain_answers_every_open_frame_before_returning() -> None:
    sent = Sent()
    session = session_for(StandInModel(delay=5), sent)
    writer = asyncio.create_task(session.run())
    session.receive(encode_binary_frame(1, png()))
    await session.drain(0.1)
    writer.cancel()
    await session.close()
    assert [(a["frame_id"], a["code"]) for a in sent] == [(1, "internal")], "answered before the close"


def test_load_shedder_follows_the_event_loop_lag() -> None:
    shedder = LoadShedder(0.1, chance=lambda: 0.5)
    assert not shedder.shed(), "no lag, nothing shed"
    for _ in range(6):
        shedder.observe(0.3)
    assert shedder.share == pytest.approx(0.6) and shedder.shed()
    for _ in range(20):
        shedder.observe(0.3)
    assert shedder.share == pytest.approx(0.95), "some frames always go on"
    for _ in range(19):
        shedder.observe(0.01)
    assert shedder.share == pytest.approx(0.0) and not shedder.shed()


async def test_shed_frames_are_answered_overloaded_at_once_without_a_read() -> None:
    shedder = LoadShedder(0.1, chance=lambda: 0.0)
    shedder.observe(1.0)
    model, sent = StandInModel(), Sent()
    session = session_for(model, sent, shedder=shedder)
    writer = asyncio.create_task(session.run())
    for i in range(5):
        session.receive(encode_binary_frame(i, png(8 + i)))
    session.receive('{"type": "ping"}')
    await asyncio.sleep(0.05)
    assert [(a["frame_id"], a["reason"]) for a in sent.answers()] == [(i, "overloaded") for i in range(5)]
    assert model.reads == [] and sent[-1]["type"] == "pong", "pings are never shed"
    writer.cancel()
    await session.close()
