"""OGBench recipe fidelity of the local generator: defaults, overrides, stitch, scene.

The official commands below are copied verbatim from OGBench's ``data_gen_scripts/commands.sh``
(github.com/seohongpark/ogbench at 1d4140997f60c52c6fb0702ec100dc988b18c548), keyed by line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sim_fixtures import OGBENCH_WARNINGS

ogbench = pytest.importorskip("ogbench")

from click.testing import CliRunner  # noqa: E402

from evor_edge import datagen  # noqa: E402
from evor_edge.cli import main  # noqa: E402
from evor_edge.datagen import (  # noqa: E402
    RECIPES,
    SUPPORTED_DATASETS,
    generate_dataset,
    maze_cells,
    resolve_recipe,
    scene_cube_in_view,
    stitch_goal_cells,
)
from evor_edge.datasets import DatasetError, load_task_dataset  # noqa: E402

pytestmark = OGBENCH_WARNINGS

# data_gen_scripts/commands.sh, verbatim, by line number.
OFFICIAL_COMMANDS: dict[int, str] = {
    14: (
        "python generate_locomaze.py --env_name=pointmaze-medium-v0"
        " --save_path=data/pointmaze-medium-navigate-v0.npz --dataset_type=navigate"
        " --num_episodes=1000 --max_episode_steps=1001 --noise=0.5"
    ),
    16: (
        "python generate_locomaze.py --env_name=pointmaze-large-v0"
        " --save_path=data/pointmaze-large-navigate-v0.npz --dataset_type=navigate"
        " --num_episodes=1000 --max_episode_steps=1001 --noise=0.5"
    ),
    18: (
        "python generate_locomaze.py --env_name=pointmaze-giant-v0"
        " --save_path=data/pointmaze-giant-navigate-v0.npz --dataset_type=navigate"
        " --num_episodes=500 --max_episode_steps=2001 --noise=0.5"
    ),
    20: (
        "python generate_locomaze.py --env_name=pointmaze-teleport-v0"
        " --save_path=data/pointmaze-teleport-navigate-v0.npz --dataset_type=navigate"
        " --num_episodes=1000 --max_episode_steps=1001 --noise=0.5"
    ),
    22: (
        "python generate_locomaze.py --env_name=pointmaze-medium-v0"
        " --save_path=data/pointmaze-medium-stitch-v0.npz --dataset_type=stitch"
        " --num_episodes=5000 --max_episode_steps=201 --noise=0.5"
    ),
    24: (
        "python generate_locomaze.py --env_name=pointmaze-large-v0"
        " --save_path=data/pointmaze-large-stitch-v0.npz --dataset_type=stitch"
        " --num_episodes=5000 --max_episode_steps=201 --noise=0.5"
    ),
    26: (
        "python generate_locomaze.py --env_name=pointmaze-giant-v0"
        " --save_path=data/pointmaze-giant-stitch-v0.npz --dataset_type=stitch"
        " --num_episodes=5000 --max_episode_steps=201 --noise=0.5"
    ),
    28: (
        "python generate_locomaze.py --env_name=pointmaze-teleport-v0"
        " --save_path=data/pointmaze-teleport-stitch-v0.npz --dataset_type=stitch"
        " --num_episodes=5000 --max_episode_steps=201 --noise=0.5"
    ),
    112: (
        "python generate_manipspace.py --env_name=cube-single-v0"
        " --save_path=data/cube-single-play-v0.npz"
        " --num_episodes=1000 --max_episode_steps=1001 --dataset_type=play"
    ),
    114: (
        "python generate_manipspace.py --env_name=cube-double-v0"
        " --save_path=data/cube-double-play-v0.npz"
        " --num_episodes=1000 --max_episode_steps=1001 --dataset_type=play"
    ),
    116: (
        "python generate_manipspace.py --env_name=cube-triple-v0"
        " --save_path=data/cube-triple-play-v0.npz"
        " --num_episodes=3000 --max_episode_steps=1001 --dataset_type=play"
    ),
    118: (
        "python generate_manipspace.py --env_name=cube-quadruple-v0"
        " --save_path=data/cube-quadruple-play-v0.npz"
        " --num_episodes=5000 --max_episode_steps=1001 --dataset_type=play"
    ),
    120: (
        "python generate_manipspace.py --env_name=cube-single-v0"
        " --save_path=data/cube-single-noisy-v0.npz"
        " --num_episodes=1000 --max_episode_steps=1001 --dataset_type=noisy --p_random_action=0.1"
    ),
    122: (
        "python generate_manipspace.py --env_name=cube-double-v0"
        " --save_path=data/cube-double-noisy-v0.npz"
        " --num_episodes=1000 --max_episode_steps=1001 --dataset_type=noisy --p_random_action=0.1"
    ),
    124: (
        "python generate_manipspace.py --env_name=cube-triple-v0"
        " --save_path=data/cube-triple-noisy-v0.npz"
        " --num_episodes=3000 --max_episode_steps=1001 --dataset_type=noisy --p_random_action=0.1"
    ),
    126: (
        "python generate_manipspace.py --env_name=cube-quadruple-v0"
        " --save_path=data/cube-quadruple-noisy-v0.npz"
        " --num_episodes=5000 --max_episode_steps=1001 --dataset_type=noisy --p_random_action=0.1"
    ),
    129: (
        "python generate_manipspace.py --env_name=scene-v0"
        " --save_path=data/scene-play-v0.npz"
        " --num_episodes=1000 --max_episode_steps=1001 --dataset_type=play"
    ),
    131: (
        "python generate_manipspace.py --env_name=scene-v0"
        " --save_path=data/scene-noisy-v0.npz"
        " --num_episodes=1000 --max_episode_steps=1001 --dataset_type=noisy --p_random_action=0.1"
    ),
}
# Script defaults for the flags a command leaves out.
LOCOMAZE_DEFAULTS = {"noise": 0.2, "num_episodes": 1000, "max_episode_steps": 1001}  # generate_locomaze.py L24-26
MANIPSPACE_DEFAULTS = {  # generate_manipspace.py L25-30
    "noise": 0.1,
    "noise_smoothing": 0.5,
    "min_norm": 0.4,
    "p_random_action": 0.0,
    "num_episodes": 1000,
    "max_episode_steps": 1001,
}
# generate_manipspace.py L100-111: per-episode stacking probability p_stack ~ U(lo, hi).
OFFICIAL_P_STACK = {
    "cube-single-v0": (0.0, 0.0),
    "cube-double-v0": (0.0, 0.25),
    "cube-triple-v0": (0.05, 0.35),
    "cube-quadruple-v0": (0.1, 0.5),
    "scene-v0": (0.5, 0.5),
}


def _parse(command: str) -> tuple[str, dict[str, str]]:
    words = command.split()
    assert words[0] == "python"
    flags = dict(w[2:].split("=", 1) for w in words[2:])
    return words[1], flags


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


# --------------------------------------------------------------------------- the recipe table


def test_every_official_command_has_a_recipe_and_vice_versa() -> None:
    by_line = {r.commands_line: r for r in RECIPES.values()}
    assert sorted(by_line) == sorted(OFFICIAL_COMMANDS)
    assert len(by_line) == len(RECIPES) == len(SUPPORTED_DATASETS)
    for line, command in OFFICIAL_COMMANDS.items():
        assert by_line[line].official_command() == command, line


@pytest.mark.parametrize("line", sorted(OFFICIAL_COMMANDS))
def test_recipe_values_equal_official_flags(line: int) -> None:
    script, flags = _parse(OFFICIAL_COMMANDS[line])
    dataset = Path(flags["save_path"]).stem
    recipe = RECIPES[dataset]
    defaults = LOCOMAZE_DEFAULTS if script == "generate_locomaze.py" else MANIPSPACE_DEFAULTS
    official = {**defaults, **{k: flags[k] for k in defaults if k in flags}}
    assert (recipe.script, recipe.env_id, recipe.dataset_type) == (script, flags["env_name"], flags["dataset_type"])
    assert recipe.commands_line == line
    for field, value in official.items():
        assert getattr(recipe, field) == type(getattr(recipe, field))(value), field
    if script == "generate_locomaze.py":
        assert (recipe.noise_smoothing, recipe.min_norm, recipe.p_random_action, recipe.p_stack) == (None,) * 4
    else:
        assert recipe.p_stack == OFFICIAL_P_STACK[recipe.env_id]


def test_known_differences_are_fixed() -> None:
    """The values the issue calls out, spelled out."""
    assert RECIPES["pointmaze-medium-navigate-v0"].noise == 0.5  # was 0.2 (the script default)
    giant = RECIPES["pointmaze-giant-navigate-v0"]
    assert (giant.num_episodes, giant.max_episode_steps) == (500, 2001)
    stitch = RECIPES["pointmaze-large-stitch-v0"]
    assert (stitch.num_episodes, stitch.max_episode_steps) == (5000, 201)
    assert RECIPES["cube-triple-play-v0"].num_episodes == 3000
    assert RECIPES["cube-double-noisy-v0"].p_random_action == 0.1
    assert RECIPES["cube-double-play-v0"].p_random_action == 0.0
    scene = RECIPES["scene-play-v0"]
    assert (scene.num_episodes, scene.max_episode_steps, scene.noise, scene.noise_smoothing) == (1000, 1001, 0.1, 0.5)


class _Captured(Exception):
    pass


@pytest.mark.parametrize(
    ("name", "collector", "episodes_simulated", "steps", "noise"),
    [
        ("pointmaze-medium-navigate-v0", "pointmaze", 1100, 1001, 0.5),
        ("pointmaze-giant-navigate-v0", "pointmaze", 550, 2001, 0.5),
        ("pointmaze-teleport-stitch-v0", "pointmaze", 5500, 201, 0.5),
        ("cube-triple-play-v0", "manipspace", 3300, 1001, 0.1),
        ("scene-play-v0", "manipspace", 1100, 1001, 0.1),
        ("scene-noisy-v0", "manipspace", 1100, 1001, 0.1),
    ],
)
def test_generate_dataset_defaults_are_the_official_recipe(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    collector: str,
    episodes_simulated: int,
    steps: int,
    noise: float,
) -> None:
    seen: dict = {}

    def capture(recipe, n_episodes, seed, progress):
        seen.update(recipe=recipe, n=n_episodes)
        raise _Captured

    for family in ("pointmaze", "manipspace"):  # each family's collector (evor_edge.datagen.<family>.collect)
        monkeypatch.setattr(getattr(datagen, family), "collect", capture if family == collector else None)
    with pytest.raises(_Captured):
        generate_dataset(name, tmp_path / "x.npz", progress=False)
    assert seen["recipe"] == RECIPES[name]
    assert (seen["n"], seen["recipe"].max_episode_steps, seen["recipe"].noise) == (episodes_simulated, steps, noise)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "kw", "match"),
    [
        ("pointmaze-small-navigate-v0", {}, "supported: pointmaze-medium-navigate-v0, .*scene-play-v0"),
        ("pointmaze-medium-navigate-v0", {"noise_smoothing": 0.3}, "noise_smoothing only applies to play datasets"),
        ("pointmaze-medium-navigate-v0", {"p_random_action": 0.1}, "p_random_action only applies to manipspace"),
        ("cube-double-play-v0", {"min_norm": 0.2}, "min_norm only applies to noisy datasets"),
        ("scene-noisy-v0", {"noise_smoothing": 0.2}, "scene-noisy-v0 is a noisy dataset"),
        ("scene-noisy-v0", {"p_random_action": 1.5}, r"p_random_action must be in \[0, 1\]"),
        ("scene-play-v0", {"noise": float("nan")}, "noise must be a finite number"),
        ("scene-play-v0", {"num_episodes": 0}, "num_episodes must be an integer >= 1"),
        ("scene-play-v0", {"colour": 1}, "unknown recipe field 'colour'"),
    ],
)
def test_bad_recipe_overrides_are_one_line_errors(name: str, kw: dict, match: str) -> None:
    with pytest.raises(DatasetError, match=match) as info:
        resolve_recipe(name, **kw)
    assert "\n" not in str(info.value)


def test_resolve_recipe_records_deviations() -> None:
    recipe, deviations = resolve_recipe("cube-double-noisy-v0", p_random_action=0.0, min_norm=0.4, noise=None)
    assert recipe.p_random_action == 0.0 and recipe.min_norm == 0.4 and recipe.noise == 0.1
    assert deviations == {"p_random_action": {"official": 0.1, "ours": 0.0}}  # min_norm 0.4 is official
    assert resolve_recipe("scene-play-v0") == (RECIPES["scene-play-v0"], {})


# --------------------------------------------------------------------------- pointmaze stitch


def test_stitch_goal_cells_are_exactly_four_steps_away() -> None:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    env = ogbench.make_env_and_datasets("pointmaze-large-navigate-v0", env_only=True)
    maze_map = np.asarray(env.unwrapped.maze_map)
    free, _ = maze_cells(maze_map)
    index = {c: k for k, c in enumerate(free)}
    rows, cols = [], []
    for (i, j), k in index.items():
        for n in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
            if n in index:
                rows.append(k)
                cols.append(index[n])
    dist = shortest_path(csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(free),) * 2), unweighted=True)
    checked = 0
    for start in free:
        got = stitch_goal_cells(maze_map, start)
        want = {c for c in free if dist[index[start], index[c]] == 4}
        assert set(got) == want and len(got) == len(want), start
        checked += len(got)
    assert checked > 0
    # A pocket with nothing 4 steps away: no candidates (the generator then keeps the start cell, L136).
    pocket = np.ones((5, 5), dtype=int)
    pocket[1, 1:4] = 0
    assert stitch_goal_cells(pocket, (1, 1)) == []


def test_stitch_dataset_and_report(tmp_path: Path) -> None:
    path = tmp_path / "st.npz"
    report = generate_dataset("pointmaze-medium-stitch-v0", path, episodes=3, progress=False, expert_eval_episodes=0)
    assert report["official_command"] == OFFICIAL_COMMANDS[22]
    assert report["recipe"]["max_episode_steps"] == 201 and report["recipe"]["noise"] == 0.5
    assert report["deviations"] == {"num_episodes": {"official": 5000, "ours": 3}}
    assert (report["transitions"], report["val_transitions"]) == (3 * 201, 201)
    a = _arrays(path)
    assert np.flatnonzero(a["terminals"]).tolist() == [200, 401, 602]
    # Starts are cell centres +- maze_unit/4 (OGBench's reset noise), i.e. inside a free cell.
    starts = a["qpos"][[0, 201, 402], :2]
    free, _ = maze_cells(np.asarray(ogbench.make_env_and_datasets("pointmaze-medium-navigate-v0", env_only=True)
                                    .unwrapped.maze_map))
    centres = np.array([(j * 4.0 - 4.0, i * 4.0 - 4.0) for i, j in free])
    assert (np.abs(starts[:, None, :] - centres[None]).max(-1).min(-1) <= 1.0 + 1e-6).all()
    _, train, val = ogbench.make_env_and_datasets("pointmaze-medium-stitch-singletask-task2-v0", dataset_path=str(path))
    assert len(train["observations"]) == 3 * 200 and len(val["observations"]) == 200


def test_cli_overrides_land_in_the_json_report(tmp_path: Path) -> None:
    out = tmp_path / "d.npz"
    result = CliRunner().invoke(
        main,
        ["data", "generate", "pointmaze-medium-navigate-v0", "--out", str(out), "--episodes", "2",
         "--max-episode-steps", "30", "--noise", "0.2", "--expert-eval-episodes", "0", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["recipe"]["noise"] == 0.2 and report["official_recipe"]["noise"] == 0.5
    assert set(report["deviations"]) == {"num_episodes", "max_episode_steps", "noise"}
    assert report["transitions"] == 60 and out.is_file()


def test_cli_flag_of_another_script_is_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["data", "generate", "pointmaze-medium-navigate-v0", "--out", str(tmp_path / "d.npz"),
               "--noise-smoothing", "0.3"],
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "noise_smoothing only applies to play datasets" in lines[0], result.output
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- manipspace


def test_p_random_action_one_gives_uniform_actions(tmp_path: Path) -> None:
    report = generate_dataset(
        "cube-single-noisy-v0", tmp_path / "r.npz", episodes=1, max_episode_steps=300, p_random_action=1.0,
        progress=False,
    )
    assert report["deviations"] == {
        "num_episodes": {"official": 1000, "ours": 1},
        "max_episode_steps": {"official": 1001, "ours": 300},
        "p_random_action": {"official": 0.1, "ours": 1.0},
    }
    acts = np.concatenate([_arrays(tmp_path / "r.npz")["actions"], _arrays(tmp_path / "r-val.npz")["actions"]])
    assert acts.shape == (600, 5)
    # U(-1, 1): mean 0 (s.e. 0.024), std 1/sqrt(3) = 0.577 (s.e. ~0.015) per dimension.
    np.testing.assert_allclose(acts.mean(0), 0.0, atol=0.12)
    np.testing.assert_allclose(acts.std(0), 1 / np.sqrt(3), atol=0.07)


def test_scene_health_check() -> None:
    ok = np.array([[0.4, 0.0, 0.02], [0.5, 0.28, 0.02], [0.4, -0.35, 0.07]])  # last: in the drawer
    assert scene_cube_in_view(ok)
    assert not scene_cube_in_view(np.array([[0.4, 0.0, 0.02], [0.4, 0.29, 0.02]]))  # too far right
    assert not scene_cube_in_view(np.array([[0.4, -0.3, 0.02]]))  # too far left, on the table
    assert not scene_cube_in_view(np.array([[0.4, -0.31, 0.09]]))  # too far left, above the drawer


SCENE_STEPS = 120


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("scene") / "scene.npz"
    report = generate_dataset("scene-play-v0", path, episodes=2, max_episode_steps=SCENE_STEPS, seed=1,
                              progress=False)
    return path, report


def test_scene_play_file_layout(scene: tuple[Path, dict]) -> None:
    path, report = scene
    assert report["official_command"] == OFFICIAL_COMMANDS[129]
    assert report["recipe"]["noise"] == 0.1 and report["recipe"]["noise_smoothing"] == 0.5
    assert report["recipe"]["p_random_action"] == 0.0 and report["expert_success"] is None
    assert (report["transitions"], report["val_transitions"]) == (2 * SCENE_STEPS, SCENE_STEPS)
    a = _arrays(path)
    assert set(a) == {"observations", "actions", "terminals", "qpos", "qvel", "button_states"}
    assert a["observations"].shape == (2 * SCENE_STEPS, 40) and a["actions"].shape == (2 * SCENE_STEPS, 5)
    assert a["button_states"].dtype == np.int64 and a["button_states"].shape == (2 * SCENE_STEPS, 2)
    assert set(np.unique(a["button_states"]).tolist()) <= {0, 1}
    assert np.flatnonzero(a["terminals"]).tolist() == [SCENE_STEPS - 1, 2 * SCENE_STEPS - 1]
    assert scene_cube_in_view(a["qpos"][:, 14:17].astype(np.float64))
    # qpos / qvel / button_states are the state the observation of the same row was taken in:
    # restoring them reproduces the observation (button one-hots, drawer, window, arm, cube
    # position). Left out: gripper contact (18, from the last physics step, not the state) and
    # the cube's yaw cos/sin (26, 27: the yaw of a float32 quaternion flips between symmetric
    # branches).
    env = ogbench.make_env_and_datasets("scene-play-singletask-task1-v0", env_only=True)
    env.reset()
    u = env.unwrapped
    compared = np.setdiff1d(np.arange(40), [18, 26, 27])
    for i in range(0, len(a["qpos"]), 7):
        u.set_state(a["qpos"][i].astype(np.float64), a["qvel"][i].astype(np.float64), a["button_states"][i])
        np.testing.assert_allclose(u.compute_observation()[compared], a["observations"][i][compared], atol=1e-3)


@pytest.mark.parametrize("task_id", [1, 2, 3, 4, 5])
def test_scene_play_loads_with_singletask_relabelling(scene: tuple[Path, dict], task_id: int) -> None:
    path, _ = scene
    task = f"scene-play-singletask-task{task_id}-v0"
    env, ds, val = ogbench.make_env_and_datasets(task, dataset_path=str(path), add_info=True)
    n = 2 * (SCENE_STEPS - 1)
    assert len(ds["observations"]) == n and len(val["observations"]) == SCENE_STEPS - 1
    # Scene tasks score 2 buttons + drawer + window + 1 cube: rewards in {-5, ..., 0}.
    assert set(np.unique(ds["rewards"]).tolist()) <= {-5.0, -4.0, -3.0, -2.0, -1.0, 0.0}
    np.testing.assert_array_equal(ds["masks"] == 0, ds["rewards"] == 0)
    # Independent check: put the simulator in each stored state and let the env score it.
    u = env.unwrapped
    for i in range(0, n, 17):
        u.set_state(ds["qpos"][i].astype(np.float64), ds["qvel"][i].astype(np.float64), ds["button_states"][i])
        assert u.compute_reward() == ds["rewards"][i], i
    _, mine, _ = load_task_dataset(task, path)
    np.testing.assert_array_equal(mine["rewards"], ds["rewards"])


def test_scene_rewards_differ_between_tasks(scene: tuple[Path, dict]) -> None:
    """The relabelling above is not vacuous: the five tasks score the same states differently."""
    rewards = [
        ogbench.make_env_and_datasets(f"scene-play-singletask-task{k}-v0", dataset_path=str(scene[0]))[1]["rewards"]
        for k in range(1, 6)
    ]
    assert len({r.tobytes() for r in rewards}) > 1
    assert len(np.unique(np.concatenate(rewards))) > 1


def test_scene_is_deterministic_and_redraws_unhealthy_episodes(
    scene: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, report = scene
    again = generate_dataset("scene-play-v0", tmp_path / "a.npz", episodes=2, max_episode_steps=SCENE_STEPS, seed=1,
                             progress=False)
    assert again["discarded_episodes"] == report["discarded_episodes"]
    a, b = _arrays(path), _arrays(tmp_path / "a.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # Fail the health check of the first episode only: it is dropped and one more is simulated.
    verdicts = iter([False])
    monkeypatch.setattr(datagen.manipspace, "scene_cube_in_view", lambda xyz: next(verdicts, True))
    r = generate_dataset("scene-play-v0", tmp_path / "d.npz", episodes=2, max_episode_steps=SCENE_STEPS, seed=1,
                         progress=False)
    assert r["discarded_episodes"] == 1
    assert (r["transitions"], r["val_transitions"]) == (2 * SCENE_STEPS, SCENE_STEPS)
    d = _arrays(tmp_path / "d.npz")
    assert np.flatnonzero(d["terminals"]).tolist() == [SCENE_STEPS - 1, 2 * SCENE_STEPS - 1]
    assert not np.array_equal(d["qpos"], a["qpos"])  # the kept episodes are the 2nd and 3rd drawn


def test_endless_discards_stop_with_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class _Rec:
        lengths: list[int] = []
        discarded = 0

        def discard_episode(self) -> None:
            self.discarded += 1

    monkeypatch.setattr(datagen.episodes, "MAX_CONSECUTIVE_DISCARDS", 5)
    rec = _Rec()
    with pytest.raises(DatasetError, match="5 episodes in a row failed the health check"):
        datagen.run_episodes("scene-play-v0", rec, 3, lambda first: None, progress=False)
    assert rec.discarded == 5


@pytest.mark.parametrize("dataset", ["scene-play-v0", "scene-noisy-v0", "cube-double-play-v0", "cube-double-noisy-v0"])
def test_oracles_are_built_as_generate_manipspace_builds_them(dataset: str) -> None:
    """generate_manipspace.py L49-72: which oracle per target task, with which settings."""
    recipe = RECIPES[dataset]
    env = ogbench.make_env_and_datasets(recipe.env_id.replace("-v0", f"-{recipe.dataset_type}-v0"), env_only=True)
    agents = datagen.manipspace._make_oracles(env, recipe)
    kind = "Plan" if recipe.dataset_type == "play" else "Markov"
    tasks = ["cube"] if recipe.family == "cube" else ["cube", "button", "drawer", "window"]
    assert {k: type(v).__name__ for k, v in agents.items()} == {t: f"{t.capitalize()}{kind}Oracle" for t in tasks}
    for agent in agents.values():
        if kind == "Plan":
            assert (agent._noise, agent._noise_smoothing) == (0.1, 0.5)
        else:
            assert agent._min_norm == 0.4
    if kind == "Markov":  # scene's cube oracle gives up after 100 steps (L61), the cube env's after 200
        assert agents["cube"]._max_step == (100 if recipe.family == "scene" else 200)


def test_noisy_action_noise_has_per_episode_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """generate_manipspace.py L113-115, L134: noise N(0, xi * [1, 1, 1, 3, 10]), xi ~ U(0, 0.1) per episode."""
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle

    monkeypatch.setattr(CubeMarkovOracle, "select_action", lambda self, ob, info: np.zeros(5))
    generate_dataset("cube-single-noisy-v0", tmp_path / "n.npz", episodes=3, max_episode_steps=250,
                     p_random_action=0.0, seed=2, progress=False)
    acts = np.concatenate([_arrays(tmp_path / "n.npz")["actions"], _arrays(tmp_path / "n-val.npz")["actions"]])
    xyz_std = []
    for ep in acts.reshape(4, 250, 5):
        s = ep.std(0)
        xyz_std.append(s[:3].mean())
        assert s[:3].max() < 0.1 * 1.15  # xi <= 0.1
        np.testing.assert_allclose(s[:3], s[:3].mean(), rtol=0.25)  # same scale in x, y, z
        np.testing.assert_allclose(s[3], 3 * s[:3].mean(), rtol=0.25)  # yaw: 3 xi
    assert max(xyz_std) > 1.5 * min(xyz_std)  # the scale is drawn per episode, not fixed


def test_docs_record_every_recipe() -> None:
    """docs/datasets.md has a table per generated dataset, under its official command."""
    doc = (Path(__file__).parents[1] / "docs" / "datasets.md").read_text()
    section = doc.split("## Generated OGBench datasets: our recipe vs the official one", 1)[1].split("\n## ", 1)[0]
    for name, recipe in RECIPES.items():
        block = section.split(f"#### `{name}`", 1)[1].split("####", 1)[0]
        assert recipe.official_command() in block, name
        assert f"| `--num_episodes` | {recipe.num_episodes} |" in block, name
        assert f"| `--max_episode_steps` | {recipe.max_episode_steps} |" in block, name
