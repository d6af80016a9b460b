"""The sampler's decisions and admission, with a stand-in model and a stand-in detector."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from serve_app.config import SamplerConfig
from serve_app.jobs import Job, Notice, Outcome, ReadReply
from serve_app.protocol import ErrorCode, Line, ProtocolError
from serve_app.sampling import Sampler


@dataclass
class Same:
    same: bool
    score: float = 0.0


class StandInDetector:
    """Content = the image bytes; b"bad..." is an undecodable image."""

    def fingerprint(self, data: bytes, max_pixels: int) -> bytes:
        if data.startswith(b"bad"):
            raise ProtocolError(ErrorCode.BAD_IMAGE, "image bytes could not be decoded")
        return data

    def compare(self, a: bytes, b: bytes) -> Same:
        return Same(a == b)


class StandInModel:
    """Reads the image bytes as the text; can be held, or made to fail."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures = 0

    async def __call__(self, job: Job, demand: int) -> ReadReply:
        self.reads.append(job.image)
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("replica died")
        return ReadReply(
            lines=[Line(text=job.image.decode(), score=1.0, box=[[0, 0], [1, 0], [1, 1], [0, 1]])]
        )


def make(**overrides: Any) -> tuple[Sampler, StandInModel]:
    model = StandInModel()
    config = SamplerConfig(
        **{"default_fps": 30.0, "min_reads_in_flight": 4, "max_reads_in_flight": 4, **overrides}
    )
    return Sampler(config, read=model, detector=StandInDetector(), max_pixels=10**8), model  # type: ignore[arg-type]


_seq = iter(range(1, 10**9))


def job(frame_id: int, image: bytes, ts: float) -> Job:
    return Job(seq=next(_seq), frame_id=frame_id, image=image, ts=ts, received=time.time())


async def claim(sampler: Sampler, stream: str, jobs: list[Job] | None = None) -> dict[int, dict[str, Any]]:
    """What the ingress does on a grant: hand over its newest frames (none: the waiting one is read)."""
    return await collect(sampler, stream, jobs or [], claim=True)


async def collect(sampler: Sampler, stream: str, jobs: list[Job], **kw: Any) -> dict[int, dict[str, Any]]:
    """All answers of one submit call; a grant is answered as an ingress holding nothing newer would."""
    by_seq = {j.seq: j.frame_id for j in jobs}
    got: dict[int, dict[str, Any]] = {}
    claims: list[asyncio.Task[Any]] = []
    async for outcomes in sampler.submit(stream, jobs, **kw):
        for o in outcomes:
            if o.notice is Notice.GRANTED:
                claims.append(asyncio.create_task(claim(sampler, stream)))
            if o.answer is None:
                continue
            assert o.seq in by_seq and by_seq[o.seq] not in got, "exactly one answer per frame"
            got[by_seq[o.seq]] = o.answer.model_dump(mode="json", exclude_none=True)
    assert len(got) == len(jobs)
    await asyncio.gather(*claims)
    return got


async def test_first_frame_is_read_and_a_repeat_is_a_duplicate_with_its_lines() -> None:
    sampler, model = make()
    first = await collect(sampler, "s", [job(1, b"LOT 1", 0.0)])
    assert first[1]["status"] == "ok" and first[1]["lines"][0]["text"] == "LOT 1"
    again = await collect(sampler, "s", [job(2, b"LOT 1", 1.0)])
    assert again[2] | {} == {
        "type": "result",
        "frame_id": 2,
        "status": "skipped",
        "reason": "duplicate",
        "ref_frame_id": 1,
        "lines": first[1]["lines"],
    }
    assert model.reads == [b"LOT 1"]


async def test_changed_frame_is_read() -> None:
    sampler, model = make()
    await collect(sampler, "s", [job(1, b"LOT 1", 0.0)])
    got = await collect(sampler, "s", [job(2, b"LOT 2", 1.0)])
    assert got[2]["status"] == "ok" and model.reads == [b"LOT 1", b"LOT 2"]


async def test_rate_cap_on_capture_time() -> None:
    sampler, _ = make(default_fps=2.0)
    frames = [job(i, f"T{i}".encode(), 100.0 + i / 30) for i in range(31)]  # 1 s of new content at 30 fps
    got: dict[int, dict[str, Any]] = {}
    for f in frames:
        got |= await collect(sampler, "s", [f])
    reads = [i for i, a in got.items() if a["status"] == "ok"]
    assert reads == [0, 14, 28], reads  # every 0.5 s (10% early allowed)
    assert all(got[i]["reason"] == "rate" for i in got if i not in reads)
    assert got[5]["ref_frame_id"] == 0


async def test_duplicates_of_a_frame_being_read_get_its_lines_when_it_completes() -> None:
    sampler, model = make()
    model.gate.clear()
    task = asyncio.create_task(
        collect(sampler, "s", [job(1, b"A", 0.0), job(2, b"A", 0.1), job(3, b"A", 0.2)])
    )
    await asyncio.sleep(0.05)
    model.gate.set()
    got = await task
    assert got[1]["status"] == "ok"
    assert [got[i]["reason"] for i in (2, 3)] == ["duplicate", "duplicate"]
    assert got[3]["lines"] == got[1]["lines"] and model.reads == [b"A"]


async def test_latest_frame_wins_while_waiting() -> None:
    sampler, model = make()
    model.gate.clear()
    first = asyncio.create_task(collect(sampler, "s", [job(1, b"A", 0.0)]))
    await asyncio.sleep(0.02)
    later = asyncio.create_task(
        collect(sampler, "s", [job(2, b"B", 1.0), job(3, b"C", 2.0), job(4, b"D", 3.0)])
    )
    await asyncio.sleep(0.02)
    model.gate.set()
    got = (await first) | (await later)
    assert got[2] == got[2] | {"reason": "superseded", "ref_frame_id": 3}
    assert got[3] == got[3] | {"reason": "superseded", "ref_frame_id": 4}
    assert got[4]["status"] == "ok" and model.reads == [b"A", b"D"]


async def test_fair_share_between_a_fast_and_a_slow_stream() -> None:
    sampler, model = make(min_reads_in_flight=1, max_reads_in_flight=1)

    pending: list[asyncio.Task[Any]] = []

    async def run(stream: str, n: int, period: float) -> None:
        for i in range(n):
            pending.append(
                asyncio.create_task(collect(sampler, stream, [job(i, f"{stream}{i}".encode(), i * period)]))
            )
            await asyncio.sleep(period / 10)

    async def slow_model(j: Job, demand: int) -> ReadReply:
        model.reads.append(j.image)
        await asyncio.sleep(0.01)
        return ReadReply(lines=[])

    sampler._read = slow_model
    await asyncio.gather(run("fast", 100, 0.02), run("slow", 10, 0.2))
    await asyncio.gather(*pending)
    reads = Counter(r[:4].decode() for r in model.reads)
    assert reads["slow"] >= 8 and reads["fast"] <= 3 * reads["slow"], reads


async def test_overloaded_when_no_read_slot_in_time() -> None:
    sampler, model = make(min_reads_in_flight=1, max_reads_in_flight=1, admission_timeout_s=0.1)
    model.gate.clear()
    a = asyncio.create_task(collect(sampler, "a", [job(1, b"A", 0.0)]))
    await asyncio.sleep(0.01)
    b = await collect(sampler, "b", [job(2, b"B", 0.0)])
    assert b[2]["reason"] == "overloaded"
    model.gate.set()
    assert (await a)[1]["status"] == "ok"


async def test_one_retry_when_the_model_fails_then_internal() -> None:
    sampler, model = make()
    model.failures = 1
    assert (await collect(sampler, "s", [job(1, b"A", 0.0)]))[1]["status"] == "ok"
    model.failures = 2
    got = await collect(sampler, "s", [job(2, b"B", 1.0)])
    assert got[2]["code"] == "internal"
    # nothing to compare with any more: the same content is read again, not called a duplicate
    assert (await collect(sampler, "s", [job(3, b"B", 2.0)]))[3]["status"] == "ok"


