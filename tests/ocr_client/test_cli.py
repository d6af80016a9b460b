"""``ocr-stream`` as a subprocess: against the real application (real PaddleOCR), or a stand-in server."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from http import HTTPStatus
from pathlib import Path

import cv2
import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from ocr_client.protocol import Line, PongAnswer, ResultAnswer, TextEvent, parse_binary, parse_server_message

ROOT = Path(__file__).resolve().parents[2]
VIDEO_TEXT = "LOT 4821"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def squash(text: str) -> str:
    """Upper case without spaces; O and 0 look alike to OCR, so they compare as one."""
    return re.sub(r"\s+", "", text).upper().replace("0", "O")


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocr_client.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def label_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s, 10 fps MJPEG video of a white card reading ``LOT 4821``."""
    path = tmp_path_factory.mktemp("video") / "label.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (640, 480))
    assert writer.isOpened()
    for i in range(20):
        frame = np.full((480, 640, 3), 255, np.uint8)
        cv2.putText(frame, VIDEO_TEXT, (40 + i % 3, 270), cv2.FONT_HERSHEY_SIMPLEX, 3.0, (0, 0, 0), 8)
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.serve
def test_reads_every_image_of_a_folder_with_its_file_name(service_url: str, images: Path) -> None:
    files = sorted(p for p in images.iterdir() if p.suffix in (".jpg", ".png"))
    result = run_cli(service_url, str(images))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"{images / 'text_rec.jpg'}: 韩国小馆" in lines
    assert any(line.startswith(f"{images / 'ch_en_num.jpg'}: ") and "正品促销" in line for line in lines)
    assert f"{images / 'empty_black.jpg'}:" in lines  # read, no text
    # Every image read once, in name order (a file's lines together).
    named = [next(str(f) for f in files if line.startswith(f"{f}:")) for line in lines]
    assert list(dict.fromkeys(named)) == [str(f) for f in files]
    assert f"{len(files)} images: " in result.stderr and " 0 failed" in result.stderr


