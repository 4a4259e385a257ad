"""Polygraphy-replayable parity files: inputs and FP32 reference outputs saved in Polygraphy's JSON format.

`evor-edge export` and `evor-edge calibrate` write ENGINE_DIR/polygraphy/inputs.json (a list of feed
dicts, what ``polygraphy run --save-inputs`` writes) and reference_outputs.json (a ``RunResults``, what
``--save-outputs`` writes) with the FP32 engine's outputs computed here by onnxruntime. On the target,
after ./build_trt.sh, one command checks the TensorRT plan against our FP32 reference::

    polygraphy run engine.plan --model-type engine --trt \\
        --load-inputs polygraphy/inputs.json --load-outputs polygraphy/reference_outputs.json \\
        --atol actions:A returns:B --rtol R

(``manifest.extra["polygraphy"]["command"]`` holds it with this engine's tolerances; replace
``engine.plan --model-type engine --trt`` by ``engine.onnx --onnxrt`` to replay in onnxruntime.)

Tolerances: FP32 engines: ``1e-3 * max(1, max |reference|)`` per output (TensorRT FP32 with --noTF32 vs
onnxruntime FP32 differ by accumulation order only). FP16 / INT8 engines: twice the largest difference
onnxruntime measures here between the calibrated graph and the FP32 reference on the same inputs, and at
least the FP32 tolerance: the plan must be as close to FP32 as the graph it was built from.

The JSON encoding follows Polygraphy's own (``polygraphy.json``): arrays are base64 of ``np.save`` bytes
tagged ``{"polygraphy_class": "ndarray"}``. No Polygraphy import is needed to write them. Torch-free.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from evor_edge.io import atomic_write_bytes
from evor_edge.runtime.manifest import (
    MANIFEST_FILE,
    PLAN_FILE,
    Manifest,
    load_manifest,
    manifest_profile,
)
from evor_edge.runtime.sessions import ort_session

__all__ = ["INPUTS_FILE", "OUTPUTS_FILE", "POLYGRAPHY_DIR", "decode_array", "encode_array", "write_parity_files"]

POLYGRAPHY_DIR = "polygraphy"
INPUTS_FILE = "inputs.json"
OUTPUTS_FILE = "reference_outputs.json"
RUNNER_NAME = "evor-edge-fp32-reference"
FP32_RTOL = 1e-3


def encode_array(array: np.ndarray) -> dict[str, str]:
    """Polygraphy's JSON form of a numpy array."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return {"array": base64.b64encode(buffer.getvalue()).decode(), "polygraphy_class": "ndarray"}


def decode_array(data: dict[str, str]) -> np.ndarray:
    """Inverse of `encode_array` (also reads what Polygraphy writes)."""
    return np.load(io.BytesIO(base64.b64decode(data["array"])), allow_pickle=False)


def _feeds(manifest: Manifest, seed: int) -> list[dict[str, np.ndarray]]:
    """Two iterations inside the build_trt.sh profile: (1, opt N_pi, opt N) and (2, min N_pi, min N)."""
    profile = manifest_profile(manifest)
    rng = np.random.default_rng(seed)
    mean = np.asarray(manifest.obs_mean or [0.0] * manifest.obs_dim, dtype=np.float64)
    std = np.asarray(manifest.obs_std or [1.0] * manifest.obs_dim, dtype=np.float64)
    shapes = [profile.opt, (min(2, profile.max[0]), profile.min[1], profile.min[2])]
    feeds = []
    for batch, n_pi, n in shapes:
        feed = {"obs": (mean + std * rng.standard_normal((batch, manifest.obs_dim))).astype(np.float32),
                "action_noise": rng.standard_normal((batch, n_pi, manifest.act_dim), dtype=np.float32)}
        if manifest.kind == "evor":
            feed["rtg_noise"] = rng.standard_normal((batch, n_pi, n), dtype=np.float32)
        feeds.append(feed)
    return feeds


