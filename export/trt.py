"""The TensorRT build recipe written next to every engine: `trtexec` commands and `build_trt.sh`.

A TensorRT plan is specific to the GPU, the TensorRT version and the JetPack it is built with, so the
plan is built on the target (e.g. a Jetson Orin), not here: the exporter writes the script, and
`evor_edge.export.trt_check` checks on this machine that TensorRT's own parser and builder accept the
graph with the same optimisation profile (`default_profile`, one source of truth for both).
Torch-free, so the calibration step reuses it for its FP16 / INT8 variants.

TensorRT 10 (JetPack 6, Jetson Orin) and 11 (JetPack 7, Thor) differ in the precision flags: 11 removed
`--fp16` / `--int8` / `--stronglyTyped` (every network is strongly typed; the precision lives in the
graph). Our FP16 / INT8 graphs carry their own types (FP16 bodies with the Euler state, LogSumExp inputs
and un-scaling in FP32; explicit INT8 Q/DQ), so both versions build exactly the same types; the script
reads trtexec's version banner and passes the flags that version knows.
"""

from __future__ import annotations

import shlex
from typing import Any

from evor_edge.runtime.manifest import (
    ENGINE_FILE,
    PLAN_FILE,
    PLAN_RECORD_FILE,
    PLAN_RECORD_FORMAT,
    Manifest,
    ShapeProfile,
    default_profile,
)

from .errors import ExportError

__all__ = [
    "BUILD_SCRIPT",
    "PLAN_FILE",
    "PLAN_RECORD_FILE",
    "TIMING_CACHE",
    "ShapeProfile",
    "bench_command",
    "build_script",
    "default_profile",
    "precision_flags",
    "recipe",
    "shape_args",
    "trtexec_command",
]

BUILD_SCRIPT = "build_trt.sh"
TIMING_CACHE = "timing.cache"
BENCH_FLAGS = ("--useCudaGraph", "--noDataTransfers", "--separateProfileRun")
TRT_MAJORS = (10, 11)


def shape_args(manifest: Manifest, profile: ShapeProfile) -> dict[str, str]:
    """trtexec's --minShapes / --optShapes / --maxShapes values ("obs:1x4,action_noise:1x8x2,...")."""

    def one(dims: tuple[int, int, int]) -> str:
        b, n_pi, n = dims
        shapes = [f"obs:{b}x{manifest.obs_dim}", f"action_noise:{b}x{n_pi}x{manifest.act_dim}"]
        if manifest.kind == "evor":
            shapes.append(f"rtg_noise:{b}x{n_pi}x{n}")
        return ",".join(shapes)

    return {"min": one(profile.min), "opt": one(profile.opt), "max": one(profile.max)}


