"""QC-1 (Li et al. 2025, chunk length 1): standard TD Q-ensemble + best-of-N over base-policy samples.

Target (Eq. 43 with k = 1): y = r + gamma * m * Q_bar(x', a'*), a'* = argmax over N samples of
pi_base(.|x') of the aggregated target Q. Q is kept in the same normalised return units as EVOR
(`ReturnScaler`), under which the Bellman target is affine (see `ReturnScaler.bellman_target`).
"""

from __future__ import annotations

import torch

from evor_edge.agents.common import AgentSpec, BaseAgent, Batch, Metrics, Noise, frozen_copy
from evor_edge.networks import QEnsemble


class QCAgent(BaseAgent):
    def __init__(self, spec: AgentSpec):
        super().__init__(spec)
        cfg = spec.config
        self.critic = QEnsemble(spec.obs_dim, spec.act_dim, cfg.hidden_dims, cfg.qc_ensemble)
        self.target_critic = frozen_copy(self.critic)
        self.build_optimizers()

    def aggregate(self, q: torch.Tensor) -> torch.Tensor:
        return q.min(dim=0).values if self.config.qc_q_agg == "min" else q.mean(dim=0)

    def q_values(self, obs_n: torch.Tensor, actions: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Aggregated Q in normalised units; obs_n broadcasts against actions' leading dims."""
        net = self.target_critic if target else self.critic
        obs_n = obs_n.expand(*actions.shape[:-1], obs_n.shape[-1])
        return self.aggregate(net(obs_n, actions))

    def q_dataset_units(self, obs_n: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs_n [B, obs], actions [B, N_pi, act] -> Q [B, N_pi] in dataset return units."""
        return self.spec.returns.denormalize(self.q_values(obs_n[:, None, :], actions))

    def sample_critic_noise(self, batch_size: int, generator: torch.Generator | None) -> Noise:
        """The base policy's noise for the best-of-N target candidates at x'."""
        shape = (batch_size, self.config.qc_target_candidates, self.spec.act_dim)
        return {"target_candidate_noise": torch.randn(shape, generator=generator, device=self.action_low.device)}

    def critic_loss(self, batch: Batch, noise: Noise) -> tuple[torch.Tensor, Metrics]:
        """TD regression of every ensemble head onto y = r + gamma m max_i Q_bar(x', a'_i) (Eq. 43, k = 1)."""
        obs_n = self.normalize_obs(batch["observations"])
        with torch.no_grad():
            next_obs_n = self.normalize_obs(batch["next_observations"])[:, None, :]
            candidates = self.sample_actions(next_obs_n, noise["target_candidate_noise"])
            next_q = self.q_values(next_obs_n, candidates, target=True).max(dim=1).values
            target = self.spec.returns.bellman_target(batch["rewards"], batch["bootstrap"], next_q)
        q = self.critic(obs_n, batch["actions"])
        loss = ((q - target.unsqueeze(0)) ** 2).mean(dim=1).sum()
        return loss, {"q_mean": q.detach().mean()}
