"""QC-1's critic against a closed-form best-of-N value.

Two states, 1-D actions in [-1, 1], uniform data policy, discount g:
  S0: reward 0, next state S1 (no termination);
  S1: reward a, then the episode terminates.
So Q(S1, a) = a and, with QC-1's target y = r + g max_{i<N} Q_bar(S1, a'_i), a'_i ~ pi_base(.|S1) = U(-1, 1),
the fixed point is Q(S0, a) = g E[max of N uniforms on [-1, 1]] = g (N - 1) / (N + 1) for every a. A mean
target would give 0, a different N another value: the test pins best-of-N with the configured N.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evor_edge.agents import AgentSpec, QCAgent
from evor_edge.config import TrainConfig
from evor_edge.normalization import ObsNormalizer, ReturnScaler

DISCOUNT = 0.8
N_TARGET = 4
S0, S1 = np.eye(2, dtype=np.float32)


def _transitions(n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    in_s1 = rng.random(n) < 0.5
    actions = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    return {
        "observations": torch.from_numpy(np.where(in_s1[:, None], S1, S0)),
        "actions": torch.from_numpy(actions),
        "rewards": torch.from_numpy(np.where(in_s1, actions[:, 0], 0.0).astype(np.float32)),
        "bootstrap": torch.from_numpy(np.where(in_s1, 0.0, DISCOUNT).astype(np.float32)),
        "next_observations": torch.from_numpy(np.tile(S1, (n, 1))),
    }


@pytest.mark.slow
def test_qc_critic_learns_the_best_of_n_value() -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(agent="qc", hidden_dims=(128, 128), discount=DISCOUNT, batch_size=256, learning_rate=1e-3,
                      target_ema=0.02, euler_steps=8, qc_target_candidates=N_TARGET)
    spec = AgentSpec(cfg, 2, 1, (-1.0,), (1.0,), ObsNormalizer((0.0, 0.0), (1.0, 1.0)), ReturnScaler(0.0, 1.0))
    agent = QCAgent(spec)
    data = _transitions(50_000, np.random.default_rng(0))
    gen = torch.Generator().manual_seed(0)
    for _ in range(3000):
        index = torch.randint(0, 50_000, (256,), generator=gen)
        agent.update({k: v[index] for k, v in data.items()}, gen)
    actions = torch.tensor([[-0.8], [-0.3], [0.0], [0.4], [0.9]])
    with torch.no_grad():
        q_s1 = agent.q_dataset_units(torch.from_numpy(S1[None]), actions[None])[0]
        q_s0 = agent.q_dataset_units(torch.from_numpy(S0[None]), actions[None])[0]
    np.testing.assert_allclose(q_s1.numpy(), actions[:, 0].numpy(), atol=0.06)  # Q(S1, a) = a
    expected = DISCOUNT * (N_TARGET - 1) / (N_TARGET + 1)  # 0.48; a mean target gives 0, N = 8 gives 0.62
    np.testing.assert_allclose(q_s0.numpy(), expected, atol=0.06)