def _run(engine_path: Path, manifest: Manifest, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    session = ort_session(engine_path, threads=1)
    names = manifest.output_names
    return [dict(zip(names, session.run(names, feed), strict=True)) for feed in feeds]


def _tolerances(manifest: Manifest, reference: list[dict[str, np.ndarray]],
                candidate: list[dict[str, np.ndarray]] | None) -> dict[str, float]:
    atol: dict[str, float] = {}
    for name in manifest.output_names:
        scale = max(1.0, max(float(np.max(np.abs(it[name]))) for it in reference))
        tol = FP32_RTOL * scale
        if candidate is not None:
            diff = max(float(np.max(np.abs(c[name].astype(np.float64) - r[name])))
                       for c, r in zip(candidate, reference, strict=True))
            tol = max(tol, 2.0 * diff)
        atol[name] = float(f"{tol:.3g}")
    return atol


def polygraphy_command(atol: dict[str, float], rtol: float = FP32_RTOL, plan: bool = True) -> list[str]:
    """argv of the documented replay: the plan (TensorRT) or engine.onnx (onnxruntime) vs the reference."""
    model = [PLAN_FILE, "--model-type", "engine", "--trt"] if plan else ["engine.onnx", "--onnxrt"]
    return ["polygraphy", "run", *model,
            "--load-inputs", f"{POLYGRAPHY_DIR}/{INPUTS_FILE}", "--load-outputs", f"{POLYGRAPHY_DIR}/{OUTPUTS_FILE}",
            "--atol", *[f"{name}:{value:g}" for name, value in atol.items()], "--rtol", f"{rtol:g}"]


def write_parity_files(engine_dir: str | os.PathLike[str], reference_dir: str | os.PathLike[str] | None = None,
                       seed: int = 0) -> dict[str, Any]:
    """Write ENGINE_DIR/polygraphy/{inputs,reference_outputs}.json and record them in manifest.json.

    reference_dir: the FP32 engine the outputs come from (calibrate: the source engine); default
    ENGINE_DIR itself (export). Returns the record stored as manifest.extra["polygraphy"].
    """
    engine_dir = Path(engine_dir)
    manifest = load_manifest(engine_dir)
    feeds = _feeds(manifest, seed)
    if reference_dir is None:
        reference = _run(engine_dir / manifest.engine_file, manifest, feeds)
        candidate = None
    else:
        ref_manifest = load_manifest(reference_dir)
        reference = _run(Path(reference_dir) / ref_manifest.engine_file, ref_manifest, feeds)
        candidate = _run(engine_dir / manifest.engine_file, manifest, feeds)
    atol = _tolerances(manifest, reference, candidate)
    out = engine_dir / POLYGRAPHY_DIR
    out.mkdir(exist_ok=True)
    inputs_json = [{name: encode_array(arr) for name, arr in feed.items()} for feed in feeds]
    results_json = {
        "lst": [[RUNNER_NAME, [{"outputs": {name: encode_array(arr) for name, arr in it.items()}, "runtime": None,
                                "runner_name": RUNNER_NAME, "polygraphy_class": "IterationResult"}
                               for it in reference]]],
        "polygraphy_class": "RunResults",
    }
    atomic_write_bytes(out / INPUTS_FILE, (json.dumps(inputs_json, indent=1) + "\n").encode())
    atomic_write_bytes(out / OUTPUTS_FILE, (json.dumps(results_json, indent=1) + "\n").encode())
    record = {
        "inputs": f"{POLYGRAPHY_DIR}/{INPUTS_FILE}",
        "reference_outputs": f"{POLYGRAPHY_DIR}/{OUTPUTS_FILE}",
        "reference": "this engine (FP32, onnxruntime)" if reference_dir is None
        else f"FP32 engine {ref_manifest.engine_sha256[:12]}... (onnxruntime)",
        "shapes": [[int(f["action_noise"].shape[0]), int(f["action_noise"].shape[1]),
                    int(f["rtg_noise"].shape[2]) if "rtg_noise" in f else 1] for f in feeds],
        "atol": atol,
        "rtol": FP32_RTOL,
        "command": shlex.join(polygraphy_command(atol)),
        "command_onnxruntime": shlex.join(polygraphy_command(atol, plan=False)),
    }
    extra = {**manifest.extra, "polygraphy": record}
    atomic_write_bytes(engine_dir / MANIFEST_FILE,
                       (dataclasses.replace(manifest, extra=extra).to_json() + "\n").encode())
    return record
