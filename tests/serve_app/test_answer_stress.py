"""Exactly one answer per frame under random interleavings, with the CPU busy (Ray-free).

Hypothesis draws scenarios: streams that send frames (repeats, new content, undecodable
images) in bursts, change their rate and region of interest, ask for text events and close
mid-flight; one sampler whose admission window is small, whose calls fail (a sampler
replica dies) and whose model is slow, fails or hangs; fingerprints that take a random time
in their thread, so that one stream's frames overtake each other as they do under load.
Every frame must be answered exactly once, by the sampling path itself (not by the
ingress's deadline), within ``admission_timeout_s`` plus the model's time: a lost wake-up
shows up as a frame that never gets its answer, and fails the example in seconds.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from serve_app.admission import Admission
from serve_app.config import IngressConfig, SamplerConfig
from serve_app.jobs import Job, ReadReply, ReadRequest
from serve_app.protocol import ErrorCode, Line, ProtocolError, Roi, encode_binary_frame
from serve_app.reads import ReadBatcher, Replies, replies_as_completed
from serve_app.sampling import StreamSampler
from serve_app.session import StreamSession
from serve_app.tracking import TextTracker

ADMISSION_S = 0.2
READ_TIMEOUT_S = 0.3
MODEL_MAX_S = 0.05
SETTLE_S = (0.0, 0.1, 0.3)
# A changed frame may wait for the view to settle, a read may wait for a slot, then be tried
# twice, each try up to the timeout, and a sampler call that fails is made once more: the bound
# on any frame's answer (+1 s for a loaded box).
BOUND_S = max(SETTLE_S) + 2 * (ADMISSION_S + 2 * READ_TIMEOUT_S) + 1.0
# A failing example is printed as drawn: shrinking it would wait out the bound hundreds of times.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)

_PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c6360000000020001e221bc330000000049454e44ae426082"
)


def _burn(stop: Any) -> None:
    while not stop.is_set():
        sum(range(10_000))


@pytest.fixture(scope="module", autouse=True)
def cpu_load() -> Iterator[None]:
    """Two busy processes beside the test: the interleavings a loaded CI box produces."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_burn, args=(stop,), daemon=True) for _ in range(2)]
    for proc in procs:
        proc.start()
    yield
    stop.set()
    for proc in procs:
        proc.join(5)


class Detector:
    """Content = the bytes after the image header; b"bad..." does not decode; random delays."""

    def __init__(self, rng: random.Random) -> None:
        self._delays = [rng.choice((0.0, 0.0, 0.001, 0.005, 0.02)) for _ in range(64)]
        self._next = 0

    def fingerprint(self, data: bytes, max_pixels: int, roi: Roi | None = None) -> bytes:
        self._next += 1
        time.sleep(self._delays[self._next % len(self._delays)])
        content = data.removeprefix(_PNG_1X1)
        if content.startswith(b"bad"):
            raise ProtocolError(ErrorCode.BAD_IMAGE, "image bytes could not be decoded")
        return content

    def compare(self, a: bytes, b: bytes, boxes: Any = None, *, full: bool = False) -> Any:
        return type("Same", (), {"same": a == b, "lines": None})()


async def failing(rng: random.Random, fail: float, replies: Replies, who: str) -> Replies:
    """A deployment's streaming call as its caller sees it: it may die before the call or mid-call."""
    if rng.random() < fail:
        raise RuntimeError(f"{who} replica died before the call")
    async for batch in replies:
        if rng.random() < fail / 4:
            raise RuntimeError(f"{who} replica died mid-call")
        yield batch


class Model:
    """The OCRModel deployment: reads the content as the text; slow, failing or hanging by the scenario."""

    def __init__(self, rng: random.Random, fail: float, hang: float) -> None:
        self._rng = rng
        self._fail = fail
        self._hang = hang

    def read(self, requests: list[ReadRequest]) -> Replies:
        return failing(self._rng, self._fail, replies_as_completed(requests, self._read_one), "model")

    async def _read_one(self, request: ReadRequest) -> ReadReply:
        if self._rng.random() < self._hang:
            await asyncio.sleep(READ_TIMEOUT_S * 3)
        await asyncio.sleep(self._rng.uniform(0.0, MODEL_MAX_S))
        text = request.image.removeprefix(_PNG_1X1).decode()
        return ReadReply(lines=[Line(text=text, score=0.9, box=[[0, 0], [40, 0], [40, 10], [0, 10]])])


