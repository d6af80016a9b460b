"""Plots of load runs (matplotlib, PNG): one column per run, one row per view.

Rows: read latency (p50/p99 per second, by answer time) with the ping maximum;
answers per second by outcome (stacked) with frames sent; and, when the run
has them, RUNNING replicas per deployment and open connections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_OUTCOME_COLOURS = {
    "read": "#2a9d8f",
    "rate": "#e9c46a",
    "duplicate": "#8ab17d",
    "superseded": "#f4a261",
    "overloaded": "#e76f51",
    "errors": "#9b2226",
}


def plot_runs(runs: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """``runs``: label -> an :func:`bench.loadgen.analyse` result, optionally with ``replicas``."""
    has_counts = any(r.get("replicas") or _connections_vary(r) for r in runs.values())
    rows = 3 if has_counts else 2
    fig, axes = plt.subplots(rows, len(runs), figsize=(6.5 * len(runs), 3.2 * rows), squeeze=False)
    for col, (label, run) in enumerate(runs.items()):
        series = run["timeseries"]
        _latency(axes[0][col], series, label, run)
        _outcomes(axes[1][col], series, run)
        if has_counts:
            _counts(axes[2][col], series, run)
        for ax in axes[:, col]:
            _phases(ax, run)
            ax.set_xlim(0, max(1, len(series), *(r["t"] for r in run.get("replicas") or [])))
            ax.grid(alpha=0.3)
        axes[-1][col].set_xlabel("seconds since the start of the load")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _connections_vary(run: dict[str, Any]) -> bool:
    levels = {row.get("open_connections", 0) for row in run["timeseries"]}
    return len(levels) > 2


def _latency(ax: Any, series: list[dict[str, Any]], label: str, run: dict[str, Any]) -> None:
    t = [row["t"] for row in series]
    for key, style in (("read_p50_ms", ".-"), ("read_p99_ms", ".-"), ("ping_max_ms", ":")):
        values = [row.get(key) for row in series]
        ax.plot(t, [v if v is not None else float("nan") for v in values], style, label=key.replace("_", " "))
    single = run.get("single_frame_ms", {}).get("p50")
    if single:
        ax.axhline(2 * single, color="grey", ls="--", lw=1, label="2x single-frame p50")
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_title(label)
    ax.legend(fontsize=7, loc="upper left")


def _outcomes(ax: Any, series: list[dict[str, Any]], run: dict[str, Any]) -> None:
    t = [row["t"] for row in series]
    reasons = sorted({k for row in series for k in row["skipped"]})
    stacks = {"read": [row["read"] for row in series]}
    for reason in reasons:
        stacks[reason] = [row["skipped"].get(reason, 0) for row in series]
    stacks["errors"] = [sum(row["errors"].values()) for row in series]
    bottom = [0] * len(series)
    for name, values in stacks.items():
        if not any(values):
            continue
        label = name if name in ("read", "errors") else f"skipped: {name}"
        colour = _OUTCOME_COLOURS.get(name)
        ax.bar(t, values, bottom=bottom, width=1.0, align="edge", label=label, color=colour)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.step(t, [row["sent"] for row in series], where="post", color="black", lw=1, label="sent")
    ax.set_ylabel("frames / s (answers by answer time)")
    ax.legend(fontsize=7, loc="upper right")


def _counts(ax: Any, series: list[dict[str, Any]], run: dict[str, Any]) -> None:
    replicas = run.get("replicas") or []
    for name in sorted({k for s in replicas for k in s if k != "t"}):
        ax.step([s["t"] for s in replicas], [s.get(name, 0) for s in replicas], where="post", label=name)
    if replicas:
        ax.set_ylabel("RUNNING replicas")
    conn_ax = ax.twinx() if replicas else ax
    conn_ax.plot(
        [row["t"] for row in series],
        [row.get("open_connections", 0) for row in series],
        color="grey",
        lw=1,
        label="open connections",
    )
    conn_ax.set_ylabel("open connections")
    handles = ax.get_legend_handles_labels()
    extra = conn_ax.get_legend_handles_labels() if conn_ax is not ax else ([], [])
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="upper left")


def _phases(ax: Any, run: dict[str, Any]) -> None:
    t = 0.0
    for phase in run.get("schedule", {}).get("phases", [])[:-1]:
        t += phase["duration_s"]
        ax.axvline(t, color="grey", lw=0.8, ls="--")
