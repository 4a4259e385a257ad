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

Everything here is torch-free and has ``out=`` variants so a control loop can run it on
pre-allocated buffers (:class:`SelectionScratch`) without per-tick array allocation.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "SelectionScratch",
    "check_tau_q",
    "check_tau_r",
    "q_star",
    "select",
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

    Returns:
        ``out`` (float64, shape ``returns.shape[:-1]``).
    """
    tau_r = check_tau_r(tau_r)
    returns = np.asarray(returns)
    if returns.ndim < 1 or returns.shape[-1] < 1:
        raise ValueError(f"returns must have a non-empty last axis, got shape {returns.shape}")
    if out is None:
        out = np.empty(returns.shape[:-1], dtype=np.float64)
    if math.isinf(tau_r):
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
    total *= 1.0 / returns.shape[-1]
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
