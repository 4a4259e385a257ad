"""Engine export (Algorithms 2-3 in one ONNX graph): parity, validation, atomic writes, recipe, FLOPs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from agent_fixtures import ACT_DIM, OBS_DIM, OBS_MEAN, OBS_STD, random_agent
from onnx import TensorProto, helper

from evor_edge.agents import BaseAgent
from evor_edge.checkpoint import save_checkpoint
from evor_edge.export import (
    EngineValidationError,
    ExportError,
    engine_flops,
    export_engine,
    trtexec_command,
    validate_engine,
)
from evor_edge.export.engine import finalize_graph
from evor_edge.export.membership import read_network_nodes
from evor_edge.inference import candidates_and_values
from evor_edge.normalization import ReturnScaler
from evor_edge.runtime.manifest import load_manifest, sha256_file

LOW, HIGH = (-1.0, -0.4), (1.0, 0.6)
RETURNS = ReturnScaler(center=-20.0, half_width=7.0)
TASK = "pointmaze-medium-navigate-singletask-task1-v0"
TOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_test_agent(kind: str, seed: int = 0) -> BaseAgent:
    """Small random-weight agent with non-trivial normalisers; weights scaled up so flows move far."""
    return random_agent(kind, OBS_DIM, ACT_DIM, hidden_dims=(64, 64), euler_steps=10, obs_mean=OBS_MEAN,
                        obs_std=OBS_STD, returns=RETURNS, low=LOW, high=HIGH, seed=seed)


def realistic_obs(gen: torch.Generator, batch: int) -> torch.Tensor:
    return torch.tensor(OBS_MEAN) + torch.tensor(OBS_STD) * torch.randn((batch, OBS_DIM), generator=gen)


def session(engine_dir: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(engine_dir / "engine.onnx"), opts, providers=["CPUExecutionProvider"])


def run_engine(sess: ort.InferenceSession, *inputs: torch.Tensor) -> list[np.ndarray]:
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def evor(root: Path) -> tuple[BaseAgent, Path, Path, dict]:
    agent = make_test_agent("evor")
    ckpt = save_checkpoint(root / "run_evor", agent, 123, extra={"task": TASK})
    report = export_engine(ckpt, root / "engine_evor", progress=False)
    return agent, ckpt, root / "engine_evor", report


@pytest.fixture(scope="module")
def qc(root: Path) -> tuple[BaseAgent, Path, Path, dict]:
    agent = make_test_agent("qc", seed=1)
    ckpt = save_checkpoint(root / "run_qc", agent, 7)
    report = export_engine(ckpt, root / "engine_qc", progress=False)
    return agent, ckpt, root / "engine_qc", report


# ------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("realistic", [False, True])
def test_evor_parity_with_torch_reference(evor, realistic: bool) -> None:
    agent, _, engine_dir, _ = evor
    sess = session(engine_dir)
    gen = torch.Generator().manual_seed(11 + realistic)
    for batch in (1, 4):
        for n_pi in (1, 32):
            for n in (1, 50):
                obs = realistic_obs(gen, batch) if realistic else torch.randn((batch, OBS_DIM), generator=gen)
                a_noise = torch.randn((batch, n_pi, ACT_DIM), generator=gen)
                r_noise = torch.randn((batch, n_pi, n), generator=gen)
                ref_actions, ref_returns = candidates_and_values(agent, obs, a_noise, r_noise)
                actions, returns = run_engine(sess, obs, a_noise, r_noise)
                assert actions.shape == (batch, n_pi, ACT_DIM) and returns.shape == (batch, n_pi, n)
                assert np.max(np.abs(actions - ref_actions.numpy())) <= TOL
                assert np.max(np.abs(returns - ref_returns.numpy())) <= TOL


def test_qc_parity_with_torch_reference(qc) -> None:
    agent, _, engine_dir, report = qc
    assert report["kind"] == "qc"
    sess = session(engine_dir)
    assert [o.name for o in sess.get_outputs()] == ["actions", "q"]
    gen = torch.Generator().manual_seed(5)
    for batch in (1, 4):
        for n_pi in (1, 32):
            obs = realistic_obs(gen, batch)
            a_noise = torch.randn((batch, n_pi, ACT_DIM), generator=gen)
            ref_actions, ref_q = candidates_and_values(agent, obs, a_noise)
            actions, q = run_engine(sess, obs, a_noise)
            assert q.shape == (batch, n_pi)
            assert np.max(np.abs(actions - ref_actions.numpy())) <= TOL
            assert np.max(np.abs(q - ref_q.numpy())) <= TOL


@torch.no_grad()
def explicit_inference(agent: BaseAgent, obs: torch.Tensor, a_noise: torch.Tensor, r_noise: torch.Tensor,
                       steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithms 2-3 written out with plain torch ops on the networks (not flow.euler_integrate)."""
    obs_n = (obs - torch.tensor(OBS_MEAN)) / torch.tensor(OBS_STD)
    batch, n_pi, _ = a_noise.shape
    n = r_noise.shape[-1]
    x = obs_n[:, None, :].expand(batch, n_pi, OBS_DIM)
    a = a_noise.clone()
    for m in range(steps):
        t = torch.full((batch, n_pi, 1), m / steps)
        a = a + agent.actor(x, a, t) / steps
    a = torch.minimum(torch.maximum(a, torch.tensor(LOW)), torch.tensor(HIGH))
    xz = obs_n[:, None, None, :].expand(batch, n_pi, n, OBS_DIM)
    az = a[:, :, None, :].expand(batch, n_pi, n, ACT_DIM)
    z = r_noise[..., None].clone()
    for m in range(steps):
        t = torch.full((batch, n_pi, n, 1), m / steps)
        z = z + agent.critic(xz, az, z, t) / steps
    return a, z[..., 0] * RETURNS.half_width + RETURNS.center


