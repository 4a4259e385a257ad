"""The TensorRT build recipe written next to every engine: a `trtexec` command and `build_trt.sh`.

A TensorRT plan is specific to the GPU, the TensorRT version and the JetPack it is built with, so the
plan is built on the target (e.g. a Jetson Orin), not here: the exporter only writes the command.
Torch-free, so the calibration step reuses `trtexec_command` for its FP16 / INT8 variants.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from evor_edge.runtime.manifest import ENGINE_FILE, Manifest

from .errors import ExportError

PLAN_FILE = "engine.plan"
BUILD_SCRIPT = "build_trt.sh"


@dataclass(frozen=True)
class ShapeProfile:
    """One optimisation profile over the dynamic axes (B, N_pi, N); N is ignored for kind "qc"."""

    min: tuple[int, int, int] = (1, 1, 1)
    opt: tuple[int, int, int] = (1, 32, 50)
    max: tuple[int, int, int] = (16, 64, 64)

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def default_profile(manifest: Manifest, max_batch: int = 16, max_candidates: int = 64,
                    max_rtg: int = 64) -> ShapeProfile:
    """min B=N_pi=N=1; opt at B=1 with the manifest's default N_pi / N; max (16, 64, 64) or the defaults.

    The max batch is 16 rather than 64: TensorRT reserves activation memory for the max shapes, and at
    B * N_pi * N rows of hidden-width activations (B=64: 262k rows x 512 x 4 B = 512 MiB per tensor) that
    does not fit an 8 GB Jetson next to a robot stack. Rebuild with a wider profile when needed.
    """
    n_opt = manifest.default_num_rtg if manifest.kind == "evor" else 1
    opt = (1, int(manifest.default_num_candidates), int(n_opt))
    maximum = (max(max_batch, opt[0]), max(max_candidates, opt[1]), max(max_rtg, opt[2]))
    if manifest.kind != "evor":
        maximum = (maximum[0], maximum[1], 1)
    return ShapeProfile(min=(1, 1, 1), opt=opt, max=maximum)


def _shape_arg(manifest: Manifest, dims: tuple[int, int, int]) -> str:
    b, n_pi, n = dims
    shapes = [f"obs:{b}x{manifest.obs_dim}", f"action_noise:{b}x{n_pi}x{manifest.act_dim}"]
    if manifest.kind == "evor":
        shapes.append(f"rtg_noise:{b}x{n_pi}x{n}")
    return ",".join(shapes)


def precision_flags(precision: str, strongly_typed: bool = True) -> list[str]:
    """trtexec precision flags per engine precision.

    fp32: `--noTF32` so the plan computes in true FP32 (Ampere / Orin otherwise use TF32 for matmuls).
    fp16 / int8: the calibrated ONNX carries its own types (FP16 tensors or INT8 Q/DQ with the Euler
    state kept FP32), so `--stronglyTyped` builds exactly those types; with strongly_typed=False the
    weakly typed flags are used instead (`--fp16`; `--int8 --fp16` for Q/DQ graphs), which lets
    TensorRT pick reduced precision anywhere, the Euler accumulation included.
    """
    if precision == "fp32":
        return ["--noTF32"]
    if precision == "fp16":
        return ["--stronglyTyped"] if strongly_typed else ["--fp16"]
    if precision == "int8":
        return ["--stronglyTyped"] if strongly_typed else ["--int8", "--fp16"]
    raise ExportError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")


def trtexec_command(
    manifest: Manifest, precision: str | None = None, profile: ShapeProfile | None = None,
    onnx_file: str = ENGINE_FILE, plan_file: str = PLAN_FILE, strongly_typed: bool = True,
    trtexec: str = "trtexec",
) -> list[str]:
    """The trtexec argv that builds `plan_file` from `onnx_file` (paths relative to ENGINE_DIR)."""
    precision = precision or manifest.precision
    profile = profile or default_profile(manifest)
    return [
        trtexec,
        f"--onnx={onnx_file}",
        f"--saveEngine={plan_file}",
        f"--minShapes={_shape_arg(manifest, profile.min)}",
        f"--optShapes={_shape_arg(manifest, profile.opt)}",
        f"--maxShapes={_shape_arg(manifest, profile.max)}",
        *precision_flags(precision, strongly_typed),
        "--builderOptimizationLevel=3",
        "--skipInference",
    ]


def build_script(manifest: Manifest, precision: str | None = None, profile: ShapeProfile | None = None,
                 strongly_typed: bool = True) -> str:
    """Text of build_trt.sh: checks engine.onnx against the manifest's sha256, then runs trtexec."""
    precision = precision or manifest.precision
    profile = profile or default_profile(manifest)
    argv = trtexec_command(manifest, precision, profile, strongly_typed=strongly_typed, trtexec="$TRTEXEC")
    args = " \\\n    ".join(shlex.quote(a) for a in argv[1:])
    return f"""#!/usr/bin/env bash
# Build the TensorRT plan for this evor-edge engine ({manifest.kind}, {precision}, M={manifest.euler_steps}).
#
# Run it ON THE TARGET (e.g. a Jetson Orin with JetPack 6 / TensorRT 10): a plan only runs on the GPU and
# TensorRT version that built it. On JetPack trtexec lives in /usr/src/tensorrt/bin; the script falls
# back to it when trtexec is not on PATH (or set TRTEXEC=/path/to/trtexec). Extra arguments are passed
# through to trtexec (e.g. --memPoolSize=workspace:1024 --timingCacheFile=trt.cache). Consider
# `sudo nvpmodel -m 0 && sudo jetson_clocks` before building so tactic timing sees the clocks it runs at.
#
# Optimisation profile over (B, N_pi, N): min {profile.min}, opt {profile.opt}, max {profile.max}.
# The runtime refuses shapes outside [min, max]; rebuild with wider --maxShapes to go beyond.
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
echo "{manifest.engine_sha256}  {manifest.engine_file}" | sha256sum -c --quiet - \\
    || {{ echo "{manifest.engine_file} does not match manifest.json (engine_sha256); re-export" >&2; exit 1; }}
"$TRTEXEC" \\
    {args} \\
    "$@"
"""


def recipe(manifest: Manifest, precision: str | None = None, profile: ShapeProfile | None = None) -> dict[str, Any]:
    """JSON-able summary of the build recipe (stored in manifest.extra["tensorrt"])."""
    profile = profile or default_profile(manifest)
    return {
        "script": BUILD_SCRIPT,
        "plan_file": PLAN_FILE,
        "profile": profile.as_dict(),
        "command": trtexec_command(manifest, precision, profile),
    }
