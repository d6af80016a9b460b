"""Sampling on the real path: a changed label is read at once, an unchanged one answered as read."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import websockets

from serve_app.protocol import encode_binary_frame

pytestmark = pytest.mark.serve


def label(lot: str, quality: int = 90, noise_seed: int | None = None) -> bytes:
    image = np.full((480, 640, 3), 235, np.uint8)
    cv2.rectangle(image, (60, 110), (580, 370), (250, 250, 250), -1)
    cv2.putText(image, "ACME COFFEE", (90, 190), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (20, 20, 20), 3)
    cv2.putText(image, f"LOT {lot}", (90, 290), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (20, 20, 20), 3)
    if noise_seed is not None:  # what a camera does to a still scene
        noise = np.random.default_rng(noise_seed).normal(0, 3, image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def joined(answer: dict) -> str:
    return " ".join(line["text"] for line in answer["lines"]).replace(" ", "")


async def test_changed_label_read_unchanged_answered_duplicate(ws_url: str) -> None:
    async with websockets.connect(ws_url + "?stream_id=label-cam&fps=5", max_size=None) as ws:

        async def send(frame_id: int, image: bytes, ts: float) -> dict:
            await ws.send(encode_binary_frame(frame_id, image, ts=ts))
            return json.loads(await ws.recv())

        first = await send(1, label("48213"), 0.0)
        assert first["status"] == "ok" and "LOT48213" in joined(first)
        # the same label, re-encoded with sensor noise, a second later: not read again
        same = await send(2, label("48213", quality=75, noise_seed=1), 1.0)
        assert (same["status"], same["reason"], same["ref_frame_id"]) == ("skipped", "duplicate", 1)
        assert same["lines"] == first["lines"]
        # one digit changes: read at once
        changed = await send(3, label("48218"), 2.0)
        assert changed["status"] == "ok" and "LOT48218" in joined(changed)
        # another change right after (1/20 s): read at once too, the rate caps only steady change
        again = await send(4, label("48219"), 2.05)
        assert again["status"] == "ok" and "LOT48219" in joined(again)
