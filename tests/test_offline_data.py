"""Self-contained datasets (a robot's own logs): both conventions, derived next observations, bad input,
and the whole path from a D4RL-style file with dims no OGBench task has to a running EvorPolicy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from evor_edge.cli import main
from evor_edge.datasets import DatasetError
from evor_edge.normalization import ReturnScaler
from evor_edge.offline_data import import_minari, load_offline_dataset, write_offline_dataset

OBS_DIM, ACT_DIM = 11, 3


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _two_episodes() -> dict[str, np.ndarray]:
    """Episode 1: rows 0-2, terminates (goal) at row 2. Episode 2: rows 3-5, truncated by a time limit."""
    obs = np.arange(6, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    return {"observations": obs, "actions": np.zeros((6, 1), np.float32),
            "rewards": np.array([0, 0, 1, 0, 0, 0], np.float32)}


def test_d4rl_and_ogbench_conventions_give_the_same_training_arrays(tmp_path: Path) -> None:
    base = _two_episodes()
    d4rl = _save(tmp_path / "d4rl.npz", **base, terminals=np.array([0, 0, 1, 0, 0, 0]),
                 timeouts=np.array([0, 0, 0, 0, 0, 1]), action_low=[-1.0], action_high=[1.0])
    ogb = _save(tmp_path / "ogb.npz", **base, terminals=np.array([0, 0, 1, 0, 0, 1]),
                masks=np.array([1, 1, 0, 1, 1, 1]), action_low=[-1.0], action_high=[1.0])
    a, b = load_offline_dataset(d4rl), load_offline_dataset(ogb)
    assert (a.convention, b.convention) == ("d4rl", "ogbench")
    for key in a.train:
        np.testing.assert_array_equal(a.train[key], b.train[key], err_msg=key)
    train = a.train
    # The truncated episode's last row (5) has no successor: dropped; row 4 now ends its episode.
    np.testing.assert_array_equal(train["observations"][:, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(train["next_observations"][:, 0], [1, 2, 2, 4, 5])
    np.testing.assert_array_equal(train["masks"], [1, 1, 0, 1, 1])
    np.testing.assert_array_equal(train["terminals"], [0, 0, 1, 0, 1])


def test_stored_next_observations_are_kept(tmp_path: Path) -> None:
    base = _two_episodes()
    nxt = base["observations"] + 100
    path = _save(tmp_path / "d.npz", **base, next_observations=nxt, terminals=np.array([0, 0, 1, 0, 0, 0]),
                 timeouts=np.array([0, 0, 0, 0, 0, 1]), action_low=[-1.0], action_high=[1.0])
    train = load_offline_dataset(path).train
    assert len(train["observations"]) == 6
    np.testing.assert_array_equal(train["next_observations"], nxt)


def test_bounds_from_flags_override_file_and_data_minmax_warns(tmp_path: Path) -> None:
    base = _two_episodes()
    base["actions"] = np.linspace(-0.5, 0.5, 6, dtype=np.float32)[:, None]
    flags = dict(terminals=np.array([0, 0, 1, 0, 0, 0]), timeouts=np.array([0, 0, 0, 0, 0, 1]))
    path = _save(tmp_path / "d.npz", **base, **flags)
    with pytest.warns(UserWarning, match="min/max"):
        data = load_offline_dataset(path)
    np.testing.assert_allclose([data.action_low[0], data.action_high[0]], [-0.5, 0.5])
    data = load_offline_dataset(path, action_low="-2", action_high="2")
    np.testing.assert_allclose([data.action_low[0], data.action_high[0]], [-2.0, 2.0])


def _valid(n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    terminals = np.zeros(n)
    timeouts = np.zeros(n)
    timeouts[n // 2 - 1] = timeouts[-1] = 1
    return {"observations": rng.standard_normal((n, OBS_DIM)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (n, ACT_DIM)).astype(np.float32),
            "rewards": rng.standard_normal(n).astype(np.float32), "terminals": terminals, "timeouts": timeouts,
            "action_low": -np.ones(ACT_DIM), "action_high": np.ones(ACT_DIM)}


def _with(**changes: object) -> dict[str, np.ndarray]:
    arrays = _valid()
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value  # type: ignore[assignment]
    return arrays


@pytest.mark.parametrize(("arrays", "message"), [
    (_with(rewards=None), "missing required arrays ['rewards']"),
    (_with(actions=np.zeros((19, ACT_DIM), np.float32)), "'actions' has 19 rows"),
    (_with(observations=np.full((20, OBS_DIM), np.nan, np.float32)), "'observations' has 220 NaN/Inf"),
    (_with(rewards=np.r_[np.inf, np.zeros(19)].astype(np.float32)), "'rewards' has 1 NaN/Inf"),
    (_with(actions=np.full((20, ACT_DIM), 1.5, np.float32)), "outside the action bounds"),
    (_with(timeouts=None), "add 'timeouts'"),
    (_with(masks=np.ones(20)), None),  # D4RL terminals are all 0 here, so masks = 1 agree
    (_with(masks=np.zeros(20)), "contradict on 20 rows"),
    (_with(terminals=np.full(20, 2)), "only 0 and 1"),
    (_with(action_low=np.ones(ACT_DIM)), "action_low must be < action_high"),
])
def test_bad_datasets_are_one_clear_line(tmp_path: Path, arrays: dict, message: str | None) -> None:
    path = _save(tmp_path / "d.npz", **arrays)
    if message is None:
        assert load_offline_dataset(path).convention == "d4rl"
        return
    with pytest.raises(DatasetError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        load_offline_dataset(path)
    assert "\n" not in str(info.value)


def test_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **_valid(), extra=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DatasetError, match="pickle"):
        load_offline_dataset(path)


def test_constant_rewards_keep_a_finite_return_scale() -> None:
    # One reward everywhere: no range to map; the scale must stay O(1), not 1e-6.
    scaler = ReturnScaler.fit(np.full(100, -1.0, np.float32), 0.99)
    assert scaler.center == pytest.approx(-100.0) and scaler.half_width == pytest.approx(100.0)
    # With terminations the hull holds 0: [-100, 0] -> centre -50, half-width 50.
    scaler = ReturnScaler.fit(np.full(100, -1.0, np.float32), 0.99, terminates=True)
    assert (scaler.center, scaler.half_width) == pytest.approx((-50.0, 50.0))
    # All-zero rewards with terminations: a degenerate hull, unit scale; the Bellman target is exactly 0.
    scaler = ReturnScaler.fit(np.zeros(10, np.float32), 0.99, terminates=True)
    assert scaler.half_width == 1.0
    import torch

    target = scaler.bellman_target(torch.zeros(4), torch.tensor([0.0, 0.99, 0.99, 0.0]), torch.zeros(4))
    assert torch.equal(target, torch.zeros(4))


def test_minari_import_without_minari_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "minari", None)  # import minari -> ImportError
    with pytest.raises(DatasetError, match="needs the 'minari' package"):
        import_minari(tmp_path, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_train_without_env_on_bad_data_or_missing_gpu_writes_nothing(tmp_path: Path) -> None:
    bad = _save(tmp_path / "bad.npz", **_with(timeouts=None))
    result = run("train", "--dataset", str(bad), "--out", str(tmp_path / "r1"), "--steps", "2")
    assert result.exit_code == 2 and "error:" in result.output and "timeouts" in result.output
    assert not (tmp_path / "r1").exists()
    good = _save(tmp_path / "good.npz", **_valid())
    import torch

    if not torch.cuda.is_available():
        result = run("train", "--dataset", str(good), "--out", str(tmp_path / "r2"), "--device", "cuda")
        assert result.exit_code == 2 and "no CUDA" in result.output, result.output
        assert len([line for line in result.output.splitlines() if line.strip()]) == 1
        assert not (tmp_path / "r2").exists()
    result = run("train", "--dataset", str(good), "--out", str(tmp_path / "r3"), "--device", "tpu")
    assert result.exit_code == 2 and "expected auto, cpu, cuda or cuda:N" in result.output
    result = run("train", "--out", str(tmp_path / "r4"))
    assert result.exit_code == 2 and "--dataset" in result.output


def test_d4rl_file_with_new_dims_trains_exports_and_runs_in_evor_policy(tmp_path: Path) -> None:
    """Acceptance: obs 11 / act 3 (no OGBench task has them), D4RL convention, no --env, end to end."""
    from evor_edge.runtime import EvorPolicy

    rng = np.random.default_rng(1)
    n = 400
    arrays = _valid(n)
    arrays["actions"] = np.clip(rng.normal(0, 0.5, (n, ACT_DIM)), -1, 1).astype(np.float32)
    arrays["action_low"], arrays["action_high"] = np.array([-1.0, -1, -1]), np.array([1.0, 1, 1])
    data = write_offline_dataset(tmp_path / "robot.npz", arrays, {"source": "test robot"})
    result = run("train", "--dataset", str(data), "--out", str(tmp_path / "run"), "--steps", "4",
                 "--set", "hidden_dims=16,16", "--set", "euler_steps=2", "--set", "log_every=2", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["steps"] == 4 and summary["step_mode"] == "eager"
    header = json.loads((tmp_path / "run" / "config.json").read_text())
    assert header["task"] is None and header["data"]["convention"] == "d4rl"
    assert header["data"]["metadata"]["source"] == "test robot"
    result = run("export", str(tmp_path / "run"), "--out", str(tmp_path / "engine"), "--json")
    assert result.exit_code == 0, result.output
    policy = EvorPolicy.load(tmp_path / "engine", num_candidates=4, num_rtg=3, seed=0)
    action = policy.act(rng.standard_normal(OBS_DIM).astype(np.float32))
    assert action.shape == (ACT_DIM,) and np.all(np.abs(action) <= 1.0)
    # Resume continues the same run on the same file without --env.
    result = run("train", "--dataset", str(data), "--out", str(tmp_path / "run"), "--steps", "6", "--resume",
                 "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["steps"] == 6
    header = json.loads((tmp_path / "run" / "config.json").read_text())
    assert header["resumes"] == [{"from_step": 4, "steps": 6, "device": header["device"], "step_mode": "eager"}]
    # --resume never ignores a flag: a changed setting is refused in one line, an unchanged one is fine.
    for flag, value in (("--seed", "3"), ("--set", "learning_rate=0.001"), ("--agent", "qc")):
        result = run("train", "--dataset", str(data), "--out", str(tmp_path / "run"), "--steps", "8", "--resume",
                     flag, value)
        assert result.exit_code == 2 and "a resumed run keeps its configuration" in result.output, result.output
        assert flag.split()[0] in result.output
    result = run("train", "--dataset", str(data), "--out", str(tmp_path / "run"), "--steps", "7", "--resume",
                 "--set", "hidden_dims=16,16", "--seed", "0", "--json")
    assert result.exit_code == 0, result.output


def test_minari_dataset_imports_and_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real Minari dataset (recorded here with Minari's DataCollector) -> our file, D4RL convention."""
    pytest.importorskip("h5py", reason="Minari's HDF5 storage needs h5py (pip install 'minari[hdf5]')")
    minari = pytest.importorskip("minari", reason="the optional 'minari' package is not installed")
    import gymnasium

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    env = minari.DataCollector(gymnasium.make("Pendulum-v1", max_episode_steps=20))
    for episode in range(3):
        env.reset(seed=episode)
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
    env.create_dataset(dataset_id="test/pendulum-v0", algorithm_name="random")
    report = import_minari(tmp_path / "minari" / "test" / "pendulum-v0", tmp_path / "pend.npz")
    assert (report["transitions"], report["obs_dim"], report["act_dim"]) == (60, 3, 1)
    data = load_offline_dataset(tmp_path / "pend.npz")
    assert data.convention == "d4rl" and data.metadata["source"] == "minari"
    assert data.train["terminals"].sum() == 3 and data.train["masks"].min() == 1  # 3 time limits, no termination
    np.testing.assert_allclose([data.action_low[0], data.action_high[0]], [-2.0, 2.0])