@pytest.mark.serve
def test_a_list_of_files_names_the_images_not_read(service_url: str, images: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a JPEG")
    missing = tmp_path / "missing.png"
    result = run_cli(service_url, str(broken), str(images / "text_rec.jpg"), str(missing))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{images / 'text_rec.jpg'}: 韩国小馆"]
    assert f"{broken}: not read (bad_image: " in result.stderr
    assert f"{missing}: not read (internal: " in result.stderr
    assert f"ocr-stream: not read: {broken}, {missing}" in result.stderr


@pytest.mark.serve
def test_a_video_prints_text_events_by_default(service_url: str, label_video: Path) -> None:
    result = run_cli(service_url, str(label_video), "--fps", "5")
    assert result.returncode == 0, result.stderr
    # The card never changes: each of its lines appears once (the model may read it as one line or two).
    event_line = re.compile(r"\+ \[(\d+)\] (.+) \(\d\.\d\d\) @frame \d+")
    appeared = [event_line.fullmatch(line) for line in result.stdout.splitlines()]
    assert all(appeared), result.stdout
    texts = [match[2] for match in appeared if match]
    assert all(any(squash(word) in squash(text) for text in texts) for word in VIDEO_TEXT.split()), texts
    assert len({match[1] for match in appeared if match}) == len(texts)  # one track each
    assert re.search(rf"sent 20  answered 20  read \d+ .* events {len(texts)} ", result.stderr), result.stderr


@pytest.mark.serve
def test_results_prints_a_videos_text_once(service_url: str, label_video: Path) -> None:
    ws_url = f"{service_url.replace('http://', 'ws://')}/v1/stream"
    result = run_cli(ws_url, str(label_video), "--fps", "5", "--results")
    assert result.returncode == 0, result.stderr
    assert squash(VIDEO_TEXT) in squash(result.stdout)
    assert squash(result.stdout).count("4821") == 1, result.stdout
    assert "sent 20  answered 20  read " in result.stderr  # the progress line


@pytest.mark.serve
def test_json_prints_one_answer_per_frame(service_url: str, label_video: Path) -> None:
    result = run_cli(service_url, str(label_video), "--json", "--fps", "10", "--stream-id", "cli-json")
    assert result.returncode == 0, result.stderr
    answers = [parse_server_message(line) for line in result.stdout.splitlines()]
    assert sorted(answer.frame_id for answer in answers) == list(range(20))  # type: ignore[union-attr]
    read = [a for a in answers if isinstance(a, ResultAnswer) and a.status == "ok"]
    assert any(squash(VIDEO_TEXT) in squash(" ".join(line.text for line in a.lines or ())) for a in read)


async def test_events_print_one_line_each(label_video: Path) -> None:
    """Against a stand-in server that sends the contract's three events once the stream has asked."""
    events = [
        TextEvent(event="appeared", track_id=7, text="SN-48213", score=0.97, frame_id=2, first_frame_id=0),
        TextEvent(event="changed", track_id=7, text="SN-48214", previous="SN-48213", score=0.95, frame_id=9),
        TextEvent(event="gone", track_id=7, text="SN-48214", frame_id=19, last_frame_id=15),
    ]
    asked: list[str] = []

    async def with_events(ws: ServerConnection) -> None:
        assert ws.request is not None
        asked.append(ws.request.path)
        async for message in ws:
            if isinstance(message, str):  # the client's closing ping
                await ws.send(PongAnswer(ts=0.0).encode())
                continue
            frame = parse_binary(message)
            line = Line(text="SN-48213", score=0.9, box=[[0, 0], [1, 0], [1, 1], [0, 1]])
            await ws.send(ResultAnswer(frame_id=frame.frame_id, status="ok", lines=[line]).encode())
            for event in events:
                if event.frame_id == frame.frame_id:
                    await ws.send(event.encode())

    port = free_port()
    async with serve(with_events, "127.0.0.1", port):
        cli = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "ocr_client.cli", f"http://127.0.0.1:{port}", str(label_video)],
            *["--fps", "50"],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        stdout, stderr = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0, stderr.decode()
    assert "events=1" in asked[0]
    assert stdout.decode().splitlines() == [
        "+ [7] SN-48213 (0.97) @frame 2",
        "~ [7] SN-48213 -> SN-48214 (0.95) @frame 9",
        "- [7] SN-48214 @frame 19",
    ]
    assert "sent 20  answered 20  read 20  skipped 0  errors 0  events 3" in stderr.decode()


def test_an_unreachable_server_exits_with_a_message(label_video: Path, images: Path) -> None:
    port = free_port()
    result = run_cli(f"http://127.0.0.1:{port}", str(label_video), timeout=60)
    assert result.returncode == 1
    assert f"ocr-stream: cannot reach ws://127.0.0.1:{port}/v1/stream" in result.stderr
    result = run_cli(f"ws://127.0.0.1:{port}/v1/stream", str(images), timeout=60)
    assert result.returncode == 1
    assert f"ocr-stream: cannot reach http://127.0.0.1:{port}/v1/ocr" in result.stderr


def test_an_unreadable_source_exits_with_a_message(tmp_path: Path) -> None:
    result = run_cli("ws://127.0.0.1:9/v1/stream", str(tmp_path / "missing.mp4"), timeout=60)
    assert result.returncode == 1
    assert "missing.mp4: cannot open it" in result.stderr


async def test_a_refused_token_exits_with_a_message(label_video: Path) -> None:
    """Against a stand-in server that answers the handshake 401 (the real one runs without auth here)."""

    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid token\n")

    async def never_called(ws: ServerConnection) -> None:
        raise AssertionError("the handshake should have been refused")

    port = free_port()
    async with serve(never_called, "127.0.0.1", port, process_request=refuse):
        cli = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "ocr_client.cli", f"ws://127.0.0.1:{port}", str(label_video)],
            *["--token", "expired"],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        _, stderr = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 1
    assert "refused the connection (HTTP 401: invalid token), check the token" in stderr.decode()
