r"""Export-only torch modules: the whole inference of Algorithm 2 (minus the selection) as one graph.

What the engine computes (kind "evor"), for inputs obs [B, obs_dim], action_noise [B, N_pi, act_dim],
rtg_noise [B, N_pi, N]:

    x_n     = (obs - mean) / std                                   observation normalisation
    a^0     = action_noise;  a^{m+1} = a^m + v_phi(a^m, m/M | x_n) / M,   m = 0..M-1    (Algorithm 3)
    actions = clip(a^M, low, high)                                 [B, N_pi, act_dim]
    z^0     = rtg_noise;     z^{m+1} = z^m + s_theta(z^m | x_n, a_i, m/M) / M             (Algorithm 2,
    returns = denormalize(z^M)                                     [B, N_pi, N]           inner loop)

Kind "qc" (QC-1 baseline): outputs actions and q [B, N_pi] = aggregate_k Q_k(x_n, a_i), denormalised.

Both Euler loops are unrolled at trace time (M fixed at export, t = m/M a Python constant), so the
graph has no Loop/If/Scan. Loop-invariant work is hoisted out of the unrolled loops by splitting the
first Linear layer of each network by input columns (networks see a plain concatenation):

    actor   W [obs | act | t]:        h_x = W_obs x_n + b                once per observation
                                      pre_m = W_act a^m + (h_x + W_t t_m)     per step, per candidate
    critic  W [obs | act | z | t]:    g_i = W_obs x_n + b + W_act a_i    once per candidate
                                      pre_m = z^m * w_z + (g_i + W_t t_m)     per step, per sample
    Q       W [obs | act]:            h_x = W_obs x_n + b                once per observation

W_t t_m is a constant vector per step (folded at export); the critic's z column is rank 1, an
elementwise Mul instead of a MatMul. Everything else is the networks' own layers (exact GELU, which the
TorchScript exporter writes as Erf at opset 17; LayerNormalization on value networks). The Euler state
stays float32. The first layer's pre-activation is formed by broadcasting in the [B, N_pi(, N), hidden]
layout; the rest of each network runs on rows flattened to 2-D [B*N_pi(*N), hidden] (one Gemm per layer)
and the velocity is reshaped back to the Euler state's shape.

Export-time variants of the reward-to-go flow (defaults = the paper's computation, M Euler steps):

* critic_steps K / critic_solver: the critic's ODE dz/dt = s(z | x, a, t) is integrated with K steps of
  "euler" (1 velocity evaluation per step), "heun" (explicit trapezoid, 2 evaluations: t_m and t_m + h) or
  "midpoint" (2 evaluations: t_m and t_m + h/2), h = 1/K. The actor always keeps M Euler steps, so the
  candidates are the paper's. See `integrate_flow`.
* prune (K1, N1): score every candidate on the first N1 columns of rtg_noise, keep the K1 best with TopK
  (score = logsumexp(returns / tau_screen), the Q* ranking at the export's tau_R), gather their actions,
  hoisted critic biases and rtg_noise rows (GatherElements) and integrate all N columns for the survivors.
  Pruned engines output actions [B, K1, act_dim], returns [B, K1, N] (survivors in descending screen
  score) and survivor_index [B, K1] (int64, each survivor's index among the N_pi candidates: the runtime,
  calibration parity and benchmarks trace survivors back through it); the manifest's extra["prune"] says
  so and the runtime selects among the survivors. With the
  same rtg_noise, a survivor's returns are exactly what the full engine computes for that candidate, so
  the pruned engine picks the full engine's choice whenever that candidate survives the screen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from evor_edge.agents import BaseAgent, EvorAgent, QCAgent
from evor_edge.networks import MLP
from evor_edge.runtime.manifest import SURVIVOR_INDEX  # a pruned engine's third output: [B, K1] int64

INPUTS = {"evor": ("obs", "action_noise", "rtg_noise"), "qc": ("obs", "action_noise")}
CRITIC_SOLVERS = ("euler", "heun", "midpoint")
EVALS_PER_STEP = {"euler": 1, "heun": 2, "midpoint": 2}
OUTPUTS = {"evor": ("actions", "returns"), "qc": ("actions", "q")}


def output_names(kind: str, pruned: bool = False) -> list[str]:
    """The engine's outputs, in order: a pruned EVOR engine adds survivor_index."""
    return [*OUTPUTS[kind], *((SURVIVOR_INDEX,) if pruned else ())]
DYNAMIC_AXES_NAMES = ("batch", "num_candidates", "num_rtg")


