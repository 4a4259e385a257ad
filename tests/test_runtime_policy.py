"""EvorPolicy against the fixture engines' closed form, refusals, invalid-input handling."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from engine_fixtures import fixture_forward, write_engine

from evor_edge.runtime import (
    EngineError,
    EngineOutputError,
    EvorPolicy,
    InvalidObservationError,
    draw_engine_noise,
    select_from_outputs,
)
from evor_edge.runtime.backends import PLAN_FILE, OnnxRuntimeBackend, make_backend
from evor_edge.runtime.manifest import load_manifest
from evor_edge.runtime.tensorrt import tensorrt_available


@pytest.fixture(scope="module")
def evor_engine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    return write_engine(tmp_path_factory.mktemp("evor"), kind="evor")


@pytest.fixture(scope="module")
def qc_engine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    return write_engine(tmp_path_factory.mktemp("qc"), kind="qc")


def _reference(params, obs, seed, ticks, num_candidates, num_rtg, tau_r, tau_q, kind="evor"):
    """Expected actions from the fixture's closed form with noise regenerated from the seed."""
    rng = np.random.Generator(np.random.PCG64(seed))
    act_dim = params["W"].shape[1]
    out = []
    for obs_t in obs[:ticks]:
        obs_b = np.atleast_2d(obs_t).astype(np.float32)
        noise, rtg = draw_engine_noise(rng, obs_b.shape[0], num_candidates, num_rtg, act_dim, kind)
        actions, values = fixture_forward(params, obs_b, noise, rtg, kind)
        res = select_from_outputs(actions, values, tau_r, tau_q, rng, kind)
        out.append((res.actions, res.index))
    return out


@pytest.mark.parametrize("tau_q", [1e-3, 1.0, 0.0, math.inf])
def test_act_matches_numpy_reference(evor_engine, tau_q: float) -> None:
    engine_dir, params = evor_engine
    obs = np.random.default_rng(5).normal(size=(6, 4)).astype(np.float32)
    policy = EvorPolicy.load(engine_dir, num_candidates=16, num_rtg=10, tau_r=0.7, tau_q=tau_q, seed=42)
    expected = _reference(params, obs, 42, 6, 16, 10, 0.7, tau_q)
    for obs_t, (exp_action, exp_index) in zip(obs, expected, strict=True):
        action = policy.act(obs_t)
        assert action.shape == (2,) and action.dtype == np.float32
        assert policy.last.chosen.tolist() == exp_index.tolist()
        np.testing.assert_allclose(action, exp_action[0], atol=1e-5)
        assert policy.last.q_star.shape == (1, 16)


def test_act_batch_matches_numpy_reference(evor_engine) -> None:
    engine_dir, params = evor_engine
    obs = np.random.default_rng(6).normal(size=(2, 3, 4)).astype(np.float32)
    policy = EvorPolicy.load(engine_dir, num_candidates=5, num_rtg=3, tau_r=1.0, tau_q=0.5, seed=7)
    expected = _reference(params, obs, 7, 2, 5, 3, 1.0, 0.5)
    for obs_b, (exp_actions, exp_index) in zip(obs, expected, strict=True):
        actions = policy.act_batch(obs_b)
        assert actions.shape == (3, 2) and actions.dtype == np.float32
        assert policy.last.chosen.tolist() == exp_index.tolist()
        np.testing.assert_allclose(actions, exp_actions, atol=1e-5)


def test_qc_engine_uses_q_directly(qc_engine) -> None:
    engine_dir, params = qc_engine
    obs = np.random.default_rng(8).normal(size=(4, 4)).astype(np.float32)
    policy = EvorPolicy.load(engine_dir, num_candidates=12, tau_q=0.0, seed=1)
    expected = _reference(params, obs, 1, 4, 12, 1, 1.0, 0.0, kind="qc")
    for obs_t, (exp_action, exp_index) in zip(obs, expected, strict=True):
        np.testing.assert_allclose(policy.act(obs_t), exp_action[0], atol=1e-5)
        assert policy.last.chosen.tolist() == exp_index.tolist()
    assert "rtg_noise" not in policy.backend.buffers(1, 12, 1).inputs


