from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys

import pytest

import ocr_client.protocol
import serve_app.protocol
from ocr_client.protocol import (
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
    Roi,
    SkipReason,
    TextEvent,
    Timing,
    encode_binary_frame,
    encode_text_frame,
    parse_binary,
    parse_flag,
    parse_fps,
    parse_roi,
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


def test_config_sets_events_and_roi() -> None:
    assert parse_text('{"type": "config", "events": true}') == ConfigRequest(events=True)
    assert parse_text('{"type": "config", "events": "0"}') == ConfigRequest(events=False)
    assert parse_text('{"type": "config", "roi": [0, 0.5, 1, 1]}') == ConfigRequest(roi=Roi(0, 0.5, 1, 1))
    assert parse_text('{"type": "config", "roi": null}') == ConfigRequest(clear_roi=True)


@pytest.mark.parametrize("config", [{}, {"events": "maybe"}, {"events": 1.5}, {"roi": [0, 0, 1]}])
def test_config_rejects_bad_events_and_roi(config: dict[str, object]) -> None:
    assert error_of(parse_text, json.dumps({"type": "config", **config})).code is ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize("value", ["1", "true", "on", True])
def test_parse_flag_true(value: object) -> None:
    assert parse_flag(value, "events") is True


@pytest.mark.parametrize("value", ["0", "false", "off", False])
def test_parse_flag_false(value: object) -> None:
    assert parse_flag(value, "events") is False


def test_parse_roi_from_json_and_query_string() -> None:
    assert parse_roi([0.1, 0.2, 0.9, 0.8]) == parse_roi("0.1,0.2,0.9,0.8") == Roi(0.1, 0.2, 0.9, 0.8)
    assert Roi(0.5, 0.5, 1.0, 1.0).pixels(640, 480) == (320, 240, 640, 480)


@pytest.mark.parametrize(
    "roi", ["0,0,1", [0.5, 0, 0.5, 1], [0, 0, 1.5, 1], [-0.1, 0, 1, 1], "a,b,c,d", [True, 0, 1, 1]]
)
def test_parse_roi_rejects(roi: object) -> None:
    assert error_of(parse_roi, roi).code is ErrorCode.BAD_MESSAGE


# The three examples of the contract's "Text events (v1 extension)" section, as sent.
EVENT_EXAMPLES = [
    {"type": "text", "event": "appeared", "track_id": 7, "text": "SN-48213", "score": 0.97,
     "box": [[10, 12], [200, 12], [200, 40], [10, 40]], "frame_id": 120, "first_frame_id": 118},
    {"type": "text", "event": "changed", "track_id": 7, "text": "SN-48214", "previous": "SN-48213",
     "score": 0.95, "box": [[11, 12], [201, 12], [201, 40], [11, 40]],
     "frame_id": 260, "first_frame_id": 257},
    {"type": "text", "event": "gone", "track_id": 7, "text": "SN-48214",
     "frame_id": 410, "last_frame_id": 390},
]  # fmt: skip


@pytest.mark.parametrize("example", EVENT_EXAMPLES, ids=lambda e: e["event"])
def test_text_events_roundtrip_the_contract_examples(example: dict[str, object]) -> None:
    event = parse_server_message(json.dumps(example))
    assert isinstance(event, TextEvent)
    assert json.loads(event.encode()) == example


def test_a_text_event_with_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_server_message(json.dumps({**EVENT_EXAMPLES[0], "event": "moved"}))


def test_config_answer_carries_events_only_once_asked() -> None:
    assert json.loads(ConfigAnswer(fps=5.0).encode()) == {"type": "config", "fps": 5.0}
    answer = ConfigAnswer(fps=5.0, events=True)
    assert json.loads(answer.encode()) == {"type": "config", "fps": 5.0, "events": True}


def test_the_service_uses_the_client_packages_protocol() -> None:
    """One copy: serve_app.protocol re-exports every class, function and constant of ocr_client.protocol."""
    client, service = vars(ocr_client.protocol), vars(serve_app.protocol)
    for name in serve_app.protocol.__all__:
        assert service[name] is client[name], name
    defined = {
        name
        for name, value in client.items()
        if not name.startswith("_")
        and (name.isupper() or getattr(value, "__module__", None) == ocr_client.protocol.__name__)
    }
    assert defined <= set(serve_app.protocol.__all__)


@pytest.mark.parametrize("module", ["ocr_client.protocol", "serve_app.protocol", "ocr_client.cli"])
def test_protocol_and_client_import_no_ray(module: str) -> None:
    heavy = "('ray', 'paddleocr', 'paddle', 'cv2')"
    code = f"import sys, {module}; sys.exit(any(m.split('.')[0] in {heavy} for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
