"""PaddleOCR text reading: one pipeline, batches of decoded frames in, protocol lines out.

Ray-free: the OCR deployment wraps it, and the benchmarks call it directly to
compare the serving path with the model alone. Not thread-safe by design: one
owner thread calls :meth:`TextReader.read` and :meth:`TextReader.read_lines`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.config import OCRConfig
from serve_app.jobs import Boxes
from serve_app.models import bundled_model_dirs, dir_hash
from serve_app.protocol import Line

os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")

logger = logging.getLogger(__name__)

_REC_BATCH = 8  # text lines recognised in one model call


def engine_has_cuda(engine: str) -> bool:
    if engine == "onnxruntime":
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    try:
        import paddle
    except ImportError:
        return False
    return bool(paddle.device.is_compiled_with_cuda())


def choose_device(requested: str, engine: str, gpu_ids: list[Any]) -> str:
    """``gpu:0`` when Ray assigned this process a GPU and the engine can use it.

    Ray sets ``CUDA_VISIBLE_DEVICES`` to the GPUs it assigned, so the first
    assigned GPU is device 0 inside the replica.
    """
    usable = bool(gpu_ids) and engine_has_cuda(engine)
    if requested == "gpu" and not usable:
        why = (
            "Ray assigned no GPU (set ray_actor_options.num_gpus)"
            if not gpu_ids
            else (f"the {engine} build has no CUDA")
        )
        raise RuntimeError(f"device: gpu was asked for, but {why}")
    return "gpu:0" if requested != "cpu" and usable else "cpu"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    hash: str


class TextReader:
    def __init__(self, config: OCRConfig, device: str = "cpu") -> None:
        from paddleocr import PaddleOCR, TextRecognition
        from paddlex.inference.pipelines.components import CropByPolys

        bundled = (
            bundled_model_dirs(config.engine)
            if None in (config.det_model_dir, config.rec_model_dir)
            else None
        )
        det_dir = Path(config.det_model_dir or bundled.det)  # type: ignore[union-attr]
        rec_dir = Path(config.rec_model_dir or bundled.rec)  # type: ignore[union-attr]
        self.device = device
        self.engine = config.engine
        self.models = [
            ModelInfo(config.det_model_name, dir_hash(det_dir)),
            ModelInfo(config.rec_model_name, dir_hash(rec_dir)),
        ]
        engine_config = _engine_config(config, device)
        self._pipeline = PaddleOCR(
            text_detection_model_name=config.det_model_name,
            text_detection_model_dir=str(det_dir),
            text_recognition_model_name=config.rec_model_name,
            text_recognition_model_dir=str(rec_dir),
            use_doc_orientation_classify=False,
            use_doc_unwarping=False,
            use_textline_orientation=config.use_textline_orientation,
            text_det_unclip_ratio=config.det_unclip_ratio,
            text_det_limit_side_len=config.det_limit_side_len,
            text_det_limit_type="min",
            text_rec_score_thresh=config.rec_score_thresh,
            text_recognition_batch_size=_REC_BATCH,
            engine=config.engine,
            engine_config=engine_config,
            device=device,
        )
        # Line reads: the same recognition model on its own, and the pipeline's own crop of a box.
        self._recognizer = TextRecognition(
            model_name=config.rec_model_name,
            model_dir=str(rec_dir),
            engine=config.engine,
            engine_config=engine_config,
            device=device,
        )
        self._crop = CropByPolys("quad")
        self._score_thresh = config.rec_score_thresh
        logger.info("PaddleOCR ready: engine=%s device=%s models=%s", config.engine, device, self.models)

    def read(self, images: list[np.ndarray]) -> list[list[Line]]:
        """Read BGR uint8 images; lines in reading order, boxes in image pixels."""
        return [_lines(result) for result in self._pipeline.predict(images)]

    def read_lines(self, items: list[tuple[np.ndarray, Boxes]]) -> list[list[Line]]:
        """Recognise the lines in the given boxes of each image (no detection): one line per box,
        in order, its box as given, its text empty where nothing scores ``rec_score_thresh``."""
        crops = [
            crop
            for image, boxes in items
            for crop in self._crop(image, [_clipped(box, image.shape) for box in boxes])
        ]
        results = iter(self._recognizer.predict(crops, batch_size=_REC_BATCH) if crops else ())
        read = []
        for _, boxes in items:
            lines = []
            for box in boxes:
                result = next(results)
                text, score = str(result["rec_text"]), float(result["rec_score"])
                keep = bool(text.strip()) and score >= self._score_thresh
                lines.append(Line(text=text if keep else "", score=round(score, 4), box=box))
            read.append(lines)
        return read


def _engine_config(config: OCRConfig, device: str) -> dict[str, Any] | None:
    if device != "cpu":
        return None  # PaddleOCR's own GPU defaults (CUDA provider / Paddle GPU)
    if config.engine == "onnxruntime":
        return {"intra_op_num_threads": config.cpu_threads}
    # The default oneDNN path fails on these weights under the new IR; without
    # oneDNN Paddle is ~5x slower (docs/engines.md).
    return {"run_mode": "mkldnn", "cpu_threads": config.cpu_threads, "enable_new_ir": False}


def _clipped(box: list[list[int]], shape: tuple[int, ...]) -> np.ndarray:
    return np.clip(np.asarray(box, np.float32), 0, (shape[1] - 1, shape[0] - 1))


def _lines(result: Any) -> list[Line]:
    lines = []
    for text, score, poly in zip(result["rec_texts"], result["rec_scores"], result["rec_polys"], strict=True):
        if text.strip():
            box = np.rint(np.asarray(poly, dtype=np.float64).reshape(-1, 2)[:4]).astype(int).tolist()
            lines.append(Line(text=text, score=round(float(score), 4), box=box))
    return lines
