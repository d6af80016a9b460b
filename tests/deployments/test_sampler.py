"""Sampling on the real path: a changed label is read at once, an unchanged one answered as read,
and a change inside one line of a label that moved is read line by line."""

from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np
import pytest
import websockets

from serve_app.protocol import encode_binary_frame

pytestmark = pytest.mark.serve


def label(lot: str, quality: int = 90, noise_seed: int | None = None, dx: int = 0, dy: int = 0) -> bytes:
    """A label card on a plain table; ``dx``, ``dy``: the card moved (px)."""
    image = np.full((480, 640, 3), 235, np.uint8)
    cv2.rectangle(image, (60 + dx, 110 + dy), (580 + dx, 370 + dy), (250, 250, 250), -1)
    cv2.putText(image, "ACME COFFEE", (90 + dx, 190 + dy), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (20, 20, 20), 3)
    cv2.putText(image, f"LOT {lot}", (90 + dx, 290 + dy), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (20, 20, 20), 3)
    if noise_seed is not None:  # what a camera does to a still scene
        noise = np.random.default_rng(noise_seed).normal(0, 3, image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


async def exchange(ws: Any, frame_id: int, image: bytes, ts: float) -> dict:
    await ws.send(encode_binary_frame(frame_id, image, ts=ts))
    return json.loads(await ws.recv())


def joined(answer: dict) -> str:
    return " ".join(line["text"] for line in answer["lines"]).replace(" ", "")


async def test_changed_label_read_unchanged_answered_duplicate(ws_url: str) -> None:
    async with websockets.connect(ws_url + "?stream_id=label-cam&fps=5", max_size=None) as ws:
        first = await exchange(ws, 1, label("48213"), 0.0)
        assert first["status"] == "ok" and "LOT48213" in joined(first)
        # the same label, re-encoded with sensor noise, a second later: not read again
        same = await exchange(ws, 2, label("48213", quality=75, noise_seed=1), 1.0)
        assert (same["status"], same["reason"], same["ref_frame_id"]) == ("skipped", "duplicate", 1)
        assert same["lines"] == first["lines"]
        # one digit changes: read at once
        changed = await exchange(ws, 3, label("48218"), 2.0)
        assert changed["status"] == "ok" and "LOT48218" in joined(changed)
        # another change right after (1/20 s): read at once too, the rate caps only steady change
        again = await exchange(ws, 4, label("48219"), 2.05)
        assert again["status"] == "ok" and "LOT48219" in joined(again)


async def test_a_digit_changed_on_a_moving_label_is_read_line_by_line(ws_url: str) -> None:
    """Only the changed line is read again: the other keeps the text and score of its last read,
    its box moved with the card."""
    async with websockets.connect(ws_url + "?stream_id=moving-label&fps=5", max_size=None) as ws:
        first = await exchange(ws, 1, label("48213"), 0.0)
        assert first["status"] == "ok" and "LOT48213" in joined(first)
        changed = await exchange(ws, 2, label("48113", noise_seed=2, dx=3, dy=-2), 1.0)
        assert changed["status"] == "ok" and "LOT48113" in joined(changed)
        (name_before,) = [line for line in first["lines"] if "ACME" in line["text"]]
        (name_after,) = [line for line in changed["lines"] if "ACME" in line["text"]]
        assert (name_after["text"], name_after["score"]) == (name_before["text"], name_before["score"])
        moved = np.float32(name_after["box"]) - np.float32(name_before["box"])
        assert np.abs(moved - (3, -2)).max() <= 1.5, f"the kept line's box moved by {moved.tolist()}"
        same = await exchange(ws, 3, label("48113", quality=80, noise_seed=3, dx=2, dy=-2), 1.5)
        assert (same["reason"], same["ref_frame_id"], same["lines"]) == ("duplicate", 2, changed["lines"])
