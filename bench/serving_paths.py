"""Ray Serve's serving paths side by side, with a stand-in ingress that answers every frame itself.

    flock /tmp/ray.lock python -m bench.serving_paths [--seconds 10] [--paths proxy,direct,...]

No model and no sampler: a FastAPI app (named a stand-in) whose WebSocket route
``/v1/stream`` parses each protocol-v1 binary frame's header and answers it
``skipped``/``rate`` at once. The same app runs on each path:

- ``floor``: the app under bare uvicorn, no Ray (what Python and the box can do);
- ``proxy``: Serve's default path, port 8000 -> Python proxy -> ingress replica (Ray RPC);
- ``direct``: ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``, clients on the replica's own uvicorn port;
- ``direct_same_thread``: the same plus ``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0``;
- ``haproxy``: ``RAY_SERVE_ENABLE_HA_PROXY=1`` (implies direct ingress), clients on port 8000;
- ``throughput``: ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``, clients on the replica's port.

Load per path: 8 connections x 4 frames in flight for ``--seconds``, then
1 connection x 1 in flight for latency; ~32 KB JPEG frames. Server CPU per
frame is the CPU seconds (psutil) of every process this benchmark started
(raylet, gcs, proxy, replica, haproxy, agents; uvicorn for the floor), the
benchmark process itself (the load generator) excluded, divided by answers.

Probes run on every path (and on the probe-only paths ``*_xff_*`` and
``direct_via_config``): which addresses each process listens on, what
``request.client.host`` the app sees for ``X-Forwarded-For: 10.1.2.3`` sent
from loopback (HTTP and WebSocket, on port 8000 and on the replica's port),
and, with ``--drain``, how an open WebSocket ends when the app is deleted
(the stand-in closes its streams with 1012 once the replica reads as
draining, with the service's own signal from deployments/ingress.py).
The ``handles`` path measures the CPU of a Serve handle call between two
deployments: unary or streaming, by reference or by value (gRPC), 1 or 16
items of 20 KB each.

Each path runs in its own subprocess (Serve reads these flags at import, and
the Ray processes inherit the subprocess' environment). Writes (merges into)
docs/bench/serving_paths.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from fastapi import FastAPI, Request, WebSocket
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed

from bench.common import (
    ROOT,
    cpu_delta,
    machine_info,
    process_cpu,
    shipped_logging,
    wait_for_no_ray,
    wait_healthy,
    write_json,
)
from bench.loadgen import LoadGen, LoadSpec, Phase, analyse, sized_pool
from serve_app.protocol import (
    WS_1012_SERVICE_RESTART,
    PingRequest,
    PongAnswer,
    ProtocolError,
    ResultAnswer,
    SkipReason,
    parse_binary,
    parse_text,
)

OUT = ROOT / "docs" / "bench" / "serving_paths.json"
APP = "paths"
SPOOFED = "10.1.2.3"
ME = "benchmark (this process)"


# --- the stand-in app ------------------------------------------------------------


def answer(message: dict[str, Any]) -> str:
    """The answer to one WebSocket message: ``skipped``/``rate`` for a frame, ``pong`` for a ping."""
    try:
        if message.get("bytes") is not None:
            frame = parse_binary(message["bytes"])
            return ResultAnswer(frame_id=frame.frame_id, status="skipped", reason=SkipReason.RATE).encode()
        parsed = parse_text(message.get("text") or "")
        if isinstance(parsed, PingRequest):
            return PongAnswer(ts=time.time()).encode()
        return ResultAnswer(frame_id=parsed.frame_id, status="skipped", reason=SkipReason.RATE).encode()
    except ProtocolError as exc:
        return exc.to_answer().encode()


def peer(client: Any, headers: Any) -> dict[str, Any]:
    return {
        "client_host": client.host if client else None,
        "x_forwarded_for": headers.get("x-forwarded-for"),
        "pid": os.getpid(),
        "FORWARDED_ALLOW_IPS": os.environ.get("FORWARDED_ALLOW_IPS"),
    }


def build_fastapi(draining: Callable[[], bool] | None = None) -> FastAPI:
    """The stand-in app; ``draining`` (under Serve) says when to close every stream with 1012."""
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/whoami")
    def whoami(request: Request) -> dict[str, Any]:
        return peer(request.client, request.headers)

    @app.websocket("/v1/whoami")
    async def ws_whoami(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(json.dumps(peer(ws.client, ws.headers)))
        await ws.close()

    async def close_on_drain(ws: WebSocket) -> None:
        while draining is None or not draining():
            await asyncio.sleep(0.25)
        await ws.close(WS_1012_SERVICE_RESTART, "server restarting")

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        watcher = asyncio.create_task(close_on_drain(ws)) if draining is not None else None
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                await ws.send_text(answer(message))
        except (WebSocketDisconnect, RuntimeError):  # RuntimeError: receive after the watcher closed
            return
        finally:
            if watcher is not None:
                watcher.cancel()

    return app


def standin_deployment(replica_env: dict[str, str]) -> Any:
    from ray import serve

    class StandInIngress:
        """The stand-in ingress: every route is the FastAPI app's own."""

    options: dict[str, Any] = {"num_cpus": 0}
    if replica_env:
        options["runtime_env"] = {"env_vars": replica_env}
    from deployments.ingress import _replica_draining  # the service's own drain signal

    return serve.deployment(
        max_ongoing_requests=1000, graceful_shutdown_timeout_s=5, ray_actor_options=options
    )(serve.ingress(build_fastapi(_replica_draining))(StandInIngress))


