"""Shared fixtures: one Ray instance and one real application per test session."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
IMAGES = SHARED / "data" / "images"
SERVE_CONFIG = ROOT / "configs" / "serve.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def images() -> Path:
    if not IMAGES.is_dir():
        pytest.fail(f"shared test images not found at {IMAGES} (set SHARED_DIR)")
    return IMAGES


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def service_url(ray_session: None) -> Iterator[str]:
    """The real application of configs/serve.yaml (real PaddleOCR) on a free port."""
    from ray import serve

    from serve_app.app import build_app
    from serve_app.config import AppConfig

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = AppConfig.from_file(SERVE_CONFIG)
    serve.run(build_app(config), name="ocr", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail("the application did not become healthy within 300 s")
    yield url
    serve.delete("ocr")


@pytest.fixture(scope="session")
def ws_url(service_url: str) -> str:
    return service_url.replace("http://", "ws://") + "/v1/stream"
