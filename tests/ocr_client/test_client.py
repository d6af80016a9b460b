"""OCRStreamClient against a stand-in server (``websockets.serve`` on 127.0.0.1), no Ray."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from ocr_client.client import (
    Answer,
    AuthRejected,
    ConnectionRefused,
    OCRClientError,
    OCRStreamClient,
    ocr_url,
    stream_url,
)
from ocr_client.protocol import (
    WS_1008_POLICY_VIOLATION,
    ErrorAnswer,
    Frame,
    Line,
    PingRequest,
    PongAnswer,
    ResultAnswer,
    TextEvent,
    parse_binary,
    parse_text,
)

Handler = Callable[[ServerConnection], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def stand_in_server(
    handler: Handler, port: int, process_request: Callable[..., Response | None] | None = None
) -> AsyncIterator[None]:
    """A stand-in for the service: the test's ``handler`` speaks protocol v1."""
    async with serve(handler, "127.0.0.1", port, process_request=process_request):
        yield


def answer(frame: Frame, note: str = "") -> str:
    """A ``result`` whose text is the frame's image bytes (so a test can check the match)."""
    line = Line(text=frame.image.decode() + note, score=1.0, box=[[0, 0], [1, 0], [1, 1], [0, 1]])
    return ResultAnswer(frame_id=frame.frame_id, status="ok", lines=[line]).encode()


def text_of(item: Answer) -> str:
    assert isinstance(item, ResultAnswer), item
    assert item.lines is not None
    return item.lines[0].text


async def collect(client: OCRStreamClient, n: int) -> list[Answer]:
    items: list[Answer] = []
    async for item in client.results():
        items.append(item)
        if len(items) == n:
            break
    return items


async def test_stream_url_accepts_http_base_urls() -> None:
    assert stream_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/v1/stream"
    assert stream_url("https://ocr.example/") == "wss://ocr.example/v1/stream"
    assert stream_url("ws://h:1/v1/stream") == "ws://h:1/v1/stream"
    with pytest.raises(ValueError):
        stream_url("ftp://h/")


async def test_ocr_url_from_the_same_urls() -> None:
    assert ocr_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1/ocr"
    assert ocr_url("wss://ocr.example/prefix/v1/stream") == "https://ocr.example/prefix/v1/ocr"
    assert stream_url("http://h:1/prefix/v1/ocr") == "ws://h:1/prefix/v1/stream"


async def test_answers_are_matched_by_frame_id_when_out_of_order() -> None:
    port = free_port()

    async def reversed_answers(ws: ServerConnection) -> None:
        frames = [parse_binary(await ws.recv()) for _ in range(5)]  # type: ignore[arg-type]
        for frame in reversed(frames):
            await ws.send(answer(frame))
        await ws.wait_closed()

    async with stand_in_server(reversed_answers, port), OCRStreamClient(f"ws://127.0.0.1:{port}") as client:
        sent = {await client.send(f"image-{i}".encode()): f"image-{i}" for i in range(5)}
        items = await collect(client, 5)
    assert [item.frame_id for item in items] == [4, 3, 2, 1, 0]
    assert {item.frame_id: text_of(item) for item in items} == sent


async def test_in_flight_frames_are_bounded() -> None:
    port, limit, total = free_port(), 3, 12
    unanswered: list[int] = []
    most = 0

    async def slow_answers(ws: ServerConnection) -> None:
        nonlocal most

        async def answer_later(frame: Frame) -> None:
            await asyncio.sleep(0.05)
            unanswered.remove(frame.frame_id)
            await ws.send(answer(frame))

        async with asyncio.TaskGroup() as tasks:
            async for message in ws:
                frame = parse_binary(message)  # type: ignore[arg-type]
                unanswered.append(frame.frame_id)
                most = max(most, len(unanswered))
                tasks.create_task(answer_later(frame))

    async with (
        stand_in_server(slow_answers, port),
        OCRStreamClient(f"ws://127.0.0.1:{port}", max_in_flight=limit) as client,
    ):
        reader = asyncio.create_task(collect(client, total))
        for i in range(total):
            await client.send(f"image-{i}".encode())
        items = await reader
    assert most == limit
    assert sorted(item.frame_id for item in items) == list(range(total))