def test_defaults_come_from_manifest(evor_engine) -> None:
    policy = EvorPolicy.load(evor_engine[0])
    m = policy.manifest
    assert (policy.num_candidates, policy.num_rtg) == (m.default_num_candidates, m.default_num_rtg)
    assert (policy.tau_r, policy.tau_q) == (m.default_tau_r, m.default_tau_q)
    assert (policy.obs_dim, policy.act_dim) == (4, 2)


def test_seed_reproducibility(evor_engine) -> None:
    obs = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)

    def run(seed: int) -> np.ndarray:
        policy = EvorPolicy.load(evor_engine[0], seed=seed, tau_q=1.0)
        return np.stack([policy.act(o) for o in obs])

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))
    policy = EvorPolicy.load(evor_engine[0], seed=0, tau_q=1.0)
    first = np.stack([policy.act(o) for o in obs])
    policy.reset(seed=0)
    np.testing.assert_array_equal(np.stack([policy.act(o) for o in obs]), first)


def test_changing_sizes_without_reload(evor_engine) -> None:
    policy = EvorPolicy.load(evor_engine[0])
    session = policy.backend.session
    obs = np.zeros(4, dtype=np.float32)
    for npi, n in [(3, 2), (32, 50), (1, 1)]:
        policy.set_num_candidates(npi)
        policy.set_num_rtg(n)
        assert policy.act(obs).shape == (2,)
        assert policy.last.q_star.shape == (1, npi)
        assert (policy.last.num_candidates, policy.last.num_rtg) == (npi, n)
    assert policy.act_batch(np.zeros((7, 4))).shape == (7, 2)
    assert policy.backend.session is session
    policy.set_temperatures(tau_r=math.inf, tau_q=0.0)
    assert (policy.tau_r, policy.tau_q) == (math.inf, 0.0)
    with pytest.raises(ValueError):
        policy.set_num_candidates(0)
    with pytest.raises(ValueError):
        policy.set_temperatures(tau_r=0.0)


def test_diagnostics_and_in_place_buffers(evor_engine) -> None:
    policy = EvorPolicy.load(evor_engine[0], num_candidates=4, num_rtg=3)
    policy.act(np.ones(4))
    last = policy.last
    assert last.latency_s >= last.engine_s > 0 and last.selection_s > 0
    assert last.invalid_count == 0 and last.chosen.shape == (1,)
    bufs = policy.backend.buffers(1, 4, 3)
    outputs_before = bufs.outputs["returns"]
    policy.act(np.ones(4) * 2)
    assert bufs.outputs["returns"] is outputs_before  # bound once, written in place
    json.dumps(last.as_dict())


def test_int_observations_are_cast(evor_engine) -> None:
    policy = EvorPolicy.load(evor_engine[0], seed=0)
    a = policy.act(np.array([1, 2, 3, 4], dtype=np.int64))
    policy.reset(seed=0)
    np.testing.assert_array_equal(a, policy.act([1.0, 2.0, 3.0, 4.0]))


