"""EvorPolicy: the embeddable, torch-free policy (engine + Algorithm 2 selection).

Per tick (``act`` / ``act_batch``)::

    obs  --validate/cast-->  obs buffer [B, obs_dim] (float32, pre-allocated)
    rng  --> action_noise [B, N_pi, act_dim], then rtg_noise [B, N_pi, N]   (kind "evor")
    engine(obs, action_noise[, rtg_noise]) -> actions [B, N_pi, act_dim], returns [B, N_pi, N] | q [B, N_pi]
    Q* = tau_R * log mean_j exp(returns_ij / tau_R)          (Eq. 16/22/38-39; kind "qc": Q* = q)
    i* ~ softmax_i(Q*_i / tau_Q) with one rng.random() per row (Eq. 40; tau_Q = 0: argmax, no draw)
    return actions[b, i*_b]

Random numbers come from the policy's own ``np.random.Generator(PCG64(seed))`` in exactly that
order (see :func:`draw_engine_noise` and :func:`select_from_outputs`, which reproduce a tick in
plain numpy), so the same seed and observations give the same actions.

Run-time variants of the reward-to-go sampling (defaults = the paper's: N i.i.d. draws per candidate):

* ``common_rtg_noise=True`` (common random numbers, CRN): one row ``[N]`` per observation is drawn
  (``rtg ~ N(0, 1)`` float32 ``[B, 1, N]``) and broadcast to every candidate, so all candidates are
  compared on identical draws (a paired comparison: lower variance of Q*_i - Q*_j).
* ``rtg_top_k=k`` (tail evaluation): the N draws are made exactly as without it (same random stream),
  but only each row's k largest draws, in descending order, are fed to the engine (rtg_noise
  ``[B, N_pi, k]``). The reward-to-go flow is a 1-D ODE flow, hence monotone increasing in its
  initial value, so these are the k largest of the N reward-to-go samples; Q* keeps the 1/N of
  Eq. 39: ``Q*_lo = tau_R log((1/N) sum_{top k} exp(z / tau_R))``. The dropped N - k samples each lie
  below the smallest kept one, so ``Q*_hi = tau_R log((1/N)(sum_{top k} exp(z / tau_R) + (N - k)
  exp(z_min / tau_R)))`` bounds the full-N value from above; a tick whose chosen candidate's Q*_lo
  beats every other candidate's Q*_hi provably picks what the full computation on the same draws
  picks (``last.certified``; exact up to the discretised flow's monotonicity). Not defined for
  tau_R = inf (the mean needs every sample).
* pruned engines (``export --prune K1:N1``): the engine returns only K1 survivors
  (``actions [B, K1, act]``, ``returns [B, K1, N]``); selection runs over them and ``last.chosen``
  indexes the survivors. They need N_pi >= K1 and an engine N (k with rtg_top_k) >= N1.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, IOBuffers, make_backend
from .manifest import EngineError, Manifest, load_manifest, prune_spec
from .selection import SelectionScratch, check_tau_q, check_tau_r, q_star, select

__all__ = [
    "EngineOutputError",
    "EvorPolicy",
    "InvalidObservationError",
    "SelectionResult",
    "TickInfo",
    "draw_engine_noise",
    "select_from_outputs",
]

ON_INVALID = ("raise", "hold")


class InvalidObservationError(ValueError):
    """An observation the engine must not see: wrong shape, non-numeric dtype, NaN or Inf."""


class EngineOutputError(RuntimeError):
    """The engine produced non-finite actions / values for every candidate of a row."""


@dataclass
class TickInfo:
    """Diagnostics of the last tick (``policy.last``).

    ``q_star`` and ``chosen`` are views into the policy's pre-allocated buffers: they are
    overwritten by the next tick; copy them to keep them.
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

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return {
            "engine_num_rtg": self.engine_num_rtg,
            "certified": None if self.certified is None else self.certified.tolist(),
            "q_star": self.q_star.tolist(),
            "chosen": self.chosen.tolist(),
            "latency_s": self.latency_s,
            "engine_s": self.engine_s,
            "selection_s": self.selection_s,
            "invalid_count": self.invalid_count,
            "batch": self.batch,
            "num_candidates": self.num_candidates,
            "num_rtg": self.num_rtg,
        }


