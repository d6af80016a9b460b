"""``ocr-stream URL SOURCE``: stream a video, camera, image folder or image to the service.

Prints each new line of text once, as it first appears (or, with ``--json``, every
answer as one JSON line) and a progress line on stderr. Exits 1 with a message when
the source cannot be read, the server cannot be reached or it refuses the token.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from serve_app.client import Answer, OCRClientError, OCRStreamClient, stream_url
from serve_app.protocol import ErrorAnswer

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
DEFAULT_FPS = 5.0
TOKEN_ENV = "OCR_STREAM_TOKEN"


class SourceError(Exception):
    """SOURCE is not an image, a folder of images, a video file or a camera."""


def open_source(source: str) -> tuple[Iterator[bytes], float | None]:
    """The encoded frames of ``source`` and its own frame rate, if it has one."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"{source}: no {'/'.join(sorted(IMAGE_SUFFIXES))} images in this folder")
        return (p.read_bytes() for p in files), None
    if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
        return iter([path.read_bytes()]), None
    camera = source.isdigit() and not path.exists()
    capture = cv2.VideoCapture(int(source) if camera else source)
    if not capture.isOpened():
        what = "camera" if camera else "an image, a folder of images or a video file"
        raise SourceError(f"{source}: cannot open it as {what}")
    rate = capture.get(cv2.CAP_PROP_FPS)
    return _jpeg_frames(capture), rate if rate > 0 else None


def _jpeg_frames(capture: cv2.VideoCapture) -> Iterator[bytes]:
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if ok:
                yield jpeg.tobytes()
    finally:
        capture.release()


@dataclass
class Progress:
    live: bool
    sent: int = 0
    read: int = 0
    skipped: int = 0
    errors: int = 0
    sent_at: dict[int, float] = field(default_factory=dict)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    shown_at: float = 0.0

    def count(self, answer: Answer) -> None:
        sent_at = self.sent_at.pop(answer.frame_id, None) if answer.frame_id is not None else None
        if isinstance(answer, ErrorAnswer):
            self.errors += 1
        elif answer.status == "skipped":
            self.skipped += 1
        else:
            self.read += 1
            if sent_at is not None:
                self.latencies_ms.append((time.monotonic() - sent_at) * 1000)

    def line(self) -> str:
        p50 = f"{statistics.median(self.latencies_ms):.0f} ms" if self.latencies_ms else "-"
        return (
            f"sent {self.sent}  read {self.read}  skipped {self.skipped}  errors {self.errors}"
            f"  latency p50 {p50}"
        )

    def show(self, final: bool = False) -> None:
        if final:
            print(f"\r\x1b[K{self.line()}" if self.live else self.line(), file=sys.stderr)
        elif self.live and time.monotonic() - self.shown_at > 0.2:
            self.shown_at = time.monotonic()
            print(f"\r\x1b[K{self.line()}", end="", file=sys.stderr, flush=True)

    def clear(self) -> None:
        if self.live:
            print("\r\x1b[K", end="", file=sys.stderr)


async def _report(client: OCRStreamClient, progress: Progress, as_json: bool) -> None:
    seen: set[str] = set()
    async for answer in client.results():
        progress.count(answer)
        if as_json:
            progress.clear()
            print(answer.encode(), flush=True)
        elif isinstance(answer, ErrorAnswer):
            progress.clear()
            print(f"frame {answer.frame_id}: {answer.code}: {answer.message}", file=sys.stderr)
        else:
            new = [line.text for line in answer.lines or () if line.text not in seen]
            if new:
                seen.update(new)
                progress.clear()
                print("\n".join(new), flush=True)
        progress.show()


async def _stream(args: argparse.Namespace, progress: Progress) -> None:
    frames, own_rate = open_source(args.source)
    period = 1.0 / (args.fps or own_rate or DEFAULT_FPS)
    async with OCRStreamClient(
        args.url, stream_id=args.stream_id, fps=args.fps, token=args.token, max_in_flight=args.max_in_flight
    ) as client:
        reporter = asyncio.create_task(_report(client, progress, args.json))
        try:
            due = time.monotonic()
            while (image := await asyncio.to_thread(next, frames, None)) is not None:
                await asyncio.sleep(due - time.monotonic())
                frame_id = await client.send(image, ts=time.time())
                # Paced from the actual send: a send that waited for a free slot is not
                # followed at once by another (the server would skip it as above the rate).
                due = time.monotonic() + period
                progress.sent_at[frame_id] = time.monotonic()
                progress.sent += 1
        except BaseException:
            reporter.cancel()
            raise
    await reporter


def _fps(value: str) -> float:
    fps = float(value)
    if not fps > 0:
        raise argparse.ArgumentTypeError("must be a number > 0")
    return fps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ocr-stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="ws://HOST:PORT/v1/stream, or the service's http:// base URL")
    parser.add_argument("source", help="a video file, a folder of images, an image, or a camera index")
    parser.add_argument("--fps", type=_fps, help="send (and ask the server to read) at this rate")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"a JWT (default: ${TOKEN_ENV})")
    parser.add_argument("--json", action="store_true", help="print every answer as one JSON line")
    parser.add_argument("--stream-id", help="resume or name this stream (default: a new one)")
    parser.add_argument("--max-in-flight", type=int, default=8, help="unanswered frames at most")
    args = parser.parse_args(argv)
    try:
        stream_url(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    progress = Progress(live=sys.stderr.isatty())
    try:
        asyncio.run(_stream(args, progress))
    except (SourceError, OCRClientError) as exc:
        progress.clear()
        print(f"ocr-stream: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.show(final=True)
        return 130
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    progress.show(final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
