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