def precision_flags(precision: str, strongly_typed: bool = True, trt_major: int = 10) -> list[str]:
    """trtexec precision flags per engine precision and TensorRT major version.

    fp32: `--noTF32` so the plan computes in true FP32 (Ampere / Orin otherwise use TF32 for matmuls).
    fp16 / int8 on TensorRT 10: the calibrated ONNX carries its own types (FP16 tensors or INT8 Q/DQ with
    the Euler state kept FP32), so `--stronglyTyped` builds exactly those types; with strongly_typed=False
    the weakly typed flags are used instead (`--fp16`; `--int8 --fp16` for Q/DQ graphs), which lets
    TensorRT pick reduced precision anywhere, the Euler accumulation included.
    TensorRT 11 removed all of those (every network is strongly typed): fp16 / int8 need no flag, and
    strongly_typed=False is refused (weak typing does not exist there).
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ExportError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")
    if trt_major not in TRT_MAJORS:
        raise ExportError(f"TensorRT {trt_major} is not supported; the recipe knows {TRT_MAJORS}")
    if precision == "fp32":
        return ["--noTF32"]
    if trt_major >= 11:
        if not strongly_typed:
            raise ExportError("TensorRT 11 removed weak typing (--fp16 / --int8): FP16 / INT8 must live in the graph")
        return []
    if precision == "fp16":
        return ["--stronglyTyped"] if strongly_typed else ["--fp16"]
    return ["--stronglyTyped"] if strongly_typed else ["--int8", "--fp16"]


def trtexec_command(
    manifest: Manifest, precision: str | None = None, profile: ShapeProfile | None = None,
    onnx_file: str = ENGINE_FILE, plan_file: str = PLAN_FILE, strongly_typed: bool = True,
    trtexec: str = "trtexec", trt_major: int = 10, timing_cache: str | None = TIMING_CACHE,
) -> list[str]:
    """The trtexec argv that builds `plan_file` from `onnx_file` (paths relative to ENGINE_DIR)."""
    precision = precision or manifest.precision
    profile = profile or default_profile(manifest)
    shapes = shape_args(manifest, profile)
    return [
        trtexec,
        f"--onnx={onnx_file}",
        f"--saveEngine={plan_file}",
        f"--minShapes={shapes['min']}",
        f"--optShapes={shapes['opt']}",
        f"--maxShapes={shapes['max']}",
        *precision_flags(precision, strongly_typed, trt_major),
        "--builderOptimizationLevel=3",
        *([f"--timingCacheFile={timing_cache}"] if timing_cache else []),
        "--skipInference",
    ]


def bench_command(manifest: Manifest, profile: ShapeProfile | None = None, plan_file: str = PLAN_FILE,
                  trtexec: str = "trtexec") -> list[str]:
    """trtexec argv that times a built plan at the profile's opt shapes (CUDA graph, no H2D / D2H copies,
    profiling in a separate run so it does not slow the timed one)."""
    profile = profile or default_profile(manifest)
    return [trtexec, f"--loadEngine={plan_file}", f"--shapes={shape_args(manifest, profile)['opt']}", *BENCH_FLAGS]


def _bash_array(flags: list[str]) -> str:
    return "(" + " ".join(shlex.quote(f) for f in flags) + ")"


def build_script(manifest: Manifest, precision: str | None = None, profile: ShapeProfile | None = None,
                 strongly_typed: bool = True) -> str:
    """Text of build_trt.sh: checks engine.onnx against the manifest's sha256, reads the TensorRT version
    from trtexec, builds engine.plan with that version's flags and writes engine.plan.json beside it
    (engine sha256, plan sha256, TensorRT version, profile) for the runtime's staleness check.
    `./build_trt.sh --bench` times the built plan instead."""
    precision = precision or manifest.precision
    profile = profile or default_profile(manifest)
    shapes = shape_args(manifest, profile)
    flags10 = precision_flags(precision, strongly_typed, 10)
    flags11 = precision_flags(precision, True, 11)
    profile_json = (f'{{"min": {list(profile.min)}, "opt": {list(profile.opt)}, "max": {list(profile.max)}}}')
    engine = manifest.engine_file
    text10, text11 = " ".join(flags10) or "no precision flag", " ".join(flags11) or "no precision flag"
    return f"""#!/usr/bin/env bash
# Build the TensorRT plan for this evor-edge engine ({manifest.kind}, {precision}, M={manifest.euler_steps}).
#
#   ./build_trt.sh [EXTRA TRTEXEC ARGS]   build {PLAN_FILE} and {PLAN_RECORD_FILE} (what it was built from)
#   ./build_trt.sh --bench [ARGS]         time the built plan at the opt shapes ({" ".join(BENCH_FLAGS)})
#
# Run it ON THE TARGET (e.g. a Jetson Orin with JetPack 6 / TensorRT 10, or JetPack 7 / TensorRT 11): a
# plan only runs on the GPU and TensorRT version that built it. On JetPack trtexec lives in
# /usr/src/tensorrt/bin; the script falls back to it when trtexec is not on PATH (or set
# TRTEXEC=/path/to/trtexec). The TensorRT version is read from trtexec's banner (TRT_VERSION=10.3.0
# overrides it): TensorRT 10 gets {text10}, TensorRT 11 {text11}
# (11 removed --fp16 / --int8 / --stronglyTyped: every network is strongly typed and this graph carries
# its own precision). Tactic timings are cached in ${{TRT_TIMING_CACHE:-{TIMING_CACHE}}} (faster rebuilds).
# Extra arguments are passed to trtexec (e.g. --memPoolSize=workspace:1024). Consider
# `sudo nvpmodel -m 0 && sudo jetson_clocks` before building so tactic timing sees the clocks it runs at.
#
# Optimisation profile over (B, N_pi, N): min {profile.min}, opt {profile.opt}, max {profile.max}.
# The same profile is what `evor-edge trt-check` builds; the runtime refuses shapes outside [min, max].
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
[ -x "$TRTEXEC" ] || {{ echo "trtexec not found at $TRTEXEC: set TRTEXEC=/path/to/trtexec" >&2; exit 1; }}
if [ "${{1:-}}" = "--bench" ]; then
    shift
    [ -f {PLAN_FILE} ] || {{ echo "{PLAN_FILE} is missing: run ./build_trt.sh first" >&2; exit 1; }}
    exec "$TRTEXEC" --loadEngine={PLAN_FILE} --shapes={shlex.quote(shapes["opt"])} {" ".join(BENCH_FLAGS)} "$@"