# --- the paths ----------------------------------------------------------------


@dataclass(frozen=True)
class PathSpec:
    env: dict[str, str] = field(default_factory=dict)  # environment of ray.init: every Ray process
    controller_env: dict[str, str] = field(default_factory=dict)  # controller_options.runtime_env
    replica_env: dict[str, str] = field(default_factory=dict)  # the deployment's runtime_env
    on_replica_port: bool = False  # the load goes to the replica's own port, not 8000
    load: bool = True


DIRECT = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}
NO_XFF = {"FORWARDED_ALLOW_IPS": ""}
PATHS: dict[str, PathSpec] = {
    "floor": PathSpec(),
    "proxy": PathSpec(),
    "direct": PathSpec(env=DIRECT, on_replica_port=True),
    "direct_same_thread": PathSpec(
        env=DIRECT | {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}, on_replica_port=True
    ),
    "haproxy": PathSpec(env={"RAY_SERVE_ENABLE_HA_PROXY": "1"}),
    "throughput": PathSpec(env={"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, on_replica_port=True),
    # Probe-only variants: where FORWARDED_ALLOW_IPS and the Serve flags must be set to take effect.
    "proxy_xff_env": PathSpec(env=NO_XFF, load=False),
    "proxy_xff_controller_options": PathSpec(controller_env=NO_XFF, load=False),
    "direct_xff_replica_env": PathSpec(env=DIRECT, replica_env=NO_XFF, load=False),
    "haproxy_xff_env": PathSpec(env={"RAY_SERVE_ENABLE_HA_PROXY": "1"} | NO_XFF, load=False),
    "direct_short_drain": PathSpec(
        env=DIRECT | {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}, load=False
    ),
    "direct_via_config": PathSpec(controller_env=DIRECT, replica_env=DIRECT, load=False),
    "handles": PathSpec(load=False),
}


# --- measurements ---------------------------------------------------------------


def server_cpu(cpu: dict[str, float]) -> float:
    return sum(v for k, v in cpu.items() if k != ME)


async def load(url: str, frames: list[bytes], conns: int, window: int, seconds: float) -> dict[str, Any]:
    spec = LoadSpec(
        url=url,
        phases=[Phase(conns, seconds)],
        frames=frames,
        window=window,
        ping_interval_s=None,
        drain_s=10.0,
        stream_prefix=f"paths-{conns}x{window}",
    )
    load_before = os.getloadavg()[0]
    before = process_cpu()
    totals = analyse(await LoadGen(spec).run())["totals"]
    cpu = cpu_delta(before, process_cpu())
    answered = totals["answered"]
    return {
        "shape": f"{conns} conn x {window} in flight, {seconds:g} s",
        "frames_per_s_answered": round(answered / seconds, 1),
        "server_cpu_ms_per_frame": round(server_cpu(cpu) * 1000 / answered, 3) if answered else None,
        "answer_latency_ms": totals["answer_latency_ms"],
        "every_frame_answered_once": totals["every_frame_answered_once"],
        "connection_errors": totals["connection_errors"],
        "abnormal_closes": totals["abnormal_closes"],
        "cpu_s_by_process": cpu,
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }


async def load_shapes(url: str, seconds: float) -> list[dict[str, Any]]:
    frames = sized_pool(200, 32_000)
    rows = [await load(url, frames, 8, 4, seconds), await load(url, frames, 1, 1, seconds / 2)]
    for row in rows:
        print(
            f"  {row['shape']}: {row['frames_per_s_answered']} frames/s, "
            f"{row['server_cpu_ms_per_frame']} ms server CPU/frame, "
            f"p50 {row['answer_latency_ms']['p50']} ms (load {row['loadavg_1min_before']})",
            flush=True,
        )
    return rows


def listeners() -> list[str]:
    """``address:port process`` of every listening TCP socket of this process tree."""
    import psutil

    from bench.common import process_name

    me = psutil.Process()
    out = set()
    for proc in [me, *me.children(recursive=True)]:
        try:
            name = process_name(" ".join(proc.cmdline()) or proc.name())
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    out.add(f"{conn.laddr.ip}:{conn.laddr.port} {name}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return sorted(out)


async def whoami(url: str) -> dict[str, Any]:
    """What the app sees as the client, for a loopback request that claims ``X-Forwarded-For: 10.1.2.3``."""
    headers = {"X-Forwarded-For": SPOOFED}
    out: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            out["http"] = (await client.get(f"{url}/whoami", headers=headers)).json()
        ws_url = url.replace("http://", "ws://") + "/v1/whoami"
        async with websockets.connect(ws_url, additional_headers=headers, open_timeout=10) as ws:
            out["websocket"] = json.loads(await ws.recv())
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    out["xff_believed"] = any(
        isinstance(v, dict) and v.get("client_host") == SPOOFED
        for v in (out.get("http"), out.get("websocket"))
    )
    return out


async def drain(urls: dict[str, str]) -> dict[str, Any]:
    """Open a WebSocket on each url, delete the app, and time how (and when) each one ends."""
    from ray import serve

    conns = {}
    for name, url in urls.items():
        ws = await websockets.connect(url.replace("http://", "ws://") + "/v1/stream", open_timeout=10)
        await ws.send('{"type":"ping"}')
        await ws.recv()
        conns[name] = ws
    start = time.monotonic()
    deleting = asyncio.get_running_loop().run_in_executor(None, serve.delete, APP)

    async def ends(ws: Any) -> dict[str, Any]:
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 120)
        except ConnectionClosed as exc:
            frame = exc.rcvd
            return {
                "close_code": frame.code if frame else None,
                "close_reason": frame.reason if frame else "no close frame (1006)",
                "after_s": round(time.monotonic() - start, 1),
            }
        except TimeoutError:
            return {"close_code": None, "close_reason": "still open after 120 s"}

    ended = dict(zip(conns, await asyncio.gather(*(ends(ws) for ws in conns.values())), strict=True))
    await deleting
    ended["app_deleted_after_s"] = round(time.monotonic() - start, 1)
    return ended


# --- one path in this (child) process -------------------------------------------


@contextmanager
def floor_server(port: int) -> Iterator[str]:
    cmd = [sys.executable, "-m", "bench.serving_paths", "--floor-server", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, timeout_s=60)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def paths_app(spec: PathSpec, port: int) -> Iterator[dict[str, Any]]:
    import ray
    from ray import serve

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        controller = {"runtime_env": {"env_vars": spec.controller_env}} if spec.controller_env else None
        serve.start(
            http_options={"host": "127.0.0.1", "port": port},
            logging_config=shipped_logging(),
            controller_options=controller,
        )
        serve.run(
            standin_deployment(spec.replica_env).bind(),
            name=APP,
            route_prefix="/",
            logging_config=shipped_logging(),
        )
        urls = {"port_8000": f"http://127.0.0.1:{port}"}
        replica = replica_targets()
        if replica:
            urls["replica_port"] = f"http://127.0.0.1:{replica[0]['port']}"
        for url in urls.values():
            wait_healthy(url, timeout_s=120)
        yield {"urls": urls, "target_groups": replica}
    finally:
        serve.shutdown()
        ray.shutdown()


def replica_targets() -> list[dict[str, Any]]:
    """The app's direct-ingress targets, from the controller (what HAProxy is fed; empty without)."""
    import ray
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    for _ in range(10):  # ports are registered by the controller's loop shortly after the app runs
        groups = ray.get(controller.get_target_groups.remote(APP, True))
        targets = [t.model_dump() for g in groups for t in g.targets if g.app_name == APP]
        if targets:
            return targets
        time.sleep(0.5)
    return []


def child(name: str, seconds: float, port: int, with_drain: bool) -> dict[str, Any]:
    spec = PATHS[name]
    result: dict[str, Any] = {"env": spec.env, "controller_env": spec.controller_env}
    result["replica_env"] = spec.replica_env
    if name == "floor":
        with floor_server(port + 1) as url:
            result["listeners"] = listeners()
            result["whoami"] = {"floor": asyncio.run(whoami(url))}
            result["rows"] = asyncio.run(load_shapes(url, seconds))
        return result
    if name == "handles":
        return result | handle_costs(seconds)
    with paths_app(spec, port) as app:
        result |= app
        result["listeners"] = listeners()
        result["whoami"] = {k: asyncio.run(whoami(u)) for k, u in app["urls"].items()}
        if spec.load:
            target = app["urls"]["replica_port" if spec.on_replica_port else "port_8000"]
            result["load_target"] = target
            result["rows"] = asyncio.run(load_shapes(target, seconds))
        if with_drain:
            result["drain_on_app_delete"] = asyncio.run(drain(app["urls"]))
    return result


# --- handle calls between two deployments ----------------------------------------


class Callee:
    async def unary(self, items: list[bytes]) -> list[int]:
        return [len(i) for i in items]

    async def stream(self, items: list[bytes]) -> AsyncIterator[int]:
        for item in items:
            yield len(item)


class Caller:
    def __init__(self, callee: Any) -> None:
        self._callee = callee

    async def run(self, streaming: bool, by_value: bool, n_items: int, seconds: float) -> int:
        """Calls ``callee`` from 8 concurrent loops for ``seconds``; the number of calls made."""
        handle = self._callee.options(_by_reference=not by_value)
        items = [os.urandom(20_000) for _ in range(n_items)]
        end = time.monotonic() + seconds
        calls = 0

        async def loop() -> None:
            nonlocal calls
            while time.monotonic() < end:
                if streaming:
                    got = [n async for n in handle.options(stream=True).stream.remote(items)]
                else:
                    got = await handle.unary.remote(items)
                assert len(got) == n_items
                calls += 1

        await asyncio.gather(*(loop() for _ in range(8)))
        return calls


def handle_costs(seconds: float) -> dict[str, Any]:
    import ray
    from ray import serve

    deployment = serve.deployment(max_ongoing_requests=100, ray_actor_options={"num_cpus": 0})
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = []
    try:
        serve.start(http_options={"host": "127.0.0.1"}, logging_config=shipped_logging())
        caller = serve.run(
            deployment(Caller).bind(deployment(Callee).bind()),
            name="handles",
            route_prefix=None,
            logging_config=shipped_logging(),
        )
        caller.run.remote(False, False, 1, 1.0).result()  # warm both sides and both paths
        caller.run.remote(True, True, 1, 1.0).result()
        for streaming in (False, True):
            for by_value in (False, True):
                for n_items in (1, 16):
                    load_before = os.getloadavg()[0]
                    before = process_cpu()
                    calls = caller.run.remote(streaming, by_value, n_items, seconds).result()
                    cpu = cpu_delta(before, process_cpu())
                    by_side = {
                        side: round(sum(v for k, v in cpu.items() if k.endswith(side)) * 1000 / calls, 3)
                        for side in (":Caller", ":Callee")
                    }
                    row = {
                        "call": "streaming" if streaming else "unary",
                        "transport": "by value (gRPC)" if by_value else "by reference",
                        "items_of_20KB": n_items,
                        "calls_per_s": round(calls / seconds, 1),
                        "caller_cpu_ms_per_call": by_side[":Caller"],
                        "callee_cpu_ms_per_call": by_side[":Callee"],
                        "all_processes_cpu_ms_per_call": round(server_cpu(cpu) * 1000 / calls, 3),
                        "cpu_s_by_process": cpu,
                        "loadavg_1min_before": round(load_before, 2),
                    }
                    print(
                        f"  {row['call']} {row['transport']} x{n_items}: {row['calls_per_s']} calls/s, "
                        f"caller {by_side[':Caller']} ms, callee {by_side[':Callee']} ms, "
                        f"all {row['all_processes_cpu_ms_per_call']} ms per call",
                        flush=True,
                    )
                    rows.append(row)
    finally:
        serve.shutdown()
        ray.shutdown()
    return {"note": "8 concurrent calls in flight from one caller replica; 0 CPUs reserved", "rows": rows}


# --- the parent: one subprocess per path -------------------------------------------


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    wait_for_no_ray()
    print(f"path {name}", flush=True)
    started = time.time()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        cmd = [sys.executable, "-m", "bench.serving_paths", "--child", name, "--child-out", str(out)]
        cmd += ["--seconds", str(args.seconds), "--port", str(args.port)] + (
            ["--drain"] if args.drain else []
        )
        env = {**os.environ, **PATHS[name].env}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=900, check=False)
        result = json.loads(out.read_text()) if out.exists() else {"error": f"child exited {proc.returncode}"}
    return result | {"uptime_before": uptime, "started": started, "wall_s": round(time.time() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per load shape (latency: half)")
    parser.add_argument("--paths", default="floor,proxy,direct,direct_same_thread,haproxy,throughput")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--drain", action="store_true", help="also delete the app with WebSockets open")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--floor-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        import uvicorn

        uvicorn.run(build_fastapi(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return
    if args.child:
        try:
            result = child(args.child, args.seconds, args.port, args.drain)
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        write_json(args.child_out, result)
        return

    report = json.loads(OUT.read_text()) if OUT.exists() else {"paths": {}}
    command = "flock /tmp/ray.lock python -m bench.serving_paths " + " ".join(sys.argv[1:])
    for name in args.paths.split(","):
        result = run_child(name, args) | {"command": command}
        report["paths"].setdefault(name, []).append(result)
        write_json(OUT, report | {"machine": machine_info(), "stand_in": __doc__.split("\n\n")[1]})


if __name__ == "__main__":
    main()
