"""The client installs alone (``client/pyproject.toml``) and reads with the running service."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"ray", "paddleocr", "paddlex", "paddlepaddle", "onnxruntime", "opencv-python", "fastapi", "numpy"}


@pytest.mark.serve
@pytest.mark.timeout(300)
def test_the_client_installs_alone_and_reads_an_image(service_url: str, images: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}

    def run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env
        )

    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    # From a copy: pip builds a local project in place (build/, *.egg-info), not in the repository.
    skip = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    source = shutil.copytree(ROOT / "client", tmp_path / "client", ignore=skip)
    pip = run(venv / "bin" / "pip", "install", "--quiet", source, timeout=240)
    assert pip.returncode == 0, pip.stderr
    freeze = run(venv / "bin" / "pip", "list", "--format=freeze").stdout
    installed = {line.split("==")[0].lower().replace("_", "-") for line in freeze.splitlines()}
    assert {"ocr-stream-client", "websockets", "pydantic"} <= installed
    assert not installed & HEAVY, installed & HEAVY

    image = images / "text_rec.jpg"
    result = run(venv / "bin" / "ocr-stream", service_url, image, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{image}: 韩国小馆"]

    # A video needs the [video] extra, and says so.
    video = run(venv / "bin" / "ocr-stream", service_url, tmp_path / "clip.mp4")
    assert video.returncode == 1
    assert "needs OpenCV: pip install 'ocr-stream-client[video]'" in video.stderr
