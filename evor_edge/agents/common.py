"""What EVOR and QC-1 share: the flow BC base policy (Eq. 12), normalisers, target-network EMA."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from evor_edge.config import TrainConfig
from evor_edge.flow import euler_integrate, flow_matching_loss
from evor_edge.networks import ActorVelocity
from evor_edge.normalization import ObsNormalizer, ReturnScaler

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class AgentSpec:
    """Everything needed to rebuild an agent's networks (stored in the checkpoint JSON)."""

    config: TrainConfig
    obs_dim: int
    act_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    obs_norm: ObsNormalizer
    returns: ReturnScaler

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "action_low": list(self.action_low),
            "action_high": list(self.action_high),
            "obs_norm": self.obs_norm.to_dict(),
            "returns": self.returns.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> AgentSpec:
        return cls(
            config=TrainConfig.from_dict(data["config"]),
            obs_dim=int(data["obs_dim"]),
            act_dim=int(data["act_dim"]),
            action_low=tuple(float(x) for x in data["action_low"]),
            action_high=tuple(float(x) for x in data["action_high"]),
            obs_norm=ObsNormalizer.from_dict(data["obs_norm"]),
            returns=ReturnScaler.from_dict(data["returns"]),
        )


def ema_update(target: nn.Module, online: nn.Module, rate: float) -> None:
    """target <- (1 - rate) target + rate online (Table 3: rate 5e-3)."""
    with torch.no_grad():
        for t_param, o_param in zip(target.parameters(), online.parameters(), strict=True):
            t_param.lerp_(o_param, rate)


def frozen_copy(module: nn.Module) -> nn.Module:
    target = copy.deepcopy(module)
    for param in target.parameters():
        param.requires_grad_(False)
    return target


class BaseAgent(nn.Module):
    """Flow-matching BC actor shared by both agents; subclasses add the value model."""

    def __init__(self, spec: AgentSpec):
        super().__init__()
        self.spec = spec
        self.config = spec.config
        self.actor = ActorVelocity(spec.obs_dim, spec.act_dim, spec.config.hidden_dims)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=spec.config.learning_rate)
        self.register_buffer("action_low", torch.tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(spec.action_high, dtype=torch.float32))

    # -- inference pieces -------------------------------------------------------------------------
    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return self.spec.obs_norm.torch(obs)

    def sample_actions(self, obs_n: torch.Tensor, noise: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Algorithm 3: Euler-integrate the actor from `noise` ([..., act_dim]); clip to the action box.

        obs_n must broadcast against noise on the leading dims (e.g. [B, 1, obs] with noise [B, N_pi, act]).
        """
        steps = steps or self.config.euler_steps
        obs_n = obs_n.expand(*noise.shape[:-1], obs_n.shape[-1])
        actions = euler_integrate(lambda a, t: self.actor(obs_n, a, t), noise, steps)
        return torch.maximum(torch.minimum(actions, self.action_high), self.action_low)

    # -- training ---------------------------------------------------------------------------------
    def actor_loss(self, batch: Batch, generator: torch.Generator | None) -> torch.Tensor:
        """Eq. 12: flow-matching behaviour cloning on the dataset's (x, a)."""
        obs_n = self.normalize_obs(batch["observations"])
        return flow_matching_loss(lambda a, t: self.actor(obs_n, a, t), batch["actions"], generator)

    def update_actor(self, batch: Batch, generator: torch.Generator | None) -> dict[str, float]:
        loss = self.actor_loss(batch, generator)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        return {"actor_loss": float(loss.detach())}

    def update(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, float]:
        metrics = self.update_actor(batch, generator)
        metrics.update(self.update_critic(batch, generator))
        return metrics

    def update_critic(self, batch: Batch, generator: torch.Generator | None) -> dict[str, float]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError
