"""CPU of one ingress stream's own code per frame, in-process (no Ray, no Serve, no model).

    python -m bench.session_cpu            # ~20 s; writes docs/bench/session_cpu.json

What ``bench.ceiling --parts paths`` cannot separate from the box's noise (it
solves a `rate` answer's cost out of a run that also reads): the microseconds
of CPU a frame costs in the ingress' own code, on the frames of the `rate`
run (640x480 labels, new text in every frame, ``fps`` 1, ``compare_fps`` 1).

- ``session``: ``StreamSession.receive`` of a binary frame message, with the
  real ``StreamSampler`` and ``ChangeDetector``, until its answer is queued
  for the socket (parse, quota, header probe, ledger, sampler, answer
  encoded); almost every frame is answered `rate` (a compare a second).
- ``probe``: the header probe alone (``serve_app.images.probe``) against
  Pillow's header parser as the probe called it until 2026-12-02
  (``serve_app.images._open``, which the decoders still use), on the same
  frames.

Process CPU time (``time.process_time``), best of ``--repeats``: this box's
speed moves by 2x from hour to hour, so compare the numbers of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import ROOT, machine_info, write_json
from bench.loadgen import frame_pool
from serve_app.config import IngressConfig, SamplerConfig
from serve_app.dedup import ChangeDetector
from serve_app.images import _open, probe
from serve_app.jobs import Job, ReadReply
from serve_app.protocol import Roi, encode_binary_frame
from serve_app.sampling import StreamSampler
from serve_app.session import StreamSession

OUT = ROOT / "docs" / "bench" / "session_cpu.json"
MAX_PIXELS = IngressConfig().max_pixels


def best_us(fn: Callable[[], int], repeats: int) -> float:
    """Microseconds of process CPU per item of ``fn``'s best run (``fn`` returns its items)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        items = fn()
        best = min(best, (time.process_time() - start) / items * 1e6)
    return round(best, 1)


async def session_us(messages: list[bytes], repeats: int) -> float:
    sampling = SamplerConfig(compare_fps=1.0)
    detector = ChangeDetector(sampling.dedup)
    compare = ThreadPoolExecutor(1)

    async def read(job: Job, roi: Roi | None, boxes: Any) -> ReadReply:
        return ReadReply(lines=[])  # a model that answers at once: the frame's own cost only

    async def send(text: str) -> None:
        pass

    session = StreamSession(
        "bench",
        IngressConfig(),
        sampler=lambda answer, emit: StreamSampler(
            sampling,
            detector=detector,
            read=read,
            answer=answer,
            emit=emit,
            max_pixels=MAX_PIXELS,
            fps=1.0,
            executor=compare,
        ),
        send=send,
    )
    writer = asyncio.create_task(session.run())
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for message in messages:
            session.receive(message)
            await asyncio.sleep(0)  # the ingress reads one message a turn of its loop
        best = min(best, (time.process_time() - start) / len(messages) * 1e6)
    writer.cancel()
    compare.shutdown()
    return round(best, 1)


def pillow_header(frames: list[bytes]) -> int:
    for data in frames:
        _open(data, MAX_PIXELS)  # what the probe was: Pillow's parser, its warnings silenced
    return len(frames)


def direct_header(frames: list[bytes]) -> int:
    for data in frames:
        probe(data, MAX_PIXELS)
    return len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    frames = frame_pool(args.frames, seed=1)
    messages = [encode_binary_frame(i, frame) for i, frame in enumerate(frames * 4)]
    report = {
        "command": "python -m bench.session_cpu",
        "machine": machine_info(),
        "frames": len(messages),
        "frame_bytes_mean": round(sum(map(len, frames)) / len(frames)),
        "us_cpu_per_frame": {
            "session_rate_frame": asyncio.run(session_us(messages, args.repeats)),
            "probe": best_us(lambda: direct_header(frames), args.repeats),
            "pillow_header": best_us(lambda: pillow_header(frames), args.repeats),
        },
    }
    print(report["us_cpu_per_frame"])
    write_json(args.out, report)


if __name__ == "__main__":
    main()
