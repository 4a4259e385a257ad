"""The quality/latency frontier file: its schema, reading, writing and choosing from it (torch-free).

A frontier (``ENGINE_DIR/frontier.json``, written by `evor_edge.frontier.measure_frontier` through
``benchmarks/frontier.py``) lists configurations of cheaper EVOR selection with their selection agreement
against the full FP32 paper configuration and their latency. `bench --fit` re-times them and picks the best
agreement that meets the deadline (`evor_edge.runtime.fit`).

Schema (JSON object)::

    format   "evor-edge-frontier"            version  1
    metric   the quality key of every point ("agreement", a fraction in [0, 1])
    points   [ {engine: path relative to the file ("." = the file's directory),
                num_candidates, num_rtg, rtg_top_k (null: all N), common_rtg_noise (bool),
                critic_steps, critic_solver, prune ([K1, N1] or null),
                agreement, p50_ms, p99_ms (null: not timed), ...}, ... ]

plus free-form context (reference configuration, ceiling, machine load, ...). Unknown keys are kept.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evor_edge.io import atomic_write_json, read_json

__all__ = [
    "FRONTIER_FILE",
    "FRONTIER_FORMAT",
    "FRONTIER_VERSION",
    "POINT_KEYS",
    "choose_from_frontier",
    "load_frontier",
    "mark_pareto",
    "point_engine_dir",
    "write_frontier",
]

FRONTIER_FILE = "frontier.json"
FRONTIER_FORMAT = "evor-edge-frontier"
FRONTIER_VERSION = 1
POINT_KEYS = ("engine", "num_candidates", "num_rtg", "rtg_top_k", "common_rtg_noise", "critic_steps",
              "critic_solver", "prune")


def load_frontier(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a frontier file; ValueError with one line if bad. ``_dir`` is set to its directory."""
    path = Path(path)
    data = read_json(path, ValueError)
    if not isinstance(data, dict) or data.get("format") != FRONTIER_FORMAT:
        raise ValueError(f"{path} is not an evor-edge frontier file (format {FRONTIER_FORMAT!r})")
    points = data.get("points")
    if not isinstance(points, list) or not points:
        raise ValueError(f"{path} has no frontier points")
    metric = data.get("metric", "agreement")
    for i, point in enumerate(points):
        if not isinstance(point, dict) or "num_candidates" not in point or metric not in point:
            raise ValueError(f"{path}: point {i} lacks num_candidates or {metric!r}")
    data["_dir"] = str(path.parent)
    return data


def write_frontier(path: str | os.PathLike[str], frontier: dict[str, Any]) -> Path:
    """Write a frontier atomically with the format fields set; returns the path."""
    data = {k: v for k, v in frontier.items() if k != "_dir"}
    data.update(format=FRONTIER_FORMAT, version=FRONTIER_VERSION)
    data.setdefault("metric", "agreement")
    atomic_write_json(path, data)
    return Path(path)


def point_engine_dir(frontier: dict[str, Any], point: dict[str, Any]) -> Path:
    """The engine directory of a point (relative paths are relative to the frontier file)."""
    engine = Path(point.get("engine") or ".")
    return engine if engine.is_absolute() else Path(frontier.get("_dir", ".")) / engine


def choose_from_frontier(
    points: Sequence[dict[str, Any]], budget_ms: float, metric: str = "agreement",
    latency_key: str = "p99_ms",
) -> dict[str, Any] | None:
    """The point with the best ``metric`` whose ``latency_key`` <= budget_ms (None if none fits).

    Ties on the metric go to the lower latency. Points without a latency are never chosen.
    """
    fitting = [p for p in points if p.get(latency_key) is not None and p.get(metric) is not None
               and float(p[latency_key]) <= budget_ms]
    if not fitting:
        return None
    return max(fitting, key=lambda p: (float(p[metric]), -float(p[latency_key])))


def mark_pareto(points: list[dict[str, Any]], metric: str = "agreement", latency: str = "p99_ms") -> None:
    """Set ``point["pareto"]``: no other point is at least as good on both axes and better on one."""
    for p in points:
        p["pareto"] = not any(
            q is not p and q[latency] <= p[latency] and q[metric] >= p[metric]
            and (q[latency] < p[latency] or q[metric] > p[metric]) for q in points)