def test_engine_matches_explicit_euler_and_steps_matter(evor, root: Path) -> None:
    agent, ckpt, engine_dir, _ = evor
    gen = torch.Generator().manual_seed(3)
    obs = realistic_obs(gen, 3)
    a_noise = torch.randn((3, 8, ACT_DIM), generator=gen)
    r_noise = torch.randn((3, 8, 16), generator=gen)
    actions10, returns10 = run_engine(session(engine_dir), obs, a_noise, r_noise)
    exp_a, exp_r = explicit_inference(agent, obs, a_noise, r_noise, steps=10)
    assert np.max(np.abs(actions10 - exp_a.numpy())) <= TOL
    assert np.max(np.abs(returns10 - exp_r.numpy())) <= TOL

    report = export_engine(ckpt, root / "engine_m1", euler_steps=1, progress=False)
    assert report["euler_steps"] == 1 and load_manifest(root / "engine_m1").euler_steps == 1
    actions1, returns1 = run_engine(session(root / "engine_m1"), obs, a_noise, r_noise)
    exp_a1, exp_r1 = explicit_inference(agent, obs, a_noise, r_noise, steps=1)
    assert np.max(np.abs(actions1 - exp_a1.numpy())) <= TOL
    assert np.max(np.abs(returns1 - exp_r1.numpy())) <= TOL
    # M is really baked in: one Euler step lands elsewhere than ten
    assert np.max(np.abs(actions1 - actions10)) > 1e-2
    assert np.max(np.abs(returns1 - returns10)) > 1e-2


# -------------------------------------------------------------------------------------- validation
def test_validation_passes_on_exported_engines(evor, qc) -> None:
    for (_, _, engine_dir, report), kind in ((evor, "evor"), (qc, "qc")):
        summary = validate_engine(engine_dir / "engine.onnx", kind, OBS_DIM, ACT_DIM)
        assert summary["opset"] <= 17 and summary["kind"] == kind
        assert not {"Loop", "If", "Scan", "NonZero", "Unique"} & set(summary["op_types"])
        assert summary["op_types"] == report["op_types"]
        model = onnx.load(str(engine_dir / "engine.onnx"))
        dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in [*model.graph.input, *model.graph.output]}
        assert dims["obs"] == ["batch", OBS_DIM]
        assert dims["action_noise"] == ["batch", "num_candidates", ACT_DIM]
        assert dims["actions"] == ["batch", "num_candidates", ACT_DIM]
        if kind == "evor":
            assert dims["rtg_noise"] == dims["returns"] == ["batch", "num_candidates", "num_rtg"]
        else:
            assert dims["q"] == ["batch", "num_candidates"]


