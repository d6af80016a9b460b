"""The Serve options each deployment is built with (no Ray started)."""

from __future__ import annotations

from deployments.ingress import StreamIngress
from deployments.ocr import OCRModel
from deployments.options import SAME_LOOP_ENV
from deployments.sampler import FrameSampler
from serve_app.config import IngressConfig, OCRConfig, SamplerConfig


def test_the_ingress_and_the_sampler_run_on_serves_loop_with_what_the_config_asks() -> None:
    configured = {"ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 7}
    for options in (
        StreamIngress.get_deployment_options(IngressConfig(deployment_config=configured)),
        FrameSampler.get_deployment_options(SamplerConfig(deployment_config=configured)),
    ):
        assert options["max_ongoing_requests"] == 7
        assert options["ray_actor_options"] == {"num_cpus": 0.25, "runtime_env": {"env_vars": SAME_LOOP_ENV}}
    assert configured == {"ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 7}  # not changed


def test_an_operator_can_put_the_code_back_on_its_own_thread() -> None:
    env = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1", "OTHER": "x"}
    actor = {"runtime_env": {"env_vars": env, "pip": ["x"]}}
    config = IngressConfig(deployment_config={"ray_actor_options": actor})
    options = StreamIngress.get_deployment_options(config)
    assert options["ray_actor_options"]["runtime_env"] == {"env_vars": env, "pip": ["x"]}


def test_the_model_keeps_serves_own_thread_for_its_blocking_inference() -> None:
    options = OCRModel.get_deployment_options(OCRConfig())
    assert "runtime_env" not in options["ray_actor_options"]
