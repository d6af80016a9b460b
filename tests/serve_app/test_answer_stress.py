"""Exactly one answer per frame under random interleavings, with the CPU busy (Ray-free).

Hypothesis draws scenarios: streams that send batches of frames (repeats, new content,
undecodable images) concurrently, ingresses that claim granted slots late or never, streams
closed mid-flight, a model that is slow, fails or hangs, and fingerprints that take a
random time in their thread (so that calls of one stream overtake each other, as they do
under load). Every frame must be answered exactly once, by the sampler itself, within
``admission_timeout_s`` plus the model's time: a lost wake-up shows up as a frame that
never gets its answer, and fails the example in seconds.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_app.config import IngressConfig, SamplerConfig
from serve_app.jobs import Job, Notice, Outcome, ReadReply
from serve_app.protocol import ErrorCode, Line, ProtocolError, encode_binary_frame
from serve_app.sampling import Sampler
from serve_app.session import StreamSession

ADMISSION_S = 0.2
CLAIM_S = 0.05
READ_TIMEOUT_S = 0.3
MODEL_MAX_S = 0.05
# A frame may wait for a slot, then be read twice (one retry), each read up to the timeout.
BOUND_S = ADMISSION_S + CLAIM_S + 2 * READ_TIMEOUT_S + 1.0  # + 1 s for a loaded 2-core box

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
    """Content = the image bytes (b"bad..." does not decode); fingerprints take a random time."""

    def __init__(self, rng: random.Random) -> None:
        self._delays = [rng.choice((0.0, 0.0, 0.001, 0.005, 0.02)) for _ in range(64)]
        self._next = 0

    def fingerprint(self, data: bytes, max_pixels: int) -> bytes:
        self._next += 1
        time.sleep(self._delays[self._next % len(self._delays)])
        if data.startswith(b"bad"):
            raise ProtocolError(ErrorCode.BAD_IMAGE, "image bytes could not be decoded")
        return data

    def compare(self, a: bytes, b: bytes) -> Any:
        return type("Same", (), {"same": a == b})()


class Model:
    """Reads the bytes as the text; slow, failing or hanging as the scenario says."""

    def __init__(self, rng: random.Random, fail: float, hang: float) -> None:
        self._rng = rng
        self._fail = fail
        self._hang = hang

    async def __call__(self, job: Job, demand: int) -> ReadReply:
        roll = self._rng.random()
        if roll < self._hang:
            await asyncio.sleep(READ_TIMEOUT_S * 3)
        await asyncio.sleep(self._rng.uniform(0.0, MODEL_MAX_S))
        if roll > 1.0 - self._fail:
            raise RuntimeError("replica died")
        box = [[0, 0], [1, 0], [1, 1], [0, 1]]
        return ReadReply(lines=[Line(text=job.image.decode(), score=1.0, box=box)])


@dataclass
class StreamPlan:
    batches: list[list[str]]  # content of each frame of each batch ("bad" does not decode)
    gaps_ms: list[int]  # pause after each batch
    claim: str  # how the ingress answers a grant: "now", "late", "never"
    close_after: int | None  # close the stream after this many batches


contents = st.sampled_from(["A", "A", "B", "C", "bad"])
stream_plans = st.builds(
    StreamPlan,
    batches=st.lists(st.lists(contents, min_size=1, max_size=4), min_size=1, max_size=6),
    gaps_ms=st.lists(st.integers(0, 40), min_size=6, max_size=6),
    claim=st.sampled_from(["now", "late", "never"]),
    close_after=st.one_of(st.none(), st.integers(0, 5)),
)
scenarios = st.fixed_dictionaries(
    {
        "streams": st.lists(stream_plans, min_size=1, max_size=4),
        "window": st.integers(1, 3),
        "fps": st.sampled_from([5.0, 30.0]),
        "fail": st.sampled_from([0.0, 0.1, 0.3]),
        "hang": st.sampled_from([0.0, 0.0, 0.1]),
        "seed": st.integers(0, 2**16),
    }
)


def make_sampler(scenario: dict[str, Any], rng: random.Random) -> Sampler:
    config = SamplerConfig(
        default_fps=scenario["fps"],
        min_reads_in_flight=1,
        max_reads_in_flight=scenario["window"],
        admission_timeout_s=ADMISSION_S,
        claim_timeout_s=CLAIM_S,
        read_timeout_s=READ_TIMEOUT_S,
    )
    model = Model(rng, scenario["fail"], scenario["hang"])
    return Sampler(config, read=model, detector=Detector(rng), max_pixels=10**8)  # type: ignore[arg-type]


async def _sampler_scenario(scenario: dict[str, Any]) -> None:
    rng = random.Random(scenario["seed"])
    sampler = make_sampler(scenario, rng)
    answers: dict[int, int] = {}
    expected: dict[int, float] = {}  # seq -> time submitted
    seqs = iter(range(1, 10**9))
    calls: list[asyncio.Task[None]] = []

    async def consume(stream: str, jobs: list[Job], plan: StreamPlan, claim: bool = False) -> None:
        async for outcomes in sampler.submit(stream, jobs, claim=claim):
            for outcome in outcomes:
                if outcome.notice is Notice.GRANTED and plan.claim != "never":
                    calls.append(asyncio.create_task(grant(stream, plan)))
                if outcome.answer is not None:
                    answers[outcome.seq] = answers.get(outcome.seq, 0) + 1

    async def grant(stream: str, plan: StreamPlan) -> None:
        if plan.claim == "late":
            await asyncio.sleep(CLAIM_S * rng.choice((0.5, 2.0)))
        newest = [new_job(stream, "C")] if rng.random() < 0.5 else []
        await consume(stream, newest, plan, claim=True)

    def new_job(stream: str, content: str) -> Job:
        seq = next(seqs)
        expected[seq] = time.monotonic()
        return Job(seq, seq, content.encode(), time.monotonic(), time.time())

    async def run(index: int, plan: StreamPlan) -> None:
        stream = f"s{index}"
        for n, (batch, gap) in enumerate(zip(plan.batches, plan.gaps_ms, strict=False)):
            if plan.close_after == n:
                sampler.close(stream)
            jobs = [new_job(stream, content) for content in batch]
            calls.append(asyncio.create_task(consume(stream, jobs, plan)))
            await asyncio.sleep(gap / 1000)

    await asyncio.gather(*(run(i, plan) for i, plan in enumerate(scenario["streams"])))
    deadline = time.monotonic() + BOUND_S
    while calls and time.monotonic() < deadline:
        done = [task for task in calls if task.done()]
        for task in done:
            calls.remove(task)
            task.result()
        await asyncio.sleep(0.01)
    unanswered = sorted(seq for seq in expected if seq not in answers)
    for task in calls:
        task.cancel()
    assert not unanswered, f"frames never answered within {BOUND_S:.1f} s: {unanswered}"
    assert all(count == 1 for count in answers.values()), "a frame answered twice"
    assert set(answers) == set(expected)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(scenario=scenarios)
@pytest.mark.timeout(180)
def test_sampler_answers_every_frame_once(scenario: dict[str, Any]) -> None:
    asyncio.run(_sampler_scenario(scenario))


class FlakySampler:
    """The sampler deployment as the ingress sees it: a real Sampler behind calls that may fail."""

    def __init__(self, sampler: Sampler, stream: str, rng: random.Random, fail: float) -> None:
        self._sampler = sampler
        self._stream = stream
        self._rng = rng
        self._fail = fail

    async def submit(self, jobs: list[Job], claim: bool = False) -> AsyncIterator[list[Outcome]]:
        if self._rng.random() < self._fail:
            raise RuntimeError("sampler replica died before the call")
        async for outcomes in self._sampler.submit(self._stream, jobs, claim=claim):
            yield outcomes
            if self._rng.random() < self._fail / 4:
                raise RuntimeError("sampler replica died mid-call")


async def _session_scenario(scenario: dict[str, Any]) -> None:
    rng = random.Random(scenario["seed"])
    sampler = make_sampler(scenario, rng)
    config = IngressConfig(frame_deadline_s=30.0)  # the deadline must not hide a lost answer
    sent_ids: list[int] = []
    answered: list[int | None] = []

    async def send(text: str) -> None:
        message = json.loads(text)
        if message["type"] in ("result", "error"):
            answered.append(message["frame_id"])

    async def configure(fps: float) -> float:
        return fps

    async def run(index: int, plan: StreamPlan) -> None:
        stream = f"s{index}"
        flaky = FlakySampler(sampler, stream, rng, scenario["fail"])
        session = StreamSession(stream, config, submit=flaky.submit, configure=configure, send=send)
        writer = asyncio.create_task(session.run())
        for n, (batch, gap) in enumerate(zip(plan.batches, plan.gaps_ms, strict=False)):
            for content in batch:
                frame_id = index * 1000 + len(sent_ids)
                sent_ids.append(frame_id)
                image = _PNG_1X1 if content != "bad" else b"bad image"
                session.receive(encode_binary_frame(frame_id, image + content.encode(), ts=time.time()))
            if plan.close_after == n:
                break
            await asyncio.sleep(gap / 1000)
        deadline = time.monotonic() + BOUND_S
        while session.unanswered and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        left = session.unanswered
        await session.flush()  # the client closes: whatever is left is answered now
        writer.cancel()
        await session.close()
        sampler.close(stream)
        assert not left, f"{left} frames of {stream} still open after {BOUND_S:.1f} s"

    await asyncio.gather(*(run(i, plan) for i, plan in enumerate(scenario["streams"])))
    assert sorted(answered) == sorted(sent_ids), "every frame answered exactly once"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(scenario=scenarios)
@pytest.mark.timeout(180)
def test_session_answers_every_frame_once(scenario: dict[str, Any]) -> None:
    asyncio.run(_session_scenario(scenario))
