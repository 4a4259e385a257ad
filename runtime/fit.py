"""Fitting the run-time configuration to a control deadline (`evor-edge bench --fit`; torch-free).

Two modes (:func:`fit`):

* grid (no frontier): the most candidates N_pi whose p99 fits with N >= 8 samples (latency only), each grid
  point timed back to back, the preferred one confirmed in a loop paced at the control rate;
* frontier: a quality/latency frontier (`evor_edge.runtime.frontier`) lists configurations (engine variant,
  N_pi, N, rtg_top_k, CRN) with their selection agreement against the full FP32 paper configuration. They are
  re-timed here, paced at the control rate, best agreement first, and the first whose p99 meets the deadline
  wins: the best agreement that fits, with both numbers reported.

Paced timing follows the one pacing rule of `evor_edge.runtime.timing.Pacer` (the same as `run_bench`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .bench import observation_feed, observations_from_manifest
from .frontier import POINT_KEYS, load_frontier, point_engine_dir
from .timing import Pacer, latency_stats

__all__ = ["DEFAULT_NPI_GRID", "DEFAULT_N_GRID", "MIN_FIT_RTG", "apply_point", "fit"]

DEFAULT_NPI_GRID = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_N_GRID = (1, 2, 4, 8, 16, 32, 50)


def _paced_point(policy: Any, feeds: list[np.ndarray], ticks: int, warmup: int, hz: float) -> np.ndarray:
    """Per-tick latency with ticks started on the control loop's schedule (`Pacer`, as `run_bench` paces).

    Back-to-back timing underestimates a paced loop: between ticks the process sleeps, other work
    evicts the weights from the caches and idle cores clock down (measured here: 5.6 ms back-to-back,
    9.5 ms p50 at 50 Hz for the same configuration on a shared 2-core VM).
    """
    pacer = Pacer(hz)
    perf = time.perf_counter
    lat = np.empty(ticks, dtype=np.float64)
    for k in range(warmup + ticks):
        pacer.wait()
        start = perf()
        policy.act(feeds[k % len(feeds)])
        end = perf()
        if k >= warmup:
            lat[k - warmup] = end - start
        pacer.done(end)
    return lat


def _timed_point(policy: Any, feeds: list[np.ndarray], ticks: int, warmup: int) -> np.ndarray:
    for i in range(warmup):
        policy.act(feeds[i % len(feeds)])
    lat = np.empty(ticks, dtype=np.float64)
    perf = time.perf_counter
    for k in range(ticks):
        start = perf()
        policy.act(feeds[k % len(feeds)])
        lat[k] = perf() - start
    return lat


def _frontier_policy(point: dict[str, Any], base: Any, frontier: dict[str, Any], cache: dict[str, Any],
                     backend: str, providers: list[Any] | None) -> Any:
    """The policy of a frontier point: `base` when the point's engine is base's, else a loaded one (cached)."""
    from .policy import EvorPolicy

    path = point_engine_dir(frontier, point)
    base_dir = getattr(base, "engine_dir", None)
    if base_dir is not None and Path(base_dir).resolve() == path.resolve():
        policy = base
    else:
        key = str(path.resolve())
        if key not in cache:
            threads = base.backend.describe().get("intra_op_threads") if hasattr(base, "backend") else None
            cache[key] = EvorPolicy.load(path, backend=backend, providers=providers, intra_op_threads=threads)
        policy = cache[key]
    apply_point(policy, point)
    return policy


def apply_point(policy: Any, point: dict[str, Any]) -> None:
    """Set a policy to a frontier point's (or a fit result's) run-time configuration."""
    policy.configure(num_candidates=int(point["num_candidates"]), num_rtg=point.get("num_rtg") or None,
                     rtg_top_k=point.get("rtg_top_k"), common_rtg_noise=bool(point.get("common_rtg_noise", False)))


@contextmanager
def _settings_restored(policy: Any) -> Iterator[None]:
    """Let fit change the policy's run-time settings; restore them and its random stream afterwards."""
    saved = (policy.num_candidates, policy.num_rtg, policy.rng.bit_generator.state,
             getattr(policy, "rtg_top_k", None), getattr(policy, "common_rtg_noise", False))
    try:
        yield
    finally:
        policy.configure(num_candidates=saved[0], num_rtg=saved[1], rtg_top_k=saved[3], common_rtg_noise=saved[4])
        policy.rng.bit_generator.state = saved[2]


