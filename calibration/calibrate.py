"""`calibrate_engine`: FP32 ENGINE_DIR -> FP16 / INT8 ENGINE_DIR with a parity report, atomically.

The new directory holds what an exported one holds (engine.onnx, manifest.json with ``precision`` set
and a fresh ``engine_sha256``, build_trt.sh with the matching precision flags) plus parity.json and
parity.md. It is assembled in a temporary sibling directory and renamed into place at the end; on any
failure (or Ctrl-C) nothing is left at the output path.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
from tqdm import tqdm

from evor_edge import __version__
from evor_edge.export.errors import EngineValidationError
from evor_edge.export.polygraphy_files import write_parity_files
from evor_edge.export.trt import BUILD_SCRIPT, build_script, default_profile, recipe
from evor_edge.export.trt_check import TrtCheckError, run_check_hook
from evor_edge.export.validate import validate_engine
from evor_edge.io import atomic_write_bytes, atomic_write_json, sha256_file, staged_dir
from evor_edge.runtime.manifest import ENGINE_FILE, MANIFEST_FILE, EngineError, Manifest, load_manifest, prune_spec
from evor_edge.runtime.sessions import ort_session

from .data import engine_feeds, split_observations
from .errors import CalibrationError
from .fp16 import convert_fp16
from .graph import gelu_to_tanh, hidden_widths, state_precision_violations
from .int8 import quantize_int8
from .parity import compare_outputs, measure_latency, render_markdown

PRECISIONS = ("fp16", "int8")
PARITY_JSON = "parity.json"
PARITY_MD = "parity.md"


def _check_arguments(engine_dir: Path, out: Path, precision: str, overwrite: bool) -> Manifest:
    if precision not in PRECISIONS:
        raise CalibrationError(f"precision {precision!r} is not one of {PRECISIONS}")
    if out.exists() and not out.is_dir():
        raise CalibrationError(f"{out} exists and is not a directory")
    if out.exists() and not overwrite:
        raise CalibrationError(f"{out} already exists (use --overwrite to replace it)")
    try:
        manifest = load_manifest(engine_dir)
    except EngineError as exc:
        raise CalibrationError(f"cannot calibrate: {exc}") from None
    if manifest.precision != "fp32":
        raise CalibrationError(
            f"{engine_dir} is already a {manifest.precision} engine; calibrate the FP32 engine it came from"
        )
    if prune_spec(manifest) is not None and not manifest.has_survivor_index:
        raise CalibrationError(f"{engine_dir} is a pruned engine of format {manifest.format_version}, without the "
                               "survivor_index output the parity report pairs survivors by; re-export it")
    if out.resolve() == engine_dir.resolve():
        raise CalibrationError("the output directory must differ from the FP32 engine directory")
    return manifest


GELU_FORMS = ("exact", "tanh")


def calibrate_engine(
    engine_dir: str | os.PathLike[str],
    dataset_path: str | os.PathLike[str],
    precision: str,
    out_dir: str | os.PathLike[str],
    samples: int = 64,
    *,
    parity_samples: int = 64,
    task: str | None = None,
    shared_scales: bool = False,
    activation_type: str = "qint8",
    calibration_method: str = "minmax",
    gelu: str = "exact",
    quantize_heads: bool = False,
    keep_fp32: Sequence[str] = (),
    keep_layernorm_fp32: bool = True,
    calib_num_candidates: int | None = None,
    calib_num_rtg: int | None = None,
    latency_runs: int = 20,
    latency_threads: Sequence[int] = (1, 2),
    latency_num_candidates: int = 32,
    latency_num_rtg: int = 50,
    eval_episodes: int = 0,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Calibrate the FP32 engine at `engine_dir` to `precision` ("fp16" | "int8") into `out_dir`.

    Args:
        engine_dir: an FP32 ENGINE_DIR written by `evor-edge export`.
        dataset_path: OGBench-format .npz whose ``observations`` match the engine's obs_dim.
        samples: calibration observations (>= 16), stratified over the even-numbered trajectories.
        parity_samples: held-out observations (odd-numbered trajectories) for the parity report.
        task: OGBench singletask name; recorded, and used for the closed-loop check (eval_episodes).
        shared_scales: INT8: one activation scale per layer over the Euler steps (default: per step).
        activation_type: INT8 activations "qint8" (symmetric; TensorRT-compatible) or "quint8" (CPU only).
        calibration_method: INT8: "minmax", "percentile" (99.999) or "entropy".
        gelu: "exact" keeps the exporter's Erf GELU; "tanh" rewrites it to the tanh approximation
            (`graph.gelu_to_tanh`; onnxruntime then runs one FastGelu kernel). Measured at the paper config
            on a calm CPU: INT8 tick 117.7 -> 114.0 ms (3 %), Q* error of the approximation alone ~1e-3
            (30x below INT8's); not worth a default approximation, so opt-in (docs/calibration.md).
        quantize_heads: INT8: also quantise each network's output layer.
        keep_fp32: INT8: layer labels ("critic.h0") or networks ("critic") left in float32.
        keep_layernorm_fp32: FP16: LayerNorm in float32 (default).
        calib_num_candidates / calib_num_rtg: noise shape per calibration observation (default: manifest).
        latency_runs / latency_threads: per-tick latency measurement (threads > 1 only on a calm machine).
        latency_num_candidates / latency_num_rtg: the shape timed (default: the paper's N_pi 32, N 50).
        eval_episodes: closed-loop episodes for both engines (same seeds); 0 skips.
        seed: seeds the observation draw and the noise.
        overwrite: replace an existing out_dir.

    Returns the parity report (also written as parity.json) plus paths. Raises CalibrationError (one line)
    for every refusal; nothing is written at out_dir unless the whole calibration succeeds.
    """
    started = time.perf_counter()
    engine_dir, out = Path(engine_dir), Path(out_dir)
    manifest = _check_arguments(engine_dir, out, precision, overwrite)
    if eval_episodes < 0:
        raise CalibrationError(f"eval episodes must be >= 0, got {eval_episodes}")
    if latency_runs < 1:
        raise CalibrationError(f"latency runs must be >= 1, got {latency_runs}")
    eval_task = task or manifest.env or None
    if eval_episodes and not eval_task:
        raise CalibrationError("--eval-episodes needs --task (the engine's manifest names no task)")
    split = split_observations(dataset_path, manifest.obs_dim, samples, parity_samples, seed)
    n_pi = int(calib_num_candidates or manifest.default_num_candidates)
    n_rtg = int(calib_num_rtg or manifest.default_num_rtg) if manifest.kind == "evor" else 1
    if n_pi < 1 or n_rtg < 1:
        raise CalibrationError("calibration N_pi and N must be >= 1")
    if gelu not in GELU_FORMS:
        raise CalibrationError(f"--gelu must be one of {', '.join(GELU_FORMS)}, got {gelu!r}")
    source_model = onnx.load(str(engine_dir / manifest.engine_file))
    gelus_rewritten = gelu_to_tanh(source_model)[1] if gelu == "tanh" else 0

    bar = tqdm(total=5, desc=f"calibrate {precision}", unit="step", disable=not progress, leave=False)
    exists = CalibrationError(f"{out} already exists (use --overwrite to replace it)")
    try:
        with staged_dir(out, overwrite, exists, tag="calibrate") as tmp:
            work = tmp / ".work"
            work.mkdir()
            bar.set_postfix_str("convert")
            if precision == "int8":
                widths = hidden_widths(source_model, manifest.training_config.get("hidden_dims"), manifest.obs_dim,
                                       manifest.act_dim)
                feeds = engine_feeds(split.calibration, manifest.kind, manifest.act_dim, n_pi, n_rtg, seed)
                converted, summary = quantize_int8(
                    source_model, feeds, work, widths, activation_type=activation_type,
                    calibration_method=calibration_method, shared_scales=shared_scales,
                    quantize_heads=quantize_heads, keep_fp32=keep_fp32, progress=progress)
            else:
                converted, summary = convert_fp16(source_model, manifest.kind, keep_layernorm_fp32=keep_layernorm_fp32)
            summary["gelu"] = {"form": gelu, "rewritten": gelus_rewritten}
            summary["calibration_noise_shape"] = {"num_candidates": n_pi, "num_rtg": n_rtg if manifest.kind == "evor"
                                                  else None}
            converted.producer_name, converted.producer_version = "evor-edge", __version__
            converted.doc_string = f"evor-edge {manifest.kind} engine, {precision} (calibrated from {engine_dir.name})"
            bar.update()

            bar.set_postfix_str("validate")
            violations = state_precision_violations(converted, manifest.kind)
            if violations:
                raise CalibrationError(f"the {precision} graph breaks float32 Euler accumulation: {violations[0]}")
            engine_path = tmp / ENGINE_FILE
            engine_path.write_bytes(converted.SerializeToString())
            try:
                validation = validate_engine(engine_path, manifest.kind, manifest.obs_dim, manifest.act_dim)
            except EngineValidationError as exc:
                raise CalibrationError(f"the {precision} engine is not a valid engine: {exc}") from None
            shutil.rmtree(work)
            bar.update()

            bar.set_postfix_str("manifest")
            new = dataclasses.replace(manifest, precision=precision, engine_sha256=sha256_file(engine_path),
                                      tool_version=__version__, extra=dict(manifest.extra))
            if task:
                new.env = task
            new.extra.update({
                "op_types": validation["op_types"],
                "num_nodes": validation["num_nodes"],
                "calibrated_from": {"engine_dir": str(engine_dir.resolve()), "engine_sha256": manifest.engine_sha256,
                                    "precision": manifest.precision},
                "calibration": {**summary, "dataset": split.info["dataset"], "samples": len(split.calibration),
                                "seed": seed},
            })
            new.extra.pop("self_check", None)  # that check compared the FP32 graph with torch
            new.extra["tensorrt"] = recipe(new)
            atomic_write_bytes(tmp / MANIFEST_FILE, (new.to_json() + "\n").encode())
            script = build_script(new, profile=default_profile(new))
            if precision == "int8" and activation_type != "qint8":
                script = script.replace("set -euo pipefail", "# WARNING: UINT8 activations with non-zero zero points: "
                                        "TensorRT's explicit quantization needs\n# symmetric INT8 (recalibrate with "
                                        "--activations qint8).\nset -euo pipefail", 1)
            (tmp / BUILD_SCRIPT).write_text(script)
            (tmp / BUILD_SCRIPT).chmod(0o755)
            polygraphy = write_parity_files(tmp, engine_dir, seed=seed)  # replayable against the FP32 reference
            try:
                trt_check = run_check_hook(tmp)  # TensorRT's own parser + builder, when a TensorRT module imports
            except TrtCheckError as exc:
                raise CalibrationError(f"the {precision} engine fails the TensorRT check: {exc}") from None
            bar.update()

            bar.set_postfix_str("parity")
            try:
                load_manifest(tmp)  # the runtime's own check of what was just written
            except EngineError as exc:
                raise CalibrationError(f"calibrated engine failed the runtime's manifest check: {exc}") from None
            reference = ort_session(engine_dir / manifest.engine_file)
            candidate = ort_session(engine_path)
            parity_feeds = engine_feeds(split.parity, manifest.kind, manifest.act_dim, manifest.default_num_candidates,
                                        manifest.default_num_rtg if manifest.kind == "evor" else 1, seed + 1)
            parity = compare_outputs(reference, candidate, parity_feeds, manifest, progress=progress)
            del reference, candidate
            bar.update()

            bar.set_postfix_str("latency")
            latency = measure_latency({"fp32": engine_dir, precision: tmp}, split.parity, threads=latency_threads,
                                      runs=latency_runs, num_candidates=latency_num_candidates,
                                      num_rtg=latency_num_rtg, progress=progress)
            closed_loop = None
            if eval_episodes:
                closed_loop = _closed_loop({"fp32": engine_dir, precision: tmp}, eval_task or "", eval_episodes, seed,
                                           progress)
            bar.update()

            report: dict[str, Any] = {
                "precision": precision,
                "kind": manifest.kind,
                "engine_dir": str(out),
                "source_engine": str(engine_dir.resolve()),
                "source_sha256": manifest.engine_sha256,
                "engine_sha256": new.engine_sha256,
                "data": {**split.info, "calibration_samples": len(split.calibration),
                         "parity_samples": len(split.parity)},
                "calibration": summary,
                "parity": parity,
                "latency": latency,
                "closed_loop": closed_loop,
                "tensorrt": {"command": new.extra["tensorrt"]["command"],
                             "check": trt_check,
                             "verified": bool(trt_check.get("passed")),
                             "note": (f"parsed and built by {trt_check['tool']} {trt_check['version']}"
                                      if trt_check.get("passed") else f"not checked here: {trt_check.get('skipped')}")},
                "polygraphy": polygraphy,
                "seconds": round(time.perf_counter() - started, 1),
            }
            atomic_write_json(tmp / PARITY_JSON, report)
            (tmp / PARITY_MD).write_text(render_markdown(report))
    finally:
        bar.close()
    report.update({"engine": str(out / ENGINE_FILE), "manifest": str(out / MANIFEST_FILE),
                   "parity_json": str(out / PARITY_JSON), "parity_md": str(out / PARITY_MD),
                   "build_trt": str(out / BUILD_SCRIPT)})
    return report


def _closed_loop(engines: dict[str, Path], task: str, episodes: int, seed: int, progress: bool) -> dict[str, Any]:
    """Success rate of each engine through `evaluate(EvorPolicy.load(...))` with the same seeds."""
    from evor_edge.evaluation import evaluate
    from evor_edge.runtime import EvorPolicy

    result: dict[str, Any] = {"task": task, "episodes": episodes, "seed": seed}
    for name, path in engines.items():
        policy = EvorPolicy.load(path, backend="onnxruntime", seed=seed)
        try:
            run = evaluate(policy, task, episodes=episodes, seed=seed, parallel=min(episodes, 25), progress=progress)
        finally:
            policy.close()
        result[name] = {k: run[k] for k in ("success_rate", "successes", "mean_episode_length", "seconds")}
    return result
