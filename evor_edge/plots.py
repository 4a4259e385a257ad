"""Plots drawn on the workstation (matplotlib): the bench latency histogram. Not part of the robot-side runtime."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["plot_histogram"]


def plot_histogram(latencies_ms: Sequence[float] | np.ndarray, deadline_ms: float | None,
                   path: str | os.PathLike[str], title: str | None = None) -> str:
    """Save a latency histogram (with the deadline as a vertical line) to ``path``.

    matplotlib is not a robot dependency: a clear ``RuntimeError`` says so if it is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(
            "plot_histogram needs matplotlib, which the robot install does not include: "
            "pip install matplotlib (or evor-edge[train])"
        ) from None
    lat = np.asarray(latencies_ms, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    try:
        ax.hist(lat, bins=min(100, max(10, lat.size // 20)), color="#3b75af")
        if deadline_ms is not None:
            ax.axvline(deadline_ms, color="#c0392b", linestyle="--", label=f"deadline {deadline_ms:.1f} ms")
        if lat.size:
            p99 = float(np.percentile(lat, 99))
            ax.axvline(p99, color="#555555", linestyle=":", label=f"p99 {p99:.2f} ms")
        if deadline_ms is not None or lat.size:
            ax.legend()
        ax.set_xlabel("tick latency (ms)")
        ax.set_ylabel("ticks")
        ax.set_title(title or "policy tick latency")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return str(path)
