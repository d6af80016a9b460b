"""Autoscaling policies: the OCR replicas on demand, the ingress replicas on CPU too.

**OCR replicas on demand**, not on their (admission-capped) queue.

The samplers keep only as many reads at the model as it can start at once, so
the model replicas' own queue stays short whatever the load: Serve's default
policy would never see a burst. Instead every read carries its sampler's
demand (reads in flight plus streams waiting for a slot); each model replica
reports the sum over samplers as the custom metric ``demand``
(``record_autoscaling_stats``), and this policy asks for
``demand / target_ongoing_requests`` replicas. Serve applies ``min_replicas``,
``max_replicas``, ``upscale_delay_s`` and ``downscale_delay_s`` around it.

**Ingress replicas on connections and on CPU.** An open WebSocket is one
ongoing request, so Serve's default policy scales the ingress on connections
only; but a replica is one process (one GIL for its event loop and its compare
threads) and 8 cameras at 30 fps fill it (0.8 of a core, docs/benchmarks.md)
long before 2,000 connections do. Each ingress replica reports the share of a
core its process used since its last report (``busy``, :class:`CpuShare`);
:class:`IngressPolicy` asks for enough replicas for both: connections /
``target_ongoing_requests`` and the summed ``busy`` / ``busy_per_replica``.
Open streams stay where they are (a WebSocket never moves): an added replica
takes streams that connect after it. configs/serve.gpu.yaml and
k8s/rayservice.yaml use it; the 2-core laptop config does not (a second
ingress there only took the model's core: docs/benchmarks.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ray.serve.config import AutoscalingContext

DEMAND = "demand"
BUSY = "busy"
DEMAND_TTL_S = 5.0  # a sampler that has not reported for this long has no demand


def ocr_demand_policy(ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
    per_replica = (ctx.aggregated_metrics or {}).get(DEMAND) or {}
    if not per_replica or ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}
    # Every replica sees reads of every sampler, so each reports about the whole demand.
    demand = max(per_replica.values())
    target = ctx.config.get_target_ongoing_requests()
    return demand / target, {}


class DemandBook:
    """The latest demand each sampler replica reported (Ray-free, used by the model replica)."""

    def __init__(self, ttl_s: float = DEMAND_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._reports: dict[str, tuple[int, float]] = {}

    def report(self, sampler: str, demand: int, now: float | None = None) -> None:
        self._reports[sampler] = (demand, time.monotonic() if now is None else now)

    def total(self, now: float | None = None) -> int:
        cutoff = (time.monotonic() if now is None else now) - self._ttl_s
        self._reports = {k: v for k, v in self._reports.items() if v[1] >= cutoff}
        return sum(d for d, _ in self._reports.values())


class IngressPolicy:
    """Ingress replicas for the open connections and for the CPU they take (``policy_kwargs``:
    ``busy_per_replica``, the share of a core one replica should run at)."""

    def __init__(self, busy_per_replica: float = 0.6) -> None:
        if not busy_per_replica > 0:
            raise ValueError("busy_per_replica must be > 0")
        self.busy_per_replica = busy_per_replica

    def __call__(self, ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
        by_connections = ctx.total_num_requests / ctx.config.get_target_ongoing_requests()
        busy = (ctx.aggregated_metrics or {}).get(BUSY) or {}
        by_cpu = sum(busy.values()) / self.busy_per_replica
        return max(by_connections, by_cpu), {}


class CpuShare:
    """The share of one core this process used between two readings (Ray-free)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, cpu: Callable[[], float] = time.process_time
    ) -> None:
        self._clock, self._cpu = clock, cpu
        self._at, self._used = clock(), cpu()

    def read(self) -> float:
        at, used = self._clock(), self._cpu()
        share = (used - self._used) / (at - self._at) if at > self._at else 0.0
        self._at, self._used = at, used
        return share