# ---------------------------------------------------------------- refusals
def _copy_engine(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("engine.onnx", "manifest.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_refuses_tampered_engine(evor_engine, tmp_path: Path) -> None:
    d = _copy_engine(evor_engine[0], tmp_path / "e")
    data = bytearray((d / "engine.onnx").read_bytes())
    data[-1] ^= 0xFF
    (d / "engine.onnx").write_bytes(bytes(data))
    with pytest.raises(EngineError, match="sha256"):
        EvorPolicy.load(d)


def test_refuses_wrong_format_version(evor_engine, tmp_path: Path) -> None:
    d = _copy_engine(evor_engine[0], tmp_path / "e")
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["format_version"] = 999
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="format_version"):
        EvorPolicy.load(d)


def test_format_version_1_engines_still_load(tmp_path: Path) -> None:
    """Engine format 2 added survivor_index to pruned engines; version-1 engines keep loading and acting."""
    engine_dir, params = write_engine(tmp_path / "v1", format_version=1)
    policy = EvorPolicy.load(engine_dir, tau_q=0.0, seed=0)
    assert policy.manifest.format_version == 1 and policy.manifest.output_names == ["actions", "returns"]
    assert policy.act(np.zeros(4, dtype=np.float32)).shape == (2,)
    assert policy.last.candidate is policy.last.chosen  # not pruned: the chosen output is the candidate


def test_refuses_missing_manifest_and_dir(evor_engine, tmp_path: Path) -> None:
    d = _copy_engine(evor_engine[0], tmp_path / "e")
    (d / "manifest.json").unlink()
    with pytest.raises(EngineError, match="manifest.json"):
        EvorPolicy.load(d)
    with pytest.raises(EngineError, match="does not exist"):
        EvorPolicy.load(tmp_path / "nope")


def test_refuses_engine_with_wrong_io(evor_engine, qc_engine, tmp_path: Path) -> None:
    # An evor manifest pointing at a qc graph (hash made consistent): the I/O check catches it.
    d = _copy_engine(evor_engine[0], tmp_path / "e")
    (d / "engine.onnx").write_bytes((qc_engine[0] / "engine.onnx").read_bytes())
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["engine_sha256"] = json.loads((qc_engine[0] / "manifest.json").read_text())["engine_sha256"]
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="inputs"):
        EvorPolicy.load(d)


@pytest.mark.parametrize(
    "bad",
    [np.zeros(3), np.zeros((1, 4)), np.zeros(5), [[1.0, 2.0], [3.0]], np.array(["a", "b", "c", "d"]),
     [1.0, None, 2.0, 3.0], np.zeros(4, dtype=complex), np.zeros(4, dtype=bool)],
)
def test_refuses_bad_observations(evor_engine, bad) -> None:
    policy = EvorPolicy.load(evor_engine[0])
    with pytest.raises(InvalidObservationError):
        policy.act(bad)


def test_refuses_bad_batch_shape(evor_engine) -> None:
    policy = EvorPolicy.load(evor_engine[0])
    for bad in (np.zeros(4), np.zeros((2, 3)), np.zeros((0, 4)), np.zeros((2, 4, 1))):
        with pytest.raises(InvalidObservationError):
            policy.act_batch(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e300])
