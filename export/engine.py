"""`export_engine`: checkpoint -> ENGINE_DIR (engine.onnx, manifest.json, build_trt.sh), atomically.

The engine is the whole of Algorithm 2 except the final selection, with Algorithm 3's Euler loop and the
reward-to-go flow's Euler loop unrolled (see `evor_edge.export.graph`). Every exported graph is validated
(`validate_engine`) and checked against the torch module it came from with onnxruntime before the
directory appears; on any failure nothing is left at ENGINE_DIR.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import torch
from onnx_ir.passes import common as ir_passes
from tqdm import tqdm

from evor_edge import __version__
from evor_edge.agents import BaseAgent
from evor_edge.checkpoint import CheckpointError, load_checkpoint
from evor_edge.io import atomic_write_bytes, sha256_file, staged_dir
from evor_edge.runtime.manifest import ENGINE_FILE, MANIFEST_FILE, Manifest
from evor_edge.runtime.sessions import ort_session

from .errors import EngineValidationError, ExportError
from .flops import engine_flops
from .graph import (
    CRITIC_SOLVERS,
    DYNAMIC_AXES_NAMES,
    INPUTS,
    SURVIVOR_INDEX,
    agent_kind,
    body_scopes,
    build_engine_module,
    example_inputs,
    output_names,
)
from .membership import nodes_by_scope, write_network_nodes
from .polygraphy_files import write_parity_files
from .trt import BUILD_SCRIPT, build_script, default_profile, recipe
from .trt_check import run_check_hook
from .validate import MAX_OPSET, contract_io, validate_engine

MIN_OPSET = 13  # below 17 LayerNormalization is decomposed (ReduceMean/Sub/Pow/Sqrt/Div) by the exporter
SELF_CHECK_TOLERANCE = 1e-4  # max |engine - torch| / (1 + max |torch|) on the export self-check
_DEDUPLICATE_ALL = 1 << 62  # DeduplicateInitializersPass compares constants up to this many elements (default 1024)


def _dynamic_axes(kind: str, pruned: bool = False) -> dict[str, dict[int, str]]:
    """Dynamic axes per tensor; a pruned engine's outputs have a fixed K1 candidate axis."""
    batch, cand, rtg = DYNAMIC_AXES_NAMES
    out_axes: dict[int, str] = {0: batch} if pruned else {0: batch, 1: cand}
    axes: dict[str, dict[int, str]] = {
        "obs": {0: batch}, "action_noise": {0: batch, 1: cand}, "actions": dict(out_axes),
    }
    if kind == "evor":
        axes["rtg_noise"] = {0: batch, 1: cand, 2: rtg}
        axes["returns"] = {**out_axes, 2: rtg}
        if pruned:
            axes[SURVIVOR_INDEX] = {0: batch}
    else:
        axes["q"] = {0: batch, 1: cand}
    return axes


