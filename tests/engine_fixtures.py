"""Tiny engines that obey the engine contract, built with the `onnx` helper API (no torch).

The computation is closed-form so tests can recompute the engine outputs in numpy:

    base      = obs @ W                                     [B, act_dim]
    actions   = clip(base[:, None, :] + S * action_noise, low, high)   [B, N_pi, act_dim]
    mean      = actions @ C                                 [B, N_pi]
    returns   = mean[..., None] + SIGMA * rtg_noise         [B, N_pi, N]     (kind "evor")
    q         = mean                                        [B, N_pi]        (kind "qc")

B, N_pi and N are dynamic axes; opset 17.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from evor_edge.runtime.manifest import ENGINE_FILE, MANIFEST_FILE, Manifest, sha256_file

OPSET = 17
NOISE_SCALE = 0.5
SIGMA = 0.3
# flops(B, N_pi, N) = B * (const + N_pi * per_candidate + N_pi * N * per_candidate_sample)
FLOPS = {"per_tick": {"const": 16.0, "per_candidate": 12.0, "per_candidate_sample": 2.0}}


def fixture_params(obs_dim: int = 4, act_dim: int = 2, seed: int = 123) -> dict[str, np.ndarray]:
    """The constants baked into the fixture engine (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    return {
        "W": rng.normal(size=(obs_dim, act_dim)).astype(np.float32) * np.float32(0.5),
        "C": rng.normal(size=(act_dim,)).astype(np.float32),
        "low": np.full(act_dim, -1.0, dtype=np.float32),
        "high": np.full(act_dim, 1.0, dtype=np.float32),
    }


def fixture_forward(
    params: dict[str, np.ndarray],
    obs: np.ndarray,
    action_noise: np.ndarray,
    rtg_noise: np.ndarray | None = None,
    kind: str = "evor",
) -> tuple[np.ndarray, np.ndarray]:
    """Numpy mirror of the fixture graph: (actions, returns) for "evor", (actions, q) for "qc"."""
    base = obs.astype(np.float32) @ params["W"]
    actions = base[:, None, :] + np.float32(NOISE_SCALE) * action_noise
    actions = np.minimum(np.maximum(actions, params["low"]), params["high"]).astype(np.float32)
    mean = (actions @ params["C"]).astype(np.float32)
    if kind == "qc":
        return actions, mean
    assert rtg_noise is not None
    return actions, (mean[..., None] + np.float32(SIGMA) * rtg_noise).astype(np.float32)


def build_model(params: dict[str, np.ndarray], kind: str = "evor") -> onnx.ModelProto:
    """The ONNX graph for :func:`fixture_forward`."""
    obs_dim, act_dim = params["W"].shape
    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("obs", f, ["B", obs_dim]),
        helper.make_tensor_value_info("action_noise", f, ["B", "N_pi", act_dim]),
    ]
    outputs = [helper.make_tensor_value_info("actions", f, ["B", "N_pi", act_dim])]
    inits = [
        numpy_helper.from_array(params["W"], "W"),
        numpy_helper.from_array(params["C"], "C"),
        numpy_helper.from_array(params["low"], "low"),
        numpy_helper.from_array(params["high"], "high"),
        numpy_helper.from_array(np.array(NOISE_SCALE, dtype=np.float32), "s"),
        numpy_helper.from_array(np.array(SIGMA, dtype=np.float32), "sigma"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis_last"),
    ]
    nodes = [
        helper.make_node("MatMul", ["obs", "W"], ["base"]),
        helper.make_node("Unsqueeze", ["base", "axis1"], ["base3"]),
        helper.make_node("Mul", ["action_noise", "s"], ["scaled"]),
        helper.make_node("Add", ["base3", "scaled"], ["raw"]),
        helper.make_node("Max", ["raw", "low"], ["lo_clipped"]),
        helper.make_node("Min", ["lo_clipped", "high"], ["actions"]),
        helper.make_node("MatMul", ["actions", "C"], ["mean" if kind == "evor" else "q"]),
    ]
    if kind == "evor":
        inputs.append(helper.make_tensor_value_info("rtg_noise", f, ["B", "N_pi", "N"]))
        outputs.append(helper.make_tensor_value_info("returns", f, ["B", "N_pi", "N"]))
        nodes += [
            helper.make_node("Unsqueeze", ["mean", "axis_last"], ["mean3"]),
            helper.make_node("Mul", ["rtg_noise", "sigma"], ["spread"]),
            helper.make_node("Add", ["mean3", "spread"], ["returns"]),
        ]
    else:
        outputs.append(helper.make_tensor_value_info("q", f, ["B", "N_pi"]))
    graph = helper.make_graph(nodes, f"evor_fixture_{kind}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_engine(
    directory: str | Path,
    kind: str = "evor",
    obs_dim: int = 4,
    act_dim: int = 2,
    seed: int = 123,
    obs_stats: bool = True,
    **manifest_overrides: object,
) -> tuple[Path, dict[str, np.ndarray]]:
    """Write engine.onnx + manifest.json (correct sha256) into ``directory``; return (dir, params)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    params = fixture_params(obs_dim, act_dim, seed)
    engine_path = directory / ENGINE_FILE
    engine_path.write_bytes(build_model(params, kind).SerializeToString())
    manifest = Manifest(
        kind=kind,
        obs_dim=obs_dim,
        act_dim=act_dim,
        action_low=params["low"].tolist(),
        action_high=params["high"].tolist(),
        euler_steps=1,
        discount=0.99,
        engine_sha256=sha256_file(engine_path),
        default_num_candidates=8,
        default_num_rtg=4 if kind == "evor" else 1,
        default_tau_r=1.0,
        default_tau_q=1e-3,
        obs_mean=[0.1] * obs_dim if obs_stats else [],
        obs_std=[1.5] * obs_dim if obs_stats else [],
        env="fixture",
        flops=FLOPS,
        tool_version="test-fixture",
    )
    data = asdict(manifest)
    data.update(manifest_overrides)
    (directory / MANIFEST_FILE).write_text(json.dumps(data, indent=2, sort_keys=True))
    return directory, params
