"""Acceptance measurement for INT8 calibration: speed-up and selection agreement vs FP32 at the paper config.

For each case (a TRAINED paper-preset checkpoint + its dataset), export the FP32 engine (MLP 4x512, M 10),
calibrate an INT8 engine with `calibrate_engine` (per-step scales, and with --also-shared the shared-scale
variant too) and print one JSON object: per case the per-tick latency of both engines at N_pi 32 / N 50
(1 thread; 2 threads only on a calm machine), the speed-up, the selection agreement on held-out
observations with identical noise, and the Q* / action errors. Targets: speed-up >= 2x, agreement >= 95%.

Make the checkpoints first (CPU, 1 thread; briefly trained, not converged)::

    evor-edge train --env pointmaze-medium-navigate-singletask-task1-v0 --dataset /tmp/pm100.npz \\
        --preset paper --steps 3000 --checkpoint-every 1000 --threads 1 --out /tmp/runs/pm_paper
    evor-edge data generate cube-double-play-v0 --out /tmp/cube/cd30.npz --episodes 30
    evor-edge train --env cube-double-play-singletask-task2-v0 --dataset /tmp/cube/cd30.npz \\
        --preset paper --steps 2000 --threads 1 --out /tmp/runs/cd_paper

Then::

    python benchmarks/calibration_parity.py [--work /tmp/calib-bench] [--also-shared]
    python benchmarks/calibration_parity.py --latency-only   # re-time the engines already in --work

Latency on a shared machine: the runs interleave FP32 and INT8 ticks so both see the same background load;
the load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PAPER = {"hidden_dims": [512, 512, 512, 512], "euler_steps": 10, "num_candidates": 32, "num_rtg": 50}
CASES = {
    "pointmaze-medium": ("/tmp/runs/pm_paper", "/tmp/pm100.npz", "pointmaze-medium-navigate-singletask-task1-v0"),
    "cube-double": ("/tmp/runs/cd_paper", "/tmp/cube/cd30.npz", "cube-double-play-singletask-task2-v0"),
}


def run_case(name: str, run: Path, dataset: Path, task: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Export + calibrate one checkpoint; return the acceptance numbers."""
    from evor_edge.calibration import calibrate_engine
    from evor_edge.export import export_engine

    fp32 = work / f"{name}-fp32"
    exported = export_engine(run, fp32, progress=False, overwrite=True)
    cfg = json.loads((fp32 / "manifest.json").read_text())["training_config"]
    config = {"hidden_dims": list(cfg["hidden_dims"]), "euler_steps": exported["euler_steps"],
              "num_candidates": cfg["num_candidates"], "num_rtg": cfg["num_rtg_eval"]}
    result: dict[str, Any] = {
        "checkpoint": exported["source_checkpoint"], "obs_dim": exported["obs_dim"], "act_dim": exported["act_dim"],
        "config": config, "paper_config": config == PAPER, "dataset": str(dataset), "task": task, "variants": {},
    }
    variants = {"per_step_scales": False, **({"shared_scales": True} if args.also_shared else {})}
    for label, shared in variants.items():
        report = calibrate_engine(
            fp32, dataset, "int8", work / f"{name}-int8-{label}", samples=args.samples,
            parity_samples=args.parity_samples, task=task, shared_scales=shared,
            activation_type=args.activations, calibration_method=args.calibration_method, gelu=args.gelu,
            latency_runs=args.runs, latency_threads=(1, 2), seed=args.seed, overwrite=True, progress=False)
        parity, latency = report["parity"], report["latency"]
        one = latency["by_threads"]["1"]
        entry = {
            "agreement_pct": round(parity["agreement_pct"], 2),
            "disagreements": parity["disagreements"],
            "disagreements_at_near_ties": parity["disagreements_at_near_ties"],
            "q_star_abs_error": {k: round(v, 5) for k, v in parity["q_star_abs_error"].items()},
            "q_star_rel_error": {k: round(v, 6) for k, v in parity["q_star_rel_error"].items()},
            "q_star_error_over_candidate_spread": {k: round(v, 4) for k, v in
                                                   parity["q_star_error_over_candidate_spread"].items()},
            "regret": {k: round(v, 5) for k, v in parity["regret"].items()},
            "selected_action_abs_error": {k: round(v, 5) for k, v in parity["selected_action_abs_error"].items()},
            "fp32_tick_ms_1thread": one["fp32"]["tick_ms_median"],
            "int8_tick_ms_1thread": one["int8"]["tick_ms_median"],
            "speedup_1thread": one["speedup"],
            "two_threads": latency["by_threads"].get("2"),
            "load_before": latency["load_before"], "load_after": latency["load_after"],
            "calibration_seconds": report["calibration"]["calibration_seconds"],
            "parity_md": report["parity_md"],
        }
        entry["accept"] = {"speedup_ge_2x": entry["speedup_1thread"] >= 2.0, "agreement_ge_95pct":
                           entry["agreement_pct"] >= 95.0}
        result["variants"][label] = entry
        print(f"[{name}] {label}: agreement {entry['agreement_pct']}%, speed-up x{entry['speedup_1thread']} "
              f"({entry['fp32_tick_ms_1thread']} -> {entry['int8_tick_ms_1thread']} ms)", file=sys.stderr)
    return result


