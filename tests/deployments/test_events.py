"""Text events end to end: a real WebSocket, the real graph, the real model.

A 30 fps camera looks at a label: its lot number is read, confirmed and announced
(``appeared``), changes (``changed``, with the old text), and the label is taken away
(``gone`` once it has not been seen for ``gone_after_s`` of stream time). Every frame still
gets exactly one answer, and a still label costs no steady reads.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
import websockets

from ocr_client.protocol import encode_binary_frame
from tests.deployments.test_sampler import label

pytestmark = pytest.mark.serve

FPS = 30.0


def blank(seed: int) -> bytes:
    import cv2
    import numpy as np

    image = np.full((480, 640, 3), 235, np.uint8)
    noise = np.random.default_rng(seed).normal(0, 3, image.shape)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def compact(text: str) -> str:
    return text.replace(" ", "")


async def test_events_appear_change_and_go_with_one_answer_per_frame(ws_url: str) -> None:
    # 3 s of one lot, 3 s of the next, 2 s of an empty table: stream time, sent in real time.
    scenes = [label("48213", noise_seed=i) for i in range(4)] * 23
    scenes += [label("48218", noise_seed=10 + i) for i in range(4)] * 23
    scenes += [blank(i) for i in range(4)] * 15
    answers: dict[int, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    async with websockets.connect(
        ws_url + "?stream_id=events-e2e&events=1", max_size=None, compression=None
    ) as ws:

        async def receive() -> None:
            async for text in ws:
                message = json.loads(text)
                if message["type"] == "text":
                    events.append(message)
                else:
                    assert message["frame_id"] not in answers, "exactly one answer per frame"
                    answers[message["frame_id"]] = message
                if len(answers) == len(scenes):
                    return

        reader = asyncio.create_task(receive())
        for i, image in enumerate(scenes):
            await ws.send(encode_binary_frame(i, image, ts=i / FPS))
            await asyncio.sleep(1 / FPS)
        await asyncio.wait_for(reader, 60)

    assert sorted(answers) == list(range(len(scenes)))
    lot = [e for e in events if "LOT" in compact(e["text"])]
    kinds = [(e["event"], compact(e["text"]), compact(e.get("previous") or "")) for e in lot]
    # Each answer in runs ("ok x1", "duplicate x9", ...): what a failure needs to be understood.
    outcomes = [a.get("reason") or a.get("status") or a.get("code") for _, a in sorted(answers.items())]
    runs = [f"{k} x{len(list(g))}" for k, g in itertools.groupby(outcomes)]
    assert kinds and kinds[0][:2] == ("appeared", "LOT48213"), (kinds, runs)
    assert ("changed", "LOT48218", "LOT48213") in kinds, kinds
    assert kinds[-1][:2] == ("gone", "LOT48218"), kinds
    assert len(kinds) == 3, f"no flicker, no extra event: {kinds}"
    track = lot[0]["track_id"]
    assert all(e["track_id"] == track for e in lot), "one line, one track"
    appeared, changed, gone = lot
    # Within a few frames: two agreeing reads, each ~10 frames of model time here (the delay
    # goal is benchmarked in docs/events.md; the bound here leaves room for a loaded CI box).
    assert 0 <= appeared["frame_id"] - appeared["first_frame_id"] <= 45
    assert changed["first_frame_id"] >= 92 and changed["frame_id"] - 92 <= 45
    assert gone["last_frame_id"] < 184 <= gone["frame_id"]
    assert appeared["box"] and appeared["score"] > 0.5
    reads = [i for i, a in answers.items() if a.get("status") == "ok"]
    assert len(reads) <= 20, f"a still label costs no steady reads: {len(reads)} reads of {len(scenes)}"
