"""Calibration: FP16 / INT8 engine directories, float32 Euler accumulation, parity report, refusals, sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from agent_fixtures import ACT_DIM, OBS_DIM, OBS_MEAN, OBS_STD, random_agent
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper

from evor_edge.calibration import (
    CalibrationError,
    calibrate_engine,
    split_observations,
    stratified_indices,
    trajectory_bounds,
)
from evor_edge.calibration.graph import gelu_to_tanh, network_membership, state_precision_violations
from evor_edge.checkpoint import save_checkpoint
from evor_edge.cli import main
from evor_edge.export import export_engine, validate_engine
from evor_edge.normalization import ReturnScaler
from evor_edge.runtime import EvorPolicy
from evor_edge.runtime.manifest import load_manifest, sha256_file

EULER_STEPS = 4
FAST = {"samples": 16, "parity_samples": 12, "latency_runs": 3, "latency_threads": (1,), "progress": False}
PARITY_KEYS = {"agreement_pct", "q_star_abs_error", "q_star_rel_error", "selected_action_abs_error",
               "candidate_action_abs_error", "regret", "observations", "num_candidates", "num_rtg"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _engine(root: Path, kind: str, seed: int, **export: object) -> Path:
    """A tiny random-weight engine (MLP 3x32, M=4) exported by export_engine (variants via **export)."""
    agent = random_agent(kind, OBS_DIM, ACT_DIM, hidden_dims=(32, 32, 32), euler_steps=EULER_STEPS,
                         obs_mean=OBS_MEAN, obs_std=OBS_STD, returns=ReturnScaler(center=-20.0, half_width=7.0),
                         seed=seed)
    suffix = "".join(f"_{k}" for k in export)
    ckpt = save_checkpoint(root / f"run_{kind}{suffix}", agent, 1)
    export_engine(ckpt, root / f"engine_{kind}{suffix}", progress=False, **export)
    return root / f"engine_{kind}{suffix}"


def _dataset(path: Path, trajectories: int = 12, length: int = 40, obs_dim: int = OBS_DIM, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    obs = np.asarray(OBS_MEAN[:obs_dim]) + np.asarray(OBS_STD[:obs_dim]) * rng.standard_normal(
        (trajectories * length, obs_dim))
    terminals = np.zeros(trajectories * length, dtype=bool)
    terminals[length - 1::length] = True
    np.savez(path, observations=obs.astype(np.float32), terminals=terminals)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("calibration")


@pytest.fixture(scope="module")
def evor_engine(root: Path) -> Path:
    return _engine(root, "evor", 0)


@pytest.fixture(scope="module")
def dataset(root: Path) -> Path:
    return _dataset(root / "data.npz")


@pytest.fixture(scope="module")
def int8_dir(root: Path, evor_engine: Path, dataset: Path) -> tuple[Path, dict]:
    report = calibrate_engine(evor_engine, dataset, "int8", root / "int8", **FAST)
    return root / "int8", report


@pytest.fixture(scope="module")
def fp16_dir(root: Path, evor_engine: Path, dataset: Path) -> tuple[Path, dict]:
    """Made through the CLI (--json), so the command is exercised end to end too."""
    out = root / "fp16"
    result = CliRunner().invoke(main, ["calibrate", str(evor_engine), "--dataset", str(dataset), "--precision",
                                       "fp16", "--out", str(out), "--samples", "16", "--parity-samples", "12",
                                       "--latency-runs", "3", "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout[result.stdout.index("{"):])


# --------------------------------------------------------------------------------------- graph helpers
def _euler_adds(model: onnx.ModelProto, root_tensor: str) -> list[onnx.NodeProto]:
    """Follow an unrolled Euler loop from its noise tensor: the Add that reads the state is the update."""
    adds = []
    state = root_tensor
    while True:
        nxt = [n for n in model.graph.node if n.op_type == "Add" and state in n.input]
        if not nxt:
            return adds
        assert len(nxt) == 1
        adds.append(nxt[0])
        state = nxt[0].output[0]


def _state_roots(model: onnx.ModelProto) -> list[str]:
    unsq = [n.output[0] for n in model.graph.node if n.op_type == "Unsqueeze" and "rtg_noise" in n.input]
    return ["action_noise", *unsq]


def _assert_state_float32(model: onnx.ModelProto) -> None:
    made = {o: n for n in model.graph.node for o in n.output}
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input]}
    for root in _state_roots(model):
        adds = _euler_adds(model, root)
        assert len(adds) == EULER_STEPS
        for add in adds:
            for name in add.input:
                assert types.get(name, TensorProto.FLOAT) == TensorProto.FLOAT, (add.name, name)
                src = made.get(name)
                assert src is None or src.op_type not in ("DequantizeLinear", "QuantizeLinear"), (add.name, name)
                assert src is None or not (src.op_type == "Cast" and src.attribute[0].i == TensorProto.FLOAT16)
            for user in model.graph.node:
                if add.output[0] in user.input:
                    assert user.op_type not in ("QuantizeLinear", "Cast"), (add.name, user.name)
        for user in model.graph.node:  # the loop's input state too
            if root in user.input:
                assert user.op_type not in ("QuantizeLinear", "Cast"), user.name


def _check_dir(out: Path, precision: str, report: dict) -> onnx.ModelProto:
    manifest = load_manifest(out)  # format + sha256
    assert manifest.precision == precision
    assert manifest.engine_sha256 == sha256_file(out / "engine.onnx")
    assert manifest.extra["calibrated_from"]["precision"] == "fp32"
    summary = validate_engine(out / "engine.onnx", manifest.kind, manifest.obs_dim, manifest.act_dim)
    script = (out / "build_trt.sh").read_text()
    assert "--stronglyTyped" in script and manifest.engine_sha256 in script
    parity = json.loads((out / "parity.json").read_text())
    assert set(parity["parity"]) >= PARITY_KEYS
    # bounds that mean something (measured on these tiny nets with 64 held-out observations: INT8 agreement
    # 98 %, Q* error / candidate spread median 0.01-0.013 and max 0.08-0.10, regret / spread max <= 0.013;
    # FP16 100 %, 0.001 and 0.004): a broken scale, a wrong layer or a precision leak in the Euler state fails
    p = parity["parity"]
    assert p["agreement_pct"] >= 75.0, p["agreement_pct"]
    assert p["q_star_error_over_candidate_spread"]["median"] <= 0.05, p["q_star_error_over_candidate_spread"]
    assert p["q_star_error_over_candidate_spread"]["max"] <= 0.3, p["q_star_error_over_candidate_spread"]
    assert p["regret_over_candidate_spread"]["max"] <= 0.1, p["regret_over_candidate_spread"]
    assert p["nonfinite_outputs"] == 0
    assert parity["engine_sha256"] == manifest.engine_sha256 == report["engine_sha256"]
    assert "fp32" in parity["latency"]["by_threads"]["1"] and precision in parity["latency"]["by_threads"]["1"]
    assert "Selection agreement" in (out / "parity.md").read_text()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert summary["op_types"]
    return onnx.load(str(out / "engine.onnx"))


# ------------------------------------------------------------------------------------------------ INT8
def test_int8_engine_dir_is_valid_and_runs(int8_dir, dataset) -> None:
    out, report = int8_dir
    model = _check_dir(out, "int8", report)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    policy = EvorPolicy.load(out, backend="onnxruntime", intra_op_threads=1)
    obs = np.load(dataset)["observations"][:3]
    assert policy.act(obs[0]).shape == (ACT_DIM,)
    assert policy.act_batch(obs).shape == (3, ACT_DIM)
    assert report["parity"]["nonfinite_outputs"] == 0


def test_int8_quantizes_only_hidden_matmuls_and_keeps_euler_float32(int8_dir) -> None:
    out, _ = int8_dir
    model = onnx.load(str(out / "engine.onnx"))
    _assert_state_float32(model)
    assert state_precision_violations(model, "evor") == []
    users = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantized_consumers = set()
    for q in (n for n in model.graph.node if n.op_type == "QuantizeLinear"):
        assert int(np.max(np.abs(inits[q.input[2]]))) == 0  # symmetric INT8: zero point 0 (TensorRT)
        for dq in users[q.output[0]]:
            assert dq.op_type == "DequantizeLinear"
            quantized_consumers.update(u.op_type for u in users[dq.output[0]])
    assert quantized_consumers == {"Gemm"}
    for op in ("LayerNormalization", "Erf", "Sub", "Div"):  # normalisation / GELU never read quantised data
        for node in (n for n in model.graph.node if n.op_type == op):
            assert all(not name.endswith("DequantizeLinear_Output") for name in node.input), node.name
    # hidden -> hidden layers only: 2 per network (MLP 3x32) per Euler step, actor and critic
    dq_matmuls = {u.name for n in model.graph.node if n.op_type == "DequantizeLinear"
                  for u in users.get(n.output[0], []) if u.op_type == "Gemm"}
    assert len(dq_matmuls) == 2 * 2 * EULER_STEPS


def test_gelu_to_tanh_matches_torch_tanh_gelu(tmp_path: Path) -> None:
    """Known answer: the rewritten graph computes torch's tanh-approximate GELU, not the exact one."""
    import onnxruntime as ort

    class TwoGelus(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.gelu(torch.nn.functional.gelu(x) * 3.0 - 1.0)

    path = tmp_path / "gelu.onnx"
    torch.onnx.export(TwoGelus(), (torch.zeros(20, 8),), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    model, count = gelu_to_tanh(onnx.load(str(path)))
    assert count == 2
    ops = [n.op_type for n in model.graph.node]
    assert "Erf" not in ops and ops.count("Tanh") == 2
    onnx.checker.check_model(model, full_check=True)
    x = np.linspace(-6, 6, 20 * 8, dtype=np.float32).reshape(20, 8)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # our ops, not a fused kernel
    y = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    gelu_tanh = torch.nn.functional.gelu(torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh") * 3.0
                                         - 1.0, approximate="tanh").numpy()
    exact = TwoGelus()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, gelu_tanh, atol=2e-6)
    assert np.max(np.abs(y - exact)) > 1e-4  # it is the approximation, not a copy of the exact graph
    assert gelu_to_tanh(model)[1] == 0  # nothing left to rewrite


def test_gelu_form_is_exact_by_default_and_tanh_on_request(root, evor_engine, dataset, int8_dir) -> None:
    assert int8_dir[1]["calibration"]["gelu"] == {"form": "exact", "rewritten": 0}
    assert any(n.op_type == "Erf" for n in onnx.load(str(int8_dir[0] / "engine.onnx")).graph.node)
    report = calibrate_engine(evor_engine, dataset, "int8", root / "int8_tanh", gelu="tanh", **FAST)
    assert report["calibration"]["gelu"] == {"form": "tanh", "rewritten": 2 * 3 * EULER_STEPS}
    model = _check_dir(root / "int8_tanh", "int8", report)
    assert not any(n.op_type == "Erf" for n in model.graph.node)
    assert state_precision_violations(model, "evor") == []
    with pytest.raises(CalibrationError, match="--gelu"):
        calibrate_engine(evor_engine, dataset, "int8", root / "int8_bad", gelu="relu", **FAST)
    assert not (root / "int8_bad").exists()


def _activation_scales(model: onnx.ModelProto) -> dict[str, list[float]]:
    """Weight name -> activation scale of each MatMul reading it (one per Euler step)."""
    made = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    scales: dict[str, list[float]] = {}
    for node in (n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")):
        act, weight = (made.get(name) for name in node.input[:2])
        if act is None or act.op_type != "DequantizeLinear":
            continue
        scales.setdefault(weight.input[0], []).append(float(inits[act.input[1]]))
    return scales


def test_shared_scales_merge_steps(root, evor_engine, dataset, int8_dir) -> None:
    report = calibrate_engine(evor_engine, dataset, "int8", root / "int8_shared", shared_scales=True, **FAST)
    shared = _activation_scales(onnx.load(str(root / "int8_shared" / "engine.onnx")))
    per_step = _activation_scales(onnx.load(str(int8_dir[0] / "engine.onnx")))
    assert shared.keys() == per_step.keys() and len(shared) == 4
    for weight, values in shared.items():
        assert len(values) == EULER_STEPS and len(set(values)) == 1
        assert values[0] == pytest.approx(max(per_step[weight]), rel=1e-6)  # max range over the steps
    assert any(len(set(v)) > 1 for v in per_step.values())
    assert report["calibration"]["scales"] == "shared over Euler steps"


def test_int8_qc_engine(root, dataset) -> None:
    engine = _engine(root, "qc", 1)
    report = calibrate_engine(engine, dataset, "int8", root / "int8_qc", **FAST)
    model = _check_dir(root / "int8_qc", "int8", report)
    assert report["parity"]["num_rtg"] is None
    assert state_precision_violations(model, "qc") == []
    policy = EvorPolicy.load(root / "int8_qc", backend="onnxruntime", intra_op_threads=1)
    assert policy.act(np.asarray(OBS_MEAN, dtype=np.float32)).shape == (ACT_DIM,)


class _ReversedSurvivors:
    """A 'reduced-precision' session that returns the reference's exact outputs, survivors reversed."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def run(self, names, feed):
        return [out[:, ::-1].copy() for out in self.inner.run(names, feed)]


class _OneCorner(_ReversedSurvivors):
    """...and with every survivor's action clipped to the same corner (identical actions)."""

    def run(self, names, feed):
        actions, *rest = super().run(names, feed)
        return [np.ones_like(actions), *rest]


def test_pruned_parity_pairs_survivors_by_survivor_index(root, dataset) -> None:
    from evor_edge.calibration.data import engine_feeds
    from evor_edge.calibration.parity import compare_outputs, survivor_rows
    from evor_edge.runtime.sessions import ort_session

    assert survivor_rows(np.array([4, 0, 2]), np.array([2, 4, 5])).tolist() == [2, 0, -1]

    engine = _engine(root, "evor", 2, prune=(3, 2))
    manifest = load_manifest(engine)
    assert manifest.output_names == ["actions", "returns", "survivor_index"]
    feeds = engine_feeds(np.load(dataset)["observations"][:8], "evor", ACT_DIM, 6, 5, seed=0)
    reference = ort_session(engine / "engine.onnx")
    same = compare_outputs(reference, _ReversedSurvivors(reference), feeds, manifest, progress=False)
    assert same["agreement_pct"] == 100.0 and same["q_star_abs_error"]["max"] == 0.0
    assert same["pruned"]["chosen_outside_reference"] == 0 and same["selected_action_abs_error"]["max"] == 0.0
    # candidates clipped to the same corner are indistinguishable by action, not by survivor_index
    corner = compare_outputs(reference, _OneCorner(reference), feeds, manifest, progress=False)
    assert corner["agreement_pct"] == 100.0 and corner["q_star_abs_error"]["max"] == 0.0
    report = calibrate_engine(engine, dataset, "int8", root / "int8_pruned", **FAST)
    assert "survivor_index" in report["parity"]["pruned"]["match"] and report["parity"]["nonfinite_outputs"] == 0
    assert state_precision_violations(onnx.load(str(root / "int8_pruned" / "engine.onnx")), "evor") == []


def test_calibration_reads_membership_not_scope_names(root, dataset, monkeypatch) -> None:
    """An engine whose export-side module attributes are renamed still calibrates: calibration reads the
    membership export recorded in the ONNX file, not the exporter's scope names."""
    import evor_edge.export.engine as engine_mod

    real = engine_mod.build_engine_module

    def renamed(*args, **kwargs):
        module = real(*args, **kwargs)
        for old, new in (("actor_tail", "pi_velocity_body"), ("critic_tail", "rtg_velocity_body")):
            tail = module._modules.pop(old)
            module._modules[new] = tail  # the exporter's scope names follow the registered name
            object.__setattr__(module, old, tail)  # forward() still finds it under the old attribute
        return module

    monkeypatch.setattr(engine_mod, "build_engine_module", renamed)
    engine = _engine(root, "evor", 3, critic_steps=EULER_STEPS)
    monkeypatch.undo()
    model = onnx.load(str(engine / "engine.onnx"))
    names = [n.name for n in model.graph.node]
    assert any(n.startswith("/pi_velocity_body") for n in names) and not any("actor_tail" in n for n in names)
    membership = network_membership(model)
    assert {net for net, _ in membership.values()} == {"actor", "critic"}
    assert {call for net, call in membership.values() if net == "critic"} == set(range(EULER_STEPS))
    int8 = calibrate_engine(engine, dataset, "int8", root / "int8_renamed", **FAST)
    assert int8["calibration"]["quantized_layers"] == ["actor.h0", "actor.h1", "critic.h0", "critic.h1"]
    _check_dir(root / "int8_renamed", "int8", int8)
    fp16 = calibrate_engine(engine, dataset, "fp16", root / "fp16_renamed", **FAST)
    assert fp16["calibration"]["fp16_nodes"] > 0
    _check_dir(root / "fp16_renamed", "fp16", fp16)

    stripped = onnx.load(str(engine / "engine.onnx"))
    del stripped.metadata_props[:]  # an engine without the record is refused with one line, not mis-calibrated
    with pytest.raises(CalibrationError, match="re-export"):
        network_membership(stripped)


# ------------------------------------------------------------------------------------------------ FP16
def test_fp16_engine_dir_keeps_state_and_io_float32(fp16_dir, dataset) -> None:
    out, report = fp16_dir
    model = _check_dir(out, "fp16", report)
    _assert_state_float32(model)
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT
    fp16_inits = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16]
    assert fp16_inits, "no float16 weights"
    assert report["parity"]["agreement_pct"] == 100.0  # fp16 on tiny nets: essentially exact
    assert report["parity"]["q_star_error_over_candidate_spread"]["max"] <= 0.02
    policy = EvorPolicy.load(out, backend="onnxruntime", intra_op_threads=1)
    assert policy.act(np.load(dataset)["observations"][0]).shape == (ACT_DIM,)


# -------------------------------------------------------------------------------------------- refusals
def _refuses(root: Path, match: str, call) -> None:
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(CalibrationError, match=match):
        call()
    assert sorted(p.name for p in root.iterdir()) == before  # nothing half-written, no temp dirs


def test_refusals_leave_nothing_behind(root, evor_engine, dataset, int8_dir) -> None:
    wrong_dim = _dataset(root / "wrong_dim.npz", obs_dim=3)
    few_traj = _dataset(root / "few_traj.npz", trajectories=3, length=200)
    out = root / "refused"
    _refuses(root, "dimension 3 but the engine expects 4",
             lambda: calibrate_engine(evor_engine, wrong_dim, "int8", out, **FAST))
    _refuses(root, "already a int8 engine",
             lambda: calibrate_engine(int8_dir[0], dataset, "fp16", out, **FAST))
    _refuses(root, "too few", lambda: calibrate_engine(evor_engine, dataset, "int8", out,
                                                       **{**FAST, "samples": 8}))
    _refuses(root, "3 trajectories", lambda: calibrate_engine(evor_engine, few_traj, "int8", out, **FAST))
    _refuses(root, "already exists", lambda: calibrate_engine(evor_engine, dataset, "int8", int8_dir[0], **FAST))
    _refuses(root, "precision", lambda: calibrate_engine(evor_engine, dataset, "int4", out, **FAST))
    _refuses(root, "unknown layer", lambda: calibrate_engine(evor_engine, dataset, "int8", out,
                                                             keep_fp32=("critic.h9",), **FAST))


def test_failure_midway_leaves_nothing(root, evor_engine, dataset, monkeypatch) -> None:
    import evor_edge.calibration.calibrate as cal

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure during the parity run")

    monkeypatch.setattr(cal, "compare_outputs", boom)
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(RuntimeError, match="simulated"):
        calibrate_engine(evor_engine, dataset, "int8", root / "midway", **FAST)
    assert sorted(p.name for p in root.iterdir()) == before


def test_cli_refusal_is_one_line(root, evor_engine) -> None:
    result = CliRunner().invoke(main, ["calibrate", str(evor_engine), "--dataset", str(root / "nope.npz"),
                                       "--precision", "int8", "--out", str(root / "cli_out")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and result.output.startswith("error: dataset file not found")
    assert not (root / "cli_out").exists()


# --------------------------------------------------------------------------------------------- sampler
def test_trajectory_bounds_with_trailing_tail() -> None:
    terminals = np.zeros(10, dtype=bool)
    terminals[[2, 6]] = True
    assert trajectory_bounds(terminals).tolist() == [[0, 3], [3, 7], [7, 10]]


def test_stratified_sampler_known_answer() -> None:
    length, num = 10, 100
    terminals = np.zeros(length * num, dtype=bool)
    terminals[length - 1::length] = True
    bounds = trajectory_bounds(terminals)
    rows = stratified_indices(bounds, 20, np.random.default_rng(0))
    assert len(rows) == 20
    trajectories = rows // length
    # evenly spaced trajectories over the whole file, one draw each
    assert trajectories.tolist() == np.round(np.linspace(0, num - 1, 20)).astype(int).tolist()
    assert not np.array_equal(rows, np.arange(20))
    # more draws than trajectories: every trajectory gets 2 or 3, spread inside it, all distinct
    rows = stratified_indices(bounds, 250, np.random.default_rng(1))
    counts = np.bincount(rows // length, minlength=num)
    assert len(np.unique(rows)) == 250 and set(counts.tolist()) == {2, 3} and counts.sum() == 250
    assert (counts == 3).sum() == 50
    # segments: with 2 draws in a 10-step trajectory, one lies in steps 0-4 and one in 5-9
    two = np.flatnonzero(counts == 2)[0]
    steps = np.sort(rows[rows // length == two] % length)
    assert steps[0] < 5 <= steps[1]


def test_split_observations_disjoint_and_spread(tmp_path: Path) -> None:
    path = _dataset(tmp_path / "d.npz", trajectories=40, length=25)
    split = split_observations(path, OBS_DIM, samples=16, parity_samples=16, seed=3)
    calib_traj, parity_traj = split.calibration_rows // 25, split.parity_rows // 25
    assert set(calib_traj.tolist()) <= set(range(0, 40, 2)) and set(parity_traj.tolist()) <= set(range(1, 40, 2))
    assert len(set(calib_traj.tolist())) == 16 and len(set(parity_traj.tolist())) == 16
    assert calib_traj.max() >= 36 and parity_traj.max() >= 37  # reaches the end of the file
    obs = np.load(path)["observations"]
    np.testing.assert_array_equal(split.calibration, obs[split.calibration_rows])