def _contract_model(with_loop: bool, opset: int = 17, batch_dim: str | int = "batch") -> onnx.ModelProto:
    """A hand-made graph with the evor contract's I/O: actions = action_noise (through a Loop if asked)."""
    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("obs", f, [batch_dim, OBS_DIM]),
        helper.make_tensor_value_info("action_noise", f, [batch_dim, "num_candidates", ACT_DIM]),
        helper.make_tensor_value_info("rtg_noise", f, [batch_dim, "num_candidates", "num_rtg"]),
    ]
    outputs = [
        helper.make_tensor_value_info("actions", f, [batch_dim, "num_candidates", ACT_DIM]),
        helper.make_tensor_value_info("returns", f, [batch_dim, "num_candidates", "num_rtg"]),
    ]
    inits = [helper.make_tensor("trip", TensorProto.INT64, [], [2]),
             helper.make_tensor("cond", TensorProto.BOOL, [], [True])]
    nodes = [helper.make_node("Identity", ["rtg_noise"], ["returns"])]
    if with_loop:
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Identity", ["a_in"], ["a_out"])],
            "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("a_in", f, None)],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("a_out", f, None)],
        )
        nodes.append(helper.make_node("Loop", ["trip", "cond", "action_noise"], ["actions"], body=body))
    else:
        nodes.append(helper.make_node("Identity", ["action_noise"], ["actions"]))
    graph = helper.make_graph(nodes, "contract", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_validation_fails_on_bad_graphs() -> None:
    validate_engine(_contract_model(with_loop=False), "evor", OBS_DIM, ACT_DIM)  # the control passes
    with pytest.raises(EngineValidationError, match="Loop"):
        validate_engine(_contract_model(with_loop=True), "evor", OBS_DIM, ACT_DIM)
    with pytest.raises(EngineValidationError, match="opset 18"):
        validate_engine(_contract_model(with_loop=False, opset=18), "evor", OBS_DIM, ACT_DIM)
    with pytest.raises(EngineValidationError, match="symbolic"):
        validate_engine(_contract_model(with_loop=False, batch_dim=1), "evor", OBS_DIM, ACT_DIM)
    with pytest.raises(EngineValidationError, match="contract wants"):
        validate_engine(_contract_model(with_loop=False), "qc", OBS_DIM, ACT_DIM)
    custom = _contract_model(with_loop=False)
    custom.graph.node[0].domain = "com.example"
    custom.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(EngineValidationError, match="custom|non-standard"):
        validate_engine(custom, "evor", OBS_DIM, ACT_DIM)



def test_finalize_graph_lifts_and_deduplicates_constants() -> None:
    """Equal Constant nodes (small and over onnx_ir's default 1024-element limit) and an Identity alias of an
    initializer come out as one initializer each; node names, graph I/O and onnxruntime's outputs unchanged."""
    f = TensorProto.FLOAT
    rng = np.random.default_rng(0)
    weight, bias, big = (rng.standard_normal(s).astype(np.float32) for s in ((3, 3), (3,), (1100,)))

    def const(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], name=f"/{name}", value=onnx.numpy_helper.from_array(value))

    nodes = [
        const("bias_a", bias), const("bias_b", bias), const("big_a", big), const("big_b", big),
        helper.make_node("Identity", ["weight"], ["weight_alias"], name="/Identity"),
        helper.make_node("MatMul", ["x", "weight_alias"], ["h"], name="/body/MatMul"),
        helper.make_node("Add", ["h", "bias_a"], ["h1"], name="/body/Add"),
        helper.make_node("Mul", ["h1", "bias_b"], ["y"], name="/body/Mul"),
        helper.make_node("Add", ["z", "big_a"], ["z1"], name="/big/Add"),
        helper.make_node("Sub", ["z1", "big_b"], ["w"], name="/big/Sub"),
    ]
    graph = helper.make_graph(
        nodes, "finalize",
        [helper.make_tensor_value_info("x", f, ["B", 3]), helper.make_tensor_value_info("z", f, ["B", 1100])],
        [helper.make_tensor_value_info("y", f, ["B", 3]), helper.make_tensor_value_info("w", f, ["B", 1100])],
        [onnx.numpy_helper.from_array(weight, "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = {"x": rng.standard_normal((2, 3)).astype(np.float32),
             "z": rng.standard_normal((2, 1100)).astype(np.float32)}
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)

    out = finalize_graph(model)
    onnx.checker.check_model(out, full_check=True)
    assert [n.name for n in out.graph.node] == ["/body/MatMul", "/body/Add", "/body/Mul", "/big/Add", "/big/Sub"]
    assert sorted(i.name for i in out.graph.initializer) == ["bias_a", "big_a", "weight"]
    assert [list(n.input) for n in out.graph.node] == [["x", "weight"], ["h", "bias_a"], ["h1", "bias_a"],
                                                       ["z", "big_a"], ["z1", "big_a"]]
    assert [v.name for v in out.graph.input] == ["x", "z"] and [v.name for v in out.graph.output] == ["y", "w"]
    after = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for want, have in zip(before, after, strict=True):
        np.testing.assert_array_equal(have, want)


def test_exported_graphs_are_finalized(evor, qc) -> None:
    """No Constant / Identity node, one initializer per distinct constant, every recorded body node exists."""
    for _, _, engine_dir, _ in (evor, qc):
        model = onnx.load(str(engine_dir / "engine.onnx"))
        assert not {n.op_type for n in model.graph.node} & {"Constant", "Identity"}
        keys = [(i.data_type, tuple(i.dims), onnx.numpy_helper.to_array(i).tobytes()) for i in model.graph.initializer]
        assert len(keys) == len(set(keys))
        names = {n.name for n in model.graph.node}
        recorded = read_network_nodes(model)
        assert recorded and set(recorded) <= names


# ------------------------------------------------------------------------------- manifest + recipe
def test_manifest_and_build_script(evor) -> None:
    agent, ckpt, engine_dir, report = evor
    assert sorted(p.name for p in engine_dir.iterdir()) == ["build_trt.sh", "engine.onnx", "manifest.json",
                                                             "polygraphy"]
    manifest = load_manifest(engine_dir)  # the runtime's reader verifies format and sha256
    assert manifest.engine_sha256 == sha256_file(engine_dir / "engine.onnx") == report["engine_sha256"]
    assert (manifest.kind, manifest.obs_dim, manifest.act_dim) == ("evor", OBS_DIM, ACT_DIM)
    assert manifest.action_low == list(LOW) and manifest.action_high == list(HIGH)
    cfg = agent.config
    assert manifest.euler_steps == cfg.euler_steps and manifest.discount == cfg.discount
    assert (manifest.default_num_candidates, manifest.default_num_rtg) == (cfg.num_candidates, cfg.num_rtg_eval)
    assert (manifest.default_tau_r, manifest.default_tau_q) == (cfg.tau_r, cfg.tau_q)
    assert manifest.obs_mean == list(OBS_MEAN) and manifest.obs_std == list(OBS_STD)
    assert manifest.env == TASK and manifest.precision == "fp32"
    assert manifest.source_checkpoint["step"] == 123
    assert manifest.source_checkpoint["sha256"] == sha256_file(Path(ckpt) / "model.safetensors")
    assert manifest.training_config == cfg.to_dict()
    assert manifest.extra["opset"] == 17 and manifest.extra["export_seconds"] > 0
    assert manifest.tool_version
    per_tick = manifest.flops["per_tick"]
    assert set(per_tick) == {"const", "per_candidate", "per_candidate_sample"}

    script = (engine_dir / "build_trt.sh").read_text()
    assert os.access(engine_dir / "build_trt.sh", os.X_OK)
    for flag in ("--onnx=engine.onnx", "--saveEngine=engine.plan", "--builderOptimizationLevel=3",
                 "--minShapes=obs:1x4,action_noise:1x1x2,rtg_noise:1x1x1",
                 "--optShapes=obs:1x4,action_noise:1x32x2,rtg_noise:1x32x50",
                 "--maxShapes=obs:16x4,action_noise:16x64x2,rtg_noise:16x64x64", manifest.engine_sha256):
        assert flag in script
    subprocess.run(["bash", "-n", str(engine_dir / "build_trt.sh")], check=True)


def test_trtexec_command_precisions(evor, qc) -> None:
    manifest = load_manifest(evor[2])
    assert "--noTF32" in trtexec_command(manifest, "fp32")
    assert "--stronglyTyped" in trtexec_command(manifest, "fp16")
    assert "--fp16" in trtexec_command(manifest, "fp16", strongly_typed=False)
    assert "--int8" in trtexec_command(manifest, "int8", strongly_typed=False)
    with pytest.raises(ExportError):
        trtexec_command(manifest, "fp8")
    qc_cmd = " ".join(trtexec_command(load_manifest(qc[2])))
    assert "rtg_noise" not in qc_cmd and "--optShapes=obs:1x4,action_noise:1x32x2" in qc_cmd


def test_runtime_policy_runs_exported_engine(evor) -> None:
    from evor_edge.runtime import EvorPolicy

    policy = EvorPolicy.load(evor[2], backend="onnxruntime", num_candidates=8, num_rtg=4, seed=0)
    action = policy.act(np.asarray(OBS_MEAN, dtype=np.float32))
    assert action.shape == (ACT_DIM,)
    assert np.all(action >= np.asarray(LOW) - 1e-6) and np.all(action <= np.asarray(HIGH) + 1e-6)


# ------------------------------------------------------------------------------------- FLOP model
def test_flops_model() -> None:
    # DESIGN.md's reference point: obs 37, act 5, 4x512, N_pi 32, N 50, M 10 = 26.4 GFLOP (un-hoisted)
    ref = engine_flops("evor", 37, 5, (512,) * 4, 10)
    assert abs(ref["paper_config"]["naive"] / 1e9 - 26.4) < 0.05
    assert ref["paper_config"]["hoisted"] < ref["paper_config"]["naive"]
    small = engine_flops("evor", 4, 2, (64, 64), 10)["per_tick"]
    # hand count: critic row per step = z column 2*64 + 2*64*64 + head 2*64
    assert small["per_candidate_sample"] == 10 * (2 * 64 + 2 * 64 * 64 + 2 * 64)
    assert small["const"] == 2 * (2 * 4 * 64)
    assert small["per_candidate"] == 10 * (2 * 2 * 64 + 2 * 64 * 64 + 2 * 64 * 2) + 2 * 2 * 64
    qc_flops = engine_flops("qc", 4, 2, (64, 64), 10, ensemble=2)
    assert qc_flops["per_tick"]["per_candidate_sample"] == 0


def test_runtime_reads_flops(evor) -> None:
    from evor_edge.runtime.bench import flops_per_tick

    manifest = load_manifest(evor[2])
    coeffs = manifest.flops["per_tick"]
    expect = 2 * (coeffs["const"] + 32 * coeffs["per_candidate"] + 32 * 50 * coeffs["per_candidate_sample"])
    assert flops_per_tick(manifest, 2, 32, 50) == pytest.approx(expect)


# ------------------------------------------------------------------------------------ bad inputs
def _no_leftovers(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_corrupt_checkpoints_leave_nothing(tmp_path: Path) -> None:
    agent = make_test_agent("evor")
    ckpt = save_checkpoint(tmp_path / "run", agent, 1)
    tensors = ckpt / "model.safetensors"
    data = tensors.read_bytes()
    tensors.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="truncated|cannot"):
        export_engine(ckpt, tmp_path / "eng", progress=False)
    _no_leftovers(tmp_path, "eng")

    ckpt2 = save_checkpoint(tmp_path / "run2", agent, 1)
    (ckpt2 / "state.json").write_text("{ not json")
    with pytest.raises(ExportError, match="unreadable"):
        export_engine(ckpt2, tmp_path / "eng", progress=False)
    _no_leftovers(tmp_path, "eng")

    with pytest.raises(ExportError, match="does not exist"):
        export_engine(tmp_path / "missing", tmp_path / "eng", progress=False)
    _no_leftovers(tmp_path, "eng")


def test_bad_arguments_and_existing_out_dir(evor, tmp_path: Path) -> None:
    _, ckpt, _, _ = evor
    with pytest.raises(ExportError, match="euler-steps"):
        export_engine(ckpt, tmp_path / "eng", euler_steps=0, progress=False)
    with pytest.raises(ExportError, match="opset"):
        export_engine(ckpt, tmp_path / "eng", opset=18, progress=False)
    _no_leftovers(tmp_path, "eng")

    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        export_engine(ckpt, out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"

    report = export_engine(ckpt, out, euler_steps=2, progress=False, overwrite=True)
    assert not (out / "keep.txt").exists() and load_manifest(out).euler_steps == 2
    assert json.loads(json.dumps(report))["engine_bytes"] == (out / "engine.onnx").stat().st_size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".existing.")]


def test_failure_during_export_leaves_nothing(evor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evor_edge.export.engine as engine_mod

    def boom(*args, **kwargs):
        raise EngineValidationError("injected")

    monkeypatch.setattr(engine_mod, "validate_engine", boom)
    with pytest.raises(ExportError, match="injected"):
        export_engine(evor[1], tmp_path / "eng", progress=False)
    _no_leftovers(tmp_path, "eng")


# -------------------------------------------------------------------------------------- TensorRT
def test_tensorrt_parses_engine(evor) -> None:
    try:
        import tensorrt as trt
    except Exception:  # noqa: BLE001 - any import failure means "not here"
        pytest.skip("tensorrt not importable (unverified)")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse((evor[2] / "engine.onnx").read_bytes())
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    assert ok, errors
    assert [network.get_input(i).name for i in range(network.num_inputs)] == ["obs", "action_noise", "rtg_noise"]