@dataclass
class SelectionResult:
    """Output of :func:`select_from_outputs`."""

    actions: np.ndarray  # [B, act_dim] float32
    index: np.ndarray  # [B] int64
    q_star: np.ndarray  # [B, N_pi] float64


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
    """The engine noise of one tick, drawn exactly as :class:`EvorPolicy` draws it.

    ``action_noise ~ N(0, 1)`` float32 ``[B, N_pi, act_dim]`` first, then (kind "evor")
    ``rtg_noise ~ N(0, 1)`` float32 ``[B, N_pi, N]``; with ``common_rtg_noise`` one ``[B, 1, N]`` draw
    broadcast to ``[B, N_pi, N]``; with ``rtg_top_k = k`` each row's k largest draws in descending
    order, ``[B, N_pi, k]`` (the engine's rtg_noise).
    """
    action_noise = rng.standard_normal((batch, num_candidates, act_dim), dtype=np.float32)
    rtg_noise = None
    if kind == "evor":
        rows = 1 if common_rtg_noise else num_candidates
        draw = rng.standard_normal((batch, rows, num_rtg), dtype=np.float32)
        if rtg_top_k is not None and rtg_top_k < num_rtg:
            draw.sort(axis=-1)
            draw = draw[..., ::-1][..., :rtg_top_k]
        elif rtg_top_k is not None:
            draw.sort(axis=-1)
            draw = draw[..., ::-1]
        rtg_noise = np.array(np.broadcast_to(draw, (batch, num_candidates, draw.shape[-1])), dtype=np.float32)
    return action_noise, rtg_noise


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
        tau_r, tau_q: temperatures (see :mod:`evor_edge.runtime.selection`).
        rng: the Generator, positioned right after the tick's noise draws.
        num_rtg_drawn: with rtg_top_k, the N that was drawn (Q* keeps the 1/N of Eq. 39).
    """
    actions = np.asarray(actions, dtype=np.float32)
    q = q_star(values, tau_r) if kind == "evor" else np.asarray(values, dtype=np.float64)
    if kind == "evor" and num_rtg_drawn is not None and num_rtg_drawn != values.shape[-1]:
        q += tau_r * math.log(values.shape[-1] / num_rtg_drawn)
    idx = select(q, tau_q, rng)
    return SelectionResult(actions[np.arange(actions.shape[0]), idx].copy(), idx, q)


class _ShapeState:
    """Per-(B, N_pi, N) scratch owned by the policy (engine buffers live in the backend).

    ``draw`` is where the rtg noise is drawn when it is not drawn straight into the engine's
    rtg_noise buffer (CRN: ``[B, 1, N]``; rtg_top_k: ``[B, N_pi or 1, N]``, sorted in place).
    """

    def __init__(self, io: IOBuffers, act_dim: int, obs_dim: int, num_rtg_drawn: int = 0,
                 common_rtg_noise: bool = False, top_k: bool = False) -> None:
        batch, _, _ = io.shape
        self.io = io
        self.obs = io.inputs["obs"]
        self.action_noise = io.inputs["action_noise"]
        self.rtg_noise = io.inputs.get("rtg_noise")
        self.actions = io.outputs["actions"]
        self.returns = io.outputs.get("returns")
        self.q_engine = io.outputs.get("q")
        # selection runs over the engine's output candidates (K1 survivors for a pruned engine)
        num_candidates = int(self.actions.shape[1])
        num_rtg = int(self.returns.shape[2]) if self.returns is not None else 1
        self.num_rtg_drawn = int(num_rtg_drawn) or num_rtg
        self.draw: np.ndarray | None = None
        self.draw_desc: np.ndarray | None = None
        if self.rtg_noise is not None and (common_rtg_noise or top_k):
            rows = 1 if common_rtg_noise else self.rtg_noise.shape[1]
            self.draw = np.empty((batch, rows, self.num_rtg_drawn), dtype=np.float32)
            k = self.rtg_noise.shape[2]
            self.draw_desc = self.draw[..., ::-1][..., :k] if top_k else self.draw
        self.top_k = bool(top_k) and self.rtg_noise is not None
        self.scratch = SelectionScratch(batch, num_candidates, num_rtg)
        self.q = np.empty((batch, num_candidates), dtype=np.float64)
        self.q_ok = np.empty((batch, num_candidates), dtype=bool)
        self.idx = np.zeros(batch, dtype=np.int64)
        self.flat_idx = np.empty(batch, dtype=np.int64)
        self.row_base = np.arange(batch, dtype=np.int64) * num_candidates
        if self.top_k:  # Q*_hi of the certificate and its work space
            self.q_hi = np.empty((batch, num_candidates), dtype=np.float64)
            self.q_tmp = np.empty((batch, num_candidates), dtype=np.float64)
            self.certified = np.zeros(batch, dtype=bool)
            self.best = np.empty(batch, dtype=np.float64)
        self.flat_actions = self.actions.reshape(batch * num_candidates, act_dim)
        self.out = np.empty((batch, act_dim), dtype=np.float32)
        self.out_ok = np.empty((batch, act_dim), dtype=bool)
        self.obs_ok = np.empty((batch, obs_dim), dtype=bool)
        self.row_ok = np.empty(batch, dtype=bool)
        self.row_ok2 = np.empty(batch, dtype=bool)


class EvorPolicy:
    """EVOR inference (Algorithm 2) around a compiled engine; numpy + onnxruntime only.

    Not thread-safe: use one policy per control thread.

    Invalid input handling: a wrong shape or a non-numeric dtype always raises
    :class:`InvalidObservationError`. NaN/Inf values raise it too with ``on_invalid="raise"``;
    with ``on_invalid="hold"`` the affected rows get the last good action of that row (the
    midpoint of the action bounds if there is none yet), never reach the engine, and are
    counted in ``invalid_count``. Non-finite engine outputs are handled the same way
    (:class:`EngineOutputError` or hold); candidates whose Q* is not finite are never chosen.
    """

    def __init__(
        self,
        manifest: Manifest,
        backend: Backend,
        *,
        engine_dir: str | os.PathLike[str] | None = None,
        num_candidates: int | None = None,
        num_rtg: int | None = None,
        tau_r: float | None = None,
        tau_q: float | None = None,
        seed: int | None = 0,
        on_invalid: str = "raise",
        common_rtg_noise: bool = False,
        rtg_top_k: int | None = None,
    ) -> None:
        if on_invalid not in ON_INVALID:
            raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {on_invalid!r}")
        self.manifest = manifest
        self.prune = prune_spec(manifest)  # the backend sizes a pruned engine's outputs for its K1 survivors
        self.backend = backend
        self.engine_dir = Path(engine_dir) if engine_dir is not None else None
        self.obs_dim = int(manifest.obs_dim)
        self.act_dim = int(manifest.act_dim)
        self.kind = manifest.kind
        self.on_invalid = on_invalid
        self.num_candidates = _check_count("num_candidates", manifest.default_num_candidates
                                           if num_candidates is None else num_candidates)
        self.num_rtg = _check_count("num_rtg", manifest.default_num_rtg if num_rtg is None else num_rtg)
        self.tau_r = check_tau_r(manifest.default_tau_r if tau_r is None else tau_r)
        self.tau_q = check_tau_q(manifest.default_tau_q if tau_q is None else tau_q)
        self.common_rtg_noise = bool(common_rtg_noise)
        self.rtg_top_k = None if rtg_top_k is None else _check_count("rtg_top_k", rtg_top_k)
        self._check_variant(self.num_candidates, self.num_rtg, self.rtg_top_k, self.tau_r)
        self.seed = seed
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.invalid_count = 0
        self.last = TickInfo()
        low = np.asarray(manifest.action_low, dtype=np.float64)
        high = np.asarray(manifest.action_high, dtype=np.float64)
        mid = np.where(np.isfinite(low) & np.isfinite(high), (low + high) / 2.0, 0.0)
        self.action_midpoint = mid.astype(np.float32)
        if len(manifest.obs_mean) == self.obs_dim:
            self._obs_fill = np.asarray(manifest.obs_mean, dtype=np.float32)
        else:
            self._obs_fill = np.zeros(self.obs_dim, dtype=np.float32)
        self._states: dict[tuple[int, int, int], _ShapeState] = {}
        self._held: dict[int, np.ndarray] = {}
        self._state(1)  # allocate the act() buffers now, not on the first tick

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(
        cls,
        engine_dir: str | os.PathLike[str],
        backend: str = "auto",
        num_candidates: int | None = None,
        num_rtg: int | None = None,
        tau_r: float | None = None,
        tau_q: float | None = None,
        seed: int | None = 0,
        providers: list[Any] | None = None,
        on_invalid: str = "raise",
        intra_op_threads: int | None = None,
        common_rtg_noise: bool = False,
        rtg_top_k: int | None = None,
    ) -> EvorPolicy:
        """Open ENGINE_DIR: verify manifest.json (format, version, engine sha256), open the backend.

        Arguments left ``None`` take the manifest's defaults. ``common_rtg_noise`` and ``rtg_top_k``
        select the run-time sampling variants (module docstring; defaults = the paper's). Raises
        :class:`EngineError` (a ``ValueError``) with a one-line reason when the directory cannot be run.
        """
        manifest = load_manifest(engine_dir)
        try:
            engine = make_backend(engine_dir, manifest, backend=backend, providers=providers,
                                  intra_op_threads=intra_op_threads)
        except EngineError:
            raise
        except ImportError as exc:
            raise EngineError(f"backend {backend!r} is not usable here: {exc}") from None
        return cls(manifest, engine, engine_dir=engine_dir, num_candidates=num_candidates, num_rtg=num_rtg,
                   tau_r=tau_r, tau_q=tau_q, seed=seed, on_invalid=on_invalid,
                   common_rtg_noise=common_rtg_noise, rtg_top_k=rtg_top_k)

    # ------------------------------------------------------------------ settings
    def reset(self, seed: int | None = None) -> None:
        """Start an episode: forget held actions and the invalid count; re-seed if ``seed`` given.

        With ``seed=None`` the random stream continues (episodes differ); pass a seed to
        replay exactly.
        """
        if seed is not None:
            self.seed = seed
            self.rng = np.random.Generator(np.random.PCG64(seed))
        self._held.clear()
        self.invalid_count = 0
        self.last = TickInfo()

    def set_num_candidates(self, n: int) -> None:
        """Change N_pi (inference-time scaling; no reload, the engine axis is dynamic)."""
        n = _check_count("num_candidates", n)
        self._check_variant(n, self.num_rtg, self.rtg_top_k, self.tau_r)
        self.num_candidates = n

    def set_num_rtg(self, n: int) -> None:
        """Change N, the reward-to-go samples per candidate (ignored by kind "qc" engines)."""
        n = _check_count("num_rtg", n)
        self._check_variant(self.num_candidates, n, self.rtg_top_k, self.tau_r)
        self.num_rtg = n

    def set_common_rtg_noise(self, common: bool) -> None:
        """Common random numbers on/off: one rtg_noise row per observation shared by all candidates."""
        self.common_rtg_noise = bool(common)

    def set_rtg_top_k(self, k: int | None) -> None:
        """Feed the engine only each row's k largest of the N draws (None: all N, the paper's)."""
        k = None if k is None else _check_count("rtg_top_k", k)
        self._check_variant(self.num_candidates, self.num_rtg, k, self.tau_r)
        self.rtg_top_k = k

    @property
    def engine_num_rtg(self) -> int:
        """N as the engine sees it: min(rtg_top_k, N) with tail evaluation, else N (1 for kind "qc")."""
        if self.kind != "evor":
            return 1
        return self.num_rtg if self.rtg_top_k is None else min(self.rtg_top_k, self.num_rtg)

    def _check_variant(self, num_candidates: int, num_rtg: int, top_k: int | None, tau_r: float) -> None:
        # The backend's own limits (pruned minimum, a TensorRT plan's profile) refuse now, not at the next act().
        self.backend.check_shape(1, num_candidates, (num_rtg if top_k is None else min(top_k, num_rtg))
                                 if self.kind == "evor" else 1)
        if self.kind != "evor":
            return
        engine_n = num_rtg if top_k is None else min(top_k, num_rtg)
        if top_k is not None and top_k < num_rtg and math.isinf(tau_r):
            raise ValueError("rtg_top_k needs a finite tau_r: the mean (tau_r = inf) needs every sample")
        if self.prune is not None:
            keep, screen = self.prune
            if num_candidates < keep:
                raise ValueError(f"this pruned engine keeps {keep} candidates: num_candidates must be >= {keep}, "
                                 f"got {num_candidates}")
            if engine_n < screen:
                raise ValueError(f"this pruned engine screens on {screen} reward-to-go samples: the engine's N "
                                 f"(num_rtg, or rtg_top_k) must be >= {screen}, got {engine_n}")

    def set_temperatures(self, tau_r: float | None = None, tau_q: float | None = None) -> None:
        """Change tau_R (> 0, inf = mean) and/or tau_Q (>= 0; 0 = argmax, inf = base policy)."""
        if tau_r is not None:
            tau_r = check_tau_r(tau_r)
            self._check_variant(self.num_candidates, self.num_rtg, self.rtg_top_k, tau_r)
            self.tau_r = tau_r
        if tau_q is not None:
            self.tau_q = check_tau_q(tau_q)

    @property
    def backend_name(self) -> str:
        """"onnxruntime" or "tensorrt"."""
        return self.backend.name

    def describe(self) -> dict[str, Any]:
        """JSON-able summary of the engine and the current settings."""
        return {
            **self.backend.describe(),
            "engine_dir": str(self.engine_dir) if self.engine_dir else None,
            "kind": self.kind,
            "precision": self.manifest.precision,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "num_candidates": self.num_candidates,
            "num_rtg": self.num_rtg if self.kind == "evor" else None,
            "tau_r": self.tau_r,
            "tau_q": self.tau_q,
            "common_rtg_noise": self.common_rtg_noise if self.kind == "evor" else None,
            "rtg_top_k": self.rtg_top_k if self.kind == "evor" else None,
            "survivors": self.prune[0] if self.prune else None,
            "critic_steps": self.manifest.extra.get("critic_steps") if isinstance(self.manifest.extra, dict) else None,
            "critic_solver": self.manifest.extra.get("critic_solver") if isinstance(self.manifest.extra, dict)
            else None,
            "seed": self.seed,
            "on_invalid": self.on_invalid,
        }

    def close(self) -> None:
        """Release engine buffers (device memory for TensorRT)."""
        self._states.clear()
        self.backend.close()

    def __enter__(self) -> EvorPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ acting
    def act(self, obs: Any) -> np.ndarray:
        """One observation ``(obs_dim,)`` -> one action ``(act_dim,)`` (float32, a fresh copy)."""
        start = time.perf_counter()
        arr = self._as_numeric(obs)
        if arr.shape != (self.obs_dim,):
            raise InvalidObservationError(f"observation shape {arr.shape} != expected ({self.obs_dim},)")
        state = self._state(1)
        _cast_into(state.obs[0], arr)
        out = self._tick(state, start)
        return out[0].copy()

    def act_batch(self, obs: Any) -> np.ndarray:
        """A batch ``(B, obs_dim)`` -> actions ``(B, act_dim)`` (float32, a fresh copy)."""
        start = time.perf_counter()
        arr = self._as_numeric(obs)
        if arr.ndim != 2 or arr.shape[1] != self.obs_dim or arr.shape[0] < 1:
            raise InvalidObservationError(
                f"observation batch shape {arr.shape} != expected (B, {self.obs_dim}) with B >= 1"
            )
        state = self._state(arr.shape[0])
        _cast_into(state.obs, arr)
        out = self._tick(state, start)
        return out.copy()

    def warmup(self, ticks: int = 5, batch: int = 1) -> None:
        """Run the engine a few times on the current shape (first runs are slow) without
        touching the policy's random stream or diagnostics."""
        state = self._state(batch)
        rng = np.random.default_rng(12345)
        for name, arr in state.io.inputs.items():
            if name == "obs":
                arr[...] = self._obs_fill
            else:
                rng.standard_normal(out=arr, dtype=np.float32)
        for _ in range(max(0, ticks)):
            self.backend.run(state.io)

    # ------------------------------------------------------------------ internals
    def _certify(self, state: _ShapeState, q: np.ndarray) -> None:
        _certify_rows(state, q, self.tau_r)

    def _state(self, batch: int) -> _ShapeState:
        engine_n = self.engine_num_rtg
        key = (batch, self.num_candidates, engine_n)
        top_k = self.kind == "evor" and self.rtg_top_k is not None
        common = self.kind == "evor" and self.common_rtg_noise
        skey = (*key, self.num_rtg if top_k else engine_n, common, top_k)
        state = self._states.get(skey)
        if state is None or state.io is not self.backend.buffers(*key):
            if len(self._states) >= 4:
                self._states.pop(next(iter(self._states)))
            state = _ShapeState(self.backend.buffers(*key), self.act_dim, self.obs_dim,
                                num_rtg_drawn=skey[3], common_rtg_noise=common, top_k=top_k)
            self._states[skey] = state
        return state

    def _held_actions(self, batch: int) -> np.ndarray:
        held = self._held.get(batch)
        if held is None:
            held = np.tile(self.action_midpoint, (batch, 1))
            self._held[batch] = held
        return held

    def _as_numeric(self, obs: Any) -> np.ndarray:
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

    def _tick(self, state: _ShapeState, start: float) -> np.ndarray:
        batch = state.obs.shape[0]
        np.isfinite(state.obs, out=state.obs_ok)
        np.logical_and.reduce(state.obs_ok, axis=1, out=state.row_ok)
        n_bad = batch - int(np.count_nonzero(state.row_ok))
        if n_bad:
            if self.on_invalid == "raise":
                rows = np.flatnonzero(~state.row_ok).tolist()
                where = "" if batch == 1 else f" in rows {rows[:10]}"
                raise InvalidObservationError(f"observation contains NaN or Inf{where}; refusing to run")
            state.obs[~state.row_ok] = self._obs_fill  # the engine never sees them
            self.invalid_count += n_bad
        held = self._held_actions(batch)
        last = self.last
        last.invalid_count = n_bad
        last.batch, last.num_candidates, last.num_rtg = state.io.shape
        if n_bad == batch:  # nothing valid: hold everything, skip the engine and the rng
            np.copyto(state.out, held)
            state.q.fill(np.nan)
            state.idx.fill(-1)
            last.q_star, last.chosen = state.q, state.idx
            last.engine_s = last.selection_s = 0.0
            last.latency_s = time.perf_counter() - start
            return state.out

        rng = self.rng
        rng.standard_normal(out=state.action_noise, dtype=np.float32)
        if state.rtg_noise is not None:
            if state.draw is None:
                rng.standard_normal(out=state.rtg_noise, dtype=np.float32)
            else:  # CRN row and/or tail evaluation: draw N, (sort,) broadcast the k largest into the engine
                rng.standard_normal(out=state.draw, dtype=np.float32)
                if state.top_k:
                    state.draw.sort(axis=-1)
                np.copyto(state.rtg_noise, state.draw_desc)
        t_engine = time.perf_counter()
        self.backend.run(state.io)
        t_select = time.perf_counter()

        if state.returns is not None:
            q = q_star(state.returns, self.tau_r, out=state.q, scratch=state.scratch)
            if state.top_k and state.num_rtg_drawn != state.returns.shape[2]:
                q += self.tau_r * math.log(state.returns.shape[2] / state.num_rtg_drawn)  # keep Eq. 39's 1/N
        else:
            q = state.q
            np.copyto(q, state.q_engine)
        np.isfinite(q, out=state.q_ok)
        if not state.q_ok.all():
            q[~state.q_ok] = -math.inf  # never chosen
            np.any(state.q_ok, axis=1, out=state.row_ok2)
            if not state.row_ok2.all():
                q[~state.row_ok2] = 0.0  # keep selection defined; the row is handled below
        idx = select(q, self.tau_q, rng, out=state.idx, scratch=state.scratch)
        np.add(state.row_base, idx, out=state.flat_idx)
        np.take(state.flat_actions, state.flat_idx, axis=0, out=state.out)
        if state.top_k:
            self._certify(state, q)
        np.isfinite(state.out, out=state.out_ok)
        np.logical_and.reduce(state.out_ok, axis=1, out=state.row_ok2)
        if not state.q_ok.all():
            np.logical_and(state.row_ok2, np.any(state.q_ok, axis=1), out=state.row_ok2)
        if not state.row_ok2.all():
            if self.on_invalid == "raise":
                raise EngineOutputError(
                    "the engine returned non-finite actions/values for every usable candidate; "
                    "check the engine (e.g. compare against the FP32 export)"
                )
            bad_out = ~state.row_ok2
            self.invalid_count += int(np.count_nonzero(bad_out & state.row_ok))
            np.logical_and(state.row_ok, state.row_ok2, out=state.row_ok)
            last.invalid_count = batch - int(np.count_nonzero(state.row_ok))
        if n_bad or not state.row_ok.all():
            bad = ~state.row_ok
            state.out[bad] = held[bad]
        np.copyto(held, state.out, where=state.row_ok[:, None])
        end = time.perf_counter()
        last.q_star, last.chosen = q, idx
        last.engine_num_rtg = int(state.rtg_noise.shape[2]) if state.rtg_noise is not None else 1
        last.certified = state.certified if state.top_k else None
        last.engine_s = t_select - t_engine
        last.selection_s = end - t_select
        last.latency_s = end - start
        return state.out


