"""End to end: the edge security of the ingress over real WebSockets and HTTP (issue "Security at the edge").

Two extra applications are deployed once for this module (``deploy_app``), each with its own replicas:

- ``sec-auth``: JWT auth on (HS256 secret from a file, ES256 public key from a JWKS file, audience and
  issuer), an Origin allowlist, 2 connections per tenant, small message limits;
- ``sec-net``: auth off, IP allowlist ``10.0.0.0/8`` with the proxy ``127.0.0.2`` trusted, a low frame
  rate (1/s, burst 2, closed on the third violation) and an idle timeout of 3 s.

What is asserted is what a client sees: an HTTP 403 on the handshake, answers and close codes.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import secrets
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from PIL import Image

from serve_app.protocol import encode_binary_frame, encode_text_frame

pytestmark = pytest.mark.serve

AUD = "ocr-e2e"
ISS = "https://issuer.e2e.example"
ORIGIN = "https://app.example.com"
KID = "e2e-key-1"
MAX_MESSAGE = 20_000  # text_rec.jpg (12.5 kB) fits, also as base64 text
HARD_MAX_MESSAGE = 40_000
READ = "韩国小馆"  # what text_rec.jpg reads
PROXY = "127.0.0.2"  # the trusted proxy of sec-net: tests connect from this loopback address
IDLE_S = 3.0  # sec-net closes a connection silent this long


# --- keys, tokens, images -------------------------------------------------------------------------------


@dataclass
class Keys:
    secret: str
    ec_key: ec.EllipticCurvePrivateKey
    secret_file: Path
    jwks_file: Path
    issued: list[str] = field(default_factory=list)  # every token made: none may reach a log

    def token(
        self,
        tenant: str = "acme",
        *,
        alg: str = "HS256",
        key: Any = None,
        headers: dict[str, Any] | None = None,
        **over: Any,
    ) -> str:
        now = int(time.time())
        claims = {"tenant": tenant, "sub": f"user-{tenant}", "aud": AUD, "iss": ISS, "iat": now}
        claims["exp"] = now + 600
        claims.update(over)
        claims = {k: v for k, v in claims.items() if v is not None}
        if key is None:
            key = self.secret if alg.startswith("HS") else self.ec_key
        if alg.startswith("ES") and headers is None:
            headers = {"kid": KID}
        token = jwt.encode(claims, key, algorithm=alg, headers=headers)
        self.issued.append(token)
        return token

    def unsigned(self, tenant: str = "acme") -> str:
        """An ``alg: none`` token: header and claims, no signature."""

        def part(obj: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

        now = int(time.time())
        claims = {"tenant": tenant, "aud": AUD, "iss": ISS, "iat": now, "exp": now + 600}
        token = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
        self.issued.append(token)
        return token


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """The secret and the JWKS in files: the replicas read them (they do not see this process' env)."""
    folder = tmp_path_factory.mktemp("jwt")
    secret = secrets.token_urlsafe(48)
    secret_file = folder / "hs256.secret"
    secret_file.write_text(secret + "\n")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    jwk.update(kid=KID, alg="ES256", use="sig")
    jwks_file = folder / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [jwk]}))
    return Keys(secret, ec_key, secret_file, jwks_file)


@pytest.fixture(scope="module")
def auth_url(deploy_app: Any, keys: Keys) -> str:
    return deploy_app(
        "sec-auth",
        {
            "ingress": {
                "max_message_bytes": MAX_MESSAGE,
                "hard_max_message_bytes": HARD_MAX_MESSAGE,
                "security": {
                    "auth": {
                        "enabled": True,
                        "algorithms": ["HS256", "ES256"],
                        "secret_file": str(keys.secret_file),
                        "jwks_file": str(keys.jwks_file),
                        "audience": AUD,
                        "issuer": ISS,
                    },
                    "limits": {"max_connections_per_tenant": 2},
                    "origin_allowlist": [ORIGIN],
                },
            }
        },
    )


@pytest.fixture(scope="module")
def net_url(deploy_app: Any) -> str:
    return deploy_app(
        "sec-net",
        {
            "ingress": {
                "security": {
                    "ip_allowlist": ["10.0.0.0/8"],
                    "trusted_proxies": [f"{PROXY}/32"],
                    "limits": {
                        "frames_per_s": 1.0,
                        "frames_burst": 2,
                        "violations_before_close": 3,
                        "idle_timeout_s": IDLE_S,
                    },
                }
            }
        },
    )


