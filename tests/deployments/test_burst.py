"""A short burst against the real service: every frame answered exactly once, pings stay answered."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from serve_app.protocol import encode_binary_frame
from tests.deployments.test_sampler import label

pytestmark = pytest.mark.serve

STREAMS, FPS, SECONDS = 12, 4.0, 6.0


async def test_burst_every_frame_answered_once_and_pings_answered(ws_url: str) -> None:
    frames = [label(f"{10000 + i}") for i in range(24)]  # new text in every frame
    pings: list[float] = []

    async def stream(k: int) -> tuple[int, list[int]]:
        async with websockets.connect(f"{ws_url}?stream_id=burst-{k}", max_size=None) as ws:
            answers: list[int] = []
            sent_pings: list[float] = []

            async def read() -> None:
                async for text in ws:
                    msg = json.loads(text)
                    if msg["type"] == "pong":
                        pings.append(time.monotonic() - sent_pings.pop(0))
                    else:
                        answers.append(msg["frame_id"])

            reader = asyncio.create_task(read())
            n = int(SECONDS * FPS)
            for i in range(n):
                await ws.send(encode_binary_frame(i, frames[(k + i) % len(frames)], ts=i / FPS))
                if i % 4 == 0:
                    sent_pings.append(time.monotonic())
                    await ws.send('{"type": "ping"}')
                await asyncio.sleep(1 / FPS)
            deadline = time.monotonic() + 60
            while len(answers) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            reader.cancel()
            return n, answers

    results = await asyncio.gather(*(stream(k) for k in range(STREAMS)))
    for n, answers in results:
        assert sorted(answers) == list(range(n)), "exactly one answer per frame"
    assert len(pings) == STREAMS * int(SECONDS * FPS / 4)
    assert max(pings) < 2.0, f"ping max {max(pings):.2f} s"