def _certify_rows(state: _ShapeState, q: np.ndarray, tau_r: float) -> None:
    """state.certified[b]: the chosen candidate's Q*_lo beats every other candidate's Q*_hi (module doc)."""
    dropped = state.num_rtg_drawn - state.returns.shape[2]
    if dropped <= 0:
        state.certified.fill(True)
        return
    q_hi, tmp = state.q_hi, state.q_tmp
    np.minimum.reduce(state.returns, axis=-1, out=tmp)  # smallest kept sample per candidate
    tmp *= 1.0 / tau_r
    tmp += math.log(dropped / state.num_rtg_drawn)
    np.multiply(q, 1.0 / tau_r, out=q_hi)
    with np.errstate(invalid="ignore"):
        np.logaddexp(q_hi, tmp, out=q_hi)
    q_hi *= tau_r
    flat_hi = q_hi.reshape(-1)
    flat_hi[state.flat_idx] = -math.inf  # exclude the chosen candidate itself
    np.maximum.reduce(q_hi, axis=1, out=state.best)
    np.greater_equal(np.take(q.reshape(-1), state.flat_idx), state.best, out=state.certified)


def _cast_into(dst: np.ndarray, src: np.ndarray) -> None:
    """Copy ``src`` into the float32 buffer; values beyond float32 range become +-inf (and are
    then refused as non-finite) without a RuntimeWarning."""
    if src.dtype == np.float32:
        np.copyto(dst, src)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            np.copyto(dst, src, casting="unsafe")


def _check_count(name: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)
