"""The browser page end to end: Chromium with a fake camera (a Y4M file) against the real service:
the text read per frame and the text events (texts in view, event log)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "artifacts" / "browser.png"
TEXT = "LOT 4821"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",  # grants the camera without a prompt
]

if not CHROMIUM.exists():
    pytest.skip(f"Chromium is not at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
async_api = pytest.importorskip("playwright.async_api", reason="needs Playwright (pip install playwright)")


def write_y4m(path: Path, text: str, frames: int = 10) -> None:
    """A 640x480, 10 fps, 4:2:0 Y4M video of dark ``text`` on a light card."""
    luma = np.full((480, 640), 235, np.uint8)
    cv2.putText(luma, text, (40, 270), cv2.FONT_HERSHEY_SIMPLEX, 3.0, 16, 8)
    chroma = np.full((240, 320), 128, np.uint8).tobytes()  # no colour
    with path.open("wb") as out:
        out.write(b"YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg\n")
        for _ in range(frames):
            out.write(b"FRAME\n" + luma.tobytes() + chroma + chroma)


async def wait_for_text(page: async_api.Page, selector: str, text: str, timeout_ms: float) -> None:
    """Until an element of ``selector`` shows ``text`` (O and 0 look alike to OCR: compared as one)."""
    await page.wait_for_function(
        "([selector, want]) => [...document.querySelectorAll(selector)].some((element) =>"
        " element.textContent.replace(/\\s+/g, '').toUpperCase().replaceAll('0', 'O').includes(want))",
        arg=[selector, re.sub(r"\s+", "", text).upper().replace("0", "O")],
        timeout=timeout_ms,
    )


@pytest.mark.serve
async def test_the_page_reads_a_camera(service_url: str, tmp_path: Path) -> None:
    camera = tmp_path / "label.y4m"
    write_y4m(camera, TEXT)
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={camera}"],
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            page_errors: list[str] = []
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            await page.goto(f"{service_url}/")
            await page.click("#start")
            await page.wait_for_function("document.getElementById('video').readyState >= 2")
            await page.click("#connect")
            await wait_for_text(page, "#text", TEXT, timeout_ms=120_000)
            assert await page.text_content("#conn") == "connected"
            await page.wait_for_function("Number(document.getElementById('stat-read').textContent) >= 1")
            # Text events: the card's text is in the list of texts in view (one line or two: "LOT",
            # "4821"), and its appearance in the log.
            for word in TEXT.split():
                await wait_for_text(page, "#tracks .text", word, timeout_ms=60_000)
                await wait_for_text(page, "#events li[data-event='appeared']", word, timeout_ms=5_000)
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await page.screenshot(path=SCREENSHOT, full_page=True)
            assert page_errors == []
        finally:
            await browser.close()
