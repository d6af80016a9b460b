"""Typed configuration: the one place every option is declared and validated.

``configs/serve.yaml`` passes ``args`` to :func:`serve_app.app.build_app`, which
validates them as :class:`AppConfig`; a bad option fails at start with pydantic's
message, which names the field. Each section also carries ``deployment_config``:
Ray Serve's own deployment options (replicas, autoscaling, resources), checked
by Serve's schema when the app is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

MiB = 1024 * 1024


class BaseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def updated(self, changes: dict[str, Any]) -> BaseConfig:
        """A validated copy with ``changes`` applied (``user_config`` updates)."""
        return type(self).model_validate({**self.model_dump(), **changes})


class IngressConfig(BaseConfig):
    max_message_bytes: int = Field(
        8 * MiB, gt=0, description="A frame message above this is answered `too_large`."
    )
    hard_max_message_bytes: int = Field(
        16 * MiB, gt=0, description="A message above this closes the connection with 1009."
    )
    max_pixels: int = Field(
        40_000_000,
        gt=0,
        description="Width x height read from the image header; above it `too_large`, never decoded.",
    )
    max_pending_frames: int = Field(
        16,
        ge=1,
        description="Frames of one connection held in the ingress while its previous batch is "
        "with the sampler; beyond it the oldest are answered `superseded`.",
    )
    frame_deadline_s: float = Field(
        10.0, gt=0, description="No frame waits longer than this for its answer (`overloaded` then)."
    )
    ready_timeout_s: float = Field(2.0, gt=0, description="How long /healthz waits for the OCR replicas.")
    deployment_config: dict[str, Any] = Field(default_factory=dict, description="Ray Serve options.")

    @model_validator(mode="after")
    def _limits_ordered(self) -> IngressConfig:
        if self.hard_max_message_bytes < self.max_message_bytes:
            raise ValueError("hard_max_message_bytes must be >= max_message_bytes")
        return self


class SamplerConfig(BaseConfig):
    default_fps: float = Field(5.0, gt=0, description="Target read rate of a stream that asks for none.")
    max_fps: float = Field(30.0, gt=0, description="The highest target rate a stream may ask for.")
    max_reads_in_flight: int = Field(
        4, ge=1, description="OCR calls one sampler replica keeps open at once (admission)."
    )
    stream_idle_timeout_s: float = Field(
        60.0, gt=0, description="Stream state is dropped after this long without frames."
    )
    deployment_config: dict[str, Any] = Field(default_factory=dict, description="Ray Serve options.")

    @model_validator(mode="after")
    def _fps_ordered(self) -> SamplerConfig:
        if self.default_fps > self.max_fps:
            raise ValueError("default_fps must be <= max_fps")
        return self


class OCRConfig(BaseConfig):
    engine: Literal["onnxruntime", "paddle_static"] = Field(
        "onnxruntime", description="PaddleOCR inference engine (see docs/engines.md)."
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="`auto`: the GPU Ray assigned this replica if the engine has CUDA, else CPU."
    )
    det_model_dir: Path | None = Field(
        None, description="Text detection model dir; default: PP-OCRv4 mobile shipped by pip packages."
    )
    det_model_name: str = Field("PP-OCRv4_mobile_det", description="Must match the dir's Global.model_name.")
    rec_model_dir: Path | None = Field(None, description="Text recognition model dir (default as above).")
    rec_model_name: str = Field("PP-OCRv4_mobile_rec", description="Must match the dir's Global.model_name.")
    use_textline_orientation: bool = Field(
        False, description="Run the text line orientation model (off: it flips upright Chinese lines)."
    )
    det_unclip_ratio: float = Field(2.0, gt=0, description="1.5 glues English words; 2.0 keeps spaces.")
    det_limit_side_len: int = Field(960, ge=32, description="Detection input size limit (pixels).")
    rec_score_thresh: float = Field(0.5, ge=0, le=1, description="Lines scored below this are dropped.")
    cpu_threads: int = Field(2, ge=1, description="Threads of the CPU engine.")
    max_batch_size: int = Field(1, ge=1, le=64, description="Frames read in one model call.")
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="How long a batch waits to fill.")
    deployment_config: dict[str, Any] = Field(default_factory=dict, description="Ray Serve options.")


class AppConfig(BaseConfig):
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    ocr: OCRConfig = Field(default_factory=OCRConfig)

    @classmethod
    def from_file(cls, path: str | Path, app_name: str | None = None) -> AppConfig:
        """The ``args`` of an application in a Serve config file."""
        doc = yaml.safe_load(Path(path).read_text())
        apps = doc["applications"]
        app = next(a for a in apps if app_name is None or a.get("name") == app_name)
        return cls.model_validate(app.get("args") or {})
