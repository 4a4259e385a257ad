"""Calibration and parity data: dataset observations, stratified over trajectories, with engine noise.

Observations come straight from an OGBench-format ``.npz`` (``observations`` and ``terminals``, read with
numpy; no environment or relabelling needed). Trajectories end where ``terminals`` is set. They are split
into two interleaved halves (even-numbered trajectories for calibration, odd-numbered for the parity
report), so the parity observations are disjoint from the calibration ones and both halves cover the
whole file (datasets are often recorded with the task or the noise changing over time).

Within a half, `stratified_indices` spreads the draw over trajectories: with n <= T it takes n evenly
spaced trajectories and one uniformly random step in each; with n > T every trajectory gets n // T
draws (the remainder going to evenly spaced trajectories), each trajectory is cut into that many equal
segments and one random step is drawn per segment. Never "the first N rows" (one trajectory's start).

The noise fed with each observation is drawn like the runtime draws it
(`evor_edge.runtime.noise.draw_engine_noise`: batch 1, action noise then reward-to-go noise, float32
N(0, 1)) from a seeded ``numpy`` Generator.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from evor_edge.runtime.noise import draw_engine_noise

from .errors import CalibrationError

MIN_SAMPLES = 16
MIN_TRAJECTORIES = 4


@dataclass
class ObservationSplit:
    """Calibration and held-out parity observations drawn from one dataset file."""

    calibration: np.ndarray  # [n, obs_dim] float32
    parity: np.ndarray  # [m, obs_dim] float32
    calibration_rows: np.ndarray  # dataset row of each calibration observation
    parity_rows: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def load_observations(path: str | os.PathLike[str], obs_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(observations [N, obs_dim] float32, terminals [N] bool) from an OGBench-format .npz.

    Raises CalibrationError for a missing / unreadable file, missing arrays, a dimension that does not
    match the engine's obs_dim, or NaN / Inf observations.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"dataset file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("observations", "terminals") if k not in data.files]
            if missing:
                raise CalibrationError(f"dataset {path} lacks {missing} (has {sorted(data.files)})")
            obs = np.asarray(data["observations"])
            terminals = np.asarray(data["terminals"])
    except CalibrationError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise CalibrationError(f"cannot read dataset {path}: {type(exc).__name__}: {exc}") from None
    if obs.ndim != 2 or obs.shape[0] == 0:
        raise CalibrationError(f"dataset {path}: 'observations' has shape {obs.shape}, expected (N, obs_dim)")
    if obs.shape[1] != obs_dim:
        raise CalibrationError(
            f"dataset {path} has observations of dimension {obs.shape[1]} but the engine expects {obs_dim}"
        )
    if terminals.shape != (obs.shape[0],):
        raise CalibrationError(f"dataset {path}: 'terminals' has shape {terminals.shape}, expected ({obs.shape[0]},)")
    if obs.dtype.kind not in "fiu":
        raise CalibrationError(f"dataset {path}: 'observations' dtype {obs.dtype} is not numeric")
    obs = obs.astype(np.float32, copy=False)
    if not np.isfinite(obs).all():
        raise CalibrationError(f"dataset {path}: 'observations' contains NaN or Inf")
    return obs, terminals.astype(bool, copy=False)


def trajectory_bounds(terminals: np.ndarray) -> np.ndarray:
    """[T, 2] (start, end) row ranges of the trajectories; a trailing non-terminal tail is one more."""
    ends = np.flatnonzero(np.asarray(terminals, dtype=bool)) + 1
    n = len(terminals)
    if len(ends) == 0 or ends[-1] != n:
        ends = np.append(ends, n)
    starts = np.concatenate([[0], ends[:-1]])
    bounds = np.stack([starts, ends], axis=1).astype(np.int64)
    return bounds[bounds[:, 1] > bounds[:, 0]]


def _evenly_spaced(total: int, count: int) -> np.ndarray:
    """`count` distinct indices in [0, total) spread evenly (count <= total)."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, total - 1, count)).astype(np.int64))


