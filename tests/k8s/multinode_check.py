"""Multi-node placement of k8s/rayservice.yaml on one machine (run by test_multinode.py).

``python -m tests.k8s.multinode_check`` starts a ``ray.cluster_utils.Cluster``
shaped like the RayService: a head with no CPUs, a "cpu-group" node, and a
node that declares the custom resource of the gpu-group (standing in for a
GPU node; it has no Ray CPUs either, as in the manifest). It deploys the
manifest's own application with the few overrides a machine without GPUs
needs (MULTINODE_OVERRIDES), checks where each replica landed, streams one
real image over a WebSocket with a real JWT, then a burst of streams through
two sampler replicas (every frame answered once, dedup as with one), then
fuzz on several streams at once through them (tests/deployments/
test_ingress_fuzz.py: every message answered exactly once as its bytes call
for, and each stream still reads a real frame right), and stops every Ray
process it started, also on failure. Exit status 0 means
every check passed.

A subprocess, because the test session shares one Ray instance (conftest.py)
and a process can only be attached to one cluster.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "k8s" / "rayservice.yaml"
IMAGE = ROOT / "tests" / "data" / "images" / "text_rec.jpg"
EXPECTED_TEXT = "韩国小馆"
GPU_RESOURCE = "ocr_gpu_node"
# At least 32 bytes: the HS256 minimum the ingress enforces.
TEST_SECRET = "multinode-check-secret-0123456789abcdef"
READY_TIMEOUT_S = 300.0
SAMPLER_REPLICAS = 2
BURST_STREAMS, BURST_FRAMES = 8, 12
FUZZ_STREAMS, FUZZ_MESSAGES = 3, 800  # per stream

# What differs from the manifest here, and why:
# - no GPU on this machine: the OCR replica reads on the CPU and asks for no
#   GPU; it still asks for the gpu-group's custom resource, which is what
#   places it (the point of this check);
# - one replica of the ingress and the model, two of the sampler (autoscaling
#   kept, min = max, so the demand policy is loaded by the controller): the
#   sampler is the stage that must never be one process;
# - proxy on the head only: every node shares this machine's ports, so one
#   proxy per node would collide on the HTTP port. The head's proxy makes the
#   path cross nodes anyway (head -> cpu node -> "gpu" node).
MULTINODE_OVERRIDES = (
    "ocr.device = cpu",
    "ocr.deployment_config.ray_actor_options.num_gpus: removed",
    "*.deployment_config.autoscaling_config.min_replicas = max_replicas = 1 (sampler: 2)",
    "proxy_location = HeadOnly, http_options host/port = 127.0.0.1:<free port>",
)


def log(message: str) -> None:
    print(f"[multinode] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manifest_args() -> dict[str, Any]:
    rayservice = next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] == "RayService")
    serve_config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    return serve_config["applications"][0]["args"]


def multinode_args(args: dict[str, Any]) -> dict[str, Any]:
    """The manifest's args with MULTINODE_OVERRIDES applied."""
    args = copy.deepcopy(args)
    args["ocr"]["device"] = "cpu"
    args["ocr"]["deployment_config"]["ray_actor_options"].pop("num_gpus", None)
    for section in ("ingress", "sampler", "ocr"):
        options = args[section]["deployment_config"]
        replicas = SAMPLER_REPLICAS if section == "sampler" else 1
        if "autoscaling_config" in options:
            options["autoscaling_config"]["min_replicas"] = options["autoscaling_config"]["max_replicas"] = (
                replicas
            )
        else:
            options["num_replicas"] = replicas
    return args


def make_token(audience: str) -> str:
    import jwt

    now = int(time.time())
    claims = {"sub": "multinode", "tenant": "multinode", "aud": audience, "iat": now, "exp": now + 600}
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def wait_healthy(url: str) -> None:
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"/healthz not 200 within {READY_TIMEOUT_S:.0f} s")