def finalize_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make constants initializers, drop Identity aliases and keep one copy of each distinct constant.

    The TorchScript exporter inlines non-persistent buffers (the split first-layer weights, per-step
    bias constants) as Constant nodes, repeats equal constants (dt, per-step constants) per use and
    aliases initializers through Identity nodes. As initializers they are what quantisation tools
    (calibration step) and TensorRT's weight handling recognise as weights; the computation is unchanged.

    Done with onnx_ir's passes (ONNX's own IR library). Node names and order, the graph's input and output
    names and the initializers come out as the hand-written pass that preceded it wrote them (the same bytes
    but for an explicit empty opset domain), so the membership record written afterwards
    (`write_network_nodes`) names nodes that exist. About 40 ms at the paper config (the hand-written loop:
    6 ms), well under the noise of a seconds-long export. Returns a new model; `model` is consumed (onnx_ir
    names its Constant tensors in place). onnx-graphsurgeon was the other candidate: it has no constant
    deduplication, lowers Constant nodes only inside `fold_constants` (which evaluates the Identity aliases
    in onnxruntime into more duplicates), reorders initializers and took twice onnx_ir's time here.
    """
    ir_model = ir.serde.deserialize_model(model)
    ir.passes.Sequential(
        ir_passes.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=0),  # every `value`, any size
        ir_passes.IdentityEliminationPass(),  # kept only where a graph output copies an input or initializer
        ir_passes.DeduplicateInitializersPass(size_limit=_DEDUPLICATE_ALL),
    )(ir_model)
    finalized = ir.serde.serialize_model(ir_model)
    del finalized.graph.value_info[:]  # onnx_ir annotates every initializer there; the engine never carried any
    return finalized


def _shapes_for(module: torch.nn.Module, batch: int, num_candidates: int, num_rtg: int) -> tuple[int, int, int]:
    """(B, N_pi, N) for tracing / self-checks: pruned engines need N_pi > K1 and N > N1, all sizes distinct."""
    prune = getattr(module, "prune", None)
    if prune is None:
        return batch, num_candidates, num_rtg
    keep, screen = prune
    n_pi = max(num_candidates, keep + 2)
    n = max(num_rtg, screen + 2)
    while n in (n_pi, keep, batch):
        n += 1
    while batch in (n_pi, keep):
        batch += 1
    return batch, n_pi, n


def write_onnx(module: torch.nn.Module, path: Path, kind: str, obs_dim: int, act_dim: int, opset: int) -> None:
    """Trace `module` and write it as ONNX (TorchScript exporter, constant folding, dynamic B / N_pi / N).

    The TorchScript exporter (dynamo=False) is used on purpose: the unrolled loops trace to a straight
    graph of plain ops with symbolic dims and no shape-guard subgraphs, and it needs no onnxscript.
    """
    batch, n_pi, n = _shapes_for(module, 2, 3, 4)
    args = example_inputs(kind, obs_dim, act_dim, batch=batch, num_candidates=n_pi, num_rtg=n)
    pruned = getattr(module, "prune", None) is not None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notes
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=list(INPUTS[kind]), output_names=output_names(kind, pruned),
            dynamic_axes=_dynamic_axes(kind, pruned), export_params=True,
        )
    model = finalize_graph(onnx.load(str(path)))
    write_network_nodes(model, nodes_by_scope(model, body_scopes(module)))  # the contract calibration reads
    if pruned:  # the gathered outputs' dims come out as tracer names; declare the contract's
        batch, _, rtg = DYNAMIC_AXES_NAMES
        keep = int(module.prune[0])
        want = {"actions": (batch, keep, int(act_dim)), "returns": (batch, keep, rtg), SURVIVOR_INDEX: (batch, keep)}
        for value in model.graph.output:
            for dim, size in zip(value.type.tensor_type.shape.dim, want[value.name], strict=True):
                dim.Clear()
                if isinstance(size, str):
                    dim.dim_param = size
                else:
                    dim.dim_value = size
    model.doc_string = f"evor-edge {kind} engine (Algorithms 2-3, Euler loops unrolled)" + (
        f"; pruned: top {module.prune[0]} of N_pi by a screen on {module.prune[1]} samples" if pruned else "")
    model.producer_name, model.producer_version = "evor-edge", __version__
    path.write_bytes(model.SerializeToString())


def self_check(module: torch.nn.Module, path: Path, kind: str, obs: torch.Tensor,
               shapes: tuple[int, int, int] = (3, 5, 7), seed: int = 1) -> dict[str, float]:
    """Run the written engine in onnxruntime (CPU) and the torch module on the same inputs.

    Returns the max abs error per output and raises ExportError when the scaled error exceeds
    SELF_CHECK_TOLERANCE. Shapes differ from the trace's, so this also exercises the dynamic axes.
    """
    batch, n_pi, n = _shapes_for(module, *shapes)
    gen = torch.Generator().manual_seed(seed)
    obs_b = obs[torch.randint(0, obs.shape[0], (batch,), generator=gen)]
    inputs = [obs_b, torch.randn((batch, n_pi, module.act_dim), generator=gen)]
    if kind == "evor":
        inputs.append(torch.randn((batch, n_pi, n), generator=gen))
    with torch.no_grad():
        expected = module(*inputs)
    session = ort_session(path, threads=1)
    names = output_names(kind, getattr(module, "prune", None) is not None)
    got = session.run(names, {k: v.numpy() for k, v in zip(INPUTS[kind], inputs, strict=True)})
    report: dict[str, float] = {}
    for name, want, have in zip(names, expected, got, strict=True):
        want_np = want.numpy()
        if have.shape != want_np.shape:
            raise ExportError(f"engine output {name!r} has shape {have.shape}, expected {want_np.shape}")
        err = float(np.max(np.abs(have - want_np)))
        scale = 1.0 + float(np.max(np.abs(want_np)))
        if not np.isfinite(err) or err / scale > SELF_CHECK_TOLERANCE:
            raise ExportError(f"engine self-check failed: onnxruntime and torch differ by {err:.3g} on {name!r}")
        report[f"max_abs_err_{name}"] = err
    return report


def _check_obs_samples(agent: BaseAgent, num: int = 16, seed: int = 0) -> torch.Tensor:
    """Observations at the data's scale (normaliser mean / std) for the self-check."""
    spec = agent.spec
    gen = torch.Generator().manual_seed(seed)
    mean = torch.tensor(spec.obs_norm.mean, dtype=torch.float32)
    std = torch.tensor(spec.obs_norm.std, dtype=torch.float32)
    return mean + std * torch.randn((num, spec.obs_dim), generator=gen)


