"""``ocr-stream URL SOURCE...``: read images with the service, or stream a video or camera to it.

Images (files, folders of them) are documents: each is read once through ``POST /v1/ocr``
and its text printed with its file name. A video file or a camera is streamed over
``/v1/stream`` and its text printed as text events (appeared, changed, gone) or, with
``--results``, each text once as it first appears; a progress line goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ocr_client.client import Answer, OCRClientError, OCRStreamClient, ocr_url, stream_url
from ocr_client.documents import read_image
from ocr_client.protocol import ErrorAnswer, ErrorCode, TextEvent
from ocr_client.sources import SourceError, documents, open_video

DEFAULT_FPS = 5.0
TOKEN_ENV = "OCR_STREAM_TOKEN"
REFRESH_S = {True: 0.25, False: 5.0}  # progress line: redrawn on a terminal, else one line every 5 s
FPS_WINDOW_S = 5.0


# --- documents ----------------------------------------------------------------


def read_documents(args: argparse.Namespace, files: list[Path]) -> int:
    """Read every image once, one at a time; 1 if any failed (named on stderr)."""
    url = ocr_url(args.url)
    failed: list[str] = []
    blank = 0
    for path in files:
        try:
            answer = read_image(url, path.read_bytes(), token=args.token)
        except (OSError, TimeoutError) as exc:  # the file, or no answer in time
            answer = ErrorAnswer(
                frame_id=None, code=ErrorCode.INTERNAL, message=str(exc) or type(exc).__name__
            )
        if args.json:
            record = {"file": str(path), **answer.model_dump(mode="json", exclude_none=True)}
            print(json.dumps(record, ensure_ascii=False), flush=True)
        if isinstance(answer, ErrorAnswer) or answer.status != "ok":
            why = f"{answer.code}: {answer.message}" if isinstance(answer, ErrorAnswer) else answer.reason
            print(f"ocr-stream: {path}: not read ({why})", file=sys.stderr, flush=True)
            failed.append(str(path))
            continue
        lines = [line.text for line in answer.lines or ()]
        blank += not lines
        if not args.json:
            print("\n".join(f"{path}: {text}" for text in lines) or f"{path}:", flush=True)
    print(
        f"{len(files)} image{'s' * (len(files) != 1)}: {len(files) - len(failed) - blank} with text,"
        f" {blank} without, {len(failed)} failed",
        file=sys.stderr,
    )
    if failed:
        print(f"ocr-stream: not read: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


# --- video and cameras ----------------------------------------------------------


@dataclass
class Progress:
    live: bool  # stderr is a terminal: one line redrawn in place
    sent: int = 0
    read: int = 0
    skipped: int = 0
    errors: int = 0
    events: int | None = None  # counted in events mode
    sent_at: dict[int, float] = field(default_factory=dict)
    send_times: deque[float] = field(default_factory=deque)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))

    def on_send(self, frame_id: int) -> None:
        now = time.monotonic()
        self.sent += 1
        self.sent_at[frame_id] = now
        self.send_times.append(now)

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
        now = time.monotonic()
        while self.send_times and now - self.send_times[0] > FPS_WINDOW_S:
            self.send_times.popleft()
        sends = self.send_times
        fps = (len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 1 and sends[-1] > sends[0] else 0.0
        p50 = f"{statistics.median(self.latencies_ms):.0f} ms" if self.latencies_ms else "-"
        events = f"  events {self.events}" if self.events is not None else ""
        return (
            f"sent {self.sent}  answered {self.read + self.skipped + self.errors}  read {self.read}"
            f"  skipped {self.skipped}  errors {self.errors}{events}  {fps:.1f} fps  latency p50 {p50}"
        )

    def show(self, final: bool = False) -> None:
        if self.live:
            print(f"\r\x1b[K{self.line()}", end="\n" if final else "", file=sys.stderr, flush=True)
        else:
            print(self.line(), file=sys.stderr, flush=True)

    def clear(self) -> None:
        """Before printing a line of output: the live progress line is redrawn after it."""
        if self.live:
            print("\r\x1b[K", end="", file=sys.stderr)

    async def refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S[self.live])
            self.show()


def format_event(event: TextEvent) -> str:
    """``+ [7] SN-48213 (0.97) @frame 120``, ``~ [7] SN-48213 -> SN-48214 ...``, ``- [7] SN-48214 ...``."""
    score = f" ({event.score:.2f})" if event.score is not None else ""
    if event.event == "appeared":
        return f"+ [{event.track_id}] {event.text}{score} @frame {event.frame_id}"
    if event.event == "changed":
        return f"~ [{event.track_id}] {event.previous} -> {event.text}{score} @frame {event.frame_id}"
    return f"- [{event.track_id}] {event.text} @frame {event.frame_id}"


def _output(progress: Progress, text: str) -> None:
    progress.clear()
    print(text, flush=True)


async def _report(client: OCRStreamClient, progress: Progress, args: argparse.Namespace) -> None:
    """Per-frame answers: counted; printed with ``--json``, or each text once with ``--results``."""
    seen: set[str] = set()
    async for answer in client.results():
        progress.count(answer)
        if args.json:
            _output(progress, answer.encode())
        elif isinstance(answer, ErrorAnswer):
            progress.clear()
            print(f"frame {answer.frame_id}: {answer.code}: {answer.message}", file=sys.stderr)
        elif not args.events:
            for line in answer.lines or ():
                if line.text not in seen:  # a text prints when it first appears, not on every result
                    seen.add(line.text)
                    _output(progress, line.text)


async def _report_events(client: OCRStreamClient, progress: Progress, as_json: bool) -> None:
    async for event in client.events():
        progress.events = (progress.events or 0) + 1
        _output(progress, event.encode() if as_json else format_event(event))


async def stream(args: argparse.Namespace, progress: Progress) -> None:
    frames, own_rate = open_video(args.source[0])
    period = 1.0 / (args.fps or own_rate or DEFAULT_FPS)
    async with OCRStreamClient(
        args.url,
        stream_id=args.stream_id,
        fps=args.fps,
        token=args.token,
        max_in_flight=args.max_in_flight,
        events=args.events,
    ) as client:
        refresher = asyncio.create_task(progress.refresh())
        reporters = [asyncio.create_task(_report(client, progress, args))]
        if args.events:
            reporters.append(asyncio.create_task(_report_events(client, progress, args.json)))
        try:
            due = time.monotonic()
            while (image := await asyncio.to_thread(next, frames, None)) is not None:
                await asyncio.sleep(due - time.monotonic())
                frame_id = await client.send(image, ts=time.time())
                # Paced from the actual send: a send that waited for a free slot is not
                # followed at once by another (the server would skip it as above the rate).
                due = time.monotonic() + period
                progress.on_send(frame_id)
        except BaseException:
            for task in (*reporters, refresher):
                task.cancel()
            raise
    try:
        await asyncio.gather(*reporters)  # they end once the client is closed
    finally:
        refresher.cancel()


# --- command line ---------------------------------------------------------------


def _fps(value: str) -> float:
    fps = float(value)
    if not fps > 0:
        raise argparse.ArgumentTypeError("must be a number > 0")
    return fps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ocr-stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the service's http:// base URL, or ws://HOST:PORT/v1/stream")
    parser.add_argument(
        "source",
        nargs="+",
        help="images or folders of images (each read once), or one video file, camera index or stream URL",
    )
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"a JWT (default: ${TOKEN_ENV})")
    parser.add_argument("--json", action="store_true", help="print every answer (and event) as one JSON line")
    video = parser.add_argument_group("video and cameras")
    video.add_argument(
        "--events",
        action=argparse.BooleanOptionalAction,
        help="print text events (default, except with --json); --no-events: each text once instead",
    )
    video.add_argument("--results", dest="events", action="store_false", help="the same as --no-events")
    video.add_argument("--fps", type=_fps, help="send (and ask the server to read) at this rate")
    video.add_argument("--stream-id", help="resume or name this stream (default: a new one)")
    video.add_argument("--max-in-flight", type=int, default=8, help="unanswered frames at most")
    args = parser.parse_args(argv)
    try:
        stream_url(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    if args.events is None:
        args.events = not args.json
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = Progress(live=sys.stderr.isatty(), events=0 if args.events else None)
    try:
        files = documents(args.source)
        if files is not None:
            return read_documents(args, files)
        asyncio.run(stream(args, progress))
        progress.show(final=True)
        return 0
    except (SourceError, OCRClientError) as exc:
        progress.clear()
        print(f"ocr-stream: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if progress.sent:
            progress.show(final=True)
        return 130
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
