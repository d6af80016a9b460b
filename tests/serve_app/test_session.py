"""The ingress' per-connection logic with a stand-in sampler (no Ray, no sockets)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from serve_app.config import IngressConfig, LimitsConfig, SecurityConfig
from serve_app.jobs import Job, Notice, Outcome
from serve_app.protocol import ResultAnswer, SkipReason, encode_binary_frame
from serve_app.security import ConnectionLimiter, Principal, TenantLimits
from serve_app.session import LoadShedder, StreamSession


def png(width: int = 32, height: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


class StandInSampler:
    """Answers every frame `ok` after ``delay``; can fail the first ``failures`` calls."""

    def __init__(self, delay: float = 0.0, failures: int = 0) -> None:
        self.calls: list[list[int]] = []
        self.delay = delay
        self.failures = failures

    async def submit(self, jobs: list[Job], claim: bool = False) -> AsyncIterator[list[Outcome]]:
        self.calls.append([j.frame_id for j in jobs])
        yield []
        await asyncio.sleep(self.delay)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("sampler replica died")
        yield [Outcome(j.seq, ResultAnswer(frame_id=j.frame_id, status="ok", lines=[])) for j in jobs]


async def run_session(
    messages: list[bytes | str], sampler: StandInSampler, *, wait: float = 0.3, **config: Any
) -> tuple[list[dict[str, Any]], list[int | None]]:
    sent: list[dict[str, Any]] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    async def configure(fps: float) -> float:
        return min(fps, 30.0)

    session = StreamSession(
        "s", IngressConfig(**config), submit=sampler.submit, configure=configure, send=send
    )
    writer = asyncio.create_task(session.run())
    codes = [session.receive(m) for m in messages]
    await asyncio.sleep(wait)
    writer.cancel()
    await session.close()
    return sent, codes


async def test_every_frame_answered_once_and_batched() -> None:
    sampler = StandInSampler(delay=0.01)
    sent, _ = await run_session([encode_binary_frame(i, png()) for i in range(20)], sampler)
    assert sorted(a["frame_id"] for a in sent) == list(range(20))
    assert len(sampler.calls) < 20, "frames that arrive together cross in one call"


async def test_timing_total_ms_on_every_result() -> None:
    sent, _ = await run_session([encode_binary_frame(1, png())], StandInSampler())
    assert sent[0]["timing"]["total_ms"] >= 0


async def test_sampler_failure_is_retried_once() -> None:
    sent, _ = await run_session([encode_binary_frame(1, png())], StandInSampler(failures=1))
    assert [(a["frame_id"], a["status"]) for a in sent] == [(1, "ok")]


async def test_sampler_failing_twice_answers_internal() -> None:
    sent, _ = await run_session([encode_binary_frame(1, png())], StandInSampler(failures=2))
    assert [(a["frame_id"], a["code"]) for a in sent] == [(1, "internal")]


async def test_oldest_pending_frames_superseded_when_over_the_bound() -> None:
    sampler = StandInSampler(delay=0.2)
    sent, _ = await run_session(
        [encode_binary_frame(i, png()) for i in range(10)], sampler, wait=0.8, max_pending_frames=2
    )
    by_id = {a["frame_id"]: a for a in sent}
    assert sorted(by_id) == list(range(10))
    superseded = [i for i, a in by_id.items() if a.get("reason") == "superseded"]
    assert superseded and all(by_id[i]["ref_frame_id"] > i for i in superseded)


async def test_deadline_answers_overloaded() -> None:
    sampler = StandInSampler(delay=5.0)
    sent: list[dict[str, Any]] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    session = StreamSession(
        "s",
        IngressConfig(frame_deadline_s=0.1),
        submit=sampler.submit,
        configure=None,
        send=send,  # type: ignore[arg-type]
    )
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


async def test_errors_do_not_reach_the_sampler() -> None:
    sampler = StandInSampler()
    sent, codes = await run_session(["{bad", encode_binary_frame(2, b"junk")], sampler)
    assert [(a["frame_id"], a["code"]) for a in sent] == [(None, "bad_message"), (2, "bad_image")]
    assert sampler.calls == [] and codes == [None, None]


async def test_hard_limit_closes_1009() -> None:
    _, codes = await run_session(
        [b"\0" * 2048], StandInSampler(), max_message_bytes=1024, hard_max_message_bytes=1024
    )
    assert codes == [1009]


async def test_ping_and_config() -> None:
    sent, _ = await run_session(['{"type": "ping"}', '{"type": "config", "fps": 99}'], StandInSampler())
    assert sent[0]["type"] == "pong" and sent[1] == {"type": "config", "fps": 30.0}


async def test_rate_limit_then_close_1008() -> None:
    limits = LimitsConfig(frames_per_s=1, frames_burst=2, violations_before_close=3)
    lease = ConnectionLimiter(limits).acquire(Principal("t", TenantLimits.from_config(limits)))
    sent: list[dict[str, Any]] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    session = StreamSession(
        "s",
        IngressConfig(security=SecurityConfig(limits=limits)),
        submit=StandInSampler().submit,
        configure=None,  # type: ignore[arg-type]
        send=send,
        quota=lease.quota,
    )
    writer = asyncio.create_task(session.run())
    codes = [session.receive(encode_binary_frame(i, png())) for i in range(6)]
    await asyncio.sleep(0.1)
    writer.cancel()
    await session.close()
    assert codes[:2] == [None, None] and 1008 in codes
    limited = [a["frame_id"] for a in sent if a.get("code") == "rate_limited"]
    assert limited and min(limited) == 2
    answered = sorted(a["frame_id"] for a in sent)
    assert answered == sorted(set(answered)), "exactly one answer per frame"


async def test_held_bytes_are_bounded_across_connections() -> None:
    from serve_app.session import ByteBudget

    budget = ByteBudget(3 * len(png()))
    sampler = StandInSampler(delay=0.3)
    sent: list[dict[str, Any]] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    sessions = [
        StreamSession(
            f"s{k}", IngressConfig(), submit=sampler.submit, configure=None, send=send, budget=budget
        )  # type: ignore[arg-type]
        for k in range(2)
    ]
    writers = [asyncio.create_task(s.run()) for s in sessions]
    for i in range(4):
        sessions[i % 2].receive(encode_binary_frame(i, png()))
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
    sent: list[dict[str, Any]] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    session = StreamSession(
        "s", IngressConfig(), submit=StandInSampler(delay=5).submit, configure=None, send=send
    )  # type: ignore[arg-type]
    writer = asyncio.create_task(session.run())
    session.receive(encode_binary_frame(1, png()))
    await session.drain(0.1)
    writer.cancel()
    await session.close()
    assert [(a["frame_id"], a["code"]) for a in sent] == [(1, "internal")], "answered before the close"


class ParkingSampler:
    """Parks the first call's last frame (``WAITING``), grants its slot when ``grant`` is set, reads
    what the claim brings and answers the parked frame ``superseded`` by it, as the sampler does."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], bool]] = []
        self.grant = asyncio.Event()
        self.claimed: asyncio.Future[list[Job]] = asyncio.get_running_loop().create_future()

    async def submit(self, jobs: list[Job], claim: bool = False) -> AsyncIterator[list[Outcome]]:
        self.calls.append(([j.frame_id for j in jobs], claim))
        if claim:
            self.claimed.set_result(jobs)
            yield [Outcome(j.seq, ResultAnswer(frame_id=j.frame_id, status="ok", lines=[])) for j in jobs]
            return
        parked = jobs[-1]
        yield [Outcome(parked.seq, notice=Notice.WAITING)]
        await self.grant.wait()
        yield [Outcome(parked.seq, notice=Notice.GRANTED)]
        newest = (await self.claimed)[-1].frame_id
        answer = ResultAnswer(
            frame_id=parked.frame_id, status="skipped", reason=SkipReason.SUPERSEDED, ref_frame_id=newest
        )
        yield [Outcome(parked.seq, answer)]


