"""Timing helpers shared by bench, fit, calibration's latency table and the benchmarks (torch-free).

* :func:`summarize` / :func:`latency_stats`: the one percentile / summary-statistics helper;
* :func:`sleep_until`: sleep to a deadline, then spin the last half millisecond (``time.sleep`` is coarse);
* :class:`Pacer`: the one pacing rule of a fixed-rate control loop. Slot k starts at ``t0 + k / hz``; a tick
  that overruns into later slots skips them (counted in ``skipped``), as a real controller does, and the
  next tick starts on the next free slot of the same grid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["LATENCY_STATS", "Pacer", "latency_stats", "sleep_until", "summarize"]

SPIN_S = 0.0005  # sleep until this close to a deadline, then spin

# name -> a percentile (number) or a reducer ("max", "min", "mean", "std")
LATENCY_STATS: dict[str, float | str] = {"p50_ms": 50, "p90_ms": 90, "p99_ms": 99, "p999_ms": 99.9,
                                         "max_ms": "max", "mean_ms": "mean", "std_ms": "std"}
_REDUCERS = {"max": np.max, "min": np.min, "mean": np.mean, "std": np.std}


def summarize(values: Sequence[float] | np.ndarray, spec: Mapping[str, float | str],
              scale: float = 1.0) -> dict[str, float | None]:
    """``{name: statistic}`` of ``values * scale`` per ``spec`` (name -> percentile or reducer name).

    Non-finite values are left out; an empty input gives None for every name.
    """
    arr = np.asarray(values, dtype=np.float64).ravel() * scale
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return dict.fromkeys(spec)
    points = {name: float(q) for name, q in spec.items() if not isinstance(q, str)}
    values_at = np.percentile(arr, list(points.values())) if points else []
    out: dict[str, float | None] = dict(zip(points, (float(v) for v in values_at), strict=True))
    for name, how in spec.items():
        if isinstance(how, str):
            out[name] = float(_REDUCERS[how](arr))
    return {name: out[name] for name in spec}


def latency_stats(latencies_s: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """p50/p90/p99/p99.9/max/mean/std in milliseconds of latencies in seconds (None for an empty input)."""
    return summarize(latencies_s, LATENCY_STATS, scale=1e3)


def sleep_until(deadline: float) -> None:
    """Return at ``time.perf_counter() >= deadline``: sleep most of the way, spin the last `SPIN_S`."""
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        if remaining > SPIN_S:
            time.sleep(remaining - SPIN_S)


class Pacer:
    """Fixed-rate schedule (module docstring). ``hz <= 0`` or ``inf``: back to back, nothing skipped.

    Per tick: ``ideal = pacer.wait()`` (sleeps to the slot, returns its time), run the tick, then
    ``pacer.done(end)`` with the tick's end time.
    """

    def __init__(self, hz: float, start: float | None = None) -> None:
        self.period = 1.0 / hz if hz > 0 and math.isfinite(hz) else 0.0
        now = time.perf_counter() if start is None else start
        self.next = now + self.period  # the first slot one period ahead (settles the sleep)
        self.skipped = 0

    def wait(self) -> float:
        """Sleep until the current slot; return the slot's time."""
        if self.period:
            sleep_until(self.next)
            return self.next
        return time.perf_counter()

    def done(self, end: float) -> int:
        """Advance past a tick that ended at ``end``; returns the slots it overran (skipped)."""
        if not self.period:
            return 0
        self.next += self.period
        behind = int((end - self.next) // self.period) + 1 if end > self.next else 0
        self.next += behind * self.period
        self.skipped += behind
        return behind
