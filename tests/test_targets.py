"""n-step targets and Monte-Carlo returns on hand-computed trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from evor_edge.targets import monte_carlo_returns, n_step_targets, trajectory_ends

# Two trajectories: [0, 1, 2, 3] (goal reached at 2: mask 0) and [4, 5] (truncated).
REWARDS = np.array([-1, -1, 0, -1, -1, -1], dtype=np.float32)
MASKS = np.array([1, 1, 0, 1, 1, 1], dtype=np.float32)
TERMINALS = np.array([0, 0, 0, 1, 0, 1], dtype=np.float32)
G = 0.9


def test_trajectory_ends() -> None:
    assert trajectory_ends(TERMINALS).tolist() == [3, 3, 3, 3, 5, 5]


def test_one_step_is_reward_and_gamma_mask() -> None:
    reward, boot, nxt = n_step_targets(REWARDS, MASKS, TERMINALS, G, 1)
    np.testing.assert_allclose(reward, REWARDS)
    np.testing.assert_allclose(boot, G * MASKS)
    assert nxt.tolist() == [0, 1, 2, 3, 4, 5]


def test_three_step_stops_at_goal_and_at_trajectory_end() -> None:
    reward, boot, nxt = n_step_targets(REWARDS, MASKS, TERMINALS, G, 3)
    # i=0: -1 - 0.9 + 0.81*0, then the goal (mask 0) ends bootstrapping.
    assert reward[0] == pytest.approx(-1.9) and boot[0] == 0.0 and nxt[0] == 2
    # i=3: last step of trajectory 1: one reward, bootstrap gamma from x'_3.
    assert reward[3] == pytest.approx(-1.0) and boot[3] == pytest.approx(G) and nxt[3] == 3
    # i=4: two steps left: -1 - 0.9, bootstrap gamma^2 from x'_5.
    assert reward[4] == pytest.approx(-1.9) and boot[4] == pytest.approx(G**2) and nxt[4] == 5


def test_monte_carlo_returns() -> None:
    g = monte_carlo_returns(REWARDS, MASKS, TERMINALS, G)
    assert g[2] == pytest.approx(0.0)
    assert g[0] == pytest.approx(-1.9)
    assert g[5] == pytest.approx(-1.0 + G * (-1.0 / (1 - G)))


# ------------------------------------------------------------------------------------------------------------
# What the critic learns: the fixed point of the n-step target (data actions for n steps, then pi_base) is
# Algorithm 1's (1-step) only when the data policy is Markov and equal to the BC policy pi_base.
#
# Toy: a corridor of states 0..L, actions -1 / +1 (clipped at the ends), the task's goal is state 0 with
# OGBench's singletask relabelling (r = success(s) - 1, m = 1 - success(s)). Navigate-style data follow a
# hidden goal in {0, L}, re-sampled when reached; pi_base is the data's empirical action law per state (what BC
# learns; ~50/50 inside the corridor). The expected value is enough: the mean of the distributional fixed point
# is the fixed point of the expected backup, computed here exactly for the empirical operator by a linear solve.
L_CORRIDOR = 8
GAMMA = 0.99


def _corridor_data(hidden_goal: bool, episodes: int = 300, length: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs, act = [], []
    for _ in range(episodes):
        x = int(rng.integers(0, L_CORRIDOR + 1))
        goal = int(rng.choice([0, L_CORRIDOR]))
        for _ in range(length):
            if hidden_goal:
                if x == goal:  # reached: the next hidden goal is the other end
                    goal = L_CORRIDOR - goal
                a = -1 if goal < x else 1
            else:  # Markov data = its own BC policy: a random walk (pushed inwards at the ends)
                a = 1 if x == 0 else -1 if x == L_CORRIDOR else int(rng.choice([-1, 1]))
            obs.append(x)
            act.append(a)
            x = min(max(x + a, 0), L_CORRIDOR)
        obs.append(x)
        act.append(0)  # placeholder row closing the episode (dropped below)
    obs_a, act_a = np.array(obs), np.array(act)
    rows = np.ones(len(obs_a), dtype=bool)
    rows[length::length + 1] = False  # one row per transition
    nxt = np.roll(obs_a, -1)[rows]
    obs_a, act_a = obs_a[rows], act_a[rows]
    terminals = np.zeros(len(obs_a), dtype=np.float32)
    terminals[length - 1::length] = 1.0
    success = (obs_a == 0).astype(np.float32)
    return {"obs": obs_a, "act": act_a, "next": nxt, "rewards": success - 1.0, "masks": 1.0 - success,
            "terminals": terminals}


def _fixed_point(data: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Q[x, a_index] (a_index 0 = left, 1 = right) of R + b V(x'), V(x) = sum_a pi_base(a|x) Q(x, a)."""
    reward, boot, nxt_idx = n_step_targets(data["rewards"], data["masks"], data["terminals"], GAMMA, n)
    x, a, x_next = data["obs"], (data["act"] > 0).astype(int), data["next"][nxt_idx]
    size = L_CORRIDOR + 1
    pi = np.zeros((size, 2))
    np.add.at(pi, (x, a), 1.0)
    pi /= pi.sum(axis=1, keepdims=True)
    count = np.zeros((size, 2))
    np.add.at(count, (x, a), 1.0)
    seen = count > 0
    r_bar = np.zeros((size, 2))
    np.add.at(r_bar, (x, a), reward)
    boot_to = np.zeros((size, 2, size))  # mean of b_i 1[x'_i = y]
    np.add.at(boot_to, (x, a, x_next), boot)
    r_bar[seen] /= count[seen]
    boot_to[seen] /= count[seen][:, None]
    # Q = r_bar + boot_to @ (pi * Q).sum(-1)  <=>  (I - B P) q = r with P[y, (y, a)] = pi(a|y)
    flat_b = boot_to.reshape(2 * size, size)
    p = np.zeros((size, 2 * size))
    for y in range(size):
        p[y, 2 * y:2 * y + 2] = pi[y]
    q = np.linalg.solve(np.eye(2 * size) - flat_b @ p, r_bar.reshape(-1))
    return q.reshape(size, 2)