async def test_bad_image_is_an_error_and_the_stream_goes_on() -> None:
    sampler, _ = make()
    got = await collect(sampler, "s", [job(1, b"bad", 0.0), job(2, b"A", 1.0)])
    assert got[1]["code"] == "bad_image" and got[2]["status"] == "ok"


async def test_oneshot_reads_even_repeats() -> None:
    sampler, model = make()
    for i in range(3):
        await collect(sampler, f"http:{i}", [job(i, b"A", 0.0)], oneshot=True)
        sampler.close(f"http:{i}")
    assert model.reads == [b"A"] * 3 and sampler.stats["streams"] == 0


async def test_idle_streams_are_dropped() -> None:
    sampler, _ = make(stream_idle_timeout_s=1.0)
    for i in range(1000):
        await collect(sampler, f"cam-{i}", [job(1, b"A", 0.0)])
    assert sampler.stats["streams"] == 1000
    assert sampler.expire_idle(now=time.monotonic() + 2) == 1000 and sampler.stats["streams"] == 0


async def test_configure_clamps_to_max_fps() -> None:
    sampler, _ = make(default_fps=5.0, max_fps=10.0)
    assert sampler.configure("s", 50.0) == 10.0 and sampler.configure("s", 2.0) == 2.0


def test_outcome_is_plain_data() -> None:
    import pickle

    from serve_app.protocol import ResultAnswer

    o = Outcome(1, ResultAnswer(frame_id=1, status="ok", lines=[]))
    assert pickle.loads(pickle.dumps(o)) == o


@pytest.mark.parametrize("fps", [1.0, 5.0])
async def test_clock_restart_does_not_stall_a_stream(fps: float) -> None:
    sampler, _ = make(default_fps=fps)
    await collect(sampler, "s", [job(1, b"A", 1000.0)])
    got = await collect(sampler, "s", [job(2, b"B", 3.0)])  # the camera rebooted: its clock starts again
    assert got[2]["status"] == "ok"


async def test_admission_window_backs_off_when_reads_queue_at_the_model() -> None:
    sampler, _ = make(min_reads_in_flight=1, max_reads_in_flight=8)

    async def model(j: Job, demand: int) -> ReadReply:
        await asyncio.sleep(0.005)
        return ReadReply(lines=[], ocr_ms=5.0, queue_ms=50.0 if queueing else 0.0)

    sampler._read = model
    queueing = False
    await asyncio.gather(*(collect(sampler, f"s{i}", [job(i, b"A", 0.0)]) for i in range(60)))
    grown = sampler.stats["window"]
    assert grown > 2, "reads that start at once let the window grow"
    queueing = True
    await asyncio.gather(*(collect(sampler, f"t{i}", [job(i, b"A", 0.0)]) for i in range(60)))
    assert sampler.stats["window"] < grown / 2, "reads that queue at the model shrink it"


async def test_demand_reaches_the_model() -> None:
    sampler, _ = make(min_reads_in_flight=1, max_reads_in_flight=1)
    seen: list[int] = []

    async def model(j: Job, demand: int) -> ReadReply:
        seen.append(demand)
        await asyncio.sleep(0.01)
        return ReadReply(lines=[])

    sampler._read = model
    await asyncio.gather(*(collect(sampler, f"s{i}", [job(i, b"A", 0.0)]) for i in range(5)))
    assert max(seen) >= 4, "in flight plus the streams waiting"


async def test_frames_inside_the_rate_gate_are_not_decoded() -> None:
    sampler, _ = make(default_fps=5.0)
    decoded: list[bytes] = []
    detector = sampler._detector
    original = detector.fingerprint

    def counting(data: bytes, max_pixels: int) -> bytes:
        decoded.append(data)
        return original(data, max_pixels)

    detector.fingerprint = counting  # type: ignore[method-assign]
    for i in range(30):  # one second of a 30 fps camera on a still scene
        await collect(sampler, "s", [job(i, b"SAME", i / 30)])
    assert len(decoded) <= 6, "only frames at the 5 fps gate are decoded and compared"


