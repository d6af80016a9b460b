"""Shared pieces of the benchmarks: start the real app in-process, stream frames, summarize."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def shipped_logging() -> dict[str, Any]:
    """The ``logging_config`` of configs/serve.yaml. ``serve run`` gives it to the replicas of an
    application that names none; ``serve.run`` does not, so a benchmark passes it itself."""
    return yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text()).get("logging_config") or {}


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
def running_app(
    app_args: dict[str, Any] | None = None, *, model_cls: type | None = None, port: int = 8123
) -> Iterator[str]:
    """The application (real model unless ``model_cls``) on 127.0.0.1:port, in this process' Ray."""
    import ray
    from ray import serve

    from serve_app.app import compose
    from serve_app.config import AppConfig

    config = AppConfig.from_file(ROOT / "configs" / "serve.yaml")
    if app_args:
        config = config.overridden(app_args)  # type: ignore[assignment]
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=shipped_logging())
        kwargs = {"model_cls": model_cls} if model_cls is not None else {}
        serve.run(compose(config, **kwargs), name="ocr", route_prefix="/", logging_config=shipped_logging())
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


def write_json(path: Any, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- added for the load benchmarks (bench/burst.py, many_connections.py, ceiling.py) ---


def raise_nofile(wanted: int) -> int:
    """Raise this process' open-file limit towards ``wanted`` (capped by the hard limit); the new limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def process_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process and of every process it started, by name.

    Ray workers are named by their process title (``ray::ServeReplica:ocr:OCRModel``
    -> ``ServeReplica:ocr:OCRModel``); this process is ``benchmark (this process)``.
    """
    import psutil

    me = psutil.Process()
    out: dict[str, float] = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            title = " ".join(proc.cmdline()) or proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        name = "benchmark (this process)" if proc.pid == me.pid else process_name(title)
        out[name] = out.get(name, 0.0) + times.user + times.system
    return out


def process_name(title: str) -> str:
    if title.startswith("ray::"):
        return title[5:].split(" ")[0].split(".")[0]
    known_names = ("bench.baseline_server", "raylet", "gcs_server", "haproxy", "dashboard", "log_monitor")
    for known in (*known_names, "runtime_env", "monitor.py"):
        if known in title:
            return known
    return title.split(" ")[0].rsplit("/", 1)[-1]


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two :func:`process_cpu` snapshots, by name (largest first)."""
    names = set(before) | set(after)
    delta = {n: after.get(n, 0.0) - before.get(n, 0.0) for n in names}
    return dict(sorted(((n, round(v, 3)) for n, v in delta.items() if v > 0.0005), key=lambda kv: -kv[1]))


class Periodic:
    """Calls :meth:`sample` every ``period_s`` in a thread between :meth:`start` and :meth:`stop`.

    Rows go to ``samples``; a sample that raises is recorded in ``error`` and
    never stops the benchmark. :meth:`elapsed` is seconds since ``start()``.
    """

    def __init__(self, period_s: float, name: str) -> None:
        import threading

        self.period_s = period_s
        self.samples: list[dict[str, Any]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._t0 = 0.0

    def start(self, t0: float | None = None) -> Periodic:
        self._t0 = time.perf_counter() if t0 is None else t0
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.samples

    def elapsed(self) -> float:
        return round(time.perf_counter() - self._t0, 2)

    def sample(self) -> dict[str, Any]:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"[:300]
            self._stop.wait(self.period_s)


class ReplicaPoller(Periodic):
    """Counts RUNNING replicas of each deployment of ``app`` once per ``period_s``.

    Needs Ray initialised in this process (``running_app`` does); samples are
    ``{"t": seconds since start(), "<deployment>": running, ...}``.
    """

    def __init__(self, app: str = "ocr", period_s: float = 1.0) -> None:
        super().__init__(period_s, "replica-poller")
        self.app = app

    def sample(self) -> dict[str, Any]:
        return {"t": self.elapsed(), **running_replicas(self.app)}


def running_replicas(app: str = "ocr") -> dict[str, int]:
    """RUNNING replicas of each deployment of ``app`` now (needs Ray initialised in this process)."""
    from ray import serve

    deployments = serve.status().applications[app].deployments
    return {
        name: sum(n for state, n in deployment.replica_states.items() if str(state).endswith("RUNNING"))
        for name, deployment in deployments.items()
    }


def wait_for_no_ray(timeout_s: float = 600.0, poll_s: float = 10.0) -> None:
    """Wait (bounded) until no other Ray (a raylet: another benchmark or test session) runs here.

    Two Rays on 2 cores would measure each other. Raises TimeoutError after ``timeout_s``.
    """
    import psutil

    start = time.monotonic()
    while True:
        raylets = [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "raylet"]
        if not raylets:
            return
        waited = time.monotonic() - start
        if waited > timeout_s:
            raise TimeoutError(f"another Ray is still running (raylet pids {raylets}) after {waited:.0f} s")
        print(f"another Ray is running (raylet pids {raylets}); waiting ({waited:.0f} s so far)", flush=True)
        time.sleep(poll_s)


_GC_PAUSE = re.compile(r"a full garbage collection stopped this replica for (\d+) ms")


def ingress_gc_pauses() -> dict[str, Any]:
    """The ingress replicas' full garbage collections over 100 ms so far (their log lines; this Ray)."""
    logs = Path("/tmp/ray/session_latest/logs/serve").glob("replica_ocr_StreamIngress_*.log")
    pauses = [float(m.group(1)) for log in logs for m in _GC_PAUSE.finditer(log.read_text(errors="replace"))]
    return {"n": len(pauses), "max_ms": max(pauses, default=0.0), "total_s": round(sum(pauses) / 1000.0, 2)}


def machine_info() -> dict[str, Any]:
    """CPUs and the 1-minute load average now: a busy machine makes every number here worse."""
    import os

    return {
        "cpus": os.cpu_count(),
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "note": "the load generator runs on the same cores as the service",
    }
