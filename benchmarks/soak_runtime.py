"""Soak test for the torch-free runtime: many act() calls, RSS growth and per-tick overhead.

    python benchmarks/soak_runtime.py ENGINE_DIR [--ticks 10000] [--max-growth-mb 5]

Torch-free (numpy + onnxruntime), so it runs on the robot install. Prints one JSON object; exits 1 when
resident memory grows by more than --max-growth-mb between the end of warmup and the end of the run.

"overhead" is the runtime's own work per tick beyond the engine call (validation, noise,
selection, bookkeeping): policy.last.latency_s - policy.last.engine_s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from evor_edge.runtime import EvorPolicy
from evor_edge.runtime.bench import observations_from_manifest, resident_memory_mb
from evor_edge.runtime.timing import summarize

PERCENTILES = {"p50": 50, "p99": 99, "p999": 99.9, "max": "max"}


def soak(engine_dir: Path, ticks: int, warmup: int, num_candidates: int | None, num_rtg: int | None,
         batch: int, backend: str) -> dict[str, Any]:
    """Run ``ticks`` policy calls after ``warmup`` and report RSS growth, latency and overhead."""
    policy = EvorPolicy.load(engine_dir, backend=backend, num_candidates=num_candidates, num_rtg=num_rtg)
    obs = observations_from_manifest(policy.manifest, 256, np.random.default_rng(0))
    if batch > 1:
        feeds = [np.take(obs, np.arange(i, i + batch) % len(obs), axis=0) for i in range(len(obs))]
        step = policy.act_batch
    else:
        feeds = list(obs)
        step = policy.act
    latency = np.zeros(ticks)
    engine = np.zeros(ticks)
    latency.fill(1.0)  # touch the pages now so the measurement's own arrays are not "growth"
    engine.fill(0.0)
    rss_trace: list[float] = []
    for i in range(warmup):
        step(feeds[i % len(feeds)])
    rss_start = resident_memory_mb()
    t0 = time.perf_counter()
    for k in range(ticks):
        step(feeds[k % len(feeds)])
        latency[k] = policy.last.latency_s
        engine[k] = policy.last.engine_s
        if k % max(1, ticks // 10) == 0:
            rss_trace.append(round(resident_memory_mb(), 3))
    wall = time.perf_counter() - t0
    rss_end = resident_memory_mb()
    overhead = (latency - engine) * 1e6
    return {
        "engine_dir": str(engine_dir),
        "settings": policy.describe(),
        "batch": batch,
        "ticks": ticks,
        "warmup": warmup,
        "wall_s": wall,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "rss_growth_mb": rss_end - rss_start,
        "rss_trace_mb": rss_trace,
        "latency_us": summarize(latency, PERCENTILES, scale=1e6),
        "engine_us": summarize(engine, PERCENTILES, scale=1e6),
        "overhead_us": summarize(overhead, PERCENTILES),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the soak JSON; exit 1 when RSS grew beyond the bound."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("engine_dir", help="engine directory (evor-edge export / calibrate)")
    parser.add_argument("--ticks", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--num-candidates", type=int, default=None)
    parser.add_argument("--num-rtg", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt"))
    parser.add_argument("--max-growth-mb", type=float, default=5.0)
    args = parser.parse_args(argv)
    result = soak(Path(args.engine_dir), args.ticks, args.warmup, args.num_candidates, args.num_rtg,
                  args.batch, args.backend)
    result["max_growth_mb"] = args.max_growth_mb
    result["passed"] = bool(result["rss_growth_mb"] <= args.max_growth_mb)
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
