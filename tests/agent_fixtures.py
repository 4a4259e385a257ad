"""Small random-weight torch agents for export / calibration / variant tests (one builder for all)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evor_edge.agents import AgentSpec, BaseAgent, make_agent
from evor_edge.config import preset_config
from evor_edge.normalization import ObsNormalizer, ReturnScaler

# The observation space of the export / calibration test agents: far from N(0, 1), so normalisation matters.
OBS_DIM, ACT_DIM = 4, 2
OBS_MEAN = (3.0, -2.0, 10.0, 0.5)
OBS_STD = (2.0, 0.25, 5.0, 1.5)


def random_agent(kind: str, obs_dim: int, act_dim: int, *, hidden_dims: Sequence[int], euler_steps: int,
                 obs_mean: Sequence[float], obs_std: Sequence[float], returns: ReturnScaler,
                 low: Sequence[float] | None = None, high: Sequence[float] | None = None, seed: int = 0,
                 **config: object) -> BaseAgent:
    """A `small`-preset agent (eval mode) with non-trivial normalisers and weights scaled up 2x.

    PyTorch's default init gives near-zero flow velocities, so the Euler steps would barely move the
    state and an export bug in them could hide; doubling every 2-D weight makes each step matter.
    """
    cfg = preset_config("small", agent=kind, hidden_dims=tuple(hidden_dims), euler_steps=euler_steps, **config)
    low = tuple(low) if low is not None else (-1.0,) * act_dim
    high = tuple(high) if high is not None else (1.0,) * act_dim
    spec = AgentSpec(cfg, obs_dim, act_dim, low, high, ObsNormalizer(tuple(obs_mean), tuple(obs_std)), returns)
    torch.manual_seed(seed)
    agent = make_agent(spec)
    with torch.no_grad():
        for name, param in agent.named_parameters():
            if name.endswith("weight") and param.ndim == 2:
                param.mul_(2.0)
    return agent.eval()