def ws(url: str) -> str:
    return url.replace("http://", "ws://") + "/v1/stream"


def png(width: int = 48, height: int = 24, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_bomb(jpeg: bytes, width: int = 60_000, height: int = 60_000) -> bytes:
    """A real JPEG whose SOF header is rewritten to claim width x height pixels."""
    data, i = bytearray(jpeg), 2
    while data[i] == 0xFF:
        marker, length = data[i + 1], struct.unpack_from(">H", data, i + 2)[0]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, i + 5, height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker found")


def corrupted_png() -> bytes:
    """A PNG with a sound header and a broken IDAT (zeros in the compressed data, bad CRC)."""
    data = bytearray(png(60, 40, seed=3))
    start = data.find(b"IDAT") + 20
    data[start : start + 40] = b"\0" * 40
    return bytes(data)


# --- a client ------------------------------------------------------------------------------------------


class Client:
    def __init__(self, conn: Any) -> None:
        self.ws = conn

    async def answer(self, timeout: float = 60) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def by_frame(self, n: int, timeout: float = 60) -> dict[int | None, dict[str, Any]]:
        got = [await self.answer(timeout) for _ in range(n)]
        ids = Counter(a.get("frame_id") for a in got)
        assert all(c == 1 for c in ids.values()), got
        return {a.get("frame_id"): a for a in got}

    async def ping(self) -> None:
        await self.ws.send('{"type": "ping"}')
        assert (await self.answer(30))["type"] == "pong"

    async def close(self) -> None:
        await self.ws.close()


async def connect(
    url: str,
    *,
    query: str = "",
    token: str | None = None,
    origin: str | None = None,
    xff: str | None = None,
    local_ip: str | None = None,
) -> Client:
    """``token`` goes in the Authorization header; put it in ``query`` for the browser way."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    extra: dict[str, Any] = {} if local_ip is None else {"local_addr": (local_ip, 0)}
    conn = await websockets.connect(
        ws(url) + query,
        additional_headers=headers,
        origin=origin,  # type: ignore[arg-type]
        max_size=None,
        open_timeout=30,
        **extra,
    )
    return Client(conn)


async def refused(url: str, **kwargs: Any) -> None:
    """The handshake is refused: HTTP 403 (closed with 1008 before accept)."""
    try:
        client = await connect(url, **kwargs)
    except websockets.InvalidStatus as exc:
        assert exc.response.status_code == 403, exc.response
        return
    # Accepted, then closed 1008 would also be a refusal the user sees; anything else is a failure.
    try:
        await client.ws.send('{"type": "ping"}')
        answer = await client.answer(5)
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 1008, closed
        return
    await client.close()
    raise AssertionError(f"admitted ({answer})")


async def read_one(client: Client, images: Path, frame_id: int = 1, *, text: bool = False) -> dict[str, Any]:
    good = (images / "text_rec.jpg").read_bytes()
    message = encode_text_frame(frame_id, good) if text else encode_binary_frame(frame_id, good)
    await client.ws.send(message)
    answer = await client.answer()
    assert answer["frame_id"] == frame_id
    return answer


def texts(answer: dict[str, Any]) -> list[str]:
    return [line["text"] for line in answer.get("lines") or []]


def assert_read(answer: dict[str, Any]) -> None:
    assert answer["type"] == "result" and answer["status"] == "ok", answer
    assert texts(answer) == [READ], answer


# --- authentication -------------------------------------------------------------------------------------


async def test_valid_token_in_header_streams(auth_url: str, keys: Keys, images: Path) -> None:
    client = await connect(auth_url, token=keys.token("hdr"))
    assert_read(await read_one(client, images))
    await client.close()


async def test_valid_token_in_query_streams(auth_url: str, keys: Keys, images: Path) -> None:
    client = await connect(auth_url, query=f"?token={keys.token('query')}&stream_id=browser-1")
    assert_read(await read_one(client, images, 5, text=True))
    await client.close()


async def test_valid_es256_token_from_jwks_streams(auth_url: str, keys: Keys, images: Path) -> None:
    client = await connect(auth_url, token=keys.token("es", alg="ES256"))
    assert_read(await read_one(client, images, 9))
    await client.close()


def bad_tokens(keys: Keys) -> Iterator[tuple[str, str]]:
    now = int(time.time())
    other_ec = ec.generate_private_key(ec.SECP256R1())
    yield "expired", keys.token(exp=now - 3600, iat=now - 7200)
    yield "not yet valid", keys.token(nbf=now + 3600)
    yield "wrong audience", keys.token(aud="someone-else")
    yield "no audience", keys.token(aud=None)
    yield "wrong issuer", keys.token(iss="https://evil.example")
    yield "no expiry", keys.token(exp=None)
    yield "forged HS256 (wrong secret)", keys.token(key=secrets.token_urlsafe(48))
    yield "forged ES256 (wrong key, known kid)", keys.token(alg="ES256", key=other_ec)
    yield "ES256 unknown kid", keys.token(alg="ES256", headers={"kid": "nope"})
    yield "HS512 (not allowed)", keys.token(alg="HS512", key=keys.secret + keys.secret)
    yield "alg none", keys.unsigned()
    yield "garbage", "not.a.jwt"
    yield "tampered claims", tampered(keys.token("victim"), tenant="admin")


def tampered(token: str, **claims: Any) -> str:
    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(claims)
    new = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{head}.{new}.{sig}"


async def test_bad_tokens_are_refused_in_header_and_query(auth_url: str, keys: Keys) -> None:
    for name, token in bad_tokens(keys):
        try:
            await refused(auth_url, token=token)
            await refused(auth_url, query=f"?token={token}")
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


async def test_missing_or_malformed_credentials_are_refused(auth_url: str, keys: Keys) -> None:
    await refused(auth_url)
    await refused(auth_url, query="?token=")
    for authorization in ("Basic dXNlcjpwYXNz", "Bearer", f"Token {keys.token()}"):
        with pytest.raises(websockets.InvalidStatus) as exc:
            await websockets.connect(
                ws(auth_url), additional_headers={"Authorization": authorization}, open_timeout=30
            )
        assert exc.value.response.status_code == 403, authorization


async def test_header_token_wins_over_query_token(auth_url: str, keys: Keys) -> None:
    """A bad header is not rescued by a good query token (no ambiguity over who the client is)."""
    good, bad = keys.token("both"), keys.token("both", exp=int(time.time()) - 3600)
    await refused(auth_url, token=bad, query=f"?token={good}")


def test_post_ocr_needs_a_token(auth_url: str, keys: Keys, images: Path) -> None:
    data = (images / "text_rec.jpg").read_bytes()
    anonymous = httpx.post(f"{auth_url}/v1/ocr", content=data, timeout=60)
    assert anonymous.status_code == 401
    assert anonymous.headers.get("www-authenticate") == "Bearer"
    expired = keys.token("http", exp=int(time.time()) - 3600)
    late = httpx.post(f"{auth_url}/v1/ocr", content=data, headers={"Authorization": f"Bearer {expired}"})
    assert late.status_code == 401
    headers = {"Authorization": f"Bearer {keys.token('http')}"}
    ok = httpx.post(f"{auth_url}/v1/ocr", content=data, headers=headers, timeout=60)
    assert ok.status_code == 200, ok.text
    assert [line["text"] for line in ok.json()["lines"]] == [READ]
    query = httpx.post(f"{auth_url}/v1/ocr?token={keys.token('http')}", content=data, timeout=60)
    assert query.status_code == 200, query.text


def test_health_and_info_stay_open(auth_url: str) -> None:
    """Probes (Kubernetes) carry no token."""
    assert httpx.get(f"{auth_url}/healthz", timeout=30).status_code == 200
    assert httpx.get(f"{auth_url}/v1/info", timeout=30).status_code == 200


# --- Origin and IP allowlists ----------------------------------------------------------------------------


async def test_origin_allowlist(auth_url: str, keys: Keys) -> None:
    allowed = await connect(auth_url, token=keys.token("origin"), origin=ORIGIN)
    await allowed.ping()
    await allowed.close()
    await refused(auth_url, token=keys.token("origin"), origin="https://evil.example.com")
    await refused(auth_url, token=keys.token("origin"), origin="https://app.example.com.evil.io")
    no_origin = await connect(auth_url, token=keys.token("origin"))  # not a browser
    await no_origin.ping()
    await no_origin.close()


async def test_ip_allowlist_and_forwarded_for(net_url: str) -> None:
    await refused(net_url)  # 127.0.0.1 is not in 10.0.0.0/8
    await refused(net_url, local_ip=PROXY)  # nor is the proxy itself
    admitted = await connect(net_url, xff="10.1.2.3", local_ip=PROXY)  # via the trusted proxy
    await admitted.ping()
    await admitted.close()
    chained = await connect(net_url, xff="192.168.1.1, 10.1.2.3", local_ip=PROXY)  # right-most hop
    await chained.ping()
    await chained.close()
    await refused(net_url, xff="192.168.1.1", local_ip=PROXY)
    await refused(net_url, xff="10.1.2.3, 192.168.1.1", local_ip=PROXY)  # a spoofed left hop: no help
    await refused(net_url, xff="not-an-ip", local_ip=PROXY)


async def test_forwarded_for_from_an_untrusted_peer_is_not_believed(net_url: str) -> None:
    """From a peer that is not a trusted proxy, X-Forwarded-For is a lie."""
    await refused(net_url, xff="10.1.2.3", local_ip="127.0.0.3")


async def test_forwarded_for_from_untrusted_loopback_is_not_believed(net_url: str) -> None:
    """Uvicorn in Serve's proxy would believe it from loopback; configs/serve.yaml turns that off."""
    await refused(net_url, xff="10.1.2.3")  # peer 127.0.0.1 is not in trusted_proxies


def test_post_ocr_ip_allowlist(net_url: str, images: Path) -> None:
    data = (images / "text_rec.jpg").read_bytes()
    assert httpx.post(f"{net_url}/v1/ocr", content=data, timeout=60).status_code == 403
    via_proxy = httpx.Client(transport=httpx.HTTPTransport(local_address=PROXY), timeout=60)
    inside = via_proxy.post(f"{net_url}/v1/ocr", content=data, headers={"X-Forwarded-For": "10.9.9.9"})
    assert inside.status_code == 200, inside.text
    assert via_proxy.post(f"{net_url}/v1/ocr", content=data).status_code == 403


# --- rate and connection limits --------------------------------------------------------------------------


async def test_rate_limit_answers_then_closes_1008_and_recovers(net_url: str, images: Path) -> None:
    """1 frame/s, burst 2, closed on the 3rd violation: frames 0-1 pass, 2-4 are `rate_limited`, close."""
    client = await connect(net_url, xff="10.1.2.3", local_ip=PROXY)
    for i in range(5):
        await client.ws.send(encode_binary_frame(i, png(seed=i)))
    answers: list[dict[str, Any]] = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            answers.append(await client.answer())
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert Counter(a["frame_id"] for a in answers) == Counter(range(5)), answers
    by_id = {a["frame_id"]: a for a in answers}
    for i in (2, 3, 4):
        assert (by_id[i]["type"], by_id[i]["code"]) == ("error", "rate_limited"), by_id[i]
    for i in (0, 1):  # read, or answered `internal` when the connection closed first
        assert by_id[i]["type"] == "result" or by_id[i]["code"] == "internal", by_id[i]

    again = await connect(net_url, xff="10.1.2.3", local_ip=PROXY)  # a new connection has a new quota
    assert_read(await read_one(again, images, 7))
    await again.close()


async def test_a_silent_connection_is_closed_1001_and_a_pinging_one_is_not(net_url: str) -> None:
    pinging = await connect(net_url, xff="10.1.2.3", local_ip=PROXY)
    silent = await connect(net_url, xff="10.1.2.4", local_ip=PROXY)
    start = time.monotonic()
    while time.monotonic() - start < 2 * IDLE_S:
        await pinging.ping()
        await asyncio.sleep(IDLE_S / 4)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await silent.answer(IDLE_S)  # closed a tick (0.25 s) after its idle time, long before this
    assert closed.value.rcvd is not None, closed.value
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "idle timeout")
    await pinging.ping()
    await pinging.close()


