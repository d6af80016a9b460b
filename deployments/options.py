"""Serve options the deployments build on.

``READ_CALL``, ``UNARY_CALL``: reads cross the hops by value, over the
replicas' gRPC servers, not as Ray objects passed by reference: about half the
CPU per call on a 2-core box (``python -m bench.serving_paths --paths
handles``, docs/benchmarks.md). Ingress -> sampler calls of several reads
stream (the reads of one call wait for admission apart: each reply goes back as
it comes); a call of one read, and sampler -> model calls (a call is at most a
batch of reads, read together), are unary, which costs less again: 2.7 ms of
CPU for a call of one read against 4.3 streaming, 3.7 against 12.3 for 16.

``on_serve_loop``: a replica whose code never blocks its event loop (the ingress,
the sampler: compares run in a thread pool, model calls are awaited) runs it on
Serve's own loop, not on a loop of its own in a second thread. Every message,
answer and handle reply then stays in one thread: on a 2-core box that took
0.6-1 ms of CPU off each frame answered `rate` and ~13% off a read
(docs/benchmarks.md). The model keeps Serve's default: its inference blocks.
"""

from __future__ import annotations

from typing import Any

READ_CALL: dict[str, Any] = {"stream": True, "_by_reference": False}
UNARY_CALL: dict[str, Any] = {"_by_reference": False}
SAME_LOOP_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


def on_serve_loop(defaults: dict[str, Any], configured: dict[str, Any]) -> dict[str, Any]:
    """``configured`` over ``defaults``, and the replica's code on Serve's event loop (unless the
    configured ``runtime_env`` says otherwise)."""
    options = {**defaults, **configured}
    actor = dict(options.get("ray_actor_options") or {})
    runtime_env = dict(actor.get("runtime_env") or {})
    runtime_env["env_vars"] = {**SAME_LOOP_ENV, **(runtime_env.get("env_vars") or {})}
    options["ray_actor_options"] = actor | {"runtime_env": runtime_env}
    return options
