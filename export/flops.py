r"""Analytic FLOPs of one engine call (one control tick), hoisted engine vs the naive computation.

Counting rule: 2 * in * out FLOPs per row passed through a Linear layer (multiply + add of the matrix
product); the rank-1 z column of the critic counts as a Linear with in = 1 (z * w_z, then the add).
Biases, GELU, LayerNorm, Euler updates and clipping are elementwise and left out (they are O(hidden)
per row against O(hidden^2) for the matrix products).

With hidden widths h_0..h_{L-1}, tail(out) = sum_{l>0} 2 h_{l-1} h_l + 2 h_{L-1} out, M Euler steps:

    EVOR, hoisted (what `export.graph` builds, Algorithms 2-3):
        const                = 2 obs h_0 (actor) + 2 obs h_0 (critic)           once per observation
        per_candidate        = M (2 act h_0 + tail(act))  +  2 act h_0            actor loop + critic's W_act a
        per_candidate_sample = M (2 h_0 + tail(1))                                critic loop
    EVOR, naive (first layer on the full concatenation at every step):
        per_candidate        = M (2 (obs + act + 1) h_0 + tail(act))
        per_candidate_sample = M (2 (obs + act + 2) h_0 + tail(1))
    QC-1 with K heads: the actor as above; per_candidate += K (2 act h_0 + tail(1)), const += K 2 obs h_0
        (naive: per_candidate += K (2 (obs + act) h_0 + tail(1))).

flops(B, N_pi, N) = B * (const + N_pi * per_candidate + N_pi * N * per_candidate_sample), the format of
`Manifest.flops["per_tick"]` that `evor_edge.runtime.bench.flops_per_tick` reads.

Export variants (EVOR): the critic loop costs E = K * evals_per_step velocity evaluations instead of M
(K = critic steps; euler 1, heun / midpoint 2 evaluations per step), i.e. per_candidate_sample =
E (2 h_0 + tail(1)). A pruned engine (K1 survivors of a screen on N1 samples) costs

    flops = B * (const + N_pi * (per_candidate + N1 * s) + min(K1, N_pi) * N * s),   s = E (2 h_0 + tail(1))

stored as per_candidate (screen included), per_candidate_sample = 0, per_survivor_sample = s, survivors = K1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PAPER_NUM_CANDIDATES = 32
PAPER_NUM_RTG = 50


def _tail(hidden: Sequence[int], out: int) -> int:
    widths = list(hidden)
    return sum(2 * a * b for a, b in zip(widths[:-1], widths[1:], strict=True)) + 2 * widths[-1] * out


EVALS_PER_STEP = {"euler": 1, "heun": 2, "midpoint": 2}


def per_tick_coefficients(
    kind: str, obs_dim: int, act_dim: int, hidden_dims: Sequence[int], euler_steps: int,
    ensemble: int = 2, hoisted: bool = True, critic_steps: int | None = None, critic_solver: str = "euler",
    prune: Sequence[int] | None = None,
) -> dict[str, int]:
    """{"const", "per_candidate", "per_candidate_sample"} FLOPs (see the module docstring); pruned EVOR
    engines add "per_survivor_sample" and "survivors"."""
    if kind not in ("evor", "qc"):
        raise ValueError(f"unknown engine kind {kind!r}")
    if critic_solver not in EVALS_PER_STEP:
        raise ValueError(f"unknown critic solver {critic_solver!r}")
    h0 = int(hidden_dims[0])
    m = int(euler_steps)
    evals = int(m if critic_steps is None else critic_steps) * EVALS_PER_STEP[critic_solver]
    const = per_cand = per_sample = 0
    # actor (Algorithm 3)
    if hoisted:
        const += 2 * obs_dim * h0
        per_cand += m * (2 * act_dim * h0 + _tail(hidden_dims, act_dim))
    else:
        per_cand += m * (2 * (obs_dim + act_dim + 1) * h0 + _tail(hidden_dims, act_dim))
    if kind == "evor":  # reward-to-go flow (Algorithm 2, inner loop)
        if hoisted:
            const += 2 * obs_dim * h0
            per_cand += 2 * act_dim * h0
            per_sample += evals * (2 * 1 * h0 + _tail(hidden_dims, 1))
        else:
            per_sample += evals * (2 * (obs_dim + act_dim + 2) * h0 + _tail(hidden_dims, 1))
    else:  # QC-1 Q-ensemble
        if hoisted:
            const += ensemble * 2 * obs_dim * h0
            per_cand += ensemble * (2 * act_dim * h0 + _tail(hidden_dims, 1))
        else:
            per_cand += ensemble * (2 * (obs_dim + act_dim) * h0 + _tail(hidden_dims, 1))
    if prune is not None and kind == "evor":
        survivors, screen = int(prune[0]), int(prune[1])
        return {"const": const, "per_candidate": per_cand + screen * per_sample, "per_candidate_sample": 0,
                "per_survivor_sample": per_sample, "survivors": survivors}
    return {"const": const, "per_candidate": per_cand, "per_candidate_sample": per_sample}


def evaluate(coeffs: dict[str, Any], batch: int, num_candidates: int, num_rtg: int) -> int:
    """flops(B, N_pi, N) = B * (c + N_pi * a + N_pi * N * b [+ min(K1, N_pi) * N * s for pruned engines])."""
    survivors = min(int(coeffs.get("survivors", 0)), num_candidates)
    return int(batch * (coeffs["const"] + num_candidates * coeffs["per_candidate"]
                        + num_candidates * num_rtg * coeffs["per_candidate_sample"]
                        + survivors * num_rtg * coeffs.get("per_survivor_sample", 0)))


def engine_flops(
    kind: str, obs_dim: int, act_dim: int, hidden_dims: Sequence[int], euler_steps: int, ensemble: int = 2,
    num_candidates: int = PAPER_NUM_CANDIDATES, num_rtg: int = PAPER_NUM_RTG, critic_steps: int | None = None,
    critic_solver: str = "euler", prune: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The manifest's `flops` entry: hoisted and naive coefficients plus the totals at the paper config.

    The paper config is N_pi = 32, N = 50 (Tables 3-4), B = 1, with the engine's own M, critic solver,
    pruning and widths.
    """
    variant = dict(critic_steps=critic_steps, critic_solver=critic_solver, prune=prune)
    hoisted = per_tick_coefficients(kind, obs_dim, act_dim, hidden_dims, euler_steps, ensemble, True, **variant)
    naive = per_tick_coefficients(kind, obs_dim, act_dim, hidden_dims, euler_steps, ensemble, False, **variant)
    n = num_rtg if kind == "evor" else 1
    h_total = evaluate(hoisted, 1, num_candidates, n)
    n_total = evaluate(naive, 1, num_candidates, n)
    formula = "flops(B, N_pi, N) = B * (const + N_pi * per_candidate + N_pi * N * per_candidate_sample)"
    if "survivors" in hoisted:
        formula = formula[:-1] + " + min(survivors, N_pi) * N * per_survivor_sample)"
    return {
        "per_tick": hoisted,
        "naive_per_tick": naive,
        "formula": formula,
        "counting": "2*in*out per Linear row (matrix products only)",
        "paper_config": {
            "batch": 1,
            "num_candidates": num_candidates,
            "num_rtg": n if kind == "evor" else None,
            "euler_steps": int(euler_steps),
            "critic_steps": int(euler_steps if critic_steps is None else critic_steps) if kind == "evor" else None,
            "critic_solver": critic_solver if kind == "evor" else None,
            "prune": [int(p) for p in prune] if prune is not None and kind == "evor" else None,
            "hidden_dims": [int(h) for h in hidden_dims],
            "hoisted": h_total,
            "naive": n_total,
            "saving": (n_total - h_total) / n_total if n_total else 0.0,
        },
    }