def _fit_frontier(policy: Any, hz: float, budget_ms: float, frontier: dict[str, Any], feeds: list[np.ndarray],
                  ticks: int, warmup: int, measure: bool, backend: str,
                  providers: list[Any] | None) -> dict[str, Any]:
    metric = frontier.get("metric", "agreement")
    points = sorted(frontier["points"], key=lambda p: (-float(p[metric]), float(p.get("p99_ms") or math.inf)))
    cache: dict[str, Any] = {}
    table: list[dict[str, Any]] = []
    chosen = None
    try:
        with _settings_restored(policy):
            for point in points:
                row = {k: point.get(k) for k in POINT_KEYS}
                row[metric] = point[metric]
                row["stored_p99_ms"] = point.get("p99_ms")
                if chosen is not None:
                    row.update(status="not needed", p50_ms=None, p99_ms=None, fits=None)
                    table.append(row)
                    continue
                if measure:
                    try:
                        target = _frontier_policy(point, policy, frontier, cache, backend, providers)
                    except ValueError as exc:  # EngineError included: a point this runtime cannot open
                        row.update(status=f"unusable: {exc}", p50_ms=None, p99_ms=None, fits=False)
                        table.append(row)
                        continue
                    lat = latency_stats(_paced_point(target, feeds, ticks, warmup, hz))
                    row.update(status="measured", p50_ms=lat["p50_ms"], p99_ms=lat["p99_ms"], max_ms=lat["max_ms"])
                else:
                    row.update(status="stored", p50_ms=point.get("p50_ms"), p99_ms=point.get("p99_ms"))
                row["fits"] = row["p99_ms"] is not None and row["p99_ms"] <= budget_ms
                table.append(row)
                if row["fits"]:
                    chosen = row
    finally:
        for other in cache.values():
            if other is not policy:
                other.close()
    return {
        "hz": float(hz),
        "budget_ms": budget_ms,
        "mode": "frontier",
        "metric": metric,
        "latency": "measured here" if measure else "stored in the frontier file",
        "ticks_per_point": ticks if measure else None,
        "chosen": None if chosen is None else dict(chosen),
        "table": table,
        "backend": policy.describe() if hasattr(policy, "describe") else None,
    }


MIN_FIT_RTG = 8


def _grid_preference(row: dict[str, Any]) -> tuple[bool, int, int, int]:
    """Sort key of a fitting grid point when no measured frontier is given (larger is better).

    N_pi drives closed-loop success (docs/results.md: 0 / 75 / 90 / 100 % at N_pi 1 / 2 / 4 / 8 on
    pointmaze task 1), and N_pi = 1 is the base policy whatever N is, so it only wins when nothing else
    fits. Q* (Eq. 39) is a log-mean-exp over N samples whose estimate is noisy for a handful of samples,
    so up to MIN_FIT_RTG samples come before more candidates; beyond that, more candidates first. (The
    old rule, the largest N_pi * N, picked N_pi 1 / N 64 over N_pi 8 / N 4 once.)
    """
    npi, n = int(row["num_candidates"]), int(row["num_rtg"] or MIN_FIT_RTG)
    return npi > 1, min(n, MIN_FIT_RTG), npi, n


