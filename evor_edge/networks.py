"""MLPs for the actor velocity field, the reward-to-go velocity field and the QC Q-ensemble.

Layout follows FQL / QC (Park et al. 2025; Li et al. 2025): Linear -> GELU (-> LayerNorm on value
networks) per hidden layer, a linear head. The first layer sees a plain concatenation
[obs_norm, action, (z_t), t], which lets the exporter split its weight by columns and hoist the parts
that do not change inside the Euler loops.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, layer_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden_dims:
            layers.append(nn.Linear(last, width))
            layers.append(nn.GELU())
            if layer_norm:
                layers.append(nn.LayerNorm(width))
            last = width
        layers.append(nn.Linear(last, out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.layer_norm = layer_norm

    @property
    def first(self) -> nn.Linear:
        return self.net[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ActorVelocity(nn.Module):
    """v_phi(a^t, t | x): the base policy's flow-matching velocity field (Eq. 12)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dims: Sequence[int]):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.mlp = MLP(obs_dim + act_dim + 1, hidden_dims, act_dim, layer_norm=False)

    def forward(self, obs: torch.Tensor, a_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([obs, a_t, t], dim=-1))


class RtgVelocity(nn.Module):
    """s_theta(z^t | x, a, t): velocity of the 1-D reward-to-go flow (Eqs. 19-20, 25)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dims: Sequence[int]):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.mlp = MLP(obs_dim + act_dim + 2, hidden_dims, 1, layer_norm=True)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([obs, action, z_t, t], dim=-1))


class QEnsemble(nn.Module):
    """K independent Q(x, a) heads (QC uses K = 2), in normalised return units."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dims: Sequence[int], ensemble: int = 2):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.heads = nn.ModuleList(
            MLP(obs_dim + act_dim, hidden_dims, 1, layer_norm=True) for _ in range(ensemble)
        )

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([head(x).squeeze(-1) for head in self.heads], dim=0)