async def test_frames_wait_here_while_one_waits_for_a_slot_and_the_newest_is_claimed() -> None:
    sampler = ParkingSampler()
    sent: list[dict[str, Any]] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    session = StreamSession("s", IngressConfig(), submit=sampler.submit, configure=None, send=send)
    writer = asyncio.create_task(session.run())
    session.receive(encode_binary_frame(0, png()))
    await asyncio.sleep(0.05)
    for i in range(1, 6):
        session.receive(encode_binary_frame(i, png()))
    await asyncio.sleep(0.05)
    assert sampler.calls == [([0], False)], "nothing crosses while frame 0 waits at the sampler"
    assert [(a["frame_id"], a["reason"], a["ref_frame_id"]) for a in sent] == [
        (i, "superseded", i + 1) for i in range(1, 5)
    ], "the frames held here are superseded here, each by the next"
    sampler.grant.set()
    await asyncio.sleep(0.05)
    assert sampler.calls == [([0], False), ([5], True)], "the grant is answered with the newest frame"
    by_id = {a["frame_id"]: a for a in sent}
    assert len(sent) == 6 and sorted(by_id) == list(range(6)), "exactly one answer per frame"
    assert by_id[0]["ref_frame_id"] == 5 and by_id[5]["status"] == "ok"
    writer.cancel()
    await session.close()


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


async def test_shed_frames_are_answered_overloaded_at_once_without_a_sampler_call() -> None:
    shedder = LoadShedder(0.1, chance=lambda: 0.0)
    shedder.observe(1.0)
    sampler = StandInSampler()
    sent: list[dict[str, Any]] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    session = StreamSession(
        "s", IngressConfig(), submit=sampler.submit, configure=None, send=send, shedder=shedder
    )
    writer = asyncio.create_task(session.run())
    for i in range(5):
        session.receive(encode_binary_frame(i, png()))
    session.receive('{"type": "ping"}')
    await asyncio.sleep(0.05)
    assert [(a["frame_id"], a["reason"]) for a in sent if a["type"] == "result"] == [
        (i, "overloaded") for i in range(5)
    ]
    assert sampler.calls == [] and sent[-1]["type"] == "pong", "pings are never shed"
    writer.cancel()
    await session.close()