def build_manifest(
    agent: BaseAgent, kind: str, euler_steps: int, engine_sha256: str, meta: dict[str, Any],
    source: dict[str, Any], extra: dict[str, Any], critic_steps: int | None = None, critic_solver: str = "euler",
    prune: tuple[int, int] | None = None,
) -> Manifest:
    """Fill the runtime's Manifest from a loaded agent and its checkpoint metadata."""
    spec, cfg = agent.spec, agent.config
    task = (meta.get("extra") or {}).get("task") if isinstance(meta.get("extra"), dict) else None
    flops = engine_flops(kind, spec.obs_dim, spec.act_dim, cfg.hidden_dims, euler_steps, cfg.qc_ensemble,
                         critic_steps=critic_steps, critic_solver=critic_solver, prune=prune)
    return Manifest(
        kind=kind,
        obs_dim=int(spec.obs_dim),
        act_dim=int(spec.act_dim),
        action_low=[float(x) for x in spec.action_low],
        action_high=[float(x) for x in spec.action_high],
        euler_steps=int(euler_steps),
        discount=float(cfg.discount),
        engine_sha256=engine_sha256,
        precision="fp32",
        default_num_candidates=int(cfg.num_candidates),
        default_num_rtg=int(cfg.num_rtg_eval) if kind == "evor" else 1,
        default_tau_r=float(cfg.tau_r),
        default_tau_q=float(cfg.tau_q) if kind == "evor" else 0.0,  # QC-1 is best-of-N (Eq. 42)
        obs_mean=[float(x) for x in spec.obs_norm.mean],
        obs_std=[float(x) for x in spec.obs_norm.std],
        env=str(task) if task else "",
        source_checkpoint=source,
        training_config=cfg.to_dict(),
        flops=flops,
        extra=extra,
        tool_version=__version__,
    )


def parse_prune(prune: tuple[int, int] | list[int] | str | None) -> tuple[int, int] | None:
    """(K1, N1) from "K1:N1" or a pair; None stays None. ExportError on anything else."""
    if prune is None:
        return None
    try:
        if isinstance(prune, str):
            keep_s, sep, screen_s = prune.partition(":")
            if not sep:
                raise ValueError
            keep, screen = int(keep_s), int(screen_s)
        else:
            keep, screen = (int(x) for x in prune)
    except (TypeError, ValueError):
        raise ExportError(f"--prune {prune!r}: expected K1:N1 (keep K1 candidates after a screen on N1 samples)") \
            from None
    if keep < 1 or screen < 1:
        raise ExportError(f"--prune {keep}:{screen}: K1 and N1 must be >= 1")
    return keep, screen


