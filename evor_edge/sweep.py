"""Inference-time knobs swept on one engine without re-export (paper Figures 1, 3-5).

`--sweep num_candidates=1,2,4,8,16,32` evaluates the same policy at each value; N_pi = 1 is the base
policy, tau_Q -> 0 is argmax selection, large tau_Q falls back to the base policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

SWEEPABLE: dict[str, tuple[type, Callable[[float], bool], str]] = {
    "num_candidates": (int, lambda v: 1 <= v <= 4096, "an integer in [1, 4096]"),
    "num_rtg": (int, lambda v: 1 <= v <= 4096, "an integer in [1, 4096]"),
    "tau_r": (float, lambda v: v > 0 and not math.isnan(v), "a number > 0 (inf = mean)"),
    "tau_q": (float, lambda v: v >= 0 and not math.isnan(v), "a number >= 0 (0 = argmax)"),
    "rtg_top_k": (int, lambda v: 1 <= v <= 4096, "an integer in [1, 4096]"),
}


def parse_sweep(spec: str) -> tuple[str, list[Any]]:
    """'num_candidates=1,2,4' -> ('num_candidates', [1, 2, 4]); every value checked before any episode."""
    name, sep, raw = spec.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in SWEEPABLE:
        raise ValueError(f"--sweep {spec!r}: expected KNOB=V1,V2,... with KNOB one of {sorted(SWEEPABLE)}")
    kind, ok, what = SWEEPABLE[name]
    values: list[Any] = []
    for item in raw.split(","):
        try:
            value = kind(item.strip())
        except ValueError:
            raise ValueError(f"--sweep {name}: {item.strip()!r} is not {what}") from None
        if not ok(value):
            raise ValueError(f"--sweep {name}: {item.strip()!r} is out of range; must be {what}")
        values.append(value)
    if not values:
        raise ValueError(f"--sweep {spec!r}: no values")
    return name, values


def plot_sweep(name: str, results: list[dict[str, Any]], path: str, title: str) -> str:
    """Success rate (with a binomial standard error bar) against the swept value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["value"] for r in results]
    ys = [100 * r["success_rate"] for r in results]
    errs = [100 * math.sqrt(max(r["success_rate"] * (1 - r["success_rate"]), 1e-12) / r["episodes"]) for r in results]
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3)
    if name in ("num_candidates", "num_rtg") or (min(xs) > 0 and max(xs) / max(min(xs), 1e-12) > 20):
        ax.set_xscale("log", base=2 if name in ("num_candidates", "num_rtg") else 10)
    ax.set_xlabel(name)
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
