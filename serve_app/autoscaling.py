"""Autoscaling of the OCR replicas on demand, not on their (admission-capped) queue.

The samplers keep only as many reads at the model as it can start at once, so
the model replicas' own queue stays short whatever the load: Serve's default
policy would never see a burst. Instead every read carries its sampler's
demand (reads in flight plus streams waiting for a slot); each model replica
reports the sum over samplers as the custom metric ``demand``
(``record_autoscaling_stats``), and this policy asks for
``demand / target_ongoing_requests`` replicas. Serve applies ``min_replicas``,
``max_replicas``, ``upscale_delay_s`` and ``downscale_delay_s`` around it.
"""

from __future__ import annotations

import time
from typing import Any

from ray.serve.config import AutoscalingContext

DEMAND = "demand"
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
