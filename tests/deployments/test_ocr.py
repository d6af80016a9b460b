"""The OCR stage: reading quality of the real model (no Ray), both engines, the serving path."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
import websockets

from serve_app.config import OCRConfig
from serve_app.images import decode_bgr
from serve_app.models import bundled_model_dirs
from serve_app.protocol import encode_binary_frame
from serve_app.reader import TextReader, choose_device

MAX_PIXELS = 10**8


def read_all(reader: TextReader, images: Path) -> dict[str, list[str]]:
    names = sorted(p.name for p in images.iterdir())
    results = reader.read([decode_bgr((images / n).read_bytes(), MAX_PIXELS) for n in names])
    return {n: [line.text for line in lines] for n, lines in zip(names, results, strict=True)}


@pytest.fixture(scope="module")
def onnx_reader() -> TextReader:
    return TextReader(OCRConfig(engine="onnxruntime"))


@pytest.fixture(scope="module")
def onnx_texts(onnx_reader: TextReader, images: Path) -> dict[str, list[str]]:
    return read_all(onnx_reader, images)


def paddleocr_defaults(images: Path) -> dict[str, list[str]]:
    """PaddleOCR called directly with its defaults, same weights, same upright RGB input."""
    os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
    from paddleocr import PaddleOCR

    dirs = bundled_model_dirs("onnxruntime")
    ocr = PaddleOCR(
        text_detection_model_name="PP-OCRv4_mobile_det",
        text_detection_model_dir=str(dirs.det),
        text_recognition_model_name="PP-OCRv4_mobile_rec",
        text_recognition_model_dir=str(dirs.rec),
        use_doc_orientation_classify=False,
        use_doc_unwarping=False,
        use_textline_orientation=False,
        engine="onnxruntime",
        device="cpu",
    )
    names = sorted(p.name for p in images.iterdir())
    out = {}
    for name in names:
        result = ocr.predict(decode_bgr((images / name).read_bytes(), MAX_PIXELS))[0]
        out[name] = list(result["rec_texts"])
    return out


def test_reads_at_least_as_well_as_paddleocr_defaults(onnx_texts: dict[str, list[str]], images: Path) -> None:
    defaults = paddleocr_defaults(images)
    for name, theirs in defaults.items():
        ours = onnx_texts[name]
        assert len(ours) >= len([t for t in theirs if t.strip()]), (name, ours, theirs)
        assert all(t.strip() for t in ours), f"{name}: empty lines"
    # where the defaults fail: they glue the words of English lines together
    spaced = "of this dataset are specified as follows."
    assert spaced in onnx_texts["en.jpg"] and spaced not in defaults["en.jpg"]


def test_facts_of_the_shared_images(onnx_texts: dict[str, list[str]]) -> None:
    assert onnx_texts["ch_en_num.jpg"][0] == "正品促销"
    assert onnx_texts["text_rec.jpg"] == ["韩国小馆"]
    assert onnx_texts["empty_black.jpg"] == []
    assert onnx_texts["img_exif_orientation.jpg"] == ["我是中国人"]
    assert onnx_texts["white_font_color_transparent.png"] == ["我是中国人"]
    assert onnx_texts["short.png"] == ["中国网络空间安全"]
    assert (
        "To facilitate the shot type analysis in videos, we collect MovieShots, a large-scale"
        in (onnx_texts["en.jpg"])
    )


def test_both_engines_read_the_same_text(onnx_texts: dict[str, list[str]], images: Path) -> None:
    pytest.importorskip("paddle")
    paddle_texts = read_all(TextReader(OCRConfig(engine="paddle_static")), images)
    assert paddle_texts == onnx_texts


def test_lines_read_in_their_boxes_are_the_lines_read_whole(onnx_reader: TextReader, images: Path) -> None:
    """A line read (recognition only, in the boxes a whole read found) reads what the whole read did."""
    frames = [decode_bgr(p.read_bytes(), MAX_PIXELS) for p in sorted(images.iterdir())]
    whole = onnx_reader.read(frames)
    by_box = onnx_reader.read_lines(
        [(f, [line.box for line in lines]) for f, lines in zip(frames, whole, strict=True)]
    )
    assert sum(map(len, whole)) >= 20
    assert [[(line.text, line.box) for line in lines] for lines in by_box] == [
        [(line.text, line.box) for line in lines] for lines in whole
    ]
    black = decode_bgr((images / "empty_black.jpg").read_bytes(), MAX_PIXELS)
    nothing = onnx_reader.read_lines([(black, [[[0, 0], [90, 0], [90, 30], [0, 30]]])])
    assert [line.text for line in nothing[0]] == [""], "a box where nothing reads: one line, empty"


@pytest.mark.serve
async def test_the_serving_path_loses_nothing(
    onnx_texts: dict[str, list[str]], images: Path, ws_url: str
) -> None:
    async with websockets.connect(ws_url + "?fps=30", max_size=None) as ws:
        for i, name in enumerate(sorted(onnx_texts)):
            await ws.send(encode_binary_frame(i, (images / name).read_bytes(), ts=float(i)))
            answer = json.loads(await ws.recv())
            assert [line["text"] for line in answer["lines"]] == onnx_texts[name], name


@pytest.mark.serve
@pytest.mark.timeout(300)
async def test_frames_that_come_while_the_model_reads_go_together_in_its_next_batch(
    deploy_app: Any, images: Path
) -> None:
    """A GPU-style batch (max_batch_size 8): six streams' frames at once take two model calls, not six."""
    url = deploy_app("batched", {"ocr": {"max_batch_size": 8}, "sampler": {"min_reads_in_flight": 8}})
    ws_url = url.replace("http://", "ws://") + "/v1/stream"
    frame = encode_binary_frame(1, (images / "short.png").read_bytes(), ts=0.0)

    async def read_once(ws: Any) -> dict[str, Any]:
        await ws.send(frame)
        return json.loads(await ws.recv())

    sockets = [await websockets.connect(ws_url, max_size=None) for _ in range(6)]
    try:
        answers = await asyncio.gather(*(read_once(ws) for ws in sockets))
    finally:
        for ws in sockets:
            await ws.close()
    assert [[line["text"] for line in a["lines"]] for a in answers] == [["中国网络空间安全"]] * 6
    # The frames of one batch carry its time: fewer distinct times than frames.
    batch_times = {a["timing"]["ocr_ms"] for a in answers}
    assert len(batch_times) < 6, answers


def test_device_is_cpu_without_a_gpu() -> None:
    assert choose_device("auto", "onnxruntime", []) == "cpu"
    assert choose_device("cpu", "onnxruntime", ["0"]) == "cpu"
    with pytest.raises(RuntimeError, match="no GPU"):
        choose_device("gpu", "onnxruntime", [])


def test_gpu_is_used_when_assigned_and_the_engine_has_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import serve_app.reader as reader

    monkeypatch.setattr(reader, "engine_has_cuda", lambda engine: True)
    assert choose_device("auto", "onnxruntime", ["3"]) == "gpu:0"  # Ray's CUDA_VISIBLE_DEVICES: index 0
    monkeypatch.setattr(reader, "engine_has_cuda", lambda engine: False)
    assert choose_device("auto", "onnxruntime", ["3"]) == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA"):
        choose_device("gpu", "onnxruntime", ["3"])