class Sampler:
    """The FrameSampler deployment: admission, its reads to the model a batch per call."""

    def __init__(self, config: SamplerConfig, model: Model, rng: random.Random, fail: float) -> None:
        self._model = ReadBatcher(model.read, max_per_call=2)
        self._admission = Admission(config, read=self._read, model_batch=2)
        self._rng = rng
        self._fail = fail

    async def _read(self, request: ReadRequest) -> ReadReply:
        return await self._model.read(
            request.stream_id, request.image, request.received, request.roi, request.boxes
        )

    def read(self, requests: list[ReadRequest]) -> Replies:
        return failing(self._rng, self._fail, replies_as_completed(requests, self._admission.read), "sampler")


@dataclass
class StreamPlan:
    batches: list[list[str]]  # content of each frame of each burst ("bad" does not decode)
    gaps_ms: list[int]  # pause after each burst
    settings: list[str]  # what the client changes after each burst: "", "fps", "roi", "events"
    events: bool
    close_after: int | None  # the client goes away after this many bursts


contents = st.sampled_from(["A", "A", "B", "C", "bad"])
stream_plans = st.builds(
    StreamPlan,
    batches=st.lists(st.lists(contents, min_size=1, max_size=4), min_size=1, max_size=6),
    gaps_ms=st.lists(st.integers(0, 40), min_size=6, max_size=6),
    settings=st.lists(st.sampled_from(["", "", "fps", "roi", "events"]), min_size=6, max_size=6),
    events=st.booleans(),
    close_after=st.one_of(st.none(), st.integers(0, 5)),
)
scenarios = st.fixed_dictionaries(
    {
        "streams": st.lists(stream_plans, min_size=1, max_size=4),
        "window": st.integers(1, 3),
        "fps": st.sampled_from([0.01, 2.0, 30.0]),
        "settle": st.sampled_from(SETTLE_S),
        "fail": st.sampled_from([0.0, 0.1, 0.3]),
        "hang": st.sampled_from([0.0, 0.0, 0.1]),
        "seed": st.integers(0, 2**16),
    }
)


class Service:
    """What one ingress replica holds: the sampler config, the reads batcher, one sampler behind it."""

    def __init__(self, scenario: dict[str, Any]) -> None:
        self.rng = random.Random(scenario["seed"])
        self.config = SamplerConfig(
            default_fps=scenario["fps"],
            settle_s=scenario["settle"],
            min_reads_in_flight=1,
            max_reads_in_flight=scenario["window"],
            admission_timeout_s=ADMISSION_S,
            read_timeout_s=READ_TIMEOUT_S,
        )
        model = Model(self.rng, scenario["fail"], scenario["hang"])
        self.reads = ReadBatcher(Sampler(self.config, model, self.rng, scenario["fail"]).read)
        self.detector = Detector(self.rng)
        self.compare = ThreadPoolExecutor(1)  # as an ingress replica has: one compare thread

    def sampler(self, stream: str, answer: Any, emit: Any) -> StreamSampler:
        read = lambda job, roi, boxes: self.reads.read(stream, job.image, job.received, roi, boxes)  # noqa: E731
        return StreamSampler(
            self.config,
            detector=self.detector,
            read=read,
            answer=answer,
            emit=emit,
            max_pixels=10**8,
            executor=self.compare,
        )


def _image(content: str) -> bytes:
    return (_PNG_1X1 if content != "bad" else b"") + content.encode()