def _random_walk_values() -> np.ndarray:
    """Exact Q of the 50/50 random walk (pushed inwards at the ends) on the corridor, goal 0 absorbing."""
    size = L_CORRIDOR + 1
    # V(0) = 0; V(x) = -1 + gamma * mean(V(x-1), V(x+1)) inside; V(L) = -1 + gamma V(L-1)
    a = np.eye(size)
    b = np.zeros(size)
    for x in range(1, size):
        b[x] = -1.0
        if x == L_CORRIDOR:
            a[x, x - 1] -= GAMMA
        else:
            a[x, x - 1] -= GAMMA / 2
            a[x, x + 1] -= GAMMA / 2
    v = np.linalg.solve(a, b)
    q = np.zeros((size, 2))
    for x in range(1, size):
        q[x, 0] = -1.0 + GAMMA * v[x - 1]
        q[x, 1] = -1.0 + GAMMA * v[min(x + 1, L_CORRIDOR)]
    return q


def shortest_path_value(x: int) -> float:
    return -(1.0 - GAMMA**x) / (1.0 - GAMMA)


def test_hidden_goal_data_n_step_fixed_point_differs_from_algorithm_1() -> None:
    data = _corridor_data(hidden_goal=True)
    q1, q50 = _fixed_point(data, 1), _fixed_point(data, 50)
    walk = _random_walk_values()
    for x in range(2, L_CORRIDOR + 1):
        # Algorithm 1 (1-step): the BC policy is a ~50/50 random walk inside the corridor, and that is what
        # the critic evaluates (up to the sampling noise of the empirical pi_base).
        assert q1[x, 0] == pytest.approx(walk[x, 0], rel=0.01), x
        # 50-step targets with the data's actions: whoever stepped left at x was heading to the goal and got
        # there in x steps, so the critic learns the shortest-path value, far above what pi_base achieves.
        assert q50[x, 0] == pytest.approx(shortest_path_value(x), rel=0.02), x
        assert q50[x, 0] > q1[x, 0] + 0.3 * abs(q1[x, 0]), x
    # Stepping right is optimistic too: those data were heading to the far end first (x < L; (L, right) unseen).
    for x in range(1, L_CORRIDOR):
        assert q50[x, 1] > q1[x, 1], x


def test_markov_data_equal_to_bc_gives_the_same_fixed_point_for_any_n() -> None:
    data = _corridor_data(hidden_goal=False)
    q1, q50 = _fixed_point(data, 1), _fixed_point(data, 50)
    walk = _random_walk_values()
    seen = np.ones_like(q1, dtype=bool)
    seen[0] = seen[L_CORRIDOR, 1] = False  # the goal (Q = 0) and the unseen (L, right)
    np.testing.assert_allclose(q1[seen], walk[seen], rtol=0.05)
    np.testing.assert_allclose(q50[seen], q1[seen], rtol=0.05)


def test_presets_paper_is_algorithm_1_and_small_lists_its_deviations() -> None:
    from evor_edge.config import SMALL_OVERRIDES, TrainConfig, preset_config

    paper = preset_config("paper", agent="qc")
    assert paper.n_step == 1 and paper.qc_target_candidates == 32 == paper.num_candidates
    assert paper.hidden_dims == (512,) * 4 and paper.steps == 1_000_000 and paper.batch_size == 256
    assert paper == TrainConfig(agent="qc")
    small = preset_config("small", agent="qc")
    differs = {f for f in paper.to_dict() if getattr(small, f) != getattr(paper, f)} - {"preset"}
    # the CPU-budget configuration's documented deviations (config.py, docs/results.md) and nothing else
    assert differs == {"hidden_dims", "steps", "n_step", "qc_target_candidates", "log_every", "checkpoint_every"}
    assert differs == set(SMALL_OVERRIDES)
    assert (small.n_step, small.steps, small.hidden_dims, small.qc_target_candidates) == (50, 20_000, (256,) * 3, 8)
