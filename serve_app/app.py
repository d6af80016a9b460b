"""The application builder that ``configs/serve.yaml`` names (``import_path``).

``build_app(args)`` validates ``args`` as :class:`AppConfig` and composes the
graph: ``StreamIngress -> FrameSampler -> OCRModel``, each with the Serve
options of its section.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from deployments.ingress import StreamIngress
from deployments.ocr import OCRModel
from deployments.sampler import FrameSampler
from serve_app.config import AppConfig


def build_app(args: dict[str, Any] | AppConfig | None = None, *, model_cls: type = OCRModel) -> Application:
    """``model_cls`` swaps the model for a stand-in (serving benchmarks only)."""
    config = args if isinstance(args, AppConfig) else AppConfig.model_validate(args or {})
    max_pixels = config.ingress.max_pixels
    ocr = serve.deployment(model_cls, **OCRModel.get_deployment_options(config.ocr)).bind(
        config.ocr, max_pixels=max_pixels
    )
    sampler = serve.deployment(FrameSampler, **FrameSampler.get_deployment_options(config.sampler)).bind(
        config.sampler, ocr=ocr, max_pixels=max_pixels
    )
    return serve.deployment(StreamIngress, **StreamIngress.get_deployment_options(config.ingress)).bind(
        config.ingress, sampler=sampler
    )
