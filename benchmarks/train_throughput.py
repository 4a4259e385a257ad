"""Training steps/s of the `small` and `paper` presets, EVOR and QC-1, on every device present: torch eager
against the captured step (torch.compile; one CUDA graph replay on GPUs) and the same update in JAX + jit.

    python benchmarks/train_throughput.py --out train_throughput.json
    python benchmarks/train_throughput.py --devices cpu --presets small --modes eager,compile --steps 50

Writes JSON: one row per (device, preset, agent, mode) with median steps/s over --repeats windows, the
warm-up (compile / capture) time, and, on the CPU, FLOPs per step against the machine's measured float32
GEMM peak. A mode that fails records its error instead of stopping the run. Close other jobs first, or
state the load (the JSON records the 1-minute load average at the start and end).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from evor_edge.config import preset_config
from evor_edge.io import atomic_write_json
from evor_edge.throughput import flops_per_step, matmul_peak_gflops, measure_jax, measure_torch

CUDA_MODES = ("eager", "compile", "cuda-graph", "compiled-cuda-graph", "jax")
CPU_MODES = ("eager", "compile", "jax")


def _devices(names: str) -> list[torch.device]:
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    out = []
    for name in wanted:
        if name == "cuda" and not torch.cuda.is_available():
            print("cuda: torch sees no GPU, skipped", file=sys.stderr)
            continue
        out.append(torch.device(name))
    return out


def _jax_platform(device: torch.device) -> str | None:
    try:
        import jax
    except ImportError:
        return None
    name = "gpu" if device.type == "cuda" else "cpu"
    try:
        jax.devices(name)
    except RuntimeError:
        return None
    return name


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "benchmark": "train_throughput", "obs_dim": args.obs_dim, "act_dim": args.act_dim,
        "timed_steps": args.steps, "repeats": args.repeats, "torch": torch.__version__,
        "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
        "load_avg_start": os.getloadavg()[0], "rows": [], "devices": {},
    }
    if args.append and args.out and Path(args.out).is_file():
        previous = json.loads(Path(args.out).read_text())
        report["rows"], report["devices"] = previous.get("rows", []), previous.get("devices", {})
    try:
        import jax

        report["jax"] = jax.__version__
    except ImportError:
        report["jax"] = None
    flops = {p: {a: flops_per_step(preset_config(p, agent=a), args.obs_dim, args.act_dim)
                 for a in args.agents.split(",")} for p in args.presets.split(",")}
    report["flops_per_step"] = flops
    for device in _devices(args.devices):
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        peak = matmul_peak_gflops(device)
        report["devices"][str(device)] = {"name": name, "gemm_peak_gflops": round(peak, 1),
                                         "matmul_precision": "tf32" if device.type == "cuda" else "fp32"}
        modes = [m for m in args.modes.split(",") if m in (CUDA_MODES if device.type == "cuda" else CPU_MODES)]
        for preset in args.presets.split(","):
            steps = args.steps if device.type == "cuda" or preset == "small" else max(5, args.steps // 5)
            for agent in args.agents.split(","):
                for mode in modes:
                    row: dict[str, Any] = {"device": str(device), "device_name": name, "preset": preset,
                                           "agent": agent, "timed_steps": steps}
                    t0 = time.perf_counter()
                    try:
                        if mode == "jax":
                            jax_platform = _jax_platform(device)
                            if jax_platform is None:
                                row.update(framework="jax", mode="jit", skipped="jax or its device is absent")
                                report["rows"].append(row)
                                continue
                            row.update(measure_jax(preset, agent, jax_platform, args.obs_dim, args.act_dim, steps,
                                                   args.repeats))
                        else:
                            row.update(measure_torch(preset, agent, device, mode, args.obs_dim, args.act_dim, steps,
                                                     args.repeats))
                    except Exception as exc:  # noqa: BLE001 - record and go on with the other modes
                        row.update(mode=mode, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                    row["wall_s"] = round(time.perf_counter() - t0, 1)
                    if "steps_per_s" in row:
                        achieved = flops[preset][agent] * row["steps_per_s"] / 1e9
                        row["achieved_gflops"] = round(achieved, 1)
                        row["fraction_of_gemm_peak"] = round(achieved / peak, 3)
                    report["rows"].append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    if args.out:
                        atomic_write_json(Path(args.out), report)
    report["load_avg_end"] = os.getloadavg()[0]
    _ratios(report)
    return report


def _ratios(report: dict[str, Any]) -> None:
    """captured / eager and torch-best / jax per (device, preset, agent)."""
    table: dict[tuple[str, str, str], dict[str, float]] = {}
    for row in report["rows"]:
        if "steps_per_s" in row:
            table.setdefault((row["device"], row["preset"], row["agent"]), {})[row["mode"]] = row["steps_per_s"]
    out = []
    for (device, preset, agent), rates in table.items():
        entry: dict[str, Any] = {"device": device, "preset": preset, "agent": agent}
        for captured in ("compile", "cuda-graph", "compiled-cuda-graph"):
            if captured in rates and "eager" in rates:
                entry[f"{captured}_over_eager"] = round(rates[captured] / rates["eager"], 3)
        torch_best = max((v for k, v in rates.items() if k != "jit"), default=None)
        if torch_best and "jit" in rates:
            entry["torch_best_over_jax"] = round(torch_best / rates["jit"], 3)
        out.append(entry)
    report["ratios"] = out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="cpu,cuda", help="Comma list (absent ones are skipped).")
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument("--agents", default="evor,qc")
    parser.add_argument("--modes", default="eager,compile,cuda-graph,compiled-cuda-graph,jax")
    parser.add_argument("--steps", type=int, default=200, help="Timed steps per window (paper preset on CPU: /5).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--obs-dim", type=int, default=40, help="Default: cube-double (40).")
    parser.add_argument("--act-dim", type=int, default=5)
    parser.add_argument("--threads", type=int, help="Torch CPU threads.")
    parser.add_argument("--out", help="JSON file (rewritten after every row).")
    parser.add_argument("--append", action="store_true",
                        help="Add rows to an existing --out file (e.g. JAX in its own process on a GPU).")
    args = parser.parse_args()
    report = run(args)
    if args.out:
        atomic_write_json(Path(args.out), report)
    print(json.dumps({"ratios": report["ratios"]}, indent=2))


if __name__ == "__main__":
    main()
