"""The application builder that ``configs/serve.yaml`` names (``import_path``).

``build_app(args)`` validates ``args`` as :class:`AppConfig` and composes the
graph: ``StreamIngress -> FrameSampler -> OCRModel``, each with the Serve
options of its section.

A section's ``deployment_config`` becomes Serve options and is not passed to
the constructor, so a redeploy that changes only Serve options (replicas,
autoscaling, ``user_config``) leaves the constructor arguments as they were:
Serve updates the running replicas in place (``reconfigure`` for
``user_config``), with no model reload and no dropped connection.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ray import serve
from ray.serve import Application

from deployments.ingress import StreamIngress
from deployments.ocr import OCRModel
from deployments.sampler import FrameSampler
from serve_app.config import AppConfig, BaseConfig

Section = TypeVar("Section", bound=BaseConfig)


def _args(section: Section) -> Section:
    return section.model_copy(update={"deployment_config": {}})


def build_app(args: dict[str, Any]) -> Application:
    """The builder ``configs/serve.yaml`` names: Serve calls it with the ``args`` dict."""
    return compose(AppConfig.model_validate(args or {}))


def compose(config: AppConfig, *, model_cls: type = OCRModel) -> Application:
    """The graph for a validated config; ``model_cls`` swaps in a stand-in (serving benchmarks only)."""
    max_pixels = config.ingress.max_pixels
    ocr = serve.deployment(model_cls, **OCRModel.get_deployment_options(config.ocr)).bind(
        _args(config.ocr), max_pixels=max_pixels
    )
    sampler = serve.deployment(FrameSampler, **FrameSampler.get_deployment_options(config.sampler)).bind(
        _args(config.sampler), ocr=ocr, model_batch=config.ocr.max_batch_size
    )
    return serve.deployment(StreamIngress, **StreamIngress.get_deployment_options(config.ingress)).bind(
        _args(config.ingress), sampler=sampler, sampling=_args(config.sampler)
    )
