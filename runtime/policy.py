"""EvorPolicy: the embeddable, torch-free policy (engine + Algorithm 2 selection).

Per tick (``act`` / ``act_batch``)::

    obs  --validate/cast-->  obs buffer [B, obs_dim] (float32, pre-allocated)
    rng  --> action_noise [B, N_pi, act_dim], then rtg_noise [B, N_pi, N]   (kind "evor")
    engine(obs, action_noise[, rtg_noise]) -> actions [B, N_pi, act_dim], returns [B, N_pi, N] | q [B, N_pi]
    Q* = tau_R * log mean_j exp(returns_ij / tau_R)          (Eq. 16/22/38-39; kind "qc": Q* = q)
    i* ~ softmax_i(Q*_i / tau_Q) with one rng.random() per row (Eq. 40; tau_Q = 0: argmax, no draw)
    return actions[b, i*_b]

Random numbers come from the policy's own ``np.random.Generator(PCG64(seed))`` in exactly that
order (:mod:`evor_edge.runtime.noise`; :func:`draw_engine_noise` and :func:`select_from_outputs` reproduce
a tick in plain numpy), so the same seed and observations give the same actions.

Run-time variants of the reward-to-go sampling (defaults = the paper's: N i.i.d. draws per candidate):

* ``common_rtg_noise=True`` (common random numbers, CRN): one row ``[N]`` per observation is drawn
  (``rtg ~ N(0, 1)`` float32 ``[B, 1, N]``) and broadcast to every candidate, so all candidates are
  compared on identical draws (a paired comparison: lower variance of Q*_i - Q*_j).
* ``rtg_top_k=k`` (tail evaluation): the N draws are made exactly as without it (same random stream),
  but only each row's k largest draws, in descending order, are fed to the engine (rtg_noise
  ``[B, N_pi, k]``); Q* keeps Eq. 39's 1/N and ``last.certified`` says per row whether the decision is
  provably the full-N one (the math: :mod:`evor_edge.runtime.selection`, :func:`certify_tail`).
  Not defined for tau_R = inf (the mean needs every sample).
* pruned engines (``export --prune K1:N1``): the engine returns only K1 survivors
  (``actions [B, K1, act]``, ``returns [B, K1, N]``); selection runs over them and ``last.chosen``
  indexes the survivors. They need N_pi >= K1 and an engine N (k with rtg_top_k) >= N1.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, make_backend
from .manifest import EngineError, Manifest, load_manifest, prune_spec
from .selection import certify_tail, check_tau_q, check_tau_r, q_star, select
from .settings import PolicySettings
from .tick import (
    EngineOutputError,
    InvalidObservationError,
    TickInfo,
    TickState,
    as_numeric,
    cast_into,
    check_count,
)

__all__ = [
    "EngineOutputError",
    "EvorPolicy",
    "InvalidObservationError",
    "TickInfo",
]

ON_INVALID = ("raise", "hold")


class EvorPolicy(PolicySettings):
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
        self.num_candidates = check_count("num_candidates", manifest.default_num_candidates
                                           if num_candidates is None else num_candidates)
        self.num_rtg = check_count("num_rtg", manifest.default_num_rtg if num_rtg is None else num_rtg)
        self.tau_r = check_tau_r(manifest.default_tau_r if tau_r is None else tau_r)
        self.tau_q = check_tau_q(manifest.default_tau_q if tau_q is None else tau_q)
        self._warn_screen_tau_r(self.tau_r)
        self.common_rtg_noise = bool(common_rtg_noise)
        self.rtg_top_k = None if rtg_top_k is None else check_count("rtg_top_k", rtg_top_k)
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
        self._states: dict[tuple[int, int, int], TickState] = {}
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
        arr = as_numeric(obs)
        if arr.shape != (self.obs_dim,):
            raise InvalidObservationError(f"observation shape {arr.shape} != expected ({self.obs_dim},)")
        state = self._state(1)
        cast_into(state.obs[0], arr)
        out = self._tick(state, start)
        return out[0].copy()

    def act_batch(self, obs: Any) -> np.ndarray:
        """A batch ``(B, obs_dim)`` -> actions ``(B, act_dim)`` (float32, a fresh copy)."""
        start = time.perf_counter()
        arr = as_numeric(obs)
        if arr.ndim != 2 or arr.shape[1] != self.obs_dim or arr.shape[0] < 1:
            raise InvalidObservationError(
                f"observation batch shape {arr.shape} != expected (B, {self.obs_dim}) with B >= 1"
            )
        state = self._state(arr.shape[0])
        cast_into(state.obs, arr)
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
    def _state(self, batch: int) -> TickState:
        engine_n = self.engine_num_rtg
        key = (batch, self.num_candidates, engine_n)
        top_k = self.kind == "evor" and self.rtg_top_k is not None
        common = self.kind == "evor" and self.common_rtg_noise
        skey = (*key, self.num_rtg if top_k else engine_n, common, top_k)
        state = self._states.get(skey)
        if state is None or state.io is not self.backend.buffers(*key):
            if len(self._states) >= 4:
                self._states.pop(next(iter(self._states)))
            state = TickState(self.backend.buffers(*key), self.act_dim, self.obs_dim,
                                num_rtg_drawn=skey[3], common_rtg_noise=common, top_k=top_k,
                                pruned=self.prune is not None)
            self._states[skey] = state
        return state

    def _held_actions(self, batch: int) -> np.ndarray:
        held = self._held.get(batch)
        if held is None:
            held = np.tile(self.action_midpoint, (batch, 1))
            self._held[batch] = held
        return held

    def _tick(self, state: TickState, start: float) -> np.ndarray:
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
            if state.candidate is not None:
                state.candidate.fill(-1)
            last.q_star, last.chosen, last.candidate = state.q, state.idx, state.candidate
            last.survivors = state.survivor_index
            last.engine_s = last.selection_s = 0.0
            last.latency_s = time.perf_counter() - start
            return state.out

        rng = self.rng
        state.noise.fill(rng)
        t_engine = time.perf_counter()
        self.backend.run(state.io)
        t_select = time.perf_counter()

        if state.returns is not None:  # tail evaluation: Q* keeps Eq. 39's 1/N over the N drawn
            q = q_star(state.returns, self.tau_r, out=state.q, scratch=state.scratch, num_drawn=state.num_rtg_drawn)
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
            certify_tail(state.returns, q, idx, self.tau_r, state.num_rtg_drawn, out=state.certified,
                         scratch=state.tail)
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
        if state.survivor_index is not None:  # the chosen survivor's index among the N_pi candidates
            np.take(state.survivor_index.reshape(-1), state.flat_idx, out=state.candidate)
            if not state.row_ok.all():
                state.candidate[~state.row_ok] = -1
        last.q_star, last.chosen, last.candidate, last.survivors = q, idx, state.candidate, state.survivor_index
        last.engine_num_rtg = int(state.rtg_noise.shape[2]) if state.rtg_noise is not None else 1
        last.certified = state.certified if state.top_k else None
        last.engine_s = t_select - t_engine
        last.selection_s = end - t_select
        last.latency_s = end - start
        return state.out


