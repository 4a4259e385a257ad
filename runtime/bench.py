"""Latency at a control rate (`evor-edge bench`): paced ticks, deadline misses, jitter, memory (torch-free).

Every function returns JSON-able dicts. Fitting the configuration to the deadline is
`evor_edge.runtime.fit`; the frontier file's schema is `evor_edge.runtime.frontier`; the latency histogram
is drawn by `evor_edge.plots` (matplotlib is not a robot dependency).
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import Manifest
from .timing import Pacer, latency_stats

__all__ = [
    "flops_per_tick",
    "load_dataset_observations",
    "observation_feed",
    "observations_from_manifest",
    "resident_memory_mb",
    "run_bench",
]


def resident_memory_mb() -> float:
    """Resident set size of this process in MiB (VmRSS; peak RSS from getrusage as a fallback)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def flops_per_tick(manifest: Manifest, batch: int, num_candidates: int, num_rtg: int) -> float | None:
    """FLOPs of one engine call from the manifest's ``flops`` spec, or None when absent.

    Spec: ``{"per_tick": {"const": c, "per_candidate": a, "per_candidate_sample": b}}`` meaning
    ``flops(B, N_pi, N) = B * (c + N_pi * a + N_pi * N * b)``; pruned engines add
    ``"per_survivor_sample": s, "survivors": K1`` for ``+ B * min(K1, N_pi) * N * s``. N is the
    engine's N (rtg_top_k when the policy feeds only the tail).
    """
    spec = manifest.flops.get("per_tick") if isinstance(manifest.flops, dict) else None
    if not isinstance(spec, dict):
        return None
    try:
        c = float(spec.get("const", 0.0))
        a = float(spec.get("per_candidate", 0.0))
        b = float(spec.get("per_candidate_sample", 0.0))
        s = float(spec.get("per_survivor_sample", 0.0))
        k1 = min(int(spec.get("survivors", 0)), num_candidates)
    except (TypeError, ValueError):
        return None
    n = num_rtg if manifest.kind == "evor" else 1
    value = batch * (c + num_candidates * a + num_candidates * n * b + k1 * n * s)
    return value if math.isfinite(value) and value > 0 else None