async def test_limits_claim_lowers_the_rate(auth_url: str, keys: Keys) -> None:
    client = await connect(auth_url, token=keys.token("slow", limits={"fps": 0.5}))
    await client.ws.send(encode_binary_frame(1, png(seed=11)))
    await client.ws.send(encode_binary_frame(2, png(seed=12)))
    got = await client.by_frame(2)
    assert got[2]["code"] == "rate_limited" and got[1]["type"] == "result", got
    await client.close()


async def test_connections_per_tenant(auth_url: str, keys: Keys) -> None:
    token = keys.token("busy")
    first, second = await connect(auth_url, token=token), await connect(auth_url, token=token)
    await first.ping()
    await second.ping()
    await refused(auth_url, token=token)
    await refused(auth_url, query=f"?token={token}")
    other = await connect(auth_url, token=keys.token("calm"))  # another tenant is not affected
    await other.ping()
    await other.close()

    await first.close()
    deadline = time.monotonic() + 20
    while True:  # the slot is freed once the server has seen the close
        try:
            third = await connect(auth_url, token=token)
            break
        except websockets.InvalidStatus:
            assert time.monotonic() < deadline, "the closed connection's slot was never freed"
            await asyncio.sleep(0.2)
    await third.ping()
    await second.ping()
    await third.close()
    await second.close()


