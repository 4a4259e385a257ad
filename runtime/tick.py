"""Per-tick state of the policy: diagnostics (`TickInfo`), pre-allocated scratch per shape (`TickState`) and
input checks. Torch-free; used by `evor_edge.runtime.policy`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends import IOBuffers
from .noise import EngineNoise
from .selection import SelectionScratch, TailScratch

__all__ = ["EngineOutputError", "InvalidObservationError", "TickInfo", "TickState", "as_numeric", "cast_into",
           "check_count"]


class InvalidObservationError(ValueError):
    """An observation the engine must not see: wrong shape, non-numeric dtype, NaN or Inf."""


class EngineOutputError(RuntimeError):
    """The engine produced non-finite actions / values for every candidate of a row."""


@dataclass
class TickInfo:
    """Diagnostics of the last tick (``policy.last``).

    ``q_star`` and ``chosen`` (an index into the engine's output candidates: the K1 survivors of a
    pruned engine) are views into the policy's pre-allocated buffers: they are overwritten by the next
    tick; copy them to keep them.
    """

    q_star: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    chosen: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    latency_s: float = 0.0
    engine_s: float = 0.0
    selection_s: float = 0.0
    invalid_count: int = 0
    batch: int = 0
    num_candidates: int = 0
    num_rtg: int = 0
    engine_num_rtg: int = 0
    certified: np.ndarray | None = None  # rtg_top_k only: [B] bool, decision provably the full-N one
    survivors: np.ndarray | None = None  # pruned engines: [B, K1] int64, each survivor's index among the N_pi
    candidate: np.ndarray | None = None  # [B] the chosen candidate's index among the N_pi (-1: held row; None:
    #                                      a pruned engine of format 1, which does not say which survived)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return {
            "engine_num_rtg": self.engine_num_rtg,
            "certified": None if self.certified is None else self.certified.tolist(),
            "q_star": self.q_star.tolist(),
            "chosen": self.chosen.tolist(),
            "survivors": None if self.survivors is None else self.survivors.tolist(),
            "candidate": None if self.candidate is None else self.candidate.tolist(),
            "latency_s": self.latency_s,
            "engine_s": self.engine_s,
            "selection_s": self.selection_s,
            "invalid_count": self.invalid_count,
            "batch": self.batch,
            "num_candidates": self.num_candidates,
            "num_rtg": self.num_rtg,
        }


class TickState:
    """Per-(B, N_pi, N) scratch owned by the policy (engine buffers live in the backend)."""

    def __init__(self, io: IOBuffers, act_dim: int, obs_dim: int, num_rtg_drawn: int = 0,
                 common_rtg_noise: bool = False, top_k: bool = False, pruned: bool = False) -> None:
        batch, _, _ = io.shape
        self.io = io
        self.obs = io.inputs["obs"]
        self.rtg_noise = io.inputs.get("rtg_noise")
        self.actions = io.outputs["actions"]
        self.returns = io.outputs.get("returns")
        self.q_engine = io.outputs.get("q")
        self.survivor_index = io.outputs.get("survivor_index")
        # selection runs over the engine's output candidates (K1 survivors for a pruned engine)
        num_candidates = int(self.actions.shape[1])
        num_rtg = int(self.returns.shape[2]) if self.returns is not None else 1
        self.num_rtg_drawn = int(num_rtg_drawn) or num_rtg
        self.noise = EngineNoise(io.inputs["action_noise"], self.rtg_noise, self.num_rtg_drawn, common_rtg_noise,
                                 top_k)
        self.top_k = self.noise.top_k
        self.scratch = SelectionScratch(batch, num_candidates, num_rtg)
        self.q = np.empty((batch, num_candidates), dtype=np.float64)
        self.q_ok = np.empty((batch, num_candidates), dtype=bool)
        self.idx = np.zeros(batch, dtype=np.int64)
        self.flat_idx = np.empty(batch, dtype=np.int64)
        # the chosen candidate among the N_pi: through the engine's survivor_index for a pruned engine
        self.candidate: np.ndarray | None = self.idx
        if pruned:
            self.candidate = None if self.survivor_index is None else np.empty(batch, dtype=np.int64)
        self.row_base = np.arange(batch, dtype=np.int64) * num_candidates
        if self.top_k:  # the certificate's result and work space
            self.certified = np.zeros(batch, dtype=bool)
            self.tail = TailScratch(batch, num_candidates)
        self.flat_actions = self.actions.reshape(batch * num_candidates, act_dim)
        self.out = np.empty((batch, act_dim), dtype=np.float32)
        self.out_ok = np.empty((batch, act_dim), dtype=bool)
        self.obs_ok = np.empty((batch, obs_dim), dtype=bool)
        self.row_ok = np.empty(batch, dtype=bool)
        self.row_ok2 = np.empty(batch, dtype=bool)


def as_numeric(obs: Any) -> np.ndarray:
    """The observation as a numeric array (no copy for arrays); InvalidObservationError otherwise."""
    if isinstance(obs, np.ndarray):
        arr = obs
    else:
        try:
            arr = np.asarray(obs)
        except (ValueError, TypeError) as exc:  # ragged nested sequences
            raise InvalidObservationError(f"observation is not an array of numbers: {exc}") from None
    if arr.dtype.kind not in "iuf":
        raise InvalidObservationError(
            f"observation dtype {arr.dtype} is not numeric (need float or int, got {arr.dtype.name})"
        )
    return arr


def cast_into(dst: np.ndarray, src: np.ndarray) -> None:
    """Copy ``src`` into the float32 buffer; values beyond float32 range become +-inf (and are
    then refused as non-finite) without a RuntimeWarning."""
    if src.dtype == np.float32:
        np.copyto(dst, src)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            np.copyto(dst, src, casting="unsafe")


def check_count(name: str, n: Any) -> int:
    """``n`` as an int >= 1 (bools refused); ValueError naming ``name`` otherwise."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)
