"""Shared pieces of the benchmarks: start the real app in-process, stream frames, summarize."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 1),
        "p99": round(percentile(values, 99), 1),
        "mean": round(statistics.fmean(values), 1) if values else float("nan"),
    }


@contextmanager
def running_app(app_args: dict[str, Any] | None = None, *, model_cls: type | None = None, port: int = 8123) -> Iterator[str]:
    """The application (real model unless ``model_cls``) on 127.0.0.1:port, in this process' Ray."""
    import ray
    from ray import serve

    from serve_app.app import build_app
    from serve_app.config import AppConfig

    config = AppConfig.from_file(ROOT / "configs" / "serve.yaml")
    if app_args:
        config = AppConfig.model_validate(_merge(config.model_dump(), app_args))
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
        kwargs = {"model_cls": model_cls} if model_cls is not None else {}
        serve.run(build_app(config, **kwargs), name="ocr", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def wait_healthy(url: str, timeout_s: float = 300) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout_s} s")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def write_json(path: Any, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def run(coro: Any) -> Any:
    return asyncio.run(coro)
