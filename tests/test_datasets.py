"""Tests for local OGBench-format dataset generation and the validated loader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sim_fixtures import OGBENCH_WARNINGS

ogbench = pytest.importorskip("ogbench")

from evor_edge import datagen  # noqa: E402
from evor_edge.datagen import SUPPORTED_DATASETS, evaluate_expert, generate_dataset, maze_cells  # noqa: E402
from evor_edge.datasets import (  # noqa: E402
    DatasetError,
    dataset_summary,
    load_task_dataset,
    make_env,
    split_task_name,
    val_path_for,
)

pytestmark = OGBENCH_WARNINGS

DATASET = "pointmaze-medium-navigate-v0"
TASK1 = "pointmaze-medium-navigate-singletask-task1-v0"
EPISODES = 2
STEPS = 200
KEYS = ("observations", "actions", "terminals", "qpos", "qvel")
# pointmaze-medium single-task goals (OGBench's maze.py task list), as (i, j) cells.
MEDIUM_GOALS_IJ = {1: (6, 6), 2: (1, 6), 3: (4, 2), 4: (6, 1), 5: (1, 1)}


def _gen(path: Path, seed: int = 0, **kw) -> dict:
    kw.setdefault("episodes", EPISODES)
    kw.setdefault("max_episode_steps", STEPS)
    kw.setdefault("progress", False)
    kw.setdefault("expert_eval_episodes", 0)
    return generate_dataset(DATASET, path, seed=seed, **kw)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("gen") / "pm.npz"
    report = _gen(path)
    return path, report


def _write_variant(src: Path, dst: Path, **changes) -> Path:
    """Copy a generated dataset (train + val) to ``dst`` with arrays of the train file changed.

    A change of ``None`` drops the key.
    """
    arrays = _arrays(src)
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez_compressed(dst, **arrays)
    val_path_for(dst).write_bytes(val_path_for(src).read_bytes())
    return dst


# --------------------------------------------------------------------------- generation


def test_supported_names() -> None:
    for size in ("medium", "large", "giant", "teleport"):
        assert f"pointmaze-{size}-navigate-v0" in SUPPORTED_DATASETS
        assert f"pointmaze-{size}-stitch-v0" in SUPPORTED_DATASETS
    for name in ("cube-single-play-v0", "cube-double-play-v0", "cube-double-noisy-v0", "scene-play-v0"):
        assert name in SUPPORTED_DATASETS


def test_maze_cells_medium() -> None:
    env = make_env(TASK1)
    all_cells, vertex_cells = maze_cells(np.asarray(env.unwrapped.maze_map))
    assert len(all_cells) == 26  # free cells of the 8x8 medium map
    # (5, 1) has free cells above/below and walls left/right: a hallway cell.
    assert (5, 1) in all_cells and (5, 1) not in vertex_cells
    assert (1, 1) in vertex_cells  # corner
    assert len(vertex_cells) == 21  # hallways: (3,3) (4,5) (5,1) (5,6) (6,2)


def test_report_and_file_layout(tiny: tuple[Path, dict]) -> None:
    path, report = tiny
    val = val_path_for(path)
    assert report["path"] == str(path) and report["val_path"] == str(val)
    assert report["episodes"] == EPISODES and report["val_episodes"] == 1
    assert report["transitions"] == EPISODES * STEPS and report["val_transitions"] == STEPS
    assert report["file_bytes"] == path.stat().st_size > 0
    assert report["goals_reached_per_episode"] >= 0 and report["expert_success"] is None
    a = _arrays(path)
    assert set(a) == set(KEYS)
    assert a["observations"].shape == (EPISODES * STEPS, 2) and a["observations"].dtype == np.float32
    assert a["actions"].shape == (EPISODES * STEPS, 2) and a["actions"].dtype == np.float32
    assert a["qpos"].dtype == np.float32 and a["qvel"].dtype == np.float32
    assert a["terminals"].dtype == np.bool_
    assert np.flatnonzero(a["terminals"]).tolist() == [STEPS - 1, 2 * STEPS - 1]
    assert np.abs(a["actions"]).max() <= 1.0
    # Point mass: observation is the position, qpos is the position before the step.
    np.testing.assert_array_equal(a["observations"], a["qpos"])
    v = _arrays(val)
    assert len(v["observations"]) == STEPS and int(v["terminals"].sum()) == 1
    # No temp files left beside the outputs.
    assert _files(path.parent) == ["pm-val.npz", "pm.npz"]


def test_loads_through_ogbench_with_consistent_rewards(tiny: tuple[Path, dict]) -> None:
    path, _ = tiny
    env, train, val = ogbench.make_env_and_datasets(TASK1, dataset_path=str(path))
    expected = {"observations", "actions", "next_observations", "terminals", "rewards", "masks"}
    assert set(train) == expected and set(val) == expected
    assert len(train["observations"]) == EPISODES * (STEPS - 1)
    assert len(val["observations"]) == STEPS - 1
    successes_seen = 0
    for task_id, goal_ij in MEDIUM_GOALS_IJ.items():
        name = f"pointmaze-medium-navigate-singletask-task{task_id}-v0"
        _, ds, _ = ogbench.make_env_and_datasets(name, dataset_path=str(path), add_info=True)
        assert set(np.unique(ds["rewards"]).tolist()) <= {-1.0, 0.0}
        np.testing.assert_array_equal(ds["masks"] == 0, ds["rewards"] == 0)
        # Independent check: success iff the point is within 1.0 of the task's goal.
        goal_xy = np.array([goal_ij[1] * 4.0 - 4.0, goal_ij[0] * 4.0 - 4.0])
        near = np.linalg.norm(ds["qpos"][:, :2] - goal_xy, axis=-1) <= 1.0
        np.testing.assert_array_equal(ds["rewards"] == 0, near)
        successes_seen += int(near.sum())
    assert successes_seen > 0  # the check above is not vacuous


def test_same_seed_same_arrays_different_seed_differs(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = tiny
    np.random.seed(123)
    state_before = np.random.get_state()[1].copy()
    _gen(tmp_path / "same.npz", seed=0)
    np.testing.assert_array_equal(np.random.get_state()[1], state_before)  # global RNG restored
    a, b = _arrays(path), _arrays(tmp_path / "same.npz")
    for k in KEYS:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    np.testing.assert_array_equal(
        _arrays(val_path_for(path))["observations"], _arrays(tmp_path / "same-val.npz")["observations"]
    )
    _gen(tmp_path / "other.npz", seed=1)
    c = _arrays(tmp_path / "other.npz")
    assert not np.array_equal(a["observations"], c["observations"])
    assert not np.array_equal(a["actions"], c["actions"])


def test_val_episode_count(tmp_path: Path) -> None:
    report = _gen(tmp_path / "v.npz", episodes=25, max_episode_steps=3)
    assert report["val_episodes"] == 2
    v = _arrays(tmp_path / "v-val.npz")
    assert len(v["terminals"]) == 6 and np.flatnonzero(v["terminals"]).tolist() == [2, 5]
    assert len(_arrays(tmp_path / "v.npz")["terminals"]) == 75


@pytest.mark.parametrize(
    ("name", "out", "kw", "match"),
    [
        ("pointmaze-tiny-navigate-v0", "x.npz", {}, "unsupported dataset"),
        (DATASET, "x.npy", {}, "must end in .npz"),
        (DATASET, "x.npz.npz", {}, "more than once"),
        (DATASET, "blocker/x.npz", {}, "cannot write to directory"),
        (DATASET, "x.npz", {"episodes": 0}, "episodes must be"),
        (DATASET, "x.npz", {"max_episode_steps": 1}, "max_episode_steps"),
        (DATASET, "x.npz", {"noise": -0.1}, "noise"),
    ],
)
def test_bad_arguments_fail_before_simulation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, out: str, kw: dict, match: str
) -> None:
    (tmp_path / "blocker").write_text("a file, not a directory")

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulation started")

    monkeypatch.setattr(datagen.pointmaze, "collect", no_simulation)
    kw = {"episodes": EPISODES, "max_episode_steps": STEPS, "progress": False, **kw}
    with pytest.raises(DatasetError, match=match) as info:
        generate_dataset(name, tmp_path / out, **kw)
    assert "\n" not in str(info.value)
    assert _files(tmp_path) == ["blocker"]


@pytest.mark.parametrize("when", ["simulation", "writing val"])
def test_interrupt_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    if when == "simulation":
        calls = {"n": 0}
        real_act = datagen.pointmaze._MazeExpert.act

        def act(self):
            calls["n"] += 1
            if calls["n"] == 50:
                raise KeyboardInterrupt
            return real_act(self)

        monkeypatch.setattr(datagen.pointmaze._MazeExpert, "act", act)
    else:
        real_save = np.savez_compressed
        calls = {"n": 0}

        def save(f, **arrays):
            calls["n"] += 1
            real_save(f, **arrays)
            if calls["n"] == 2:  # the val file has been written to its temp file
                raise KeyboardInterrupt

        monkeypatch.setattr(np, "savez_compressed", save)
    with pytest.raises(KeyboardInterrupt):
        _gen(tmp_path / "i.npz")
    assert _files(tmp_path) == []


def test_expert_success_report(tmp_path: Path) -> None:
    report = _gen(tmp_path / "e.npz", episodes=1, max_episode_steps=2, expert_eval_episodes=1)
    es = report["expert_success"]
    assert es["episodes_per_task"] == 1
    assert sorted(es["per_task"]) == [f"pointmaze-medium-singletask-task{i}-v0" for i in range(1, 6)]
    assert all(v in (0.0, 1.0) for v in es["per_task"].values())
    assert es["mean"] == pytest.approx(np.mean(list(es["per_task"].values())))


def test_evaluate_expert_reaches_goal() -> None:
    r = evaluate_expert("pointmaze-medium-singletask-task1-v0", episodes=1, noise=0.2, seed=0)
    assert r["successes"] == [True] and r["success_rate"] == 1.0
    assert 20 < r["mean_steps"] < 1000  # terminated at the goal, not by the time limit
    with pytest.raises(DatasetError, match="not registered"):
        evaluate_expert("pointmaze-medium-singletask-task9-v0", episodes=1)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("task", "env_name", "dataset"),
    [
        (TASK1, "pointmaze-medium-singletask-task1-v0", DATASET),
        (
            "pointmaze-giant-navigate-singletask-v0",
            "pointmaze-giant-singletask-v0",
            "pointmaze-giant-navigate-v0",
        ),
        ("cube-double-play-singletask-task2-v0", "cube-double-singletask-task2-v0", "cube-double-play-v0"),
        (
            "antmaze-large-stitch-singletask-task5-v0",
            "antmaze-large-singletask-task5-v0",
            "antmaze-large-stitch-v0",
        ),
    ],
)
def test_split_task_name_good(task: str, env_name: str, dataset: str) -> None:
    assert split_task_name(task) == (env_name, dataset)


@pytest.mark.parametrize(
    ("task", "match"),
    [
        ("pointmaze-medium-navigate-v0", "not an OGBench single-task name"),
        ("pointmaze-medium-singletask-task1-v0", "not registered"),
        ("pointmaze-huge-navigate-singletask-task1-v0", "not registered"),
        ("pointmaze-medium-navigate-singletask-task9-v0", "not registered"),
        ("pointmaze-medium-navigate-singletask-task1", "not an OGBench single-task name"),
        ("pointmaze--navigate-singletask-task1-v0", "not an OGBench single-task name"),
        ("", "non-empty"),
    ],
)
def test_split_task_name_bad(task: str, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        split_task_name(task)


def test_val_path_for() -> None:
    assert val_path_for("/a/b/data.npz") == Path("/a/b/data-val.npz")
    with pytest.raises(DatasetError, match="more than once"):
        val_path_for("/a/x.npz/data.npz")


# --------------------------------------------------------------------------- loading


def test_load_task_dataset_matches_ogbench(tiny: tuple[Path, dict]) -> None:
    path, _ = tiny
    env, train, val = load_task_dataset("pointmaze-medium-navigate-singletask-task3-v0", path)
    assert env.observation_space.shape == (2,) and env.unwrapped._reward_task_id == 3
    _, ref, ref_val = ogbench.make_env_and_datasets(
        "pointmaze-medium-navigate-singletask-task3-v0", dataset_path=str(path)
    )
    assert set(train) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(train[k], ref[k], err_msg=k)
        np.testing.assert_array_equal(val[k], ref_val[k], err_msg=k)
    s = dataset_summary(train)
    assert s["transitions"] == EPISODES * (STEPS - 1)
    assert (s["obs_dim"], s["act_dim"], s["trajectories"]) == (2, 2, EPISODES)
    assert s["reward_max"] <= 0.0 and s["reward_min"] >= -1.0
    assert s["success_fraction"] == pytest.approx(float(np.mean(train["masks"] == 0)))
    assert s["reward_mean"] == pytest.approx(s["success_fraction"] - 1.0)


def test_missing_files(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset file not found"):
        load_task_dataset(TASK1, tmp_path / "nope.npz")
    lonely = tmp_path / "lonely.npz"
    lonely.write_bytes(tiny[0].read_bytes())
    with pytest.raises(DatasetError, match="validation file not found") as info:
        load_task_dataset(TASK1, lonely)
    assert str(tmp_path / "lonely-val.npz") in str(info.value)


def test_truncated_file(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    bad = _write_variant(tiny[0], tmp_path / "trunc.npz")
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="not a valid .npz") as info:
        load_task_dataset(TASK1, bad)
    assert str(bad) in str(info.value)


def test_missing_qpos(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    bad = _write_variant(tiny[0], tmp_path / "noqpos.npz", qpos=None)
    with pytest.raises(DatasetError, match=r"lacks required arrays \['qpos'\]"):
        load_task_dataset(TASK1, bad)


def test_nan_observations(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    obs = _arrays(tiny[0])["observations"].copy()
    obs[[3, 10, 20], 0] = np.nan
    obs[30, 1] = np.inf
    bad = _write_variant(tiny[0], tmp_path / "nan.npz", observations=obs)
    with pytest.raises(DatasetError, match=r"'observations' has 4 NaN/Inf values"):
        load_task_dataset(TASK1, bad)


def test_wrong_obs_dim(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    obs = _arrays(tiny[0])["observations"]
    wide = np.concatenate([obs, np.zeros((len(obs), 1), np.float32)], axis=1)
    bad = _write_variant(tiny[0], tmp_path / "wide.npz", observations=wide)
    with pytest.raises(DatasetError, match=r"observation shape \(3,\) does not match .* shape \(2,\)"):
        load_task_dataset(TASK1, bad)


def test_wrong_action_dim_and_row_mismatch(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    act = _arrays(tiny[0])["actions"]
    bad = _write_variant(tiny[0], tmp_path / "act.npz", actions=act[:, :1])
    with pytest.raises(DatasetError, match=r"action shape \(1,\) does not match .* shape \(2,\)"):
        load_task_dataset(TASK1, bad)
    bad = _write_variant(tiny[0], tmp_path / "rows.npz", actions=act[:-5])
    with pytest.raises(DatasetError, match="'actions' has shape"):
        load_task_dataset(TASK1, bad)


def test_empty_and_unterminated(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    empty = {k: v[:0] for k, v in _arrays(tiny[0]).items()}
    bad = _write_variant(tiny[0], tmp_path / "empty.npz", **empty)
    with pytest.raises(DatasetError, match="empty"):
        load_task_dataset(TASK1, bad)
    cut = {k: v[:-1] for k, v in _arrays(tiny[0]).items()}  # last step no longer terminal
    bad = _write_variant(tiny[0], tmp_path / "cut.npz", **cut)
    with pytest.raises(DatasetError, match="last step is not terminal"):
        load_task_dataset(TASK1, bad)


def test_not_a_zip(tmp_path: Path) -> None:
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"not a zip file at all")
    val_path_for(bad).write_bytes(b"junk")
    with pytest.raises(DatasetError, match="not a valid .npz"):
        load_task_dataset(TASK1, bad)


def test_loader_errors_are_wrapped(tiny: tuple[Path, dict], tmp_path: Path, monkeypatch) -> None:
    good = _write_variant(tiny[0], tmp_path / "ok.npz")

    def broken(*args, **kwargs):
        raise EOFError("compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(ogbench, "make_env_and_datasets", broken)
    with pytest.raises(DatasetError, match="OGBench could not load the dataset") as info:
        load_task_dataset(TASK1, os.fspath(good))
    assert str(good) in str(info.value)


# --------------------------------------------------------------------------- cube (manipspace)


@pytest.mark.parametrize("name", ["cube-double-play-v0", "cube-double-noisy-v0"])
def test_cube_dataset_loads_and_is_deterministic(tmp_path: Path, name: str) -> None:
    kw = {"episodes": 1, "max_episode_steps": 120, "progress": False}
    report = generate_dataset(name, tmp_path / "c.npz", seed=3, **kw)
    assert (report["transitions"], report["val_transitions"]) == (120, 120)
    assert report["expert_success"] is None and report["noise"] == 0.1
    a = _arrays(tmp_path / "c.npz")
    assert set(a) == set(KEYS)
    assert a["observations"].shape == (120, 37) and a["actions"].shape == (120, 5)
    assert a["qpos"].shape == (120, 28) and a["qvel"].shape == (120, 26)
    assert np.abs(a["actions"]).max() <= 1.0
    generate_dataset(name, tmp_path / "c2.npz", seed=3, **kw)
    b = _arrays(tmp_path / "c2.npz")
    for k in KEYS:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    task = name.replace("-v0", "-singletask-task2-v0")
    env, train, val = ogbench.make_env_and_datasets(task, dataset_path=str(tmp_path / "c.npz"))
    assert len(train["observations"]) == 119 and len(val["observations"]) == 119
    assert set(np.unique(train["rewards"]).tolist()) <= {-2.0, -1.0, 0.0}
    np.testing.assert_array_equal(train["masks"] == 0, train["rewards"] == 0)
    _, mine, _ = load_task_dataset(task, tmp_path / "c.npz")
    np.testing.assert_array_equal(mine["rewards"], train["rewards"])
