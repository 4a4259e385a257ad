r"""EVOR's reward-to-go model: a 1-D conditional flow trained by flow-based TD (Algorithm 1, App. B).

Derivation of the target we implement
-------------------------------------
Let Z(x, a) be the discounted reward-to-go of the data policy. The distributional Bellman equation
(Eq. 18/27, with the discount and terminal mask m = 1 - done that the paper leaves implicit) is

    Z(x, a)  =_D  r + gamma * m * Z(X', A'),      X' ~ P(.|x, a),  A' ~ pi_base(.|X').          (B1)

We learn a velocity field s_theta(z | x, a, t) whose ODE dz/dt = s_theta (Eq. 25) carries
z^0 ~ N(0, 1) to z^1 ~ R_theta(.|x, a). Conditional flow matching with linear paths has this property
for ANY coupling q(z^0, z^1) whose marginals are N(0, 1) and the target law p_1: the minimiser of

    E_{(z^0, z^1) ~ q, t ~ U(0,1)} || s(z^t | t) - (z^1 - z^0) ||^2,   z^t = (1 - t) z^0 + t z^1     (B2)

is s*(z | t) = E[z^1 - z^0 | z^t = z], whose flow has marginal p_1 at t = 1 (Lipman et al. 2024,
Thm. on marginal vector fields; Liu et al. 2022, rectified flow). So it suffices to draw exact
samples of the right-hand side of (B1) coupled with the noise:

    z^0 ~ N(0,1);  a' ~ pi_base(.|x');  z'^1 = Euler_M[s_theta_bar(. | x', a', .)](z^0);
    z^1 = r + gamma * m * z'^1                                                                    (B3)

z'^1 is a sample of R_theta_bar(.|x', a') and, because (x, a, r, x') comes from the data, z^1 is a
sample of (T^pi R_theta_bar)(.|x, a), the distributional Bellman operator applied to the target model.
Regressing s_theta with (B2) on (B3) therefore performs one step of distributional policy evaluation;
T^pi is a gamma-contraction in the supremum Wasserstein metric (Bellemare et al. 2017), so the fixed
point is R(.|x, a) (for gamma < 1), with stochastic rewards and transitions handled by sampling.

Why share z^0 between the two flows: a 1-D ODE flow map is monotone increasing in its initial value, so
z^1 = r + gamma * m * phi'(z^0) is monotone in z^0 for fixed (r, x', a'); the coupling is the monotone
(optimal-transport) one when (r, x', a') is deterministic, the conditional paths do not cross, the learned
flow is straight and few Euler steps suffice at inference.

Relation to the paper's velocity-space target (Eq. 19/37): along straight coupled paths the RHS flow
starts at z^0 and ends at r + gamma z'^1, so its velocity is

    (r + gamma * m * z'^1) - z^0 = r + gamma * m * (z'^1 - z^0) - (1 - gamma * m) z^0
                                 = r + gamma * m * s_bar(z'^t | x', a', t) - (1 - gamma * m) z^0,

evaluated at the NEXT flow's own point z'^t = (1 - t) z^0 + t z'^1. Eq. 19 instead uses
r + s_bar(z^t | x', a', t) at the current point z^t, drops gamma and the -(1 - gamma m) z^0 term; it is
exact only in its integral form (Eq. 34) with gamma = 1. (B3) needs no straightness assumption; its cost is
the M target-network evaluations of the Euler integration (batched, no gradient).

All returns are in normalised units u = (z - c) / s (`ReturnScaler`), under which (B1) becomes
u = (r - c (1 - gamma m)) / s + gamma m u'; the noise N(0, 1) then matches the data scale.

Option "mc" (Eq. 13): z^1 is the dataset's Monte-Carlo discounted return from (x, a); exact only for
deterministic dynamics and a single data policy, kept for comparison.
"""

from __future__ import annotations

import torch

from evor_edge.agents.common import AgentSpec, BaseAgent, Batch, Metrics, Noise, frozen_copy
from evor_edge.flow import euler_integrate
from evor_edge.networks import RtgVelocity


class EvorAgent(BaseAgent):
    def __init__(self, spec: AgentSpec):
        super().__init__(spec)
        self.critic = RtgVelocity(spec.obs_dim, spec.act_dim, spec.config.hidden_dims)
        self.target_critic = frozen_copy(self.critic)
        self.build_optimizers()

    def sample_returns_normalized(
        self, obs_n: torch.Tensor, actions: torch.Tensor, z0: torch.Tensor, steps: int | None = None,
        target: bool = False,
    ) -> torch.Tensor:
        """Euler-integrate the reward-to-go flow from z0 ([..., 1]); obs_n / actions broadcast to z0's lead dims."""
        net = self.target_critic if target else self.critic
        lead = z0.shape[:-1]
        obs_n = obs_n.expand(*lead, obs_n.shape[-1])
        actions = actions.expand(*lead, actions.shape[-1])
        return euler_integrate(lambda z, t: net(obs_n, actions, z, t), z0, steps or self.config.euler_steps)

    def sample_returns(self, obs_n: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Algorithm 2, inner loop: N reward-to-go samples per candidate, in dataset return units.

        obs_n [B, obs], actions [B, N_pi, act], noise [B, N_pi, N] -> returns [B, N_pi, N].
        """
        z0 = noise.unsqueeze(-1)
        u = self.sample_returns_normalized(obs_n[:, None, None, :], actions[:, :, None, :], z0)
        return self.spec.returns.denormalize(u.squeeze(-1))

    def sample_critic_noise(self, batch_size: int, generator: torch.Generator | None) -> Noise:
        """z0 shared by the target and the regression (B3), the flow time t, and the next action's noise."""
        device = self.action_low.device
        return {
            "z0": torch.randn((batch_size, 1), generator=generator, device=device),
            "next_action_noise": torch.randn((batch_size, self.spec.act_dim), generator=generator, device=device),
            "critic_t": torch.rand((batch_size, 1), generator=generator, device=device),
        }

    def bootstrap_target(self, batch: Batch, z0: torch.Tensor, next_action_noise: torch.Tensor) -> torch.Tensor:
        """(B3): a normalised sample of r + gamma * m * Z'(x', a') coupled with z0 ([B, 1])."""
        cfg = self.config
        if cfg.reward_model == "mc":
            return self.spec.returns.normalize(batch["mc_returns"]).unsqueeze(-1)
        next_obs_n = self.normalize_obs(batch["next_observations"])
        next_actions = self.sample_actions(next_obs_n, next_action_noise)
        next_u = self.sample_returns_normalized(next_obs_n, next_actions, z0, target=True)
        return self.spec.returns.bellman_target(
            batch["rewards"].unsqueeze(-1), batch["bootstrap"].unsqueeze(-1), next_u
        )

    def critic_loss(self, batch: Batch, noise: Noise) -> tuple[torch.Tensor, Metrics]:
        """Flow matching (B2) of the reward-to-go velocity onto the coupled target sample (B3)."""
        obs_n = self.normalize_obs(batch["observations"])
        z0, t = noise["z0"], noise["critic_t"]
        with torch.no_grad():
            z1 = self.bootstrap_target(batch, z0, noise["next_action_noise"])
        z_t = (1.0 - t) * z0 + t * z1
        pred = self.critic(obs_n, batch["actions"], z_t, t)
        loss = ((pred - (z1 - z0)) ** 2).mean()
        return loss, {"target_mean": z1.mean()}
