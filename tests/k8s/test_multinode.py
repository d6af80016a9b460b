"""Multi-node placement of the RayService application, on one machine.

The scenario itself is tests/k8s/multinode_check.py, run in a subprocess: the
rest of the session shares one Ray instance (conftest.py), and a process can
be attached to only one cluster.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 540

pytestmark = [pytest.mark.serve, pytest.mark.own_cluster]


def _pids_using(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (our private Ray temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def ray_tmpdir() -> Iterator[str]:
    """A private Ray temp dir: the cluster's address file and sockets live there.

    Ray records the last cluster started in ``<tmp>/ray/ray_current_cluster``,
    and a bare ``ray.init()`` elsewhere on this machine would connect to it
    while it runs; a private dir keeps the check's cluster invisible. Short,
    because Ray's Unix socket paths must fit 107 bytes.
    """
    path = tempfile.mkdtemp(prefix="rmn-", dir="/tmp")
    yield path
    # Every Ray process of the check must be gone; stop stragglers by pid.
    for pid in _pids_using(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(TIMEOUT_S + 60)
def test_ocr_on_gpu_node_ingress_elsewhere_stream_across_nodes(ray_tmpdir: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = ray_tmpdir
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.k8s.multinode_check"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Own process group: on timeout the whole tree goes, not just the driver.
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the multi-node check did not finish within {TIMEOUT_S} s:\n{output[-6000:]}")
    lines = [line for line in output.splitlines() if line.startswith("[multinode]")]
    assert proc.returncode == 0, "\n".join(lines) + "\n--- full output (tail) ---\n" + output[-6000:]
    assert any("all checks passed" in line for line in lines), output[-6000:]
