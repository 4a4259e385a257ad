"""Flow-based TD (EvorAgent, sample-based target) against closed-form return distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_mdp import ONE_HOT, make_transitions, sample_true_returns, true_mean, wasserstein1

from evor_edge.agents import AgentSpec, EvorAgent
from evor_edge.config import TrainConfig
from evor_edge.normalization import ObsNormalizer, ReturnScaler

DISCOUNT = 0.8
CASES = [(0, 0.5), (0, -0.5), (1, 0.0), (2, 0.0)]


@pytest.fixture(scope="module")
def trained_agent() -> EvorAgent:
    torch.manual_seed(0)
    cfg = TrainConfig(hidden_dims=(128, 128, 128), discount=DISCOUNT, batch_size=256, learning_rate=1e-3,
                      target_ema=0.02, euler_steps=10)
    spec = AgentSpec(cfg, 3, 1, (-1.0,), (1.0,), ObsNormalizer((0.0,) * 3, (1.0,) * 3), ReturnScaler(1.0, 2.5))
    agent = EvorAgent(spec)
    rng = np.random.default_rng(0)
    data = {k: torch.from_numpy(v) for k, v in make_transitions(50_000, rng, DISCOUNT).items()}
    gen = torch.Generator().manual_seed(0)
    for _ in range(3000):
        idx = torch.randint(0, 50_000, (256,), generator=gen)
        agent.update({k: v[idx] for k, v in data.items()}, gen)
    return agent


@pytest.mark.slow
def test_flow_td_matches_closed_form_return_distribution(trained_agent: EvorAgent) -> None:
    rng = np.random.default_rng(1)
    truths = {case: sample_true_returns(*case, DISCOUNT, 200_000, rng) for case in CASES}
    everything = np.concatenate(list(truths.values()))
    return_range = float(np.quantile(everything, 0.999) - np.quantile(everything, 0.001))
    for state, action in CASES:
        obs = torch.from_numpy(ONE_HOT[[state]])
        with torch.no_grad():
            z = trained_agent.sample_returns(obs, torch.tensor([[[action]]]), torch.randn(1, 1, 8000))[0, 0].numpy()
        w1 = wasserstein1(z, truths[(state, action)])
        mean_err = abs(float(z.mean()) - true_mean(state, action, DISCOUNT))
        assert w1 < 0.05 * return_range, (state, action, w1, return_range)
        assert mean_err < 0.02 * return_range, (state, action, mean_err, return_range)


@pytest.mark.slow
def test_flow_td_separates_actions(trained_agent: EvorAgent) -> None:
    """Z(A, a>0) and Z(A, a<0) differ by 0.6 in mean: the critic must condition on the action."""
    obs = torch.from_numpy(ONE_HOT[[0]])
    noise = torch.randn(1, 2, 4000)
    with torch.no_grad():
        z = trained_agent.sample_returns(obs, torch.tensor([[[0.5], [-0.5]]]), noise)[0].numpy()
    assert z[0].mean() - z[1].mean() == pytest.approx(0.6, abs=0.1)