async def test_reconnects_and_resumes_the_stream_after_a_server_restart() -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    stream_ids: list[str] = []
    received: list[tuple[int, int]] = []  # (server run, frame_id)
    frame_2_held = asyncio.Event()

    def handler(run: int) -> Handler:
        async def handle(ws: ServerConnection) -> None:
            assert ws.request is not None
            stream_ids.append(parse_qs(urlsplit(ws.request.path).query)["stream_id"][0])
            async for message in ws:
                frame = parse_binary(message)  # type: ignore[arg-type]
                received.append((run, frame.frame_id))
                if run == 1 and frame.frame_id == 2:
                    frame_2_held.set()  # the first run never answers frame 2
                else:
                    await ws.send(answer(frame, f" (run {run})"))

        return handle

    first_run = await serve(handler(1), "127.0.0.1", port)
    async with OCRStreamClient(url, stream_id="cam-7", backoff_base=0.05) as client:
        for i in range(3):
            await client.send(f"image-{i}".encode())
        answered = await collect(client, 2)
        await frame_2_held.wait()
        first_run.close()  # the stand-in goes away (1001) with frame 2 unanswered
        await first_run.wait_closed()
        async with stand_in_server(handler(2), port):
            answered += await collect(client, 1)
            await client.send(b"image-3")
            answered += await collect(client, 1)
    assert stream_ids == ["cam-7", "cam-7"]
    assert [text_of(item) for item in answered] == [
        "image-0 (run 1)",
        "image-1 (run 1)",
        "image-2 (run 2)",
        "image-3 (run 2)",
    ]
    assert received == [(1, 0), (1, 1), (1, 2), (2, 2), (2, 3)]