def replica_nodes() -> dict[str, list[str]]:
    """Deployment name -> the node id of each of its running replicas, as Serve's controller reports
    them (what `serve status` and the dashboard show; asked directly, so the cluster needs no dashboard)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    nodes: dict[str, list[str]] = {}
    for app in details["applications"].values():
        for name, deployment in app["deployments"].items():
            for replica in deployment["replicas"]:
                if replica["state"] == "RUNNING":
                    nodes.setdefault(name, []).append(replica["node_id"])
    return nodes


async def stream_one_frame(ws_url: str, token: str) -> dict[str, Any]:
    import websockets

    from serve_app.protocol import encode_binary_frame

    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(ws_url, additional_headers=headers, max_size=None, open_timeout=30) as ws:
        await ws.send(encode_binary_frame(1, IMAGE.read_bytes(), ts=time.time()))
        return json.loads(await asyncio.wait_for(ws.recv(), 120))


async def burst(ws_url: str, token: str) -> tuple[int, int, int]:
    """``BURST_STREAMS`` streams at once, each the same image ``BURST_FRAMES`` times: every frame must be
    answered once, and each stream read about once (dedup lives with the stream, not in a sampler
    replica). Returns (frames, answers, reads)."""
    import websockets

    from serve_app.protocol import encode_binary_frame

    image = IMAGE.read_bytes()
    headers = {"Authorization": f"Bearer {token}"}

    async def one(k: int) -> list[dict[str, Any]]:
        url = ws_url.replace("stream_id=multinode", f"stream_id=burst-{k}")
        async with websockets.connect(url, additional_headers=headers, max_size=None, open_timeout=60) as ws:
            for i in range(BURST_FRAMES):
                await ws.send(encode_binary_frame(i, image, ts=i / 30))
            answers = [json.loads(await asyncio.wait_for(ws.recv(), 120)) for _ in range(BURST_FRAMES)]
            assert sorted(a["frame_id"] for a in answers) == list(range(BURST_FRAMES)), answers
            return answers

    answers = [a for stream in await asyncio.gather(*(one(k) for k in range(BURST_STREAMS))) for a in stream]
    reads = sum(a.get("status") == "ok" for a in answers)
    return BURST_STREAMS * BURST_FRAMES, len(answers), reads


async def fuzz(ws_url: str, token: str) -> float:
    """``FUZZ_STREAMS`` streams of generated messages at once (see :func:`fuzz_one_websocket`)."""
    from tests.deployments.test_ingress_fuzz import fuzz_one_websocket, generated

    messages = generated(FUZZ_STREAMS * FUZZ_MESSAGES)
    headers = {"Authorization": f"Bearer {token}"}
    good = IMAGE.read_bytes()
    started = time.monotonic()
    await asyncio.gather(
        *(
            fuzz_one_websocket(
                ws_url.replace("stream_id=multinode", f"stream_id=fuzz-{k}"),
                messages[k::FUZZ_STREAMS],
                good,
                EXPECTED_TEXT,
                headers,
            )
            for k in range(FUZZ_STREAMS)
        )
    )
    return time.monotonic() - started


async def refused_without_token(ws_url: str) -> bool:
    import websockets

    try:
        async with websockets.connect(ws_url, open_timeout=30) as ws:
            await ws.recv()
    except websockets.InvalidStatus as exc:
        return exc.response.status_code == 403
    except websockets.ConnectionClosed:
        return False
    return False


def run_checks(head_id: str, cpu_id: str, gpu_id: str) -> None:
    from ray import serve

    from serve_app.app import compose
    from serve_app.config import AppConfig

    args = multinode_args(manifest_args())
    config = AppConfig.model_validate(args)
    port = free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    serve.run(compose(config), name="ocr", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    log("application healthy")

    replicas = replica_nodes()
    nodes = {name: set(ids) for name, ids in replicas.items()}
    log(f"replica nodes: { {k: sorted(v) for k, v in nodes.items()} }")
    names = {"head": head_id, "cpu": cpu_id, "gpu": gpu_id}
    where = {k: sorted(n for n, i in names.items() if i in v) for k, v in nodes.items()}
    log(f"placement: {where}")
    assert nodes.get("OCRModel") == {gpu_id}, f"OCRModel must run on the {GPU_RESOURCE} node only: {where}"
    samplers = len(replicas.get("FrameSampler", []))
    assert samplers == SAMPLER_REPLICAS, f"{samplers} sampler replicas, not {SAMPLER_REPLICAS}"
    for name in ("StreamIngress", "FrameSampler"):
        assert nodes.get(name) == {cpu_id}, f"{name} must run on the CPU node only: {where}"

    ws_url = url.replace("http://", "ws://") + "/v1/stream?stream_id=multinode"
    assert asyncio.run(refused_without_token(ws_url)), "a handshake without a token must be refused"
    answer = asyncio.run(stream_one_frame(ws_url, make_token(config.ingress.security.auth.audience or "")))
    log(f"answer: {answer}")
    assert answer.get("type") == "result" and answer.get("status") == "ok", answer
    text = "".join(line["text"] for line in answer.get("lines", []))
    assert EXPECTED_TEXT in text, f"expected {EXPECTED_TEXT!r} in {text!r}"
    frames, answers, reads = asyncio.run(
        burst(ws_url, make_token(config.ingress.security.auth.audience or ""))
    )
    log(f"burst through {samplers} sampler replicas: {frames} frames, {answers} answers, {reads} reads")
    assert answers == frames, "every frame answered exactly once"
    assert reads <= 2 * BURST_STREAMS, f"dedup as with one sampler: {reads} reads for {BURST_STREAMS} streams"
    fuzz_s = asyncio.run(fuzz(ws_url, make_token(config.ingress.security.auth.audience or "")))
    log(
        f"fuzz through {samplers} sampler replicas: {FUZZ_STREAMS} streams of {FUZZ_MESSAGES} messages "
        f"in {fuzz_s:.0f} s, every message answered once, each stream then read right"
    )


def main() -> int:
    # The ingress reads the secret from its environment (auth.secret_env);
    # the nodes started below, and so every replica, inherit this process's env.
    secret_env = manifest_args()["ingress"]["security"]["auth"]["secret_env"]
    os.environ[secret_env] = TEST_SECRET

    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    cluster: Cluster | None = None
    try:
        # Head as in the manifest: no CPUs, so no replica can land on it. No dashboard: Serve's
        # controller says where replicas run, and on a busy box the dashboard's ten processes
        # starting beside the nodes made a raylet miss Ray's 30 s registration limit.
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        # cpu-group: room for one ingress and two sampler replicas (1 CPU each).
        cpu_node = cluster.add_node(num_cpus=3)
        # gpu-group stand-in: num-cpus "0" and the custom resource, as in the manifest.
        gpu_node = cluster.add_node(num_cpus=0, resources={GPU_RESOURCE: 1})
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()
        head_id = cluster.head_node.node_id
        log(f"nodes: head={head_id} cpu={cpu_node.node_id} gpu={gpu_node.node_id}")
        run_checks(head_id, cpu_node.node_id, gpu_node.node_id)
        log("all checks passed")
        return 0
    except Exception as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1
    finally:
        for step in (serve.shutdown, ray.shutdown):
            try:
                step()
            except Exception as exc:
                log(f"cleanup: {step.__module__}.{step.__name__} failed: {exc}")
        if cluster is not None:
            cluster.shutdown()
        log("cluster shut down")


if __name__ == "__main__":
    sys.exit(main())
