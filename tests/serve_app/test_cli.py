"""``ocr-stream`` end to end: the real application (real PaddleOCR) under Ray Serve."""

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

from serve_app.protocol import ResultAnswer, parse_server_message

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
        [sys.executable, "-m", "serve_app.cli", *args],
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
def test_streams_a_folder_of_images(service_url: str, images: Path) -> None:
    # One frame in flight at a time: no image is superseded by the next one while it waits.
    result = run_cli(service_url, str(images), "--fps", "2", "--max-in-flight", "1")
    assert result.returncode == 0, result.stderr
    assert "韩国小馆" in result.stdout
    assert "中国网络空间安全" in result.stdout
    assert "sent 7 " in result.stderr  # the progress line


@pytest.mark.serve
def test_streams_a_video_and_prints_its_text_once(service_url: str, label_video: Path) -> None:
    result = run_cli(f"{service_url.replace('http://', 'ws://')}/v1/stream", str(label_video), "--fps", "5")
    assert result.returncode == 0, result.stderr
    assert squash(VIDEO_TEXT) in squash(result.stdout)
    assert squash(result.stdout).count("4821") == 1, result.stdout


@pytest.mark.serve
def test_json_prints_one_answer_per_frame(service_url: str, label_video: Path) -> None:
    result = run_cli(service_url, str(label_video), "--json", "--fps", "10", "--stream-id", "cli-json")
    assert result.returncode == 0, result.stderr
    answers = [parse_server_message(line) for line in result.stdout.splitlines()]
    assert sorted(answer.frame_id for answer in answers) == list(range(20))  # type: ignore[union-attr]
    read = [a for a in answers if isinstance(a, ResultAnswer) and a.status == "ok"]
    assert any(squash(VIDEO_TEXT) in squash(" ".join(line.text for line in a.lines or ())) for a in read)


def test_an_unreachable_server_exits_with_a_message(label_video: Path) -> None:
    result = run_cli(f"http://127.0.0.1:{free_port()}", str(label_video), timeout=60)
    assert result.returncode == 1
    assert "ocr-stream: cannot reach ws://127.0.0.1:" in result.stderr


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
            *[sys.executable, "-m", "serve_app.cli", f"ws://127.0.0.1:{port}", str(label_video)],
            *["--token", "expired"],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        _, stderr = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 1
    assert "refused the connection (HTTP 401: invalid token), check the token" in stderr.decode()
