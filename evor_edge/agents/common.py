"""What EVOR and QC-1 share: the flow BC base policy (Eq. 12), normalisers, target-network EMA.

One training step is split into two parts so that every step mode (eager, torch.compile, one CUDA
graph replay; `evor_edge.train_step`) runs the same definition:

* `sample_noise(batch_size, generator)`: every random draw of the step (flow noise, times, next-action
  noise), in a fixed order;
* `losses(batch, noise)`: a deterministic function of the batch and that noise, returning the summed
  loss of both networks (their parameters are disjoint, so one backward pass gives each network the
  gradient of its own loss) and the metrics as 0-d tensors (read on the host only when logged).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from evor_edge.config import TrainConfig
from evor_edge.flow import euler_integrate, flow_matching_loss
from evor_edge.networks import ActorVelocity
from evor_edge.normalization import ObsNormalizer, ReturnScaler

Batch = dict[str, torch.Tensor]
Noise = dict[str, torch.Tensor]
Metrics = dict[str, torch.Tensor]


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
    """target <- (1 - rate) target + rate online (Table 3: rate 5e-3), one fused multi-tensor op."""
    with torch.no_grad():
        targets, online_params = list(target.parameters()), list(online.parameters())
        if len(targets) != len(online_params):
            raise ValueError("target and online networks differ in structure")
        torch._foreach_lerp_(targets, online_params, rate)


def adam(params, lr: float, **flags: Any) -> torch.optim.Adam:
    """Adam (Table 3) with implementation flags (fused / capturable / foreach) chosen by the step mode."""
    return torch.optim.Adam(params, lr=lr, **flags)


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
        self.register_buffer("action_low", torch.tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(spec.action_high, dtype=torch.float32))
        # Not persistent: they are in the spec (JSON); buffers follow .to(device), so normalising a batch
        # copies nothing from the host (a CUDA graph cannot capture host-to-device copies).
        self.register_buffer("obs_mean", torch.tensor(spec.obs_norm.mean, dtype=torch.float32), persistent=False)
        self.register_buffer("obs_std", torch.tensor(spec.obs_norm.std, dtype=torch.float32), persistent=False)

    def build_optimizers(self, **flags: Any) -> None:
        """(Re)create the Adam optimisers (call after moving the agent; flags: fused, capturable, foreach)."""
        self.actor_opt = adam(self.actor.parameters(), self.config.learning_rate, **flags)
        self.critic_opt = adam(self.critic.parameters(), self.config.learning_rate, **flags)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_opt": self.actor_opt, "critic_opt": self.critic_opt}

    # -- inference pieces -------------------------------------------------------------------------
    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def sample_actions(self, obs_n: torch.Tensor, noise: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Algorithm 3: Euler-integrate the actor from `noise` ([..., act_dim]); clip to the action box.

        obs_n must broadcast against noise on the leading dims (e.g. [B, 1, obs] with noise [B, N_pi, act]).
        """
        steps = steps or self.config.euler_steps
        obs_n = obs_n.expand(*noise.shape[:-1], obs_n.shape[-1])
        actions = euler_integrate(lambda a, t: self.actor(obs_n, a, t), noise, steps)
        return torch.maximum(torch.minimum(actions, self.action_high), self.action_low)

    # -- training ---------------------------------------------------------------------------------
    def sample_noise(self, batch_size: int, generator: torch.Generator | None = None) -> Noise:
        """Every random draw of one update, in a fixed order (actor first, then the critic's)."""
        device = self.action_low.device
        return {
            "actor_x0": torch.randn((batch_size, self.spec.act_dim), generator=generator, device=device),
            "actor_t": torch.rand((batch_size, 1), generator=generator, device=device),
            **self.sample_critic_noise(batch_size, generator),
        }

    def actor_loss(self, batch: Batch, noise: Noise) -> torch.Tensor:
        """Eq. 12: flow-matching behaviour cloning on the dataset's (x, a)."""
        obs_n = self.normalize_obs(batch["observations"])
        return flow_matching_loss(lambda a, t: self.actor(obs_n, a, t), batch["actions"],
                                  x0=noise["actor_x0"], t=noise["actor_t"])

    def losses(self, batch: Batch, noise: Noise) -> tuple[torch.Tensor, Metrics]:
        """Actor loss + critic loss (disjoint parameters) and the step's metrics as 0-d tensors."""
        actor_loss = self.actor_loss(batch, noise)
        critic_loss, metrics = self.critic_loss(batch, noise)
        metrics = {"actor_loss": actor_loss.detach(), "critic_loss": critic_loss.detach(), **metrics}
        return actor_loss + critic_loss, metrics

    def apply_gradients(self, loss: torch.Tensor) -> None:
        """One backward pass, both Adam steps, then the target network's EMA."""
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        self.critic_opt.step()
        ema_update(self.target_critic, self.critic, self.config.target_ema)

    def update(self, batch: Batch, generator: torch.Generator | None = None) -> Metrics:
        """One full training step on `batch` (eager); metrics stay on the device as 0-d tensors."""
        noise = self.sample_noise(batch["observations"].shape[0], generator)
        loss, metrics = self.losses(batch, noise)
        self.apply_gradients(loss)
        return metrics

    def update_actor(self, batch: Batch, generator: torch.Generator | None = None) -> Metrics:
        """Behaviour cloning alone (the actor's half of `update`)."""
        noise = self.sample_noise(batch["observations"].shape[0], generator)
        loss = self.actor_loss(batch, noise)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        return {"actor_loss": loss.detach()}

    def sample_critic_noise(self, batch_size: int, generator: torch.Generator | None) -> Noise:
        raise NotImplementedError

    def critic_loss(self, batch: Batch, noise: Noise) -> tuple[torch.Tensor, Metrics]:
        raise NotImplementedError