# --- sizes and bad images --------------------------------------------------------------------------------


async def test_sizes_pixel_bombs_and_bad_images(auth_url: str, keys: Keys, images: Path) -> None:
    good = (images / "text_rec.jpg").read_bytes()
    client = await connect(auth_url, token=keys.token("sizes"), query="?fps=30")
    over = encode_binary_frame(1, b"\xff\xd8" + b"\0" * MAX_MESSAGE)
    assert MAX_MESSAGE < len(over) < HARD_MAX_MESSAGE
    await client.ws.send(over)
    answer = await client.answer()
    assert (answer["frame_id"], answer["code"]) == (1, "too_large"), answer
    await client.ping()  # the stream goes on

    await client.ws.send(encode_binary_frame(2, png_bomb()))
    await client.ws.send(encode_binary_frame(3, jpeg_bomb(good)))
    await client.ws.send(encode_text_frame(4, png_bomb()))
    await client.ws.send(encode_binary_frame(5, good[: len(good) // 2]))
    await client.ws.send(encode_binary_frame(6, corrupted_png()))
    await client.ws.send(encode_binary_frame(7, b"definitely not an image"))
    got = await client.by_frame(6)
    assert {i: got[i]["code"] for i in range(2, 8)} == {
        2: "too_large",
        3: "too_large",
        4: "too_large",
        5: "bad_image",
        6: "bad_image",
        7: "bad_image",
    }, got
    assert_read(await read_one(client, images, 8))

    await client.ws.send(encode_binary_frame(9, b"\0" * HARD_MAX_MESSAGE))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.answer()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


# --- logs (keep last: it checks what the tests above left in the logs) -----------------------------------


def serve_logs() -> list[Path]:
    import ray

    try:
        logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # this test session's Ray
    except Exception:
        logs = Path("/tmp/ray/session_latest/logs")
    return sorted((logs / "serve").glob("*.log")) + sorted(logs.glob("worker-*"))


def test_no_token_or_secret_in_logs(auth_url: str, keys: Keys) -> None:
    files = serve_logs()
    assert any("replica_sec-auth" in f.name for f in files), [f.name for f in files]
    assert len(keys.issued) > 20
    needles = {"the HS256 secret": keys.secret}
    d = ec_private_d(keys.ec_key)
    needles["the EC private key"] = d
    for token in keys.issued:
        needles[f"token {token[:24]}..."] = token
        signature = token.rsplit(".", 1)[1]
        if len(signature) >= 20:
            needles[f"signature of {token[:24]}..."] = signature
    found = []
    for path in files:
        text = path.read_text(errors="replace")
        found += [f"{what} in {path.name}" for what, needle in needles.items() if needle in text]
    assert not found, found


def ec_private_d(key: ec.EllipticCurvePrivateKey) -> str:
    return json.loads(ECAlgorithm.to_jwk(key))["d"]
