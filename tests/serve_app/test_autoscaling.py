"""The autoscaling policies and what the replicas report for them (no Ray started)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from serve_app.autoscaling import BUSY, DEMAND, CpuShare, IngressPolicy, ocr_demand_policy


def context(connections: float = 0.0, target: float = 2000.0, **metrics: dict[str, float]) -> Any:
    config = SimpleNamespace(get_target_ongoing_requests=lambda: target)
    return SimpleNamespace(
        total_num_requests=connections,
        aggregated_metrics=metrics,
        config=config,
        current_num_replicas=1,
        target_num_replicas=1,
    )


def test_an_ingress_busy_with_a_few_cameras_gets_a_second_replica() -> None:
    replicas, _ = IngressPolicy(busy_per_replica=0.6)(context(8, **{BUSY: {"r1": 0.8}}))
    assert replicas == pytest.approx(0.8 / 0.6)  # Serve rounds up: 2


def test_many_idle_connections_scale_the_ingress_as_before() -> None:
    replicas, _ = IngressPolicy()(context(3000, **{BUSY: {"r1": 0.1}}))
    assert replicas == pytest.approx(1.5)


def test_the_cpu_of_every_replica_counts() -> None:
    busy = {BUSY: {"r1": 0.5, "r2": 0.5, "r3": 0.2}}
    replicas, _ = IngressPolicy(busy_per_replica=0.6)(context(30, **busy))
    assert replicas == pytest.approx(2.0)


def test_before_any_report_the_connections_decide() -> None:
    replicas, _ = IngressPolicy()(context(1000))
    assert replicas == pytest.approx(0.5)


def test_busy_per_replica_must_be_positive() -> None:
    with pytest.raises(ValueError, match="busy_per_replica"):
        IngressPolicy(busy_per_replica=0)


def test_the_model_scales_on_the_demand_the_samplers_report() -> None:
    replicas, _ = ocr_demand_policy(context(target=4.0, **{DEMAND: {"m1": 10.0, "m2": 9.0}}))
    assert replicas == pytest.approx(2.5)


def test_cpu_share_is_the_cpu_used_over_the_time_between_readings() -> None:
    clock, cpu = [100.0], [5.0]
    share = CpuShare(clock=lambda: clock[0], cpu=lambda: cpu[0])
    clock[0], cpu[0] = 102.0, 6.6
    assert share.read() == pytest.approx(0.8)
    clock[0], cpu[0] = 103.0, 6.7
    assert share.read() == pytest.approx(0.1)
    assert share.read() == 0.0  # no time passed