def agent_kind(agent: BaseAgent) -> str:
    """"evor" or "qc" for a loaded agent (TypeError for anything else)."""
    if isinstance(agent, EvorAgent):
        return "evor"
    if isinstance(agent, QCAgent):
        return "qc"
    raise TypeError(f"unsupported agent {type(agent).__name__}")


def _const(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().to(torch.float32).contiguous()


class _Tail(nn.Module):
    """Layers after the first Linear of an `MLP`: GELU (-> LayerNorm) (-> Linear -> GELU (-> LN))... -> head.

    Weights are stored pre-transposed ([in, out]) so every layer exports as MatMul + Add on 2-D weights.
    """

    def __init__(self, mlp: MLP, network: str):
        super().__init__()
        self.network = network  # the name export records for this body's nodes (`export.membership`)
        layers = list(mlp.net)
        self.layer_norm = bool(mlp.layer_norm)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.ln_weights = nn.ParameterList()
        self.ln_biases = nn.ParameterList()
        self.ln_eps: list[float] = []
        self.ln_shapes: list[tuple[int, ...]] = []  # Python ints: no Shape/Gather in the traced graph
        # layers = [Linear, GELU, (LN), Linear, GELU, (LN), ..., Linear]; skip the first Linear.
        for layer in layers[1:]:
            if isinstance(layer, nn.Linear):
                self.weights.append(nn.Parameter(_const(layer.weight.t()), requires_grad=False))
                self.biases.append(nn.Parameter(_const(layer.bias), requires_grad=False))
            elif isinstance(layer, nn.LayerNorm):
                self.ln_weights.append(nn.Parameter(_const(layer.weight), requires_grad=False))
                self.ln_biases.append(nn.Parameter(_const(layer.bias), requires_grad=False))
                self.ln_eps.append(float(layer.eps))
                self.ln_shapes.append(tuple(int(d) for d in layer.normalized_shape))
            elif not isinstance(layer, nn.GELU) or layer.approximate != "none":
                raise TypeError(f"cannot export MLP layer {layer!r}")
        self.widths = [int(w.shape[0]) for w in self.weights] + [int(self.weights[-1].shape[1])]

    def forward(self, pre: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """pre: the first layer's pre-activation [..., hidden_0] -> network output [..., out].

        With `like` (a tensor of the output's shape) the rows are flattened to 2-D first, so each layer
        is one Gemm (bias fused) on [rows, width], and the result is reshaped to like's shape; measured
        ~4% faster in onnxruntime than N-D MatMul + Add at the paper config. The flattening reshape has
        a constant target [-1, width]; only the final reshape reads a (cheap) Shape.
        """
        x = pre.reshape(-1, self.widths[0]) if like is not None else pre
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = F.gelu(x)
            if self.layer_norm:
                x = F.layer_norm(x, self.ln_shapes[i], self.ln_weights[i], self.ln_biases[i], self.ln_eps[i])
            x = torch.addmm(b, x, w) if like is not None else torch.matmul(x, w) + b
        return x.reshape_as(like) if like is not None else x


def _split_first(mlp: MLP, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Column blocks of the first Linear's weight, each transposed to [block, hidden_0]."""
    weight = mlp.first.weight.detach()
    if weight.shape[1] != sum(sizes):
        raise ValueError(f"first layer takes {weight.shape[1]} inputs, expected {sum(sizes)}")
    return [_const(block.t()) for block in torch.split(weight, list(sizes), dim=1)]


def _buffer(module: nn.Module, name: str, value: torch.Tensor) -> None:
    module.register_buffer(name, _const(value), persistent=False)


def _f32(x: float) -> float:
    """x rounded to float32 (time constants are built as the torch reference builds them)."""
    return float(torch.tensor(x, dtype=torch.float32))


def solver_stage_times(steps: int, solver: str) -> list[tuple[float, float]]:
    """(t_m, t_stage) per step: t_stage = t_m (euler), t_m + h (heun) or t_m + h / 2 (midpoint); h = 1/steps."""
    if solver not in CRITIC_SOLVERS:
        raise ValueError(f"unknown critic solver {solver!r}; choose one of {CRITIC_SOLVERS}")
    if steps < 1:
        raise ValueError(f"critic steps must be >= 1, got {steps}")
    h = 1.0 / steps
    offset = {"euler": 0.0, "heun": 1.0, "midpoint": 0.5}[solver]
    return [(_f32(m * h), _f32((m + offset) * h)) for m in range(steps)]


def integrate_flow(
    velocity: Callable[[torch.Tensor, float], torch.Tensor], z0: torch.Tensor, steps: int, solver: str = "euler",
) -> torch.Tensor:
    """Integrate dz/dt = velocity(z, t) from t = 0 to 1 in `steps` uniform steps (h = 1/steps), unrolled.

    euler:    z += h v(z, t_m)                                           (1 evaluation per step)
    heun:     k1 = v(z, t_m); k2 = v(z + h k1, t_m + h); z += h/2 (k1 + k2)     (2, second order)
    midpoint: k1 = v(z, t_m); k2 = v(z + h/2 k1, t_m + h/2); z += h k2          (2, second order)

    `velocity` gets t as a Python float (float32-rounded), so the exporter can fold per-time constants.
    """
    h = 1.0 / steps
    z = z0
    for t, t_stage in solver_stage_times(steps, solver):
        k1 = velocity(z, t)
        if solver == "euler":
            z = z + h * k1
        elif solver == "heun":
            k2 = velocity(z + h * k1, t_stage)
            z = z + (0.5 * h) * (k1 + k2)
        else:
            k2 = velocity(z + (0.5 * h) * k1, t_stage)
            z = z + h * k2
    return z


class _ObsAndBounds(nn.Module):
    """Observation normalisation, action box and return scaling shared by both engine kinds."""

    def __init__(self, agent: BaseAgent, euler_steps: int):
        super().__init__()
        if euler_steps < 1:
            raise ValueError(f"euler_steps must be >= 1, got {euler_steps}")
        spec = agent.spec
        self.euler_steps = int(euler_steps)
        self.dt = 1.0 / self.euler_steps
        # t_m = m * dt, as the torch reference (evor_edge.flow.euler_integrate) builds it in float32.
        self.times = [float(torch.tensor(m * self.dt, dtype=torch.float32)) for m in range(self.euler_steps)]
        self.obs_dim, self.act_dim = int(spec.obs_dim), int(spec.act_dim)
        _buffer(self, "obs_mean", torch.tensor(spec.obs_norm.mean, dtype=torch.float64))
        _buffer(self, "obs_std", torch.tensor(spec.obs_norm.std, dtype=torch.float64))
        _buffer(self, "action_low", agent.action_low)
        _buffer(self, "action_high", agent.action_high)
        self.return_center = float(spec.returns.center)
        self.return_half_width = float(spec.returns.half_width)

        actor = agent.actor.mlp
        w_obs, w_act, w_t = _split_first(actor, (self.obs_dim, self.act_dim, 1))
        _buffer(self, "actor_w_obs", w_obs)
        _buffer(self, "actor_w_act", w_act)
        _buffer(self, "actor_b", actor.first.bias.detach())
        for m, t in enumerate(self.times):
            _buffer(self, f"actor_t{m}", w_t[0] * t)  # W_t * t_m: one constant per unrolled step
        self.actor_tail = _Tail(actor, "actor")

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def sample_actions(self, obs_n: torch.Tensor, action_noise: torch.Tensor) -> torch.Tensor:
        """Algorithm 3 (forward Euler, M steps unrolled) from action_noise [B, N_pi, act]; clipped."""
        h_x = (torch.matmul(obs_n, self.actor_w_obs) + self.actor_b).unsqueeze(1)  # [B, 1, H]
        a = action_noise
        for m, t in enumerate(self.times):
            bias = h_x + getattr(self, f"actor_t{m}") if t != 0.0 else h_x  # [B, 1, H], per observation
            v = self.actor_tail(torch.matmul(a, self.actor_w_act) + bias, a)
            a = a + self.dt * v
        return torch.maximum(torch.minimum(a, self.action_high), self.action_low)

    def denormalize_returns(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.return_half_width + self.return_center


class EvorEngine(_ObsAndBounds):
    """(obs, action_noise, rtg_noise) -> (actions, returns): Algorithms 2-3 without the selection.

    critic_steps / critic_solver / prune: see the module docstring (defaults: M Euler steps, no pruning).
    """

    kind = "evor"

    def __init__(self, agent: EvorAgent, euler_steps: int, critic_steps: int | None = None,
                 critic_solver: str = "euler", prune: tuple[int, int] | None = None,
                 prune_tau_r: float | None = None):
        super().__init__(agent, euler_steps)
        self.critic_steps = int(euler_steps if critic_steps is None else critic_steps)
        self.critic_solver = str(critic_solver)
        self.critic_dt = 1.0 / self.critic_steps
        stages = solver_stage_times(self.critic_steps, self.critic_solver)  # validates steps and solver
        critic = agent.critic.mlp
        w_obs, w_act, w_z, w_t = _split_first(critic, (self.obs_dim, self.act_dim, 1, 1))
        _buffer(self, "critic_w_obs", w_obs)
        _buffer(self, "critic_w_act", w_act)
        _buffer(self, "critic_w_z", w_z[0])  # rank-1 column: z * w_z
        _buffer(self, "critic_b", critic.first.bias.detach())
        # W_t * t for every time the solver evaluates at (t = 0 needs none): critic_t{m} on the step grid
        # (the names the default Euler engine always had), critic_s{j} for extra stage times.
        self._critic_time_buffer: dict[float, str] = {}
        for m, (t, _) in enumerate(stages):
            if t != 0.0 and t not in self._critic_time_buffer:
                _buffer(self, f"critic_t{m}", w_t[0] * t)
                self._critic_time_buffer[t] = f"critic_t{m}"
        for j, (_, t) in enumerate(stages):
            if self.critic_solver != "euler" and t != 0.0 and t not in self._critic_time_buffer:
                _buffer(self, f"critic_s{j}", w_t[0] * t)
                self._critic_time_buffer[t] = f"critic_s{j}"
        self.critic_tail = _Tail(critic, "critic")
        self.prune: tuple[int, int] | None = None
        if prune is not None:
            keep, screen = (int(prune[0]), int(prune[1]))
            if keep < 1 or screen < 1:
                raise ValueError(f"prune K1:N1 needs K1 >= 1 and N1 >= 1, got {keep}:{screen}")
            self.prune = (keep, screen)
        tau = float(agent.config.tau_r if prune_tau_r is None else prune_tau_r)
        if not tau > 0.0:
            raise ValueError(f"the pruning screen's tau_R must be > 0, got {tau}")
        self.prune_tau_r = tau
        # screen score = logsumexp(returns / tau) up to a constant; returns = u * half_width + center
        self._screen_scale = float("inf") if tau == float("inf") else self.return_half_width / tau

    def candidate_bias(self, obs_n: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The critic's first-layer pre-activation without its z and t columns: [B, N_pi, 1, H]."""
        g_x = torch.matmul(obs_n, self.critic_w_obs) + self.critic_b  # [B, H], per observation
        return (torch.matmul(actions, self.critic_w_act) + g_x.unsqueeze(1)).unsqueeze(2)

    def integrate_returns(self, g: torch.Tensor, rtg_noise: torch.Tensor) -> torch.Tensor:
        """Normalised reward-to-go samples u = z^1 [B, K, N] from rtg_noise [B, K, N] and biases g [B, K, 1, H]."""

        def velocity(z: torch.Tensor, t: float) -> torch.Tensor:
            bias = g + getattr(self, self._critic_time_buffer[t]) if t != 0.0 else g  # per candidate
            return self.critic_tail(z * self.critic_w_z + bias, z)  # [B, K, N, 1]

        z = integrate_flow(velocity, rtg_noise.unsqueeze(-1), self.critic_steps, self.critic_solver)
        return z.squeeze(-1)

    def sample_returns(self, obs_n: torch.Tensor, actions: torch.Tensor, rtg_noise: torch.Tensor) -> torch.Tensor:
        """Algorithm 2's inner loop: N reward-to-go samples per candidate, the critic's solver unrolled."""
        return self.denormalize_returns(self.integrate_returns(self.candidate_bias(obs_n, actions), rtg_noise))

    def pruned(self, obs_n: torch.Tensor, actions: torch.Tensor,
               rtg_noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Screen N_pi candidates on rtg_noise[..., :N1], refine the top K1 with all N columns.

        Returns (actions [B, K1, act], returns [B, K1, N], survivor_index [B, K1] int64: each survivor's
        index among the N_pi candidates, in descending screen score)."""
        assert self.prune is not None
        keep, screen = self.prune
        g = self.candidate_bias(obs_n, actions)  # [B, N_pi, 1, H]
        u_screen = self.integrate_returns(g, rtg_noise[:, :, :screen])  # [B, N_pi, N1]
        if self._screen_scale == float("inf"):
            score = u_screen.mean(dim=-1)
        else:
            score = torch.logsumexp(u_screen * self._screen_scale, dim=-1)  # Q* ranking up to a constant
        _, idx = torch.topk(score, keep, dim=1, largest=True, sorted=True)  # [B, K1]
        idx3 = idx.unsqueeze(-1)
        chosen = torch.gather(actions, 1, idx3.expand(-1, -1, actions.shape[-1]))  # [B, K1, act]
        g_kept = torch.gather(g, 1, idx3.unsqueeze(-1).expand(-1, -1, 1, g.shape[-1]))  # [B, K1, 1, H]
        noise_kept = torch.gather(rtg_noise, 1, idx3.expand(-1, -1, rtg_noise.shape[-1]))  # [B, K1, N]
        return chosen, self.denormalize_returns(self.integrate_returns(g_kept, noise_kept)), idx

    def forward(
        self, obs: torch.Tensor, action_noise: torch.Tensor, rtg_noise: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        obs_n = self.normalize(obs)
        actions = self.sample_actions(obs_n, action_noise)
        if self.prune is not None:
            return self.pruned(obs_n, actions, rtg_noise)
        return actions, self.sample_returns(obs_n, actions, rtg_noise)


class QCEngine(_ObsAndBounds):
    """(obs, action_noise) -> (actions, q): QC-1's candidates and their aggregated Q (Eq. 42)."""

    kind = "qc"

    def __init__(self, agent: QCAgent, euler_steps: int):
        super().__init__(agent, euler_steps)
        self.aggregate = agent.config.qc_q_agg
        if self.aggregate not in ("min", "mean"):
            raise ValueError(f"unsupported QC aggregation {self.aggregate!r}")
        self.tails = nn.ModuleList()
        self.num_heads = len(agent.critic.heads)
        for k, head in enumerate(agent.critic.heads):
            w_obs, w_act = _split_first(head, (self.obs_dim, self.act_dim))
            _buffer(self, f"q{k}_w_obs", w_obs)
            _buffer(self, f"q{k}_w_act", w_act)
            _buffer(self, f"q{k}_b", head.first.bias.detach())
            self.tails.append(_Tail(head, f"q{k}"))

    def q_values(self, obs_n: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        q: torch.Tensor | None = None
        for k, tail in enumerate(self.tails):
            h_x = (torch.matmul(obs_n, getattr(self, f"q{k}_w_obs")) + getattr(self, f"q{k}_b")).unsqueeze(1)
            q_k = tail(torch.matmul(actions, getattr(self, f"q{k}_w_act")) + h_x).squeeze(-1)  # [B, N_pi]
            if q is None:
                q = q_k
            elif self.aggregate == "min":
                q = torch.minimum(q, q_k)
            else:
                q = q + q_k
        assert q is not None
        if self.aggregate == "mean":
            q = q / float(self.num_heads)
        return self.denormalize_returns(q)

    def forward(self, obs: torch.Tensor, action_noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs_n = self.normalize(obs)
        actions = self.sample_actions(obs_n, action_noise)
        return actions, self.q_values(obs_n, actions)


def body_scopes(module: nn.Module) -> dict[str, str]:
    """Module path -> network name of every MLP body in an engine module (what export records)."""
    return {path: sub.network for path, sub in module.named_modules() if isinstance(sub, _Tail)}


def build_engine_module(
    agent: BaseAgent, euler_steps: int | None = None, critic_steps: int | None = None,
    critic_solver: str = "euler", prune: tuple[int, int] | None = None, prune_tau_r: float | None = None,
) -> EvorEngine | QCEngine:
    """The export-only module of a loaded agent; euler_steps defaults to the training config's.

    critic_steps (default: euler_steps), critic_solver and prune apply to EVOR engines only (ValueError
    for QC-1 when they differ from the defaults).
    """
    steps = int(agent.config.euler_steps if euler_steps is None else euler_steps)
    kind = agent_kind(agent)
    if kind == "evor":
        module: EvorEngine | QCEngine = EvorEngine(
            agent, steps, critic_steps=critic_steps, critic_solver=critic_solver, prune=prune,  # type: ignore[arg-type]
            prune_tau_r=prune_tau_r)
    else:
        if (critic_steps not in (None, steps)) or critic_solver != "euler" or prune is not None:
            raise ValueError("critic steps, critic solver and pruning apply to EVOR engines only (not QC-1)")
        module = QCEngine(agent, steps)  # type: ignore[arg-type]
    return module.eval()


def example_inputs(
    kind: str, obs_dim: int, act_dim: int, batch: int = 2, num_candidates: int = 3, num_rtg: int = 4,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Random float32 inputs of the engine's shapes (distinct sizes so tracing cannot confuse axes)."""
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn((batch, obs_dim), generator=gen)
    action_noise = torch.randn((batch, num_candidates, act_dim), generator=gen)
    if kind == "qc":
        return obs, action_noise
    return obs, action_noise, torch.randn((batch, num_candidates, num_rtg), generator=gen)
