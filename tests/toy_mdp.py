"""A three-state MDP whose reward-to-go distributions are known in closed form.

States are one-hot in R^3; the action is 1-D in [-1, 1]; the data policy is uniform.
  A: reward ~ Bernoulli(0.8) if a > 0 else Bernoulli(0.2); next state B w.p. 0.7, else the episode
     ends (mask 0).
  B: reward -1, next state C.
  C: reward ~ N(2, 0.5^2), then the episode ends (mask 0).
So Z(C) = N(2, 0.25), Z(B) = -1 + g Z(C), Z(A, a) = Ber(p(a)) + g * 1[B] * Z(B): stochastic rewards,
stochastic transitions, discount g < 1.
"""

from __future__ import annotations

import numpy as np

P_B = 0.7
C_MEAN, C_STD = 2.0, 0.5
ONE_HOT = np.eye(3, dtype=np.float32)


def p_reward(action: float) -> float:
    return 0.8 if action > 0 else 0.2


def make_transitions(n: int, rng: np.random.Generator, discount: float = 0.8) -> dict[str, np.ndarray]:
    state = rng.integers(0, 3, n)
    action = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    reward = np.zeros(n, np.float32)
    mask = np.ones(n, np.float32)
    next_state = np.zeros(n, np.int64)
    a_rows = state == 0
    p = np.where(action[:, 0] > 0, 0.8, 0.2)
    reward[a_rows] = (rng.random(n) < p)[a_rows]
    to_b = rng.random(n) < P_B
    next_state[a_rows & to_b] = 1
    mask[a_rows & ~to_b] = 0.0
    b_rows = state == 1
    reward[b_rows] = -1.0
    next_state[b_rows] = 2
    c_rows = state == 2
    reward[c_rows] = rng.normal(C_MEAN, C_STD, n)[c_rows]
    mask[c_rows] = 0.0
    return {
        "bootstrap": (discount * mask).astype(np.float32),
        "observations": ONE_HOT[state],
        "actions": action,
        "rewards": reward,
        "masks": mask,
        "next_observations": ONE_HOT[next_state],
        "terminals": np.zeros(n, np.float32),
    }


def sample_true_returns(state: int, action: float, discount: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Exact samples of Z(state, action) from the closed form above."""
    z_c = rng.normal(C_MEAN, C_STD, n)
    if state == 2:
        return z_c
    z_b = -1.0 + discount * z_c
    if state == 1:
        return z_b
    reward = (rng.random(n) < p_reward(action)).astype(np.float64)
    return reward + discount * (rng.random(n) < P_B) * z_b


def true_mean(state: int, action: float, discount: float) -> float:
    mean_b = -1.0 + discount * C_MEAN
    if state == 1:
        return mean_b
    if state == 2:
        return C_MEAN
    return p_reward(action) + discount * P_B * mean_b


def wasserstein1(x: np.ndarray, y: np.ndarray) -> float:
    """1-D W1 between two empirical distributions, via quantile functions on a common grid."""
    q = (np.arange(2000) + 0.5) / 2000
    return float(np.mean(np.abs(np.quantile(x, q) - np.quantile(y, q))))


def write_toy_training_file(path, rows: int = 400, obs_dim: int = 4, act_dim: int = 2, episode: int = 50):
    """A self-contained training file (docs/datasets.md, OGBench terminals/masks convention) of random
    transitions in episodes of `episode` steps: for tests of the training plumbing, not of learning."""
    rng = np.random.default_rng(0)
    ends = np.zeros(rows, np.float32)
    ends[episode - 1::episode] = 1
    np.savez(path, observations=rng.normal(size=(rows, obs_dim)).astype(np.float32),
             actions=rng.uniform(-1, 1, (rows, act_dim)).astype(np.float32),
             rewards=-rng.random(rows).astype(np.float32), terminals=ends, masks=np.ones(rows, np.float32),
             action_low=-np.ones(act_dim, np.float32), action_high=np.ones(act_dim, np.float32))
    return path
