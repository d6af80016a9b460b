"""The README's first command, end to end: `serve run configs/serve.yaml` -> healthy -> a frame read.

    python -m bench.startup [--config configs/serve.yaml] [--runs 1]

Starts `serve run` (embedded local Ray) in its own process group, times it to
a 200 from /healthz, streams one test image (tests/data/images) over the
WebSocket and checks the text, then stops it (SIGINT, then SIGTERM, then
SIGKILL: `serve run` does not always stop on SIGINT). Exits non-zero if any
step fails; .ci/run runs it as a smoke test of the start command. With
`--out docs/bench/startup.json` it writes the numbers there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import websockets
import yaml

from bench.common import ROOT, wait_healthy, write_json
from serve_app.protocol import encode_binary_frame

IMAGE = ROOT / "tests" / "data" / "images" / "text_rec.jpg"


async def read_one(url: str) -> list[str]:
    async with websockets.connect(url.replace("http", "ws") + "/v1/stream", max_size=None) as ws:
        await ws.send(encode_binary_frame(1, IMAGE.read_bytes()))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 60))
    return [line["text"] for line in answer.get("lines") or []]


def stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGINT, 20), (signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue


def one_run(config: Path, log: Path) -> dict[str, float | list[str]]:
    port = yaml.safe_load(config.read_text())["http_options"]["port"]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RAY_ADDRESS": "local"}  # a new embedded Ray, never a cluster already running here
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ray.serve.scripts", "run", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            healthy_s = wait_healthy(url, timeout_s=600)
            texts = asyncio.run(read_one(url))
        finally:
            stop(proc)
    return {"to_healthy_s": round(healthy_s, 1), "texts": texts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "serve.yaml")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: print only)")
    args = parser.parse_args()
    log = ROOT / "artifacts" / "serve-run.log"
    log.parent.mkdir(exist_ok=True)
    runs = [one_run(args.config, log) for _ in range(args.runs)]
    ok = all(r["texts"] == ["韩国小馆"] for r in runs)
    result = {"runs": runs, "read_right": ok, "command": f"python -m bench.startup --runs {args.runs}"}
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, ensure_ascii=False))
    if not ok:
        sys.exit(f"the service did not read the frame right; see {log}")


if __name__ == "__main__":
    main()
