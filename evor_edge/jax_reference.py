"""The same EVOR / QC-1 training update written in JAX + `jax.jit`, the framework of the official QC and
FQL code, for `benchmarks/train_throughput.py` (steps/s of our torch step against it on the same device).

It mirrors `evor_edge.agents` exactly (same networks: Linear -> exact GELU (-> LayerNorm) blocks, same
losses, one backward pass over the summed loss, Adam (Table 3), target EMA); `tests/test_jax_reference.py`
checks its losses and gradients against the torch agent on identical weights, batch and noise. Not used
for training: optional, imported only when jax is installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evor_edge.agents import BaseAgent, EvorAgent, QCAgent

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
LAYER_NORM_EPS = 1e-5


def _jax() -> Any:
    import jax  # noqa: F401  (optional dependency)

    return jax


def mlp_params_from_torch(mlp: Any) -> list[dict[str, Any]]:
    """A torch `evor_edge.networks.MLP` as a list of layer dicts (W stored [in, out])."""
    import jax.numpy as jnp
    from torch import nn

    layers: list[dict[str, Any]] = []
    for module in mlp.net:
        if isinstance(module, nn.Linear):
            layers.append({"w": jnp.asarray(module.weight.detach().cpu().numpy().T),
                           "b": jnp.asarray(module.bias.detach().cpu().numpy())})
        elif isinstance(module, nn.LayerNorm):
            layers[-1]["ln_scale"] = jnp.asarray(module.weight.detach().cpu().numpy())
            layers[-1]["ln_bias"] = jnp.asarray(module.bias.detach().cpu().numpy())
    return layers


def params_from_torch(agent: BaseAgent) -> dict[str, Any]:
    """Online and target weights of a torch agent as JAX pytrees."""
    if isinstance(agent, EvorAgent):
        critic, target = mlp_params_from_torch(agent.critic.mlp), mlp_params_from_torch(agent.target_critic.mlp)
    elif isinstance(agent, QCAgent):
        critic = [mlp_params_from_torch(h) for h in agent.critic.heads]
        target = [mlp_params_from_torch(h) for h in agent.target_critic.heads]
    else:
        raise TypeError(type(agent).__name__)
    return {"online": {"actor": mlp_params_from_torch(agent.actor.mlp), "critic": critic}, "target": target}


def mlp_apply(layers: list[dict[str, Any]], x: Any) -> Any:
    import jax
    import jax.numpy as jnp

    for layer in layers[:-1]:
        x = jax.nn.gelu(x @ layer["w"] + layer["b"], approximate=False)
        if "ln_scale" in layer:
            mean = x.mean(-1, keepdims=True)
            var = ((x - mean) ** 2).mean(-1, keepdims=True)
            x = (x - mean) / jnp.sqrt(var + LAYER_NORM_EPS) * layer["ln_scale"] + layer["ln_bias"]
    return x @ layers[-1]["w"] + layers[-1]["b"]


class JaxUpdate:
    """The update of a torch agent's configuration as pure JAX functions; `step` is jitted."""

    def __init__(self, agent: BaseAgent):
        self.kind = "evor" if isinstance(agent, EvorAgent) else "qc"
        cfg, spec = agent.config, agent.spec
        self.cfg = cfg
        self.act_dim = spec.act_dim
        self.obs_mean = np.asarray(spec.obs_norm.mean, np.float32)
        self.obs_std = np.asarray(spec.obs_norm.std, np.float32)
        self.low = np.asarray(spec.action_low, np.float32)
        self.high = np.asarray(spec.action_high, np.float32)
        self.center, self.half = spec.returns.center, spec.returns.half_width

    # -- pieces mirroring evor_edge.agents ------------------------------------------------------------
    def _norm(self, obs: Any) -> Any:
        return (obs - self.obs_mean) / self.obs_std

    def _euler(self, velocity: Any, x: Any) -> Any:
        import jax.numpy as jnp

        steps = self.cfg.euler_steps
        for m in range(steps):
            t = jnp.full((*x.shape[:-1], 1), m / steps, x.dtype)
            x = x + velocity(x, t) / steps
        return x

    def _sample_actions(self, actor: Any, obs_n: Any, noise: Any) -> Any:
        import jax.numpy as jnp

        obs_n = jnp.broadcast_to(obs_n, (*noise.shape[:-1], obs_n.shape[-1]))
        actions = self._euler(lambda a, t: mlp_apply(actor, jnp.concatenate([obs_n, a, t], -1)), noise)
        return jnp.clip(actions, self.low, self.high)

    def _bellman(self, reward: Any, bootstrap: Any, next_u: Any) -> Any:
        return (reward - self.center * (1.0 - bootstrap)) / self.half + bootstrap * next_u

    def losses(self, online: dict[str, Any], target: Any, batch: dict[str, Any], noise: dict[str, Any]
               ) -> tuple[Any, dict[str, Any]]:
        """The summed loss of `BaseAgent.losses` (actor Eq. 12 + the critic's) and its metrics."""
        import jax
        import jax.numpy as jnp

        obs_n = self._norm(batch["observations"])
        x0, t = noise["actor_x0"], noise["actor_t"]
        x_t = (1.0 - t) * x0 + t * batch["actions"]
        v = mlp_apply(online["actor"], jnp.concatenate([obs_n, x_t, t], -1))
        actor_loss = ((v - (batch["actions"] - x0)) ** 2).sum(-1).mean()
        next_obs_n = self._norm(batch["next_observations"])
        actor_sg = jax.lax.stop_gradient(online["actor"])
        if self.kind == "evor":
            z0, tc = noise["z0"], noise["critic_t"]
            next_a = self._sample_actions(actor_sg, next_obs_n, noise["next_action_noise"])
            next_u = self._euler(lambda z, tt: mlp_apply(target, jnp.concatenate([next_obs_n, next_a, z, tt], -1)), z0)
            z1 = jax.lax.stop_gradient(self._bellman(batch["rewards"][:, None], batch["bootstrap"][:, None], next_u))
            z_t = (1.0 - tc) * z0 + tc * z1
            pred = mlp_apply(online["critic"], jnp.concatenate([obs_n, batch["actions"], z_t, tc], -1))
            critic_loss = ((pred - (z1 - z0)) ** 2).mean()
            metrics = {"target_mean": z1.mean()}
        else:
            candidates = self._sample_actions(actor_sg, next_obs_n[:, None, :], noise["target_candidate_noise"])
            obs_c = jnp.broadcast_to(next_obs_n[:, None, :], (*candidates.shape[:-1], next_obs_n.shape[-1]))
            qs = jnp.stack([mlp_apply(h, jnp.concatenate([obs_c, candidates], -1))[..., 0] for h in target])
            q_agg = qs.min(0) if self.cfg.qc_q_agg == "min" else qs.mean(0)
            y = jax.lax.stop_gradient(self._bellman(batch["rewards"], batch["bootstrap"], q_agg.max(1)))
            x = jnp.concatenate([obs_n, batch["actions"]], -1)
            q = jnp.stack([mlp_apply(h, x)[..., 0] for h in online["critic"]])
            critic_loss = ((q - y[None]) ** 2).mean(1).sum()
            metrics = {"q_mean": q.mean()}
        return actor_loss + critic_loss, {"actor_loss": actor_loss, "critic_loss": critic_loss, **metrics}

    def sample_noise(self, key: Any, batch_size: int) -> dict[str, Any]:
        import jax

        keys = jax.random.split(key, 5)
        noise = {"actor_x0": jax.random.normal(keys[0], (batch_size, self.act_dim)),
                 "actor_t": jax.random.uniform(keys[1], (batch_size, 1))}
        if self.kind == "evor":
            noise.update(z0=jax.random.normal(keys[2], (batch_size, 1)),
                         next_action_noise=jax.random.normal(keys[3], (batch_size, self.act_dim)),
                         critic_t=jax.random.uniform(keys[4], (batch_size, 1)))
        else:
            noise["target_candidate_noise"] = jax.random.normal(
                keys[2], (batch_size, self.cfg.qc_target_candidates, self.act_dim))
        return noise

    def init_state(self, params: dict[str, Any], seed: int = 0) -> dict[str, Any]:
        import jax
        import jax.numpy as jnp

        def zeros() -> Any:  # distinct buffers for m and v (the jitted step donates its input state)
            return jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, p.dtype), params["online"])

        return {"online": params["online"], "target": params["target"], "m": zeros(), "v": zeros(),
                "count": jnp.zeros((), jnp.int32), "key": jax.random.PRNGKey(seed)}

    def make_step(self, data: dict[str, Any]) -> Any:
        """A jitted `state -> (state, metrics)`: minibatch indices, noise, grads, Adam, EMA on the device."""
        import jax
        import jax.numpy as jnp

        cfg = self.cfg
        size = int(data["observations"].shape[0])
        beta1, beta2 = ADAM_BETAS

        def step(state: dict[str, Any], data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
            key, k_index, k_noise = jax.random.split(state["key"], 3)
            index = jax.random.randint(k_index, (cfg.batch_size,), 0, size)
            batch = {k: v[index] for k, v in data.items()}
            noise = self.sample_noise(k_noise, cfg.batch_size)
            (_, metrics), grads = jax.value_and_grad(self.losses, has_aux=True)(
                state["online"], state["target"], batch, noise)
            count = state["count"] + 1
            m = jax.tree_util.tree_map(lambda m_, g: beta1 * m_ + (1 - beta1) * g, state["m"], grads)
            v = jax.tree_util.tree_map(lambda v_, g: beta2 * v_ + (1 - beta2) * g * g, state["v"], grads)
            c1, c2 = 1 - beta1 ** count, 1 - beta2 ** count
            online = jax.tree_util.tree_map(
                lambda p, m_, v_: p - cfg.learning_rate * (m_ / c1) / (jnp.sqrt(v_ / c2) + ADAM_EPS),
                state["online"], m, v)
            target = jax.tree_util.tree_map(lambda t, o: t + cfg.target_ema * (o - t), state["target"],
                                            online["critic"])
            return {"online": online, "target": target, "m": m, "v": v, "count": count, "key": key}, metrics

        jitted = jax.jit(step, donate_argnums=(0,))
        return lambda state: jitted(state, data)