def export_engine(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    euler_steps: int | None = None,
    opset: int = 17,
    progress: bool = True,
    overwrite: bool = False,
    critic_steps: int | None = None,
    critic_solver: str = "euler",
    prune: tuple[int, int] | str | None = None,
) -> dict[str, Any]:
    """Export a checkpoint to ENGINE_DIR = out_dir and return a JSON-able report.

    ENGINE_DIR holds engine.onnx (Algorithm 2 without the selection; Algorithm 3's and the reward-to-go
    flow's Euler loops unrolled, M = euler_steps or the training config's), manifest.json
    (`evor_edge.runtime.manifest.Manifest`) and build_trt.sh (the trtexec recipe for the target).
    The directory is assembled next to out_dir and renamed into place; on any failure no out_dir
    appears. Raises ExportError (one line) for bad arguments, unreadable checkpoints, an existing out_dir
    without overwrite, or an engine that fails validation or the onnxruntime self-check.

    Variants (EVOR only; defaults = the paper's computation): critic_steps K (default M) and critic_solver
    ("euler", "heun", "midpoint") integrate the reward-to-go flow with K steps of that solver while the actor
    keeps M Euler steps; prune=(K1, N1) or "K1:N1" screens all N_pi candidates on the first N1 rtg_noise
    columns and outputs only the K1 best (actions [B, K1, act_dim], returns [B, K1, N]). All are recorded in
    manifest.extra (critic_steps, critic_solver, prune) and in the FLOP model.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    if euler_steps is not None and int(euler_steps) < 1:
        raise ExportError(f"--euler-steps must be >= 1, got {euler_steps}")
    if critic_steps is not None and int(critic_steps) < 1:
        raise ExportError(f"--critic-steps must be >= 1, got {critic_steps}")
    if critic_solver not in CRITIC_SOLVERS:
        raise ExportError(f"--critic-solver {critic_solver!r} is not one of {', '.join(CRITIC_SOLVERS)}")
    prune_pair = parse_prune(prune)
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (TensorRT 10 parses these)")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists (use --overwrite / overwrite=True to replace it)")

    bar = tqdm(total=5, desc="export", unit="step", disable=not progress, leave=False)
    try:
        bar.set_postfix_str("load checkpoint")
        try:
            loaded = load_checkpoint(checkpoint)
        except CheckpointError as exc:
            raise ExportError(f"cannot export: {exc}") from None
        agent = loaded.agent.eval()
        try:
            kind = agent_kind(agent)
        except TypeError as exc:
            raise ExportError(str(exc)) from None
        steps = int(agent.config.euler_steps if euler_steps is None else euler_steps)
        variant = kind == "evor" and (critic_steps not in (None, steps) or critic_solver != "euler"
                                      or prune_pair is not None)
        if kind != "evor" and (critic_steps not in (None, steps) or critic_solver != "euler"
                               or prune_pair is not None):
            raise ExportError("--critic-steps, --critic-solver and --prune apply to EVOR checkpoints only")
        k_steps = int(steps if critic_steps is None else critic_steps)
        if prune_pair is not None and prune_pair[1] > int(agent.config.num_rtg_eval):
            raise ExportError(f"--prune {prune_pair[0]}:{prune_pair[1]}: N1 must not exceed the default N "
                              f"({agent.config.num_rtg_eval})")
        if prune_pair is not None and prune_pair[0] > int(agent.config.num_candidates):
            raise ExportError(f"--prune {prune_pair[0]}:{prune_pair[1]}: K1 must not exceed the default N_pi "
                              f"({agent.config.num_candidates})")
        spec = agent.spec
        bar.update()

        exists = ExportError(f"{out} already exists (use --overwrite / overwrite=True to replace it)")
        with staged_dir(out, overwrite, exists, tag="export") as tmp:
            bar.set_postfix_str("trace + write ONNX")
            if kind == "evor":
                module = build_engine_module(agent, steps, critic_steps=k_steps, critic_solver=critic_solver,
                                             prune=prune_pair)
            else:
                module = build_engine_module(agent, steps)
            engine_path = tmp / ENGINE_FILE
            t0 = time.perf_counter()
            try:
                write_onnx(module, engine_path, kind, spec.obs_dim, spec.act_dim, int(opset))
            except Exception as exc:  # noqa: BLE001 - exporter failures surface as one line
                raise ExportError(f"ONNX export failed: {str(exc).strip().splitlines()[0]}") from None
            onnx_seconds = time.perf_counter() - t0
            bar.update()

            bar.set_postfix_str("validate")
            survivors = prune_pair[0] if prune_pair is not None else None
            validation = validate_engine(engine_path, kind, spec.obs_dim, spec.act_dim, max_opset=MAX_OPSET,
                                         survivors=survivors)
            bar.update()

            bar.set_postfix_str("onnxruntime self-check")
            check = self_check(module, engine_path, kind, _check_obs_samples(agent))
            bar.update()

            bar.set_postfix_str("manifest + TensorRT recipe")
            exp_in, exp_out = contract_io(kind, spec.obs_dim, spec.act_dim, survivors)
            source = {"path": str(Path(loaded.path).resolve()), "step": int(loaded.step), "sha256": loaded.sha256}
            extra: dict[str, Any] = {
                "opset": int(opset),
                "ir_version": validation["ir_version"],
                "exporter": f"torch.onnx.export (TorchScript, dynamo=False), torch {torch.__version__}",
                "inputs": {k: list(v) for k, v in exp_in.items()},
                "outputs": {k: list(v) for k, v in exp_out.items()},
                "op_types": validation["op_types"],
                "num_nodes": validation["num_nodes"],
                "hoisted": True,
                "self_check": check,
                "variant": bool(variant),
                "onnx_export_seconds": round(onnx_seconds, 3),
            }
            if kind == "evor":
                extra["critic_steps"] = k_steps
                extra["critic_solver"] = critic_solver
                extra["prune"] = None if prune_pair is None else {
                    "survivors": prune_pair[0], "screen_rtg": prune_pair[1],
                    "screen_tau_r": float(module.prune_tau_r),
                    "outputs": "actions [B, survivors, act_dim] and returns [B, survivors, N] of the top "
                               "`survivors` candidates by logsumexp(returns[..., :screen_rtg] / screen_tau_r), "
                               "in descending screen score, and survivor_index [B, survivors] (int64, their "
                               "indices among the N_pi candidates); inputs unchanged; needs N_pi >= survivors "
                               "and N >= screen_rtg; the runtime warns when run at a tau_R other than "
                               "screen_tau_r",
                }
            manifest = build_manifest(agent, kind, steps, sha256_file(engine_path), loaded.meta, source, extra,
                                      critic_steps=k_steps if kind == "evor" else None,
                                      critic_solver=critic_solver, prune=prune_pair)
            manifest.extra["tensorrt"] = recipe(manifest)
            manifest.extra["export_seconds"] = round(time.perf_counter() - started, 3)
            atomic_write_bytes(tmp / MANIFEST_FILE, (manifest.to_json() + "\n").encode())
            script = tmp / BUILD_SCRIPT
            script.write_text(build_script(manifest, profile=default_profile(manifest)))
            script.chmod(0o755)
            bar.set_postfix_str("polygraphy parity files + TensorRT check")
            polygraphy = write_parity_files(tmp)  # replayable FP32 reference (polygraphy run --load-outputs)
            trt_check = run_check_hook(tmp)  # TensorRT's own parser + builder, when a TensorRT module imports
            bar.update()
    except EngineValidationError as exc:
        raise ExportError(f"exported graph is not a valid engine: {exc}") from None
    finally:
        bar.close()

    engine_file = out / ENGINE_FILE
    return {
        "engine_dir": str(out),
        "kind": kind,
        "euler_steps": steps,
        "critic_steps": manifest.extra.get("critic_steps"),
        "critic_solver": manifest.extra.get("critic_solver"),
        "prune": manifest.extra.get("prune"),
        "engine_bytes": engine_file.stat().st_size,
        "export_seconds": manifest.extra["export_seconds"],
        "engine": str(engine_file),
        "manifest": str(out / MANIFEST_FILE),
        "build_trt": str(out / BUILD_SCRIPT),
        "opset": int(opset),
        "engine_sha256": manifest.engine_sha256,
        "obs_dim": manifest.obs_dim,
        "act_dim": manifest.act_dim,
        "source_checkpoint": source,
        "flops": manifest.flops,
        "self_check": check,
        "op_types": validation["op_types"],
        "trtexec": manifest.extra["tensorrt"]["command"],
        "trt_check": trt_check,
        "polygraphy": polygraphy,
    }