def stratified_indices(bounds: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` distinct dataset rows spread over the trajectories `bounds` (see the module docstring)."""
    bounds = np.asarray(bounds, dtype=np.int64).reshape(-1, 2)
    num = len(bounds)
    lengths = bounds[:, 1] - bounds[:, 0]
    if n < 1 or num == 0:
        return np.zeros(0, dtype=np.int64)
    if n > int(lengths.sum()):
        raise CalibrationError(f"cannot draw {n} distinct observations from {int(lengths.sum())} rows")
    counts = np.zeros(num, dtype=np.int64)
    if n <= num:
        counts[_evenly_spaced(num, n)] = 1
    else:
        counts[:] = n // num
        counts[_evenly_spaced(num, n % num)] += 1
    # a trajectory shorter than its share gives the excess to the longest ones with room
    overflow = int(np.maximum(counts - lengths, 0).sum())
    counts = np.minimum(counts, lengths)
    while overflow:
        room = lengths - counts
        j = int(np.argmax(room))
        take = min(overflow, int(room[j]))
        counts[j] += take
        overflow -= take
    rows: list[np.ndarray] = []
    for (start, end), k in zip(bounds, counts, strict=True):
        if k == 0:
            continue
        length = end - start
        edges = np.floor(np.arange(k + 1) * length / k).astype(np.int64)  # k segments, each >= 1 row
        picks = edges[:-1] + np.floor(rng.random(k) * (edges[1:] - edges[:-1])).astype(np.int64)
        rows.append(start + picks)
    return np.sort(np.concatenate(rows))


def split_observations(
    path: str | os.PathLike[str], obs_dim: int, samples: int, parity_samples: int, seed: int = 0,
) -> ObservationSplit:
    """Draw `samples` calibration and `parity_samples` held-out observations (disjoint trajectories)."""
    if samples < MIN_SAMPLES:
        raise CalibrationError(f"--samples {samples} is too few to calibrate; use at least {MIN_SAMPLES}")
    if parity_samples < 1:
        raise CalibrationError(f"parity samples must be >= 1, got {parity_samples}")
    obs, terminals = load_observations(path, obs_dim)
    bounds = trajectory_bounds(terminals)
    if len(bounds) < MIN_TRAJECTORIES:
        raise CalibrationError(
            f"dataset {path} has {len(bounds)} trajectories; calibration needs at least {MIN_TRAJECTORIES} "
            "(half for calibration, half held out for the parity report)"
        )
    calib_bounds, parity_bounds = bounds[0::2], bounds[1::2]
    for name, part, want in (("calibration", calib_bounds, samples), ("parity", parity_bounds, parity_samples)):
        rows = int((part[:, 1] - part[:, 0]).sum())
        if rows < want:
            raise CalibrationError(
                f"dataset {path}: the {name} half has {rows} observations, fewer than the {want} requested"
            )
    rng = np.random.default_rng(seed)
    calib_rows = stratified_indices(calib_bounds, samples, rng)
    parity_rows = stratified_indices(parity_bounds, parity_samples, rng)
    info = {
        "dataset": str(Path(path).resolve()),
        "rows": int(len(obs)),
        "trajectories": int(len(bounds)),
        "calibration_trajectories": int(len(np.unique(np.searchsorted(calib_bounds[:, 1], calib_rows, "right")))),
        "parity_trajectories": int(len(np.unique(np.searchsorted(parity_bounds[:, 1], parity_rows, "right")))),
        "split": "even-numbered trajectories calibrate, odd-numbered are held out for parity",
        "seed": int(seed),
    }
    return ObservationSplit(obs[calib_rows].copy(), obs[parity_rows].copy(), calib_rows, parity_rows, info)


def engine_feeds(
    observations: np.ndarray, kind: str, act_dim: int, num_candidates: int, num_rtg: int, seed: int,
) -> list[dict[str, np.ndarray]]:
    """One engine input dict per observation (batch 1), noise drawn as the runtime draws it."""
    rng = np.random.Generator(np.random.PCG64(seed))
    feeds: list[dict[str, np.ndarray]] = []
    for row in np.asarray(observations, dtype=np.float32):
        action_noise, rtg_noise = draw_engine_noise(rng, 1, num_candidates, num_rtg, act_dim, kind)
        feed = {"obs": row[None, :].copy(), "action_noise": action_noise}
        if rtg_noise is not None:
            feed["rtg_noise"] = rtg_noise
        feeds.append(feed)
    return feeds


class EngineCalibrationReader(CalibrationDataReader):
    """onnxruntime CalibrationDataReader over precomputed engine feeds (rewindable, range-selectable)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.start, self.end = 0, len(feeds)
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = iter(self.feeds[self.start:self.end])
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = int(start_index), int(end_index)
        self._iter = None

    def __len__(self) -> int:
        return len(self.feeds)
