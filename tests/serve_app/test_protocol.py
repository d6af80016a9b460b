from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys

import pytest

from serve_app.protocol import (
    MAX_FRAME_ID,
    ConfigAnswer,
    ConfigRequest,
    ErrorAnswer,
    ErrorCode,
    Frame,
    Line,
    PingRequest,
    PongAnswer,
    ProtocolError,
    ResultAnswer,
    SkipReason,
    Timing,
    encode_binary_frame,
    encode_text_frame,
    parse_binary,
    parse_fps,
    parse_server_message,
    parse_text,
    validate_stream_id,
)

IMG = b"\xff\xd8fake-jpeg-bytes"


def binary(header: bytes, image: bytes = IMG, n: int | None = None) -> bytes:
    return struct.pack(">I", len(header) if n is None else n) + header + image


def error_of(fn, *args) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value


def test_binary_frame_roundtrip() -> None:
    frame = parse_binary(encode_binary_frame(17, IMG, ts=12.5))
    assert frame == Frame(frame_id=17, image=IMG, ts=12.5)


def test_binary_frame_without_ts() -> None:
    assert parse_binary(encode_binary_frame(0, IMG)).ts is None


def test_text_frame_roundtrip() -> None:
    assert parse_text(encode_text_frame(5, IMG, ts=1.0)) == Frame(5, IMG, 1.0)


def test_text_frame_without_type_is_a_frame() -> None:
    msg = json.dumps({"frame_id": 3, "image": base64.b64encode(IMG).decode()})
    assert parse_text(msg) == Frame(3, IMG, None)


def test_ping_and_config() -> None:
    assert parse_text('{"type": "ping"}') == PingRequest()
    assert parse_text('{"type": "config", "fps": 2.5}') == ConfigRequest(2.5)


@pytest.mark.parametrize("fps", [0, -1, "x", None, True, float("inf")])
def test_config_rejects_bad_fps(fps: object) -> None:
    assert error_of(parse_text, json.dumps({"type": "config", "fps": fps})).code is ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize("value", ["2", 2, 0.5])
def test_parse_fps_accepts_numbers_and_query_strings(value: object) -> None:
    assert parse_fps(value) == float(value)


@pytest.mark.parametrize("n", [0, 1000, 2**32 - 1])
def test_header_length_lies(n: int) -> None:
    err = error_of(parse_binary, binary(b'{"frame_id": 1}', n=n))
    assert err.code is ErrorCode.BAD_MESSAGE and err.frame_id is None


def test_binary_shorter_than_length_prefix() -> None:
    assert error_of(parse_binary, b"\x00\x01").code is ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize("frame_id", [-1, MAX_FRAME_ID + 1, 1.5, "7", True, None, [1]])
def test_bad_frame_ids(frame_id: object) -> None:
    err = error_of(parse_binary, binary(json.dumps({"frame_id": frame_id}).encode()))
    assert err.code is ErrorCode.BAD_MESSAGE and err.frame_id is None


def test_largest_frame_id_accepted() -> None:
    assert parse_binary(encode_binary_frame(MAX_FRAME_ID, IMG)).frame_id == MAX_FRAME_ID


def test_header_not_json_or_not_object() -> None:
    assert error_of(parse_binary, binary(b"\xff\xfe")).code is ErrorCode.BAD_MESSAGE
    assert error_of(parse_binary, binary(b"[1, 2]")).code is ErrorCode.BAD_MESSAGE


def test_bad_ts_keeps_frame_id() -> None:
    err = error_of(parse_binary, binary(b'{"frame_id": 9, "ts": "noon"}'))
    assert (err.code, err.frame_id) == (ErrorCode.BAD_MESSAGE, 9)


def test_empty_image_is_bad_image_with_frame_id() -> None:
    err = error_of(parse_binary, binary(b'{"frame_id": 4}', image=b""))
    assert (err.code, err.frame_id) == (ErrorCode.BAD_IMAGE, 4)


def test_bad_base64_keeps_frame_id() -> None:
    err = error_of(parse_text, json.dumps({"type": "frame", "frame_id": 8, "image": "not*base64!"}))
    assert (err.code, err.frame_id) == (ErrorCode.BAD_MESSAGE, 8)


def test_image_not_a_string() -> None:
    err = error_of(parse_text, json.dumps({"type": "frame", "frame_id": 8, "image": 12}))
    assert (err.code, err.frame_id) == (ErrorCode.BAD_MESSAGE, 8)


@pytest.mark.parametrize("text", ["", "{", "null", '"frame"', '{"type": "dance", "frame_id": 2}', "{}"])
def test_unparseable_text(text: str) -> None:
    assert error_of(parse_text, text).code is ErrorCode.BAD_MESSAGE


def test_unknown_type_reports_readable_frame_id() -> None:
    assert error_of(parse_text, '{"type": "dance", "frame_id": 2}').frame_id == 2


def test_deeply_nested_json_is_bad_message() -> None:
    assert error_of(parse_text, "[" * 100_000 + "]" * 100_000).code is ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize("stream_id", ["cam-1", "a", "x" * 128, "line_3.cam:7"])
def test_valid_stream_ids(stream_id: str) -> None:
    assert validate_stream_id(stream_id) == stream_id


@pytest.mark.parametrize("stream_id", ["", "x" * 129, "kamera-ü", "摄像头", "a b", "a/b", "cam\n1", "cam\n"])
def test_invalid_stream_ids(stream_id: str) -> None:
    assert error_of(validate_stream_id, stream_id).code is ErrorCode.BAD_MESSAGE


def test_result_encoding_matches_protocol_example() -> None:
    answer = ResultAnswer(
        frame_id=17,
        status="ok",
        lines=[Line(text="INVOICE 2026", score=0.98, box=[[10, 12], [200, 12], [200, 40], [10, 40]])],
        timing=Timing(total_ms=41.2, ocr_ms=30.5, queue_ms=3.1),
    )
    assert json.loads(answer.encode()) == {
        "type": "result",
        "frame_id": 17,
        "status": "ok",
        "lines": [{"text": "INVOICE 2026", "score": 0.98, "box": [[10, 12], [200, 12], [200, 40], [10, 40]]}],
        "timing": {"total_ms": 41.2, "ocr_ms": 30.5, "queue_ms": 3.1},
    }


def test_skip_encoding() -> None:
    answer = ResultAnswer(frame_id=3, status="skipped", reason=SkipReason.DUPLICATE, ref_frame_id=1, lines=[])
    assert json.loads(answer.encode()) == {
        "type": "result",
        "frame_id": 3,
        "status": "skipped",
        "reason": "duplicate",
        "ref_frame_id": 1,
        "lines": [],
    }


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_encodes(code: ErrorCode) -> None:
    msg = json.loads(ErrorAnswer(frame_id=None, code=code, message="m").encode())
    assert msg == {"type": "error", "frame_id": None, "code": code.value, "message": "m"}


def test_server_messages_roundtrip() -> None:
    for answer in (
        PongAnswer(ts=1.0),
        ConfigAnswer(fps=2.0),
        ErrorAnswer(frame_id=1, code="internal", message="x"),
    ):
        assert parse_server_message(answer.encode()) == answer


def test_protocol_module_imports_no_ray() -> None:
    code = "import sys, serve_app.protocol; sys.exit(any(m.split('.')[0] == 'ray' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