def latency_only(args: argparse.Namespace) -> int:
    """Re-time the engine pairs left in --work (1 and 2 threads; 2 only on a calm machine)."""
    import numpy as np

    from evor_edge.calibration.parity import measure_latency
    from evor_edge.runtime import load_manifest

    out: dict[str, Any] = {}
    for name in args.case or list(CASES):
        fp32 = args.work / f"{name}-fp32"
        int8 = args.work / f"{name}-int8-per_step_scales"
        if not (fp32 / "manifest.json").is_file() or not (int8 / "manifest.json").is_file():
            print(f"error: {name}: no engines in {args.work}; run without --latency-only first", file=sys.stderr)
            return 2
        manifest = load_manifest(fp32)
        rng = np.random.default_rng(args.seed)
        obs = (np.asarray(manifest.obs_mean) + np.asarray(manifest.obs_std)
               * rng.standard_normal((16, manifest.obs_dim))).astype(np.float32)
        out[name] = measure_latency({"fp32": fp32, "int8": int8}, obs, threads=(1, 2), runs=args.runs,
                                    progress=False)
    print(json.dumps(out, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/calib-bench"), help="Engine directories go here.")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="Only these cases (repeatable).")
    for name, (run, dataset, _task) in CASES.items():
        key = name.split("-")[0]
        parser.add_argument(f"--{key}-run", default=run, type=Path, help=f"{name} run dir or checkpoint.")
        parser.add_argument(f"--{key}-dataset", default=dataset, type=Path, help=f"{name} dataset .npz.")
    parser.add_argument("--samples", type=int, default=64, help="Calibration observations.")
    parser.add_argument("--parity-samples", type=int, default=100, help="Held-out observations for agreement.")
    parser.add_argument("--runs", type=int, default=20, help="Timed ticks per engine (median).")
    parser.add_argument("--activations", default="qint8", choices=["qint8", "quint8"])
    parser.add_argument("--calibration-method", default="minmax", choices=["minmax", "percentile", "entropy"])
    parser.add_argument("--gelu", default="exact", choices=["exact", "tanh"],
                        help="GELU form of the INT8 engine (see docs/calibration.md).")
    parser.add_argument("--also-shared", action="store_true", help="Also measure shared (per-layer) scales.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-only", action="store_true",
                        help="Only re-time the FP32 / INT8 engines a previous run left in --work (e.g. when calmer).")
    args = parser.parse_args(argv)
    if args.latency_only:
        return latency_only(args)

    import torch

    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"targets": {"speedup": 2.0, "agreement_pct": 95.0},
                           "latency_config": {"num_candidates": 32, "num_rtg": 50, "batch": 1}, "cases": {}}
    for name in args.case or list(CASES):
        key = name.split("-")[0]
        run, dataset = getattr(args, f"{key}_run"), getattr(args, f"{key}_dataset")
        if not Path(run).exists() or not Path(dataset).exists():
            print(f"error: {name}: missing {run if not Path(run).exists() else dataset}; see this script's "
                  "docstring for the training commands", file=sys.stderr)
            return 2
        out["cases"][name] = run_case(name, Path(run), Path(dataset), CASES[name][2], args.work, args)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
