"""read_image (``POST /v1/ocr``) against a stand-in HTTP server (``http.server`` in a thread), no Ray."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ocr_client.client import AuthRejected, ConnectionRefused, ocr_url
from ocr_client.documents import read_image
from ocr_client.protocol import ErrorAnswer, Line, ResultAnswer

from .test_client import free_port

# What the stand-in answers, by the image sent: (HTTP status, body).
REPLIES = {
    b"card": (200, ResultAnswer(frame_id=0, status="ok", lines=[Line(text="LOT 4821", score=0.9, box=[])])),
    b"garbage": (400, ErrorAnswer(frame_id=0, code="bad_image", message="image bytes could not be decoded")),
    b"bad-token": (401, '{"detail": "invalid token"}'),
    b"proxy-down": (502, "Bad Gateway"),
}


class StandIn(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        assert self.path == "/v1/ocr"
        assert self.headers["Authorization"] == "Bearer t"
        status, reply = REPLIES[self.rfile.read(int(self.headers["Content-Length"]))]
        body = (reply if isinstance(reply, str) else reply.encode()).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ocr_url(f"ws://127.0.0.1:{server.server_address[1]}/v1/stream")
    server.shutdown()


def test_a_read_image_is_its_result(url: str) -> None:
    answer = read_image(url, b"card", token="t")
    assert isinstance(answer, ResultAnswer) and answer.lines is not None
    assert [line.text for line in answer.lines] == ["LOT 4821"]


def test_an_error_answer_is_returned(url: str) -> None:
    answer = read_image(url, b"garbage", token="t")
    assert isinstance(answer, ErrorAnswer)
    assert (answer.code, answer.message) == ("bad_image", "image bytes could not be decoded")


def test_an_answer_that_is_not_the_protocols_is_an_internal_error(url: str) -> None:
    answer = read_image(url, b"proxy-down", token="t")
    assert isinstance(answer, ErrorAnswer)
    assert (answer.code, answer.message) == ("internal", "HTTP 502: Bad Gateway")


def test_a_refused_token_raises(url: str) -> None:
    with pytest.raises(AuthRejected, match=r"HTTP 401: \{\"detail\": \"invalid token\"\}\), check the token"):
        read_image(url, b"bad-token", token="t")


def test_an_unreachable_server_raises() -> None:
    with pytest.raises(ConnectionRefused, match=re.escape("cannot reach http://127.0.0.1:")):
        read_image(f"http://127.0.0.1:{free_port()}/v1/ocr", b"card")