def fit(
    engine_dir: str | os.PathLike[str] | None = None,
    hz: float = 50.0,
    *,
    policy: Any = None,
    ticks: int = 50,
    warmup: int = 5,
    npi_grid: Sequence[int] = DEFAULT_NPI_GRID,
    n_grid: Sequence[int] = DEFAULT_N_GRID,
    budget_fraction: float = 1.0,
    observations: np.ndarray | None = None,
    backend: str = "auto",
    providers: list[Any] | None = None,
    frontier: str | os.PathLike[str] | dict[str, Any] | None = None,
    measure: bool = True,
    confirm_ticks: int = 0,
    confirm_tries: int = 4,
) -> dict[str, Any]:
    """Fit the configuration to the control period (times ``budget_fraction``).

    Without ``frontier``: a (N_pi, N) whose p99 latency fits. Each grid point is timed
    with ``ticks`` back-to-back calls (not rate limited) after ``warmup`` calls. Latency is assumed
    monotone in N_pi and N, so points that dominate a failing point are skipped (marked
    ``"skipped"``). Among fitting points :func:`_grid_preference` picks: selection at all (N_pi > 1),
    then at least ``MIN_FIT_RTG`` reward-to-go samples, then the most candidates, then the most samples.
    For kind "qc" engines only N_pi is searched. Grid points a pruned engine cannot run
    (N_pi < K1, N < N1) are marked ``"invalid"``. With ``confirm_ticks`` > 0 the preferred point is then
    re-timed in a loop paced at ``hz`` (what the control loop sees; back-to-back timing is optimistic on a
    busy machine) and, if its paced p99 misses, the next preferred point is tried (up to
    ``confirm_tries``); the rows record ``paced_p99_ms``.

    With ``frontier`` (a path or a loaded dict, see :func:`load_frontier`): the configurations are
    tried best ``metric`` (agreement) first, each timed here in a loop paced at ``hz`` as the control
    loop runs (``measure=True``; else the file's p99 is used), and the first whose p99 fits is chosen.
    ``chosen`` then carries the configuration, its agreement, the p99 measured here and the p99 stored
    in the file.
    """
    if policy is None:
        if engine_dir is None:
            raise ValueError("fit needs engine_dir or policy")
        from .policy import EvorPolicy

        policy = EvorPolicy.load(engine_dir, backend=backend, providers=providers)
    if hz <= 0 or not math.isfinite(hz):
        raise ValueError(f"hz must be a positive number, got {hz}")
    budget_ms = 1e3 / hz * budget_fraction
    if frontier is not None:
        data = frontier if isinstance(frontier, dict) else load_frontier(frontier)
        if "_dir" not in data:
            data = {**data, "_dir": str(getattr(policy, "engine_dir", None) or ".")}
        if observations is None:
            observations = observations_from_manifest(policy.manifest, 64)
        feeds = list(observation_feed(observations, 1, policy.obs_dim))
        return _fit_frontier(policy, hz, budget_ms, data, feeds, ticks, warmup, measure, backend, providers)
    is_evor = policy.kind == "evor"
    n_values = sorted({int(n) for n in n_grid}) if is_evor else [1]
    npi_values = sorted({int(n) for n in npi_grid})
    if observations is None:
        observations = observations_from_manifest(policy.manifest, 64)
    feeds = list(observation_feed(observations, 1, policy.obs_dim))
    table: list[dict[str, Any]] = []
    failing: list[tuple[int, int]] = []
    best = None
    with _settings_restored(policy):
        for npi in npi_values:
            for n in n_values:
                row: dict[str, Any] = {"num_candidates": npi, "num_rtg": n if is_evor else None}
                if any(npi >= a and n >= b for a, b in failing):
                    row.update(status="skipped", p50_ms=None, p99_ms=None, fits=False)
                    table.append(row)
                    continue
                try:
                    policy.configure(num_candidates=npi, num_rtg=n)
                except ValueError as exc:  # e.g. a pruned engine's N_pi >= K1 / N >= N1
                    row.update(status=f"invalid: {exc}", p50_ms=None, p99_ms=None, fits=False)
                    table.append(row)
                    continue
                lat = latency_stats(_timed_point(policy, feeds, ticks, warmup))
                fits = lat["p99_ms"] <= budget_ms
                row.update(status="measured", p50_ms=lat["p50_ms"], p99_ms=lat["p99_ms"],
                           max_ms=lat["max_ms"], fits=fits)
                table.append(row)
                if not fits:
                    failing.append((npi, n))
        fitting = sorted((r for r in table if r["fits"]), key=_grid_preference, reverse=True)
        if confirm_ticks <= 0:
            best = fitting[0] if fitting else None
        else:  # re-time the preferred points paced at the control rate; the first that still fits wins
            for row in fitting[:max(1, confirm_tries)]:
                policy.configure(num_candidates=row["num_candidates"], num_rtg=row["num_rtg"] or 1)
                paced = latency_stats(_paced_point(policy, feeds, confirm_ticks, warmup, hz))
                row["paced_p99_ms"] = paced["p99_ms"]
                if paced["p99_ms"] <= budget_ms:
                    best = {**row, "p50_ms": paced["p50_ms"], "p99_ms": paced["p99_ms"]}
                    break
                row["fits"] = False
    return {
        "hz": float(hz),
        "budget_ms": budget_ms,
        "mode": "grid",
        "ticks_per_point": ticks,
        "confirmed_paced": {"ticks": confirm_ticks, "hz": float(hz)} if confirm_ticks > 0 else None,
        "chosen": None if best is None else {
            "num_candidates": best["num_candidates"], "num_rtg": best["num_rtg"],
            "p50_ms": best["p50_ms"], "p99_ms": best["p99_ms"],
        },
        "table": table,
        "backend": policy.describe() if hasattr(policy, "describe") else None,
    }