def observations_from_manifest(
    manifest: Manifest, n: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``n`` plausible observations ``[n, obs_dim]`` float32: N(obs_mean, obs_std) from the
    manifest when it carries them, else standard normal."""
    rng = rng if rng is not None else np.random.default_rng(0)
    obs = rng.standard_normal((n, manifest.obs_dim))
    if len(manifest.obs_mean) == manifest.obs_dim and len(manifest.obs_std) == manifest.obs_dim:
        obs = obs * np.asarray(manifest.obs_std, dtype=np.float64) + np.asarray(manifest.obs_mean)
    return obs.astype(np.float32)


def load_dataset_observations(path: str | os.PathLike[str], limit: int | None = None,
                              obs_dim: int | None = None) -> np.ndarray:
    """The ``observations`` array of an OGBench-format dataset ``.npz`` (plain ``np.load``)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "observations" not in data:
                raise ValueError(f"{path} has no 'observations' array (keys: {sorted(data.files)})")
            obs = np.asarray(data["observations"][: limit if limit else None], dtype=np.float32)
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read dataset {path}: {exc}") from None
    if obs.ndim != 2 or obs.shape[0] == 0:
        raise ValueError(f"{path}: 'observations' must be a non-empty [n, obs_dim] array, got {obs.shape}")
    if obs_dim is not None and obs.shape[1] != obs_dim:
        raise ValueError(f"{path}: observations have dim {obs.shape[1]}, the engine expects {obs_dim}")
    return obs


def observation_feed(observations: np.ndarray, batch: int, obs_dim: int) -> np.ndarray:
    """Observations as a contiguous float32 ``[n, obs_dim]`` array with at least ``batch`` rows (tiled)."""
    obs = np.asarray(observations, dtype=np.float32)
    if obs.ndim == 1:
        obs = obs[None]
    if obs.ndim != 2 or obs.shape[1] != obs_dim or obs.shape[0] == 0:
        raise ValueError(f"observations must be [n, {obs_dim}], got {obs.shape}")
    if obs.shape[0] < batch:
        obs = np.tile(obs, (math.ceil(batch / obs.shape[0]), 1))
    return np.ascontiguousarray(obs)


def run_bench(
    policy: Any,
    hz: float,
    ticks: int,
    observations: np.ndarray,
    batch: int = 1,
    warmup: int = 20,
    keep_latencies: bool = False,
) -> dict[str, Any]:
    """Run ``policy`` in a fixed-rate loop and report latency against the control period.

    Ticks follow the control loop's schedule (`evor_edge.runtime.timing.Pacer`): each starts at its
    slot ``t0 + k / hz``; a tick whose compute time exceeds the period is a deadline miss; slots a tick
    overran are skipped (counted in ``skipped_slots``) as a real controller would, and the schedule
    continues on the next free slot. Jitter is the standard deviation of tick start
    times against their slots. ``observations`` rows are fed in order (cycled); with
    ``batch > 1`` the policy's ``act_batch`` gets ``batch`` consecutive rows.

    Returns a JSON-able dict (latencies in ms, memory in MiB, rates in Hz); with
    ``keep_latencies`` it also holds ``latencies_ms``, the per-tick list (for a histogram).
    """
    if hz <= 0 or not math.isfinite(hz):
        raise ValueError(f"hz must be a positive number, got {hz}")
    if ticks < 1:
        raise ValueError(f"ticks must be >= 1, got {ticks}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    obs = observation_feed(observations, batch, policy.obs_dim)
    n_obs = obs.shape[0]
    if batch == 1:
        feeds = [obs[i] for i in range(n_obs)]
        step = policy.act
    else:
        feeds = [np.take(obs, np.arange(i, i + batch) % n_obs, axis=0) for i in range(0, n_obs, batch)]
        step = policy.act_batch

    for i in range(max(0, warmup)):
        step(feeds[i % len(feeds)])
    rss_start = resident_memory_mb()

    period = 1.0 / hz
    latency = np.empty(ticks, dtype=np.float64)
    engine = np.empty(ticks, dtype=np.float64)
    lateness = np.empty(ticks, dtype=np.float64)
    perf = time.perf_counter
    pacer = Pacer(hz)
    first_start = last_end = 0.0
    for k in range(ticks):
        ideal = pacer.wait()
        start = perf()
        step(feeds[k % len(feeds)])
        end = perf()
        if k == 0:
            first_start = start
        last_end = end
        latency[k] = end - start
        engine[k] = getattr(getattr(policy, "last", None), "engine_s", float("nan"))
        lateness[k] = start - ideal
        pacer.done(end)
    rss_end = resident_memory_mb()

    misses = int(np.count_nonzero(latency > period))
    elapsed = last_end - first_start
    stats = latency_stats(latency)
    shape = (batch, int(getattr(policy, "num_candidates", 0)), int(getattr(policy, "num_rtg", 0)))
    engine_n = int(getattr(policy, "engine_num_rtg", shape[2]))
    manifest = getattr(policy, "manifest", None)
    flops = flops_per_tick(manifest, shape[0], shape[1], engine_n) if manifest is not None else None
    result = {
        "hz": float(hz),
        "period_ms": period * 1e3,
        "ticks": int(ticks),
        "warmup": int(max(0, warmup)),
        "batch": batch,
        "num_candidates": shape[1],
        "num_rtg": shape[2] if getattr(policy, "kind", "evor") == "evor" else None,
        "engine_num_rtg": engine_n if getattr(policy, "kind", "evor") == "evor" else None,
        "latency_ms": stats,
        "engine_ms": latency_stats(engine[np.isfinite(engine)]),
        "deadline_misses": misses,
        "deadline_miss_pct": 100.0 * misses / ticks,
        "skipped_slots": int(pacer.skipped),
        "jitter_ms": float(np.std(lateness) * 1e3),
        "max_lateness_ms": float(np.max(lateness) * 1e3),
        "achieved_hz": float((ticks - 1) / elapsed) if ticks > 1 and elapsed > 0 else None,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "rss_growth_mb": rss_end - rss_start,
        "flops_per_tick": flops,
        "gflops_per_s": (flops / (stats["mean_ms"] * 1e-3) / 1e9) if flops else None,
        "meets_deadline_p99": bool(stats["p99_ms"] <= period * 1e3),
        "backend": policy.describe() if hasattr(policy, "describe") else None,
    }
    if keep_latencies:
        result["latencies_ms"] = (latency * 1e3).tolist()
    return result