fi
echo "{manifest.engine_sha256}  {engine}" | sha256sum -c --quiet - \\
    || {{ echo "{engine} does not match manifest.json (engine_sha256); re-export" >&2; exit 1; }}
if [ -z "${{TRT_VERSION:-}}" ]; then
    banner="$("$TRTEXEC" --help 2>&1 | grep -m1 -o 'TensorRT v[0-9][0-9.]*' || true)"
    code="${{banner#TensorRT v}}"
    case "$code" in
        *.*) TRT_VERSION="$code" ;;
        [1-9][0-9][0-9][0-9][0-9]*) TRT_VERSION="$((code / 10000)).$((code / 100 % 100)).$((code % 100))" ;;
        *) echo "cannot read the TensorRT version from '$TRTEXEC --help'; set TRT_VERSION (e.g. 10.3.0)" >&2
           exit 1 ;;
    esac
fi
TRT_MAJOR="${{TRT_VERSION%%.*}}"
case "$TRT_MAJOR" in
    10) PRECISION_FLAGS={_bash_array(flags10)} ;;
    11) PRECISION_FLAGS={_bash_array(flags11)} ;;
    *) echo "TensorRT $TRT_VERSION: this recipe knows TensorRT 10 and 11" >&2; exit 1 ;;
esac
rm -f {PLAN_RECORD_FILE} {PLAN_FILE}.partial {PLAN_RECORD_FILE}.partial
"$TRTEXEC" \\
    --onnx={engine} \\
    --saveEngine={PLAN_FILE}.partial \\
    {shlex.quote("--minShapes=" + shapes["min"])} \\
    {shlex.quote("--optShapes=" + shapes["opt"])} \\
    {shlex.quote("--maxShapes=" + shapes["max"])} \\
    ${{PRECISION_FLAGS[@]+"${{PRECISION_FLAGS[@]}}"}} \\
    --builderOptimizationLevel=3 \\
    --timingCacheFile="${{TRT_TIMING_CACHE:-{TIMING_CACHE}}}" \\
    --skipInference \\
    "$@"
PLAN_SHA256="$(sha256sum {PLAN_FILE}.partial | cut -d' ' -f1)"
cat > {PLAN_RECORD_FILE}.partial <<RECORD
{{"format": "{PLAN_RECORD_FORMAT}", "engine_file": "{engine}", "engine_sha256": "{manifest.engine_sha256}",
 "plan_file": "{PLAN_FILE}", "plan_sha256": "$PLAN_SHA256", "tensorrt_version": "$TRT_VERSION",
 "precision": "{precision}", "profile": {profile_json}, "built_by": "trtexec",
 "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"}}
RECORD
mv -f {PLAN_FILE}.partial {PLAN_FILE}
mv -f {PLAN_RECORD_FILE}.partial {PLAN_RECORD_FILE}
echo "wrote {PLAN_FILE} (TensorRT $TRT_VERSION) and {PLAN_RECORD_FILE}"
"""


def recipe(manifest: Manifest, precision: str | None = None, profile: ShapeProfile | None = None) -> dict[str, Any]:
    """JSON-able summary of the build recipe (stored in manifest.extra["tensorrt"])."""
    profile = profile or default_profile(manifest)
    return {
        "script": BUILD_SCRIPT,
        "plan_file": PLAN_FILE,
        "plan_record": PLAN_RECORD_FILE,
        "profile": profile.as_dict(),
        "command": trtexec_command(manifest, precision, profile),
        "command_tensorrt11": trtexec_command(manifest, precision, profile, trt_major=11),
        "bench_command": bench_command(manifest, profile),
    }
