"""The service's metrics reach Prometheus: scrape the node's metrics endpoint after real traffic."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest
import websockets

from serve_app.protocol import encode_binary_frame

pytestmark = pytest.mark.serve


def scrape() -> str:
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    out = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(2) or "") for k, v in labels.items()):
            out += float(match.group(3))
    return out


async def test_frames_answers_reads_and_latency_are_exported(service_url: str, images: Path) -> None:
    before = await asyncio.to_thread(scrape)
    image = (images / "text_rec.jpg").read_bytes()
    async with websockets.connect(service_url.replace("http", "ws") + "/v1/stream?fps=30") as ws:
        for i in range(3):
            await ws.send(encode_binary_frame(i, image, ts=float(i)))
            json.loads(await ws.recv())
    names = {
        "ray_ocr_frames_received_total": {},
        "ray_ocr_answers_total": {"outcome": "ok"},
        "ray_ocr_frames_read_total": {},
        "ray_ocr_answer_latency_ms_count": {"outcome": "ok"},
        "ray_ocr_model_latency_ms_count": {},
    }
    grown: dict[str, float] = {}
    deadline = time.monotonic() + 60  # workers report to the node's agent every few seconds
    while time.monotonic() < deadline:
        after = await asyncio.to_thread(scrape)
        grown = {n: total(after, n, **labels) - total(before, n, **labels) for n, labels in names.items()}
        if all(v > 0 for v in grown.values()):
            break
        await asyncio.sleep(2)
    assert grown["ray_ocr_frames_received_total"] >= 3, grown
    assert all(v > 0 for v in grown.values()), f"not exported (or not grown): {grown}"