async def _sampler_scenario(scenario: dict[str, Any]) -> None:
    """StreamSamplers alone: every frame offered must come back answered, once."""
    service = Service(scenario)
    answers: dict[tuple[int, int], int] = {}
    offered: list[tuple[int, int]] = []

    async def run(index: int, plan: StreamPlan) -> None:
        def answer(job: Job, _: Any) -> None:
            answers[(index, job.seq)] = answers.get((index, job.seq), 0) + 1

        sampler = service.sampler(f"s{index}", answer, lambda event: None)
        if plan.events:
            sampler.tracker = TextTracker()
        seq = 0
        for batch, gap, setting in zip(plan.batches, plan.gaps_ms, plan.settings, strict=False):
            for content in batch:
                seq += 1
                offered.append((index, seq))
                sampler.offer(Job(seq, seq, _image(content), time.time(), time.time()))
            if setting == "fps":
                sampler.set_fps(service.rng.choice((0.01, 1.0, 30.0)))
            elif setting == "roi":
                sampler.set_roi(service.rng.choice((None, Roi(0.0, 0.0, 0.5, 0.5))))
            await asyncio.sleep(gap / 1000)
        deadline = time.monotonic() + BOUND_S
        while any((index, n) not in answers for n in range(1, seq + 1)) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        sampler.close()

    await asyncio.gather(*(run(i, plan) for i, plan in enumerate(scenario["streams"])))
    unanswered = [key for key in offered if key not in answers]
    assert not unanswered, f"frames never answered within {BOUND_S:.1f} s: {unanswered}"
    assert all(count == 1 for count in answers.values()), "a frame answered twice"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), phases=NO_SHRINK)
@given(scenario=scenarios)
@pytest.mark.timeout(240)
def test_stream_samplers_answer_every_frame_once(scenario: dict[str, Any]) -> None:
    asyncio.run(_sampler_scenario(scenario))


async def _session_scenario(scenario: dict[str, Any]) -> None:
    """Whole sessions, clients that go away included: one answer per frame sent, events in order."""
    service = Service(scenario)
    config = IngressConfig(frame_deadline_s=30.0)  # the deadline must not hide a lost answer
    sent_ids: list[int] = []
    answered: list[int | None] = []
    events: dict[str, list[dict[str, Any]]] = {}

    async def run(index: int, plan: StreamPlan) -> None:
        stream = f"s{index}"

        async def send(text: str) -> None:
            message = json.loads(text)
            if message["type"] in ("result", "error"):
                answered.append(message["frame_id"])
            elif message["type"] == "text":
                events.setdefault(stream, []).append(message)

        session = StreamSession(
            stream,
            config,
            sampler=lambda answer, emit: service.sampler(stream, answer, emit),
            send=send,
            tracker=TextTracker,
            events=plan.events,
        )
        writer = asyncio.create_task(session.run())
        for n, (batch, gap, setting) in enumerate(
            zip(plan.batches, plan.gaps_ms, plan.settings, strict=False)
        ):
            for content in batch:
                frame_id = index * 1000 + len(sent_ids)
                sent_ids.append(frame_id)
                session.receive(encode_binary_frame(frame_id, _image(content), ts=time.time()))
            if setting:
                value = {"fps": 1.0, "roi": [0.0, 0.0, 0.5, 0.5], "events": True}[setting]
                session.receive(json.dumps({"type": "config", setting: value}))
            if plan.close_after == n:
                break
            await asyncio.sleep(gap / 1000)
        deadline = time.monotonic() + BOUND_S
        while session.unanswered and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        left = session.unanswered
        await session.flush()  # the client goes away: whatever is left is answered now
        writer.cancel()
        await session.close()
        assert not left, f"{left} frames of {stream} still open after {BOUND_S:.1f} s"

    await asyncio.gather(*(run(i, plan) for i, plan in enumerate(scenario["streams"])))
    assert sorted(answered) == sorted(sent_ids), "every frame answered exactly once"
    for stream_events in events.values():
        frames = [e["frame_id"] for e in stream_events]
        assert frames == sorted(frames), "events in the order they happened"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), phases=NO_SHRINK)
@given(scenario=scenarios)
@pytest.mark.timeout(240)
def test_sessions_answer_every_frame_once(scenario: dict[str, Any]) -> None:
    asyncio.run(_session_scenario(scenario))
