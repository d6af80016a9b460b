"""Read one image through ``POST /v1/ocr`` (stdlib HTTP: no dependency beyond the protocol's)."""

from __future__ import annotations

import urllib.error
import urllib.request
from http import HTTPStatus

from ocr_client.client import Answer, AuthRejected, ConnectionRefused
from ocr_client.protocol import ErrorAnswer, ErrorCode, ProtocolError, ResultAnswer, parse_server_message


def read_image(url: str, image: bytes, *, token: str | None = None, timeout: float = 120.0) -> Answer:
    """The service's answer for one encoded image; ``url`` is the ``POST /v1/ocr`` URL (``ocr_url``).

    A ``result`` or an ``error`` answer (bad image, too large, ...) is returned; raises
    :class:`ConnectionRefused` when the service cannot be reached, :class:`AuthRejected`
    when it refuses the token (HTTP 401/403) and ``TimeoutError`` when it does not answer.
    """
    headers = {"Content-Type": "application/octet-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=image, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _answer(response.status, response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        if exc.code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            detail = body.decode(errors="replace").strip()[:200]
            raise AuthRejected(
                f"the server refused the request (HTTP {exc.code}: {detail}), check the token"
            ) from None
        return _answer(exc.code, body)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise TimeoutError(f"no answer from {url} within {timeout:g} s") from None
        raise ConnectionRefused(f"cannot reach {url}: {exc.reason}") from None


def _answer(status: int, body: bytes) -> Answer:
    try:
        answer = parse_server_message(body.decode(errors="replace"))
    except (ProtocolError, ValueError):  # ValueError: pydantic's validation error
        answer = None
    if isinstance(answer, ResultAnswer | ErrorAnswer):
        return answer
    text = body.decode(errors="replace").strip()[:200]
    return ErrorAnswer(
        frame_id=None, code=ErrorCode.INTERNAL, message=f"HTTP {status}: {text or 'no answer'}"
    )