def test_non_finite_observation_raises(evor_engine, value: float) -> None:
    policy = EvorPolicy.load(evor_engine[0])
    obs = np.array([0.0, value, 0.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a float32 overflow must not surface as a RuntimeWarning
        with pytest.raises(InvalidObservationError, match="NaN or Inf"):
            policy.act(obs)
    assert issubclass(InvalidObservationError, ValueError)


def test_hold_returns_last_good_action_and_counts(evor_engine) -> None:
    policy = EvorPolicy.load(evor_engine[0], on_invalid="hold", seed=0)
    nan_obs = np.array([np.nan, 0.0, 0.0, 0.0])
    first = policy.act(nan_obs)
    np.testing.assert_array_equal(first, policy.action_midpoint)  # nothing good yet: the midpoint
    assert policy.invalid_count == 1 and policy.last.invalid_count == 1
    good = policy.act(np.ones(4))
    held = policy.act(nan_obs)
    np.testing.assert_array_equal(held, good)
    assert policy.invalid_count == 2
    policy.reset()
    assert policy.invalid_count == 0


def test_hold_in_a_batch_only_affects_bad_rows(evor_engine) -> None:
    policy = EvorPolicy.load(evor_engine[0], on_invalid="hold", seed=0)
    obs = np.ones((3, 4), dtype=np.float32)
    good = policy.act_batch(obs)
    obs[1, 2] = np.inf
    out = policy.act_batch(obs)
    np.testing.assert_array_equal(out[1], good[1])
    assert policy.last.invalid_count == 1 and policy.invalid_count == 1
    seen = policy.backend.buffers(3, policy.num_candidates, policy.num_rtg).inputs["obs"]
    assert np.isfinite(seen).all()  # the engine never saw the Inf


def test_non_finite_engine_outputs(evor_engine) -> None:
    policy = EvorPolicy.load(evor_engine[0], num_candidates=4, num_rtg=3, tau_q=0.0)
    real_run = policy.backend.run

    def broken(cands):
        def run(bufs):
            real_run(bufs)
            bufs.outputs["returns"][:, cands, 0] = np.nan
        return run

    policy.backend.run = broken([0, 1, 2])
    policy.act(np.ones(4))
    assert policy.last.chosen.tolist() == [3]  # non-finite Q* is never chosen
    policy.backend.run = broken([0, 1, 2, 3])
    with pytest.raises(EngineOutputError):
        policy.act(np.ones(4))
    policy.on_invalid = "hold"
    held = policy.act(np.ones(4))
    np.testing.assert_array_equal(held, policy._held_actions(1)[0])


def test_bad_arguments(evor_engine) -> None:
    with pytest.raises(ValueError, match="on_invalid"):
        EvorPolicy.load(evor_engine[0], on_invalid="ignore")
    with pytest.raises(ValueError, match="backend"):
        EvorPolicy.load(evor_engine[0], backend="cuda")
    with pytest.raises(ValueError, match="tau_r"):
        EvorPolicy.load(evor_engine[0], tau_r=-1.0)


# ---------------------------------------------------------------- backends
def test_onnxruntime_backend_direct(evor_engine) -> None:
    engine_dir, params = evor_engine
    backend = OnnxRuntimeBackend(engine_dir / "engine.onnx", providers=["CPUExecutionProvider"],
                                 intra_op_threads=1)
    assert backend.describe()["providers"] == ["CPUExecutionProvider"]
    bufs = backend.buffers(2, 3, 4)
    rng = np.random.default_rng(0)
    for arr in bufs.inputs.values():
        arr[...] = rng.normal(size=arr.shape)
    backend.run(bufs)
    actions, returns = fixture_forward(params, bufs.inputs["obs"], bufs.inputs["action_noise"],
                                       bufs.inputs["rtg_noise"])
    np.testing.assert_allclose(bufs.outputs["actions"], actions, atol=1e-5)
    np.testing.assert_allclose(bufs.outputs["returns"], returns, atol=1e-5)


def test_tensorrt_request_without_plan_is_refused(evor_engine) -> None:
    manifest = load_manifest(evor_engine[0])
    with pytest.raises(EngineError):
        make_backend(evor_engine[0], manifest, backend="tensorrt")


def test_auto_falls_back_to_onnxruntime(evor_engine, tmp_path: Path) -> None:
    d = _copy_engine(evor_engine[0], tmp_path / "e")
    (d / PLAN_FILE).write_bytes(b"not a plan")
    policy = EvorPolicy.load(d, backend="auto")
    if not tensorrt_available():
        assert policy.backend_name == "onnxruntime"
    assert policy.act(np.zeros(4)).shape == (2,)


def test_tensorrt_backend(evor_engine, tmp_path: Path) -> None:
    try:
        import tensorrt as trt
    except Exception:
        pytest.skip("tensorrt not importable on this machine (unverified path)")
    from evor_edge.runtime.tensorrt import TensorRTBackend

    d = _copy_engine(evor_engine[0], tmp_path / "e")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse((d / "engine.onnx").read_bytes())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("obs", (1, 4), (1, 4), (4, 4))
    profile.set_shape("action_noise", (1, 1, 2), (1, 8, 2), (4, 64, 2))
    profile.set_shape("rtg_noise", (1, 1, 1), (1, 8, 4), (4, 64, 50))
    config.add_optimization_profile(profile)
    (d / PLAN_FILE).write_bytes(bytes(builder.build_serialized_network(network, config)))
    from evor_edge.runtime.manifest import load_manifest, write_plan_record

    write_plan_record(d, load_manifest(d), trt.__version__)
    trt_policy = EvorPolicy.load(d, backend="tensorrt", seed=3)
    assert isinstance(trt_policy.backend, TensorRTBackend)
    ort_policy = EvorPolicy.load(d, backend="onnxruntime", seed=3)
    for obs in np.random.default_rng(0).normal(size=(5, 4)):
        np.testing.assert_allclose(trt_policy.act(obs), ort_policy.act(obs), atol=1e-4)