async def test_a_frame_unanswered_across_two_drops_is_reported_failed() -> None:
    port = free_port()
    connections = 0

    async def drop_on_frame(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.recv()
        await ws.close(1012, "restarting")

    async with (
        stand_in_server(drop_on_frame, port),
        OCRStreamClient(f"ws://127.0.0.1:{port}", backoff_base=0.01) as client,
    ):
        frame_id = await client.send(b"image-0")
        [item] = await collect(client, 1)
    assert isinstance(item, ErrorAnswer)
    assert (item.frame_id, item.code) == (frame_id, "internal")
    assert connections >= 2


async def test_close_fails_unanswered_frames_and_ends_the_results() -> None:
    port = free_port()

    async def never_answers(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with stand_in_server(never_answers, port):
        client = await OCRStreamClient(f"ws://127.0.0.1:{port}").__aenter__()
        ids = [await client.send(b"image") for _ in range(3)]
        await client.close(timeout=0.1)
        items = [item async for item in client.results()]
    assert [item.frame_id for item in items] == ids
    assert all(isinstance(item, ErrorAnswer) and "closed" in item.message for item in items)


def require_token(connection: ServerConnection, request: Request) -> Response | None:
    if request.headers.get("Authorization") != "Bearer good":
        return connection.respond(HTTPStatus.UNAUTHORIZED, "bad token\n")
    return None


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(answer(parse_binary(message)))  # type: ignore[arg-type]


async def test_a_refused_token_raises_auth_rejected() -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    async with stand_in_server(echo, port, require_token):
        with pytest.raises(AuthRejected, match="401"):
            async with OCRStreamClient(url, token="bad"):
                pass
        async with OCRStreamClient(url, token="good") as client:
            await client.send(b"image")
            assert text_of((await collect(client, 1))[0]) == "image"


async def test_close_1008_raises_auth_rejected() -> None:
    port = free_port()

    async def policy_close(ws: ServerConnection) -> None:
        await ws.close(WS_1008_POLICY_VIOLATION, "token expired")

    async with (
        stand_in_server(policy_close, port),
        OCRStreamClient(f"ws://127.0.0.1:{port}", token="t") as client,
    ):
        with pytest.raises(AuthRejected, match="token expired"):
            async for _ in client.results():
                pass
        with pytest.raises(AuthRejected):
            await client.send(b"image")


async def test_an_unreachable_server_raises_connection_refused() -> None:
    with pytest.raises(ConnectionRefused, match="cannot reach"):
        async with OCRStreamClient(f"http://127.0.0.1:{free_port()}"):
            pass


async def test_ping_measures_a_round_trip() -> None:
    port = free_port()

    async def pong(ws: ServerConnection) -> None:
        async for message in ws:
            assert isinstance(message, str)
            assert isinstance(parse_text(message), PingRequest)
            await ws.send(PongAnswer(ts=0.0).encode())

    async with stand_in_server(pong, port), OCRStreamClient(f"ws://127.0.0.1:{port}") as client:
        assert 0 < await client.ping() < 5


def event(kind: str, frame_id: int, text: str, previous: str | None = None) -> TextEvent:
    return TextEvent(event=kind, track_id=1, text=text, previous=previous, frame_id=frame_id)  # type: ignore[arg-type]


def query_of(ws: ServerConnection) -> dict[str, list[str]]:
    assert ws.request is not None
    return parse_qs(urlsplit(ws.request.path).query)


async def test_events_are_asked_for_and_come_apart_from_the_answers() -> None:
    port = free_port()
    queries: list[dict[str, list[str]]] = []
    sent = [event("appeared", 0, "LOT 1"), event("changed", 1, "LOT 2", "LOT 1"), event("gone", 1, "LOT 2")]

    async def with_events(ws: ServerConnection) -> None:
        queries.append(query_of(ws))
        queued: list[asyncio.Task[None]] = []

        async def late(*events: TextEvent) -> None:
            await asyncio.sleep(0.2)
            for e in events:
                await ws.send(e.encode())

        async for message in ws:
            if isinstance(message, str):  # the ping of close(): answered after what was queued before
                assert isinstance(parse_text(message), PingRequest)
                await asyncio.gather(*queued)
                await ws.send(PongAnswer(ts=0.0).encode())
                continue
            frame = parse_binary(message)
            if frame.frame_id == 0:
                await ws.send(sent[0].encode())  # an event before the answer that confirmed it
                await ws.send(answer(frame))
            else:
                await ws.send(answer(frame))  # and two after the stream's last answer
                queued.append(asyncio.create_task(late(*sent[1:])))

    async with stand_in_server(with_events, port):
        async with OCRStreamClient(f"ws://127.0.0.1:{port}", events=True) as client:
            for i in range(2):
                await client.send(f"image-{i}".encode())
            answers = await collect(client, 2)
        events = [e async for e in client.events()]
    assert queries[0]["events"] == ["1"]
    assert sorted(a.frame_id for a in answers) == [0, 1]
    assert events == sent
    assert [a async for a in client.results()] == []  # the events were no answers


async def test_events_are_asked_for_again_after_a_reconnect() -> None:
    port = free_port()
    queries: list[dict[str, list[str]]] = []

    async def drop_first(ws: ServerConnection) -> None:
        queries.append(query_of(ws))
        frame = parse_binary(await ws.recv())  # type: ignore[arg-type]
        if len(queries) == 1:
            await ws.close(1012, "restarting")
            return
        await ws.send(event("appeared", frame.frame_id, "LOT 1").encode())
        await ws.send(answer(frame))
        await ws.wait_closed()

    async with (
        stand_in_server(drop_first, port),
        OCRStreamClient(f"ws://127.0.0.1:{port}", events=True, backoff_base=0.01) as client,
    ):
        await client.send(b"image-0")
        [item] = await collect(client, 1)
        first = await anext(aiter(client.events()))
    assert [q["events"] for q in queries] == [["1"], ["1"]]
    assert text_of(item) == "image-0"
    assert (first.event, first.text) == ("appeared", "LOT 1")


async def test_without_events_a_text_message_is_no_answer() -> None:
    port = free_port()

    async def unasked_events(ws: ServerConnection) -> None:
        assert "events" not in query_of(ws)
        async for message in ws:
            frame = parse_binary(message)  # type: ignore[arg-type]
            await ws.send(event("appeared", frame.frame_id, "LOT 1").encode())
            await ws.send(answer(frame))

    async with stand_in_server(unasked_events, port), OCRStreamClient(f"ws://127.0.0.1:{port}") as client:
        for i in range(3):
            await client.send(f"image-{i}".encode())
        items = await collect(client, 3)
        with pytest.raises(OCRClientError, match="events=True"):
            await anext(aiter(client.events()))
    assert [text_of(item) for item in items] == ["image-0", "image-1", "image-2"]
