"""Shared fixtures: one Ray instance and one real application per test session."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "tests" / "data" / "images"
SERVE_CONFIG = ROOT / "configs" / "serve.yaml"
# pytest-timeout (pyproject.toml) counts a test's fixtures in its time. Starting Ray and warming the
# model up (ray_session, service_url) fall to the first test of the run that uses Ray, an
# application of a module's own (e.g. auth on) to the module's first such test, and stopping Ray
# to the run's last test: these tests get this much more time than their own limit.
RAY_SETUP_ALLOWANCE_S = 240


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # One Ray at a time: a test that starts a cluster of its own runs before the session's Ray
    # exists (beside it, on a 2-core box with two busy loops, a new raylet missed Ray's fixed
    # 30 s registration limit; alone it starts in seconds).
    items.sort(key=lambda item: item.get_closest_marker("own_cluster") is None)
    ray_items = [item for item in items if "ray_session" in getattr(item, "fixturenames", ())]
    if not ray_items:
        return
    default = float(config.getoption("timeout") or config.getini("timeout") or 0)
    first_of_each_file = {item.path: item for item in reversed(ray_items)}.values()
    for item in {*first_of_each_file, items[-1]}:
        limit = _timeout_s(item, default)
        if limit > 0:  # 0: no limit at all (e.g. --timeout 0 to debug)
            item.add_marker(pytest.mark.timeout(limit + RAY_SETUP_ALLOWANCE_S), append=False)


def _timeout_s(item: pytest.Item, default: float) -> float:
    """The item's own pytest-timeout limit: its ``timeout`` marker, else the run's default."""
    marker = item.get_closest_marker("timeout")
    if marker is None:
        return default
    return float(marker.args[0] if marker.args else marker.kwargs.get("timeout", default))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def images() -> Path:
    return IMAGES


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    # Logical CPUs, not cores: room for a second application (tests that need
    # other settings, e.g. auth on) beside the one of configs/serve.yaml.
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def service_url(ray_session: None) -> Iterator[str]:
    """The real application of configs/serve.yaml (real PaddleOCR) on a free port."""
    from ray import serve

    from serve_app.app import compose

    port = free_port()
    # The controller's environment of configs/serve.yaml (FORWARDED_ALLOW_IPS off), as `serve run` gives it.
    controller = yaml.safe_load(SERVE_CONFIG.read_text())["controller_options"]
    serve.start(http_options={"host": "127.0.0.1", "port": port}, controller_options=controller)
    serve.run(compose(app_config({})), name="ocr", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    yield url
    serve.delete("ocr")


def app_config(overrides: dict[str, Any]) -> Any:
    """configs/serve.yaml's args with ``overrides`` merged in, validated."""
    from serve_app.config import AppConfig

    return AppConfig.from_file(SERVE_CONFIG).overridden(overrides)


@pytest.fixture(scope="module")
def deploy_app(service_url: str) -> Iterator[Callable[[str, dict[str, Any]], str]]:
    """Deploy another application (configs/serve.yaml's args + overrides) at /<name>; returns its URL.

    Deleted when the module that deployed it is done: each idle application keeps a model
    replica and its peers running, and a busy box needs every core for the tests after it.
    """
    from ray import serve

    from serve_app.app import compose

    names: list[str] = []

    def deploy(name: str, overrides: dict[str, Any]) -> str:
        serve.run(compose(app_config(overrides)), name=name, route_prefix=f"/{name}")
        names.append(name)
        url = f"{service_url}/{name}"
        wait_healthy(url)
        return url

    yield deploy
    for name in names:
        serve.delete(name)


def wait_healthy(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not become healthy within {timeout_s} s")


@pytest.fixture(scope="session")
def ws_url(service_url: str) -> str:
    return service_url.replace("http://", "ws://") + "/v1/stream"
