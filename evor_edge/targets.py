"""Per-transition quantities the critics regress on, precomputed once from the dataset.

n-step bootstrap (both agents): for transition i with K = min(n, steps left in its trajectory),

    R_i = sum_{k<K} gamma^k (prod_{j<k} m_{i+j}) r_{i+k},   b_i = gamma^K prod_{j<K} m_{i+j},
    x'_i = next_observation_{i+K-1},

and the distributional Bellman target becomes Z(x_i, a_i) =_D R_i + b_i Z(x'_i, A'), A' ~ pi_base(.|x'_i).
n = 1 is Algorithm 1; larger n propagates rewards n times further per backup (QC's chunked backups do
the same); n -> infinity is the Monte-Carlo target of Eq. 13.

What the critic learns (it is NOT the same fixed point for every n). The n - 1 intermediate actions
are the data's, the bootstrap action is pi_base's. So the fixed point of the n-step operator is the
reward-to-go of a hybrid process: from (x, a), follow the *data* for n steps (whatever drove the data
there, conditioned only on (x, a)), then draw one action from pi_base at x'_i and again follow the data
for n steps, and so on. That equals Algorithm 1's fixed point (the reward-to-go of pi_base, Eq. 7 with
pi_ref = pi_base) only when the data policy is Markov in x and equal to pi_base. OGBench's navigate
data violate this: the data policy steers to a hidden goal that is re-sampled during the episode, so
n data steps taken after (x, a) are more goal-directed than n steps of the goal-agnostic BC policy,
and the n-step critic's values, in particular the upper tail that Q* = LogSumExp weighs, are
optimistic w.r.t. what pi_base (or the EVOR policy built on it) achieves. Often a useful bias at a small
training budget (it is why the `small` preset learns pointmaze in 20k steps), but a deviation from the
paper: the `paper` preset keeps n = 1. `tests/test_targets.py` checks both fixed points on a toy whose
data policy follows a hidden goal.

Monte-Carlo returns (Eq. 13 option): G_i = r_i + gamma m_i G_{i+1} within each trajectory (a sample of
the data policy's own return from (x_i, a_i): the n -> infinity limit of the above).
"""

from __future__ import annotations

import numpy as np


def trajectory_ends(terminals: np.ndarray) -> np.ndarray:
    """Index of the last transition of the trajectory each transition belongs to."""
    ends = np.flatnonzero(np.asarray(terminals) > 0)
    if ends.size == 0 or ends[-1] != len(terminals) - 1:
        ends = np.append(ends, len(terminals) - 1)
    return ends[np.searchsorted(ends, np.arange(len(terminals)))]


def n_step_targets(
    rewards: np.ndarray, masks: np.ndarray, terminals: np.ndarray, discount: float, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R [T], b [T], index of x' [T]) for n-step targets; see the module docstring."""
    if n < 1:
        raise ValueError(f"n-step horizon must be >= 1, got {n}")
    size = len(rewards)
    last = trajectory_ends(terminals)
    reward_sum = np.zeros(size, dtype=np.float64)
    alive = np.ones(size, dtype=np.float64)  # gamma^k * prod of masks so far
    next_index = np.arange(size)
    active = np.ones(size, dtype=bool)  # still inside the trajectory at step k
    base = np.arange(size)
    for k in range(n):
        idx = base + k
        active &= idx <= last
        safe = np.minimum(idx, size - 1)
        reward_sum += np.where(active, alive * rewards[safe], 0.0)
        next_index = np.where(active, safe, next_index)
        alive = np.where(active, alive * discount * masks[safe], alive)
    return reward_sum.astype(np.float32), alive.astype(np.float32), next_index


def monte_carlo_returns(rewards: np.ndarray, masks: np.ndarray, terminals: np.ndarray, discount: float) -> np.ndarray:
    """G_t = r_t + gamma m_t G_{t+1} within each trajectory (terminals mark trajectory ends).

    At a trajectory's last transition (a time-limit truncation in OGBench data) we bootstrap with the
    stationary value r_T / (1 - gamma) if the state is not terminal (m_T = 1): an approximation,
    exact when the last reward would repeat forever (e.g. the agent stays at or away from the goal).
    """
    returns = np.zeros_like(rewards, dtype=np.float64)
    future = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        if terminals[i]:
            future = rewards[i] / (1.0 - discount) if masks[i] else 0.0
        future = rewards[i] + discount * masks[i] * future
        returns[i] = future
    return returns.astype(np.float32)
