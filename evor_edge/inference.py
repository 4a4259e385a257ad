"""Torch reference of EVOR inference (Algorithms 2 and 3) and QC-1's best-of-N.

This is the ground truth that the exported engine and the torch-free runtime are tested against.
Noise is an argument, so identical noise gives comparable results across implementations.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from evor_edge.agents import BaseAgent, EvorAgent, QCAgent


def q_star(returns: torch.Tensor, tau_r: float) -> torch.Tensor:
    """Eq. 39: Q* = tau_R * log( (1/N) sum_j exp(z_j / tau_R) ) over the last axis, computed stably.

    tau_R -> 0 gives max_j z_j; tau_R -> inf gives mean_j z_j (tau_R = inf is accepted as the mean).
    """
    if math.isinf(tau_r):
        return returns.mean(dim=-1)
    if tau_r <= 0:
        raise ValueError("tau_r must be > 0 (use a small value for the max limit)")
    n = returns.shape[-1]
    return tau_r * (torch.logsumexp(returns / tau_r, dim=-1) - math.log(n))


def selection_probabilities(q: torch.Tensor, tau_q: float) -> torch.Tensor:
    """Eq. 40: softmax_i(Q*_i / tau_Q); tau_Q = 0 puts all mass on the (first) argmax."""
    if tau_q == 0:
        return torch.nn.functional.one_hot(q.argmax(dim=-1), q.shape[-1]).to(q.dtype)
    if math.isinf(tau_q):
        return torch.full_like(q, 1.0 / q.shape[-1])
    return torch.softmax(q / tau_q, dim=-1)


@torch.no_grad()
def candidates_and_values(
    agent: BaseAgent, obs: torch.Tensor, action_noise: torch.Tensor, rtg_noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Everything the engine computes. obs [B, obs]; action_noise [B, N_pi, act]; rtg_noise [B, N_pi, N].

    EVOR: returns (actions [B, N_pi, act], returns [B, N_pi, N]); QC: (actions, q [B, N_pi]).
    """
    obs_n = agent.normalize_obs(obs)
    actions = agent.sample_actions(obs_n[:, None, :], action_noise)
    if isinstance(agent, EvorAgent):
        if rtg_noise is None:
            raise ValueError("EVOR needs rtg_noise [B, N_pi, N]")
        return actions, agent.sample_returns(obs_n, actions, rtg_noise)
    if isinstance(agent, QCAgent):
        return actions, agent.q_dataset_units(obs_n, actions)
    raise TypeError(f"unsupported agent {type(agent).__name__}")


class TorchPolicy:
    """Closed-loop policy on the torch model: same noise layout and selection as the runtime."""

    def __init__(
        self, agent: BaseAgent, num_candidates: int | None = None, num_rtg: int | None = None,
        tau_r: float | None = None, tau_q: float | None = None, seed: int = 0,
    ):
        cfg = agent.config
        self.agent = agent.eval()
        self.num_candidates = num_candidates or cfg.num_candidates
        self.num_rtg = num_rtg or cfg.num_rtg_eval
        self.tau_r = cfg.tau_r if tau_r is None else tau_r
        self.tau_q = cfg.tau_q if tau_q is None else tau_q
        self.rng = np.random.default_rng(seed)

    def act_batch(self, obs: np.ndarray) -> np.ndarray:
        device = self.agent.action_low.device  # noise is drawn on the host (same draws on every device)
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32)).to(device)
        batch = obs_t.shape[0]
        act_dim = self.agent.spec.act_dim
        action_noise = torch.from_numpy(
            self.rng.standard_normal((batch, self.num_candidates, act_dim), dtype=np.float32)
        ).to(device)
        rtg_noise = None
        if isinstance(self.agent, EvorAgent):
            rtg_noise = torch.from_numpy(
                self.rng.standard_normal((batch, self.num_candidates, self.num_rtg), dtype=np.float32)
            ).to(device)
        actions, values = candidates_and_values(self.agent, obs_t, action_noise, rtg_noise)
        actions, values = actions.cpu(), values.cpu()
        q = q_star(values, self.tau_r) if rtg_noise is not None else values
        if isinstance(self.agent, QCAgent):
            index = q.argmax(dim=-1)  # QC-1 is best-of-N (Eq. 42)
        else:
            probs = selection_probabilities(q, self.tau_q).numpy().astype(np.float64)
            probs /= probs.sum(axis=-1, keepdims=True)
            index = torch.as_tensor([self.rng.choice(len(p), p=p) for p in probs])
        return actions[torch.arange(batch), index].numpy()

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.act_batch(np.asarray(obs, dtype=np.float32)[None])[0]
