"""The run-time knobs of `EvorPolicy` (N_pi, N, tail evaluation, CRN, temperatures) and their checks.

Every change is checked against the engine and backend at once (a pruned engine's N_pi >= K1 and N >= N1,
a TensorRT plan's profile), so a bad setting fails when it is made, not at the next tick. Torch-free.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from .selection import check_tau_q, check_tau_r
from .tick import check_count

__all__ = ["PolicySettings"]

_UNCHANGED = object()


class PolicySettings:
    """Mixin of `EvorPolicy`: expects ``manifest``, ``backend``, ``kind``, ``prune`` and the settings
    ``num_candidates``, ``num_rtg``, ``rtg_top_k``, ``common_rtg_noise``, ``tau_r``, ``tau_q``."""

    manifest: Any
    backend: Any
    kind: str
    prune: tuple[int, int] | None
    num_candidates: int
    num_rtg: int
    rtg_top_k: int | None
    common_rtg_noise: bool
    tau_r: float
    tau_q: float

    def set_num_candidates(self, n: int) -> None:
        """Change N_pi (inference-time scaling; no reload, the engine axis is dynamic)."""
        self.configure(num_candidates=check_count("num_candidates", n))

    def set_num_rtg(self, n: int) -> None:
        """Change N, the reward-to-go samples per candidate (ignored by kind "qc" engines)."""
        self.configure(num_rtg=check_count("num_rtg", n))

    def set_common_rtg_noise(self, common: bool) -> None:
        """Common random numbers on/off: one rtg_noise row per observation shared by all candidates."""
        self.common_rtg_noise = bool(common)

    def set_rtg_top_k(self, k: int | None) -> None:
        """Feed the engine only each row's k largest of the N draws (None: all N, the paper's)."""
        self.configure(rtg_top_k=k)

    def configure(self, num_candidates: int | None = None, num_rtg: int | None = None,
                  rtg_top_k: int | None | object = _UNCHANGED, common_rtg_noise: bool | None = None) -> None:
        """Change several run-time settings at once (None / not given: unchanged; ``rtg_top_k=None``: off).

        The combination is checked as a whole before anything changes, so no order of single setters is
        needed to keep every intermediate (N_pi, N, k) valid for a pruned engine or a TensorRT profile.
        """
        n_pi = check_count("num_candidates", self.num_candidates if num_candidates is None else num_candidates)
        n = check_count("num_rtg", self.num_rtg if num_rtg is None else num_rtg)
        top_k = self.rtg_top_k if rtg_top_k is _UNCHANGED else rtg_top_k
        top_k = None if top_k is None else check_count("rtg_top_k", top_k)
        self._check_variant(n_pi, n, top_k, self.tau_r)
        self.num_candidates, self.num_rtg, self.rtg_top_k = n_pi, n, top_k
        if common_rtg_noise is not None:
            self.common_rtg_noise = bool(common_rtg_noise)

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
            self._warn_screen_tau_r(tau_r)
            self.tau_r = tau_r
        if tau_q is not None:
            self.tau_q = check_tau_q(tau_q)

    def _warn_screen_tau_r(self, tau_r: float) -> None:
        """A pruned engine's screen ranks candidates with the tau_R baked in at export: warn on another one."""
        screen = self.screen_tau_r
        if screen is None or tau_r == screen or (math.isfinite(tau_r) and math.isclose(tau_r, screen, rel_tol=1e-9)):
            return
        warnings.warn(f"tau_r={tau_r:g} differs from the tau_R={screen:g} this pruned engine's screen was exported "
                      f"with: the survivors are ranked at {screen:g}, the selection among them at {tau_r:g} "
                      f"(re-export with --prune at this tau_R for a consistent screen)", RuntimeWarning, stacklevel=3)

    @property
    def screen_tau_r(self) -> float | None:
        """The tau_R a pruned engine's screen was exported with (None: not pruned, or not recorded)."""
        prune = self.manifest.extra.get("prune") if isinstance(self.manifest.extra, dict) else None
        value = prune.get("screen_tau_r") if isinstance(prune, dict) else None
        return None if value is None else float(value)
