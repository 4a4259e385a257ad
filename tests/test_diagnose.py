"""`evor-edge diagnose`: statistics, state restore, Monte-Carlo accounting against known answers, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from click.testing import CliRunner
from engine_fixtures import write_engine

from evor_edge.diagnose import (
    DiagnoseError,
    DiagnoseSettings,
    StateAccess,
    _follow_oracle,
    _oracle_value,
    _select_shared,
    rankdata,
    spearman,
    summarize,
)
from evor_edge.diagnose_command import diagnose_command

TASK = "pointmaze-medium-navigate-singletask-task1-v0"
GAMMA = 0.99


def _run(*args: str):
    return CliRunner().invoke(diagnose_command, list(args))


# ------------------------------------------------------------------------------------------------ statistics
def test_rank_correlation_known_values() -> None:
    assert rankdata(np.array([10.0, 30.0, 20.0, 20.0])).tolist() == [1.0, 4.0, 2.5, 2.5]
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    # ties: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): Pearson of the ranks
    assert spearman(np.array([1.0, 2, 2, 3]), np.array([1.0, 2, 3, 4])) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman(np.array([1.0, 2, 3]), np.array([5.0, 5, 5])) is None  # a constant side: undefined


def test_selection_with_shared_uniforms_is_algorithm_2() -> None:
    q = np.array([[0.0, 1.0, 0.5], [3.0, -1.0, 2.0]])
    assert _select_shared(q, 0.0, np.array([0.3, 0.9])).tolist() == [1, 0]  # tau_Q = 0: argmax, no draw
    # tau_Q = 1: inverse CDF of softmax(q) with the given uniform
    p = np.exp(q[0]) / np.exp(q[0]).sum()
    for u in (0.01, p[0] - 1e-6, p[0] + 1e-6, p[0] + p[1] + 1e-6, 0.999):
        expected = int(np.searchsorted(np.cumsum(p), u, side="right"))
        assert _select_shared(q[:1], 1.0, np.array([u]))[0] == expected
    # rows with the same Q* and the same uniform (one rollout) choose the same candidate
    same = np.tile(q[:1], (4, 1))
    assert len(set(_select_shared(same, 0.5, np.full(4, 0.42)).tolist())) == 1


def test_summary_names_the_larger_loss_above_the_noise() -> None:
    base = {"mc_pair_se": 0.1, "spearman_q_star_mc": 0.1, "continuation_gap": 0.0}
    ranking = summarize([dict(base, regret=5.0, coverage_gap=0.5)] * 2)
    coverage = summarize([dict(base, regret=0.5, coverage_gap=4.0)] * 2)
    neither = summarize([dict(base, regret=0.2, coverage_gap=0.3)] * 2)
    assert (ranking["verdict"], coverage["verdict"], neither["verdict"]) == ("ranking", "coverage", "neither")
    assert ranking["states_with_ranking_loss"] == 2 and ranking["ranking_loss_per_state"] == pytest.approx(5.0)
    # a loss within a state's own noise (2 standard errors) does not count; a quiet state still does
    noisy = summarize([dict(base, mc_pair_se=3.0, regret=5.0, coverage_gap=0.0),
                       dict(base, regret=0.0, coverage_gap=1.5)])
    assert noisy["verdict"] == "coverage" and noisy["noise_floors"] == pytest.approx([6.0, 1.0])
    assert noisy["states_with_ranking_loss"] == 0 and noisy["coverage_loss_per_state"] == pytest.approx(0.75)
    after = summarize([dict(base, regret=2.0, coverage_gap=0.0, continuation_gap=30.0)])
    assert after["verdict"] == "ranking" and "after the first step" in after["explanation"]


# ----------------------------------------------------------------------------------- simulator state + returns
@pytest.fixture(scope="module")
def maze() -> StateAccess:
    from evor_edge.datasets import make_env

    env = make_env(TASK, max_episode_steps=5000)
    env.reset(seed=3)
    yield StateAccess(env, TASK)
    env.close()


def test_restore_reproduces_observations_transitions_and_the_goal(maze: StateAccess) -> None:
    env = maze.env
    rng = np.random.default_rng(0)
    for _ in range(7):
        env.step(rng.uniform(-1, 1, 2).astype(np.float32))
    snap, obs = maze.snapshot(), maze.u.get_ob().copy()
    action = np.array([0.3, -0.8], dtype=np.float32)
    nxt = env.step(action)[0]
    restored = maze.restore(snap)  # resets (a new noisy goal is drawn) and puts state and goal back
    np.testing.assert_array_equal(restored, obs.astype(np.float32))  # the policy's float32 observation
    np.testing.assert_array_equal(np.asarray(maze.u.cur_goal_xy), snap["goal_xy"])
    np.testing.assert_array_equal(env.step(action)[0], nxt)


@pytest.mark.parametrize("task", ["cube-double-play-singletask-task2-v0", "scene-play-singletask-task2-v0"])
def test_manipspace_restore_replays_the_same_trajectory(task: str) -> None:
    """The arm's IK controller reads the effector pose that the env's last mj_step left (one substep behind
    qpos); a restore that recomputed it with mj_forward replayed cube-double 1e-2 off (the campaign's
    `diagnose` refused the task). Restored, 30 steps of the same actions must replay exactly."""
    from evor_edge.datasets import make_env

    env = make_env(task)
    access = StateAccess(env, task)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    low, high = np.maximum(env.action_space.low, -1), np.minimum(env.action_space.high, 1)
    for _ in range(20):
        env.step(rng.uniform(low, high).astype(np.float32))
    snap, obs = access.snapshot(), np.asarray(access.u.compute_observation(), dtype=np.float32)
    actions = [rng.uniform(low, high).astype(np.float32) for _ in range(30)]
    first = [env.step(a)[0] for a in actions]
    np.testing.assert_allclose(access.restore(snap), obs, atol=1e-6)
    np.testing.assert_array_equal(np.stack([env.step(a)[0] for a in actions]), np.stack(first))
    env.close()


def test_oracle_value_is_the_discounted_step_count_in_dataset_units(maze: StateAccess) -> None:
    """V* = f(s0) + gamma * (rewards of the oracle's steps) = -(1 - gamma^d) / (1 - gamma) for d steps to the goal
    (OGBench singletask relabelling: -1 per state until the goal state, 0 and mask 0 there)."""
    maze.env.reset(seed=5)
    snap = maze.snapshot()
    cache: dict = {}
    maze.restore(snap)
    steps = 0
    while True:  # count the oracle's steps by hand
        _, _, terminated, _, info = maze.env.step(maze.oracle_action(cache))
        steps += 1
        if terminated:
            assert info["success"]
            break
        assert steps < 2000
    assert 20 < steps < 1000
    value = _oracle_value(maze, snap, GAMMA, 2000, cache)
    assert value == pytest.approx(-(1 - GAMMA**steps) / (1 - GAMMA), abs=1e-9)
    # no success within the budget: the last reward (-1) forever, -1 / (1 - gamma) in all
    assert _oracle_value(maze, snap, GAMMA, 3, cache) == pytest.approx(-1 / (1 - GAMMA), abs=1e-9)
    maze.restore(snap)
    total, disc, last = _follow_oracle(maze, GAMMA, 3, cache)
    assert (total, disc, last) == pytest.approx((-(1 + GAMMA + GAMMA**2), GAMMA**3, -1.0))


def test_state_access_refuses_an_environment_without_saved_states() -> None:
    class NoState(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(-1, 1, (2,))
        action_space = gymnasium.spaces.Box(-1, 1, (2,))

    with pytest.raises(DiagnoseError, match="cannot be reset to a saved state"):
        StateAccess(NoState(), "toy-singletask-task1-v0")


# ------------------------------------------------------------------------------------------------- end to end
def test_diagnose_end_to_end_on_a_fixture_engine(tmp_path: Path) -> None:
    """The fixture policy (a fixed linear map plus noise) never reaches task 1's goal in a few steps: with the
    'repeat' tail every rollout's return is exactly -1/(1-gamma) = -100, so Spearman is undefined, the regret 0
    and the verdict 'neither'. The oracle tail and V* then bound it from above."""
    engine, _ = write_engine(tmp_path / "engine", obs_dim=2, act_dim=2)
    out, plot = tmp_path / "d.json", tmp_path / "d.png"
    common = ["--env", TASK, "--states", "2", "--max-steps", "12", "--num-candidates", "4", "--rollouts", "2",
              "--horizon", "4", "--q-repeats", "2", "--follow-num-candidates", "2", "--follow-num-rtg", "2",
              "--threads", "1"]
    result = _run(str(engine), *common, "--tail", "repeat", "--json", "--out", str(out), "--plot", str(plot))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report == json.loads(out.read_text())
    assert plot.stat().st_size > 0
    assert report["settings"]["tail"] == "repeat" and report["settings"]["discount"] == pytest.approx(GAMMA)
    assert report["restore_check"]["max_obs_error"] == 0.0 and report["restore_check"]["max_transition_error"] == 0.0
    assert [st["step"] for st in report["states"]] == [0, 12]
    for st in report["states"]:
        assert len(st["q_star"]) == len(st["mc_mean"]) == 4 and 0 <= st["chosen"] < 4
        np.testing.assert_allclose(st["mc_rollouts"], -100.0, atol=1e-3)
        assert st["spearman_q_star_mc"] is None and st["regret"] == pytest.approx(0.0, abs=1e-6)
        assert st["pooled_num_rtg"] == 3 * 4  # the tick's draw + 2 repeats at the manifest's N (4)
        assert st["v_star"] > -100.0 and st["coverage_gap"] == pytest.approx(0.0, abs=1e-6)
        assert 0.0 <= st["min_angle_to_oracle_deg"] <= st["chosen_angle_to_oracle_deg"] <= 180.0
    assert report["summary"]["verdict"] == "neither"
    for key in ("q_star", "q_star_pooled", "rtg_mean"):  # ranking against the noise-free oracle steps
        per_state = [st.get(f"spearman_{key}_oracle_continuation") for st in report["states"]]
        rhos = [r for r in per_state if r is not None]
        assert all(-1.0 <= r <= 1.0 for r in rhos)
        expected = float(np.median(rhos)) if rhos else None
        assert report["summary"][f"median_spearman_{key}_oracle_continuation"] == expected
    scan = report["scan"]  # every 25th recorded state (here only the start), each decision costed by the oracle
    assert [r["step"] for r in scan["states"]] == [0] and scan["summary"]["costed_states"] == 1
    row = scan["states"][0]
    assert min(row["oracle_continuation_steps"]) - row["d_star"] == row["steps_lost_best"]

    result = _run(str(engine), *common, "--at-steps", "3")  # human summary, oracle tail (auto)
    assert result.exit_code == 0, result.output
    assert "step    3" in result.output and "verdict:" in result.output


def test_diagnose_settings_are_checked() -> None:
    with pytest.raises(DiagnoseError, match="horizon"):
        DiagnoseSettings(horizon=0).check()
    with pytest.raises(DiagnoseError, match="tail"):
        DiagnoseSettings(tail="mean").check()


@pytest.mark.parametrize(("args", "match"), [
    (["--env", TASK, "--at-steps", "x"], "expected comma-separated step indices"),
    (["--env", "pointmaze-medium-navigate-singletask-task9-v0"], "task"),
    (["--env", TASK, "--at-steps", "5000", "--max-steps", "3"], "has only 4 non-terminal states"),
])
def test_diagnose_bad_input_is_one_line(tmp_path: Path, args: list[str], match: str) -> None:
    engine, _ = write_engine(tmp_path / "engine", obs_dim=2, act_dim=2)
    result = _run(str(engine), *args, "--threads", "1")
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_diagnose_refuses_mismatched_dims(tmp_path: Path) -> None:
    engine, _ = write_engine(tmp_path / "engine", obs_dim=4, act_dim=2)
    result = _run(str(engine), "--env", TASK)
    assert result.exit_code == 2 and "expects obs/act dims (4, 2)" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_diagnose_refuses_an_environment_that_cannot_restore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoState(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(-1, 1, (2,))
        action_space = gymnasium.spaces.Box(-1, 1, (2,))

    import evor_edge.datasets

    monkeypatch.setattr(evor_edge.datasets, "make_env", lambda task, **kw: NoState())
    engine, _ = write_engine(tmp_path / "engine", obs_dim=2, act_dim=2)
    result = _run(str(engine), "--env", TASK)
    assert result.exit_code == 2 and "cannot be reset to a saved state" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_diagnose_refuses_a_simulator_that_does_not_reproduce_a_restored_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before any episode runs: restoring must give back the observation and replay the same step."""
    original = StateAccess.restore

    def drifting(self: StateAccess, snap: dict) -> np.ndarray:
        return original(self, {**snap, "qpos": snap["qpos"] + 0.05})

    monkeypatch.setattr(StateAccess, "restore", drifting)
    engine, _ = write_engine(tmp_path / "engine", obs_dim=2, act_dim=2)
    result = _run(str(engine), "--env", TASK, "--threads", "1")
    assert result.exit_code == 2 and "cannot be reset to a saved state faithfully" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_oracle_continuation_costs_a_decision_in_steps(maze: StateAccess) -> None:
    """Known answers: the oracle's own action costs d*; standing still for one step costs d* + 1."""
    from evor_edge.diagnose import _decision_costs, oracle_continuation_steps

    maze.env.reset(seed=11)
    snap, cache = maze.snapshot(), {}
    d_star = oracle_continuation_steps(maze, snap, None, 2000, cache)
    maze.restore(snap)
    towards = maze.oracle_action(cache)
    assert oracle_continuation_steps(maze, snap, towards, 2000, cache) == d_star
    still = np.zeros(2, dtype=np.float32)
    assert oracle_continuation_steps(maze, snap, still, 2000, cache) == d_star + 1
    costs = _decision_costs(maze, snap, np.stack([towards, still]), np.array([0.0, 1.0]), 1, 2000, cache)
    assert costs["steps_lost_chosen"] == 1.0 and costs["steps_lost_best"] == 0.0  # Q* picked the idle one
    assert costs["spearman_q_star_oracle_continuation"] == pytest.approx(-1.0)
    assert oracle_continuation_steps(maze, snap, None, 3, cache) is None  # not within the limit
