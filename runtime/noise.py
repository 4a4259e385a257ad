"""The engine noise of one tick, drawn in the order the runtime promises (torch-free, no allocation per tick).

Order (part of the contract, so a tick can be replayed in plain numpy from the seed): ``action_noise ~ N(0, 1)``
float32 ``[B, N_pi, act_dim]`` first, then (kind "evor") the reward-to-go draw ``N(0, 1)`` float32:

* default: ``[B, N_pi, N]``, fed as it is (the paper's N i.i.d. draws per candidate);
* common random numbers (CRN): one row ``[B, 1, N]`` per observation, broadcast to every candidate;
* tail evaluation (``rtg_top_k = k``): the same N draws, each row sorted, and only its k largest in descending
  order fed to the engine (``[B, N_pi, min(k, N)]``).

:class:`EngineNoise` fills pre-allocated buffers (the policy's hot path); :func:`draw_engine_noise` is the
allocating form for references, calibration and benchmarks; :func:`layout_rtg` turns any draw into the
engine's rtg_noise layout (used by both, and by benchmarks that draw all observations' noise at once).
"""

from __future__ import annotations

import numpy as np

__all__ = ["EngineNoise", "draw_engine_noise", "layout_rtg"]


def layout_rtg(draw: np.ndarray, out: np.ndarray, top_k: bool, desc: np.ndarray | None = None) -> np.ndarray:
    """Write the engine's rtg_noise ``out [B, N_pi, k]`` from ``draw [B, rows, N]`` (rows 1 = CRN: broadcast).

    With ``top_k`` the draw is sorted in place along its last axis and its k = ``out.shape[-1]`` largest
    values go to ``out`` in descending order; ``desc`` may pass that descending view, precomputed.
    """
    if top_k:
        draw.sort(axis=-1)
        if desc is None:
            desc = draw[..., ::-1][..., : out.shape[-1]]
        np.copyto(out, desc)
    else:
        np.copyto(out, draw)
    return out


class EngineNoise:
    """Draw buffers for one (B, N_pi, engine N) shape and run-time variant; :meth:`fill` draws one tick.

    ``action_noise`` and ``rtg_noise`` are the engine's input buffers (filled in place). ``num_rtg_drawn`` is
    the N drawn per row (>= the engine's N with tail evaluation).
    """

    def __init__(self, action_noise: np.ndarray, rtg_noise: np.ndarray | None, num_rtg_drawn: int | None = None,
                 common_rtg_noise: bool = False, top_k: bool = False) -> None:
        self.action_noise = action_noise
        self.rtg_noise = rtg_noise
        self.top_k = bool(top_k) and rtg_noise is not None
        self.draw: np.ndarray | None = None
        self.desc: np.ndarray | None = None
        if rtg_noise is not None and (common_rtg_noise or self.top_k):
            batch, num_candidates, kept = rtg_noise.shape
            rows = 1 if common_rtg_noise else num_candidates
            self.draw = np.empty((batch, rows, int(num_rtg_drawn or kept)), dtype=np.float32)
            self.desc = self.draw[..., ::-1][..., :kept] if self.top_k else self.draw

    def fill(self, rng: np.random.Generator) -> None:
        """Draw one tick's noise from ``rng`` into the buffers, in the contract's order."""
        rng.standard_normal(out=self.action_noise, dtype=np.float32)
        if self.rtg_noise is None:
            return
        if self.draw is None:
            rng.standard_normal(out=self.rtg_noise, dtype=np.float32)
            return
        rng.standard_normal(out=self.draw, dtype=np.float32)
        layout_rtg(self.draw, self.rtg_noise, self.top_k, self.desc)


def draw_engine_noise(
    rng: np.random.Generator,
    batch: int,
    num_candidates: int,
    num_rtg: int,
    act_dim: int,
    kind: str = "evor",
    common_rtg_noise: bool = False,
    rtg_top_k: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(action_noise, rtg_noise)`` of one tick, drawn exactly as :class:`EvorPolicy` draws it (fresh arrays).

    rtg_noise is None for kind "qc"; ``[B, N_pi, min(rtg_top_k, N)]`` with tail evaluation.
    """
    action_noise = np.empty((batch, num_candidates, act_dim), dtype=np.float32)
    rtg_noise = None
    if kind == "evor":
        kept = num_rtg if rtg_top_k is None else min(int(rtg_top_k), num_rtg)
        rtg_noise = np.empty((batch, num_candidates, kept), dtype=np.float32)
    EngineNoise(action_noise, rtg_noise, num_rtg, common_rtg_noise, rtg_top_k is not None).fill(rng)
    return action_noise, rtg_noise