async def test_fair_share_under_a_burst_with_deadlines() -> None:
    """30 streams of new content at 4 fps, capacity ~10 reads/s: reads spread evenly (Jain >= 0.9)."""
    sampler, _ = make(min_reads_in_flight=1, max_reads_in_flight=1, admission_timeout_s=0.3)
    reads: Counter[str] = Counter()

    async def model(j: Job, demand: int) -> ReadReply:
        reads[j.image.decode().split(":")[0]] += 1
        await asyncio.sleep(0.1)
        return ReadReply(lines=[], ocr_ms=100.0)

    sampler._read = model

    async def stream(k: int) -> None:
        tasks = []
        for i in range(40):
            tasks.append(
                asyncio.create_task(collect(sampler, f"s{k}", [job(i, f"s{k}:{i}".encode(), i / 4)]))
            )
            await asyncio.sleep(0.25)
        await asyncio.gather(*tasks)

    await asyncio.gather(*(stream(k) for k in range(30)))
    counts = [reads[f"s{k}"] for k in range(30)]
    jain = sum(counts) ** 2 / (len(counts) * sum(c * c for c in counts))
    assert jain >= 0.9, (jain, counts)


async def record(sampler: Sampler, stream: str, jobs: list[Job], log: list[tuple[int, str]]) -> None:
    """One submit call's answers and notices, in order, as (frame_id, status/reason/notice); no claims."""
    by_seq = {j.seq: j.frame_id for j in jobs}
    async for outcomes in sampler.submit(stream, jobs):
        for o in outcomes:
            if o.answer is None:
                log.append((by_seq[o.seq], str(o.notice)))
            else:
                answer = o.answer.model_dump(mode="json", exclude_none=True)
                log.append((by_seq[o.seq], answer.get("reason") or answer["status"]))


async def granted_slot(**config: Any) -> tuple[Sampler, StandInModel, list[tuple[int, str]], list[Any]]:
    """Stream s: frame 1 reads, frame 2 waits (announced), frame 1 completes: 2's slot is granted."""
    sampler, model = make(min_reads_in_flight=1, max_reads_in_flight=1, **config)
    model.gate.clear()
    log: list[tuple[int, str]] = []
    calls = [asyncio.create_task(record(sampler, "s", [job(1, b"A", 0.0)], log))]
    await asyncio.sleep(0.02)
    calls.append(asyncio.create_task(record(sampler, "s", [job(2, b"B", 1.0)], log)))
    await asyncio.sleep(0.02)
    assert log == [(2, "waiting")], "frame 2 waits for the slot frame 1 reads in"
    model.gate.set()
    await asyncio.sleep(0.02)
    assert log[-2:] == [(1, "ok"), (2, "granted")]
    return sampler, model, log, calls


async def test_a_waiting_frame_is_announced_and_its_slot_goes_to_the_newest_frame_claimed() -> None:
    """The ingress holds newer frames while one waits; on the grant it hands over the newest."""
    sampler, model, log, calls = await granted_slot()
    claimed = await claim(sampler, "s", [job(3, b"C", 2.0), job(4, b"D", 3.0)])
    await asyncio.gather(*calls)
    assert log[-1] == (2, "superseded")
    assert claimed[3]["reason"] == "superseded" and claimed[4]["status"] == "ok"
    assert model.reads == [b"A", b"D"], "the granted slot read the newest frame, at once"


async def test_a_granted_slot_reads_the_waiting_frame_when_no_claim_comes() -> None:
    _, model, log, calls = await granted_slot(claim_timeout_s=0.05)
    await asyncio.wait_for(asyncio.gather(*calls), 2)
    assert log == [(2, "waiting"), (1, "ok"), (2, "granted"), (2, "ok")]
    assert model.reads == [b"A", b"B"]


async def test_closing_a_stream_frees_the_slot_held_for_its_claim() -> None:
    sampler, _, log, calls = await granted_slot(claim_timeout_s=30.0)
    sampler.close("s")
    other = await asyncio.wait_for(collect(sampler, "t", [job(1, b"T", 0.0)]), 2)
    await asyncio.gather(*calls)
    assert log[-1] == (2, "superseded") and other[1]["status"] == "ok", "the held slot went to stream t"
