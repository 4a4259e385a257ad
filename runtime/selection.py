"""Algorithm 2 selection in numpy: Q* from reward-to-go samples, then softmax over candidates.

Paper (EVOR, "Expressive Value Learning for Offline RL"):

* Eq. 16 / Eq. 22 / Eq. 38: the optimal regularised Q-function is
  ``Q*(x, a) = eta * ln E_{z ~ R(.|x,a)} exp(z / eta)``.
* Eq. 39: the expectation is replaced by a sample average over N reward-to-go samples,
  ``Q*(x, a_i) ~= tau_R * log (1/N) sum_j exp(z_ij / tau_R)`` (a log-*mean*-exp, so that
  ``tau_R -> inf`` gives the sample mean and ``tau_R -> 0`` gives the sample max).
* Eq. 40: the action is drawn from ``softmax_i(Q*_i / tau_Q)`` over the N_pi candidates;
  ``tau_Q -> 0`` is the argmax (best-of-N) and ``tau_Q -> inf`` is the base policy (uniform
  over its own samples).

Tail evaluation (``rtg_top_k``, see :mod:`evor_edge.runtime.noise`): when only the k largest of N drawn
samples reach the engine, Q* keeps Eq. 39's 1/N (``q_star(..., num_drawn=N)``): ``Q*_lo = tau_R log((1/N)
sum_{top k} exp(z / tau_R))``. The reward-to-go flow is a 1-D ODE flow, monotone in its initial value, so
the N - k dropped samples each lie below the smallest kept one and ``Q*_hi = tau_R log((1/N)(sum_{top k}
exp(z / tau_R) + (N - k) exp(z_min / tau_R)))`` bounds the full-N value from above. A row whose chosen
candidate's Q*_lo beats every other candidate's Q*_hi provably picks what the full computation on the same
draws picks (:func:`certify_tail`; exact up to the discretised flow's monotonicity). Not defined for
tau_R = inf (the mean needs every sample).

Everything here is torch-free and has ``out=`` variants so a control loop can run it on
pre-allocated buffers (:class:`SelectionScratch`) without per-tick array allocation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SelectionResult",
    "SelectionScratch",
    "certify_tail",
    "check_tau_q",
    "check_tau_r",
    "q_star",
    "select",
    "select_from_outputs",
    "softmax_probs",
]


def check_tau_r(tau_r: float) -> float:
    """Validate tau_R: a float > 0 (``math.inf`` allowed and means the sample mean)."""
    tau_r = float(tau_r)
    if math.isnan(tau_r) or tau_r <= 0.0:
        raise ValueError(f"tau_r must be > 0 (use a small value for ~max, inf for the mean), got {tau_r}")
    return tau_r


def check_tau_q(tau_q: float) -> float:
    """Validate tau_Q: a float >= 0 (0 means argmax, ``math.inf`` means uniform)."""
    tau_q = float(tau_q)
    if math.isnan(tau_q) or tau_q < 0.0:
        raise ValueError(f"tau_q must be >= 0 (0 = argmax, inf = uniform), got {tau_q}")
    return tau_q


def q_star(
    returns: np.ndarray,
    tau_r: float,
    out: np.ndarray | None = None,
    scratch: SelectionScratch | None = None,
    num_drawn: int | None = None,
) -> np.ndarray:
    """Sample estimate of Q* (Eq. 16/22/38, sample form Eq. 39) over the last axis.

    ``Q*_i = tau_r * log( (1/N) * sum_j exp(z_ij / tau_r) )``, computed stably as
    ``m_i + tau_r * log mean_j exp((z_ij - m_i) / tau_r)`` with ``m_i = max_j z_ij``.

    Args:
        returns: reward-to-go samples ``[..., N]`` (normally ``[B, N_pi, N]``).
        tau_r: temperature > 0; ``math.inf`` gives the sample mean (the limit), a tiny
            value approaches the sample max.
        out: optional float64 array of shape ``returns.shape[:-1]`` for the result.
        scratch: optional :class:`SelectionScratch` whose shape matches ``returns``
            ([B, N_pi, N]); with it (and ``out``) nothing is allocated.
        num_drawn: tail evaluation: the N drawn when ``returns`` holds only the k largest of them
            (Q*_lo: the mean keeps the 1/N; module docstring). Needs a finite tau_r when N > k.

    Returns:
        ``out`` (float64, shape ``returns.shape[:-1]``).
    """
    tau_r = check_tau_r(tau_r)
    returns = np.asarray(returns)
    if returns.ndim < 1 or returns.shape[-1] < 1:
        raise ValueError(f"returns must have a non-empty last axis, got shape {returns.shape}")
    kept = returns.shape[-1]
    num_drawn = kept if num_drawn is None else int(num_drawn)
    if num_drawn < kept:
        raise ValueError(f"num_drawn {num_drawn} is below the {kept} samples given")
    if out is None:
        out = np.empty(returns.shape[:-1], dtype=np.float64)
    if math.isinf(tau_r):
        if num_drawn != kept:
            raise ValueError("tail evaluation needs a finite tau_r: the mean (tau_r = inf) needs every sample")
        return np.mean(returns, axis=-1, out=out, dtype=np.float64)
    if scratch is not None and scratch.returns.shape == returns.shape:
        work, total = scratch.returns, scratch.probs
    else:
        work = np.empty(returns.shape, dtype=np.float64)
        total = np.empty(returns.shape[:-1], dtype=np.float64)
    np.maximum.reduce(returns, axis=-1, out=out)  # m (cast into float64)
    np.subtract(returns, out[..., None], out=work)  # z - m <= 0
    work *= 1.0 / tau_r
    np.exp(work, out=work)  # in (0, 1]; the max term is exactly 1, so the sum is >= 1
    np.add.reduce(work, axis=-1, out=total)
    total *= 1.0 / num_drawn  # Eq. 39's 1/N, also over the samples a tail evaluation did not compute
    np.log(total, out=total)
    total *= tau_r
    out += total
    return out


def softmax_probs(q: np.ndarray, tau_q: float, out: np.ndarray | None = None) -> np.ndarray:
    """Candidate probabilities ``softmax_i(q_i / tau_q)`` along the last axis (Eq. 40).

    ``tau_q == 0`` gives a one-hot on the first argmax; ``tau_q == inf`` gives uniform.
    """
    tau_q = check_tau_q(tau_q)
    q = np.asarray(q, dtype=np.float64)
    if out is None:
        out = np.empty(q.shape, dtype=np.float64)
    if tau_q == 0.0:
        out[...] = 0.0
        idx = np.argmax(q, axis=-1)
        np.put_along_axis(out, idx[..., None], 1.0, axis=-1)
        return out
    if math.isinf(tau_q):
        out[...] = 1.0 / q.shape[-1]
        return out
    np.subtract(q, np.max(q, axis=-1, keepdims=True), out=out)
    out *= 1.0 / tau_q
    np.exp(out, out=out)
    out /= np.sum(out, axis=-1, keepdims=True)
    return out


class SelectionScratch:
    """Pre-allocated work space for :func:`select` / :func:`q_star` at one (B, N_pi, N)."""

    def __init__(self, batch: int, num_candidates: int, num_rtg: int = 1) -> None:
        self.shape = (batch, num_candidates, num_rtg)
        self.q = np.empty((batch, num_candidates), dtype=np.float64)
        self.returns = np.empty((batch, num_candidates, num_rtg), dtype=np.float64)
        self.probs = np.empty((batch, num_candidates), dtype=np.float64)
        self.row = np.empty((batch, 1), dtype=np.float64)
        self.below = np.empty((batch, num_candidates), dtype=bool)
        self.u = np.empty(batch, dtype=np.float64)
        self.idx = np.empty(batch, dtype=np.int64)


def select(
    q: np.ndarray,
    tau_q: float,
    rng: np.random.Generator,
    out: np.ndarray | None = None,
    scratch: SelectionScratch | None = None,
) -> np.ndarray:
    """Draw one candidate index per row from ``softmax(q / tau_q)`` (Algorithm 2, Eq. 40).

    Random-number use is part of the contract (so results can be reproduced exactly):
    ``tau_q == 0`` is the argmax (first one on ties) and draws nothing; any ``tau_q > 0``
    (including ``inf`` = uniform) draws exactly one ``rng.random()`` float64 per row,
    ``u = rng.random(B)``, and returns the first index whose cumulative probability exceeds
    ``u`` (inverse-CDF sampling).

    Args:
        q: ``[B, N_pi]`` candidate values (Q*).
        tau_q: temperature >= 0.
        rng: the numpy Generator to draw from.
        out: optional int64 ``[B]`` result array.
        scratch: optional :class:`SelectionScratch` of matching (B, N_pi) to avoid allocation.

    Returns:
        ``out``: int64 indices ``[B]``.
    """
    tau_q = check_tau_q(tau_q)
    if q.ndim != 2 or q.shape[1] < 1:
        raise ValueError(f"q must be [B, N_pi] with N_pi >= 1, got shape {q.shape}")
    batch, n = q.shape
    if scratch is None or scratch.probs.shape != q.shape:
        scratch = SelectionScratch(batch, n)
    if out is None:
        out = np.empty(batch, dtype=np.int64)
    if tau_q == 0.0:
        return np.argmax(q, axis=1, out=out)
    u = rng.random(out=scratch.u)
    if math.isinf(tau_q):
        u *= n
        np.floor(u, out=u)
        out[...] = u  # float -> int64 cast in place
        np.minimum(out, n - 1, out=out)
        return out
    probs = scratch.probs
    np.maximum.reduce(q, axis=1, out=scratch.row[:, 0])
    np.subtract(q, scratch.row, out=probs)
    probs *= 1.0 / tau_q
    np.exp(probs, out=probs)
    np.add.accumulate(probs, axis=1, out=probs)  # unnormalised CDF
    np.multiply(u, probs[:, -1], out=u)  # scale u by each row's total instead of normalising
    np.less_equal(probs, u[:, None], out=scratch.below)
    np.add.reduce(scratch.below, axis=1, out=out)
    np.minimum(out, n - 1, out=out)  # guards u*total rounding to exactly total
    return out


class TailScratch:
    """Pre-allocated work space for :func:`certify_tail` at one (B, N_pi)."""

    def __init__(self, batch: int, num_candidates: int) -> None:
        self.q_hi = np.empty((batch, num_candidates), dtype=np.float64)
        self.tmp = np.empty((batch, num_candidates), dtype=np.float64)
        self.best = np.empty(batch, dtype=np.float64)
        self.chosen_q = np.empty(batch, dtype=np.float64)
        self.row_base = np.arange(batch, dtype=np.int64) * num_candidates
        self.flat = np.empty(batch, dtype=np.int64)


def certify_tail(
    returns: np.ndarray, q: np.ndarray, chosen: np.ndarray, tau_r: float, num_drawn: int,
    out: np.ndarray | None = None, scratch: TailScratch | None = None,
) -> np.ndarray:
    """Per row: True when the chosen candidate's Q*_lo beats every other candidate's Q*_hi (module docstring).

    Args:
        returns: the engine's ``[B, N_pi, k]`` reward-to-go samples (the k largest of ``num_drawn``).
        q: ``[B, N_pi]`` Q*_lo, i.e. ``q_star(returns, tau_r, num_drawn=num_drawn)`` (non-finite: never chosen).
        chosen: ``[B]`` chosen candidate per row.
        out / scratch: optional result (bool ``[B]``) and :class:`TailScratch`; with both nothing is allocated.
    """
    batch, num_candidates, kept = returns.shape
    if out is None:
        out = np.empty(batch, dtype=bool)
    dropped = int(num_drawn) - kept
    if dropped <= 0:
        out.fill(True)  # nothing dropped: the decision is the full one
        return out
    if scratch is None or scratch.q_hi.shape != (batch, num_candidates):
        scratch = TailScratch(batch, num_candidates)
    q_hi, tmp = scratch.q_hi, scratch.tmp
    np.minimum.reduce(returns, axis=-1, out=tmp)  # smallest kept sample per candidate
    tmp *= 1.0 / tau_r
    tmp += math.log(dropped / num_drawn)
    np.multiply(q, 1.0 / tau_r, out=q_hi)
    with np.errstate(invalid="ignore"):
        np.logaddexp(q_hi, tmp, out=q_hi)
    q_hi *= tau_r
    np.add(scratch.row_base, chosen, out=scratch.flat)
    q_hi.reshape(-1)[scratch.flat] = -math.inf  # the chosen candidate itself does not count
    np.maximum.reduce(q_hi, axis=1, out=scratch.best)
    np.take(q.reshape(-1), scratch.flat, out=scratch.chosen_q)
    return np.greater_equal(scratch.chosen_q, scratch.best, out=out)


@dataclass
class SelectionResult:
    """Output of :func:`select_from_outputs`."""

    actions: np.ndarray  # [B, act_dim] float32
    index: np.ndarray  # [B] int64, into the engine's output candidates
    q_star: np.ndarray  # [B, N_pi] float64


def select_from_outputs(
    actions: np.ndarray,
    values: np.ndarray,
    tau_r: float,
    tau_q: float,
    rng: np.random.Generator,
    kind: str = "evor",
    num_rtg_drawn: int | None = None,
) -> SelectionResult:
    """Pure-numpy Algorithm 2 selection from engine outputs (the reference for tests).

    Args:
        actions: ``[B, N_pi, act_dim]`` candidates (``[B, K1, act_dim]`` survivors of a pruned engine).
        values: ``returns [B, N_pi, N]`` (kind "evor") or ``q [B, N_pi]`` (kind "qc").
        tau_r, tau_q: temperatures.
        rng: the Generator, positioned right after the tick's noise draws.
        num_rtg_drawn: with rtg_top_k, the N that was drawn (Q* keeps the 1/N of Eq. 39).
    """
    actions = np.asarray(actions, dtype=np.float32)
    q = q_star(values, tau_r, num_drawn=num_rtg_drawn) if kind == "evor" else np.asarray(values, dtype=np.float64)
    idx = select(q, tau_q, rng)
    return SelectionResult(actions[np.arange(actions.shape[0]), idx].copy(), idx, q)
