"""Self-contained offline datasets: train on a robot's own logs, no simulator or OGBench import needed.

The file format (``docs/datasets.md``) is one ``.npz`` read with ``allow_pickle=False``:

    observations       [T, obs_dim] float    required
    actions            [T, act_dim] float    required
    rewards            [T]          float    required
    terminals          [T]          0/1      required; its meaning depends on the convention below
    timeouts           [T]          0/1      D4RL / Minari convention: terminals = true termination,
                                             timeouts = time-limit truncation; an episode ends at either
    masks              [T]          0/1      OGBench convention: terminals = episode end, masks = 0 where
                                             the task terminated (no bootstrap)
    next_observations  [T, obs_dim] float    optional; else observations[t + 1] within an episode, and a
                                             truncated episode's last transition is dropped (as OGBench does)
    action_low/high    [act_dim]    float    optional; else --action-low/--action-high, else the data's
                                             min/max (with a warning)
    metadata           0-d str      JSON     optional (source, task, ...), recorded with the run

`load_offline_dataset` returns the arrays in the layout training uses (OGBench's after loading:
``terminals`` = episode end, ``masks`` = 1 - true termination, ``next_observations``), every defect a
`DatasetError` with one line.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evor_edge.datasets import DatasetError

FORMAT_NAME = "evor-edge-offline"
FORMAT_VERSION = 1
REQUIRED = ("observations", "actions", "rewards", "terminals")
BOUND_TOLERANCE = 1e-5


@dataclass
class OfflineDataset:
    """Training arrays (OGBench's loaded layout) plus the action box and where the data came from."""

    train: dict[str, np.ndarray]
    action_low: np.ndarray
    action_high: np.ndarray
    convention: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def obs_dim(self) -> int:
        return int(self.train["observations"].shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.train["actions"].shape[1])


def is_offline_file(path: str | os.PathLike[str]) -> bool:
    """True for a file in this format (it stores rewards; OGBench's raw files do not)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return "rewards.npy" in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise DatasetError(f"{path}: holds Python objects (pickle), which are never loaded; store plain "
                               "numeric arrays") from None
        raise DatasetError(f"{path}: not a readable .npz ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DatasetError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None


def _flag(arrays: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    values = np.asarray(arrays[key])
    if values.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: '{key}' must be numeric 0/1, has dtype {values.dtype}")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise DatasetError(f"{path}: '{key}' has NaN/Inf values")
    if not np.all((values == 0) | (values == 1)):
        raise DatasetError(f"{path}: '{key}' must hold only 0 and 1")
    return values.astype(bool)


def _parse_bound(value: str | float | list[float] | np.ndarray | None, act_dim: int, name: str
                 ) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = [float(x) for x in value.split(",")]
        except ValueError:
            raise DatasetError(f"{name} {value!r}: expected a number or a comma list of {act_dim} numbers") from None
    bound = np.asarray(value, dtype=np.float64).reshape(-1)
    if bound.size == 1:
        bound = np.full(act_dim, bound[0])
    if bound.size != act_dim:
        raise DatasetError(f"{name}: {bound.size} values for act_dim {act_dim}")
    if not np.all(np.isfinite(bound)):
        raise DatasetError(f"{name}: bounds must be finite")
    return bound


def load_offline_dataset(path: str | os.PathLike[str], action_low: Any = None, action_high: Any = None
                         ) -> OfflineDataset:
    """Read and check a file of this format; return training arrays in OGBench's loaded layout.

    action_low / action_high (a number, a comma list or an array) override the bounds stored in the file.
    """
    path = Path(path)
    arrays = _read(path)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise DatasetError(f"{path}: missing required arrays {missing} (has {sorted(arrays)}; see docs/datasets.md)")
    obs, actions = np.asarray(arrays["observations"]), np.asarray(arrays["actions"])
    rewards = np.asarray(arrays["rewards"])
    if rewards.ndim == 2 and rewards.shape[1] == 1:
        rewards = rewards[:, 0]
    if obs.ndim != 2 or actions.ndim != 2 or rewards.ndim != 1:
        raise DatasetError(f"{path}: expected observations [T, obs_dim], actions [T, act_dim], rewards [T]; got "
                           f"{obs.shape}, {actions.shape}, {rewards.shape}")
    size = obs.shape[0]
    optional = [k for k in ("terminals", "timeouts", "masks", "next_observations") if k in arrays]
    for key, value in [("actions", actions), ("rewards", rewards)] + [(k, arrays[k]) for k in optional]:
        if len(value) != size:
            raise DatasetError(f"{path}: '{key}' has {len(value)} rows, 'observations' has {size}")
    if size < 2:
        raise DatasetError(f"{path}: needs at least 2 transitions, has {size}")
    for key, value in [("observations", obs), ("actions", actions), ("rewards", rewards)] + (
            [("next_observations", arrays["next_observations"])] if "next_observations" in arrays else []):
        if value.dtype.kind not in "biuf":
            raise DatasetError(f"{path}: '{key}' must be numeric, has dtype {value.dtype}")
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        if bad:
            raise DatasetError(f"{path}: '{key}' has {bad} NaN/Inf values")
    if "next_observations" in arrays and arrays["next_observations"].shape != obs.shape:
        raise DatasetError(f"{path}: next_observations {arrays['next_observations'].shape} does not match "
                           f"observations {obs.shape}")

    terminals = _flag(arrays, "terminals", path)
    has_timeouts, has_masks = "timeouts" in arrays, "masks" in arrays
    if has_timeouts:  # D4RL / Minari: terminals = true termination
        convention = "d4rl"
        terminated = terminals
        episode_end = terminals | _flag(arrays, "timeouts", path)
        if has_masks and np.any(_flag(arrays, "masks", path) == terminated):
            bad = int(np.count_nonzero(_flag(arrays, "masks", path) == terminated))
            raise DatasetError(f"{path}: 'timeouts' and 'masks' both given but contradict on {bad} rows "
                               "(D4RL terminals mean termination, so masks must be 1 - terminals)")
    elif has_masks:  # OGBench: terminals = episode end, masks = 0 on termination
        convention = "ogbench"
        terminated = ~_flag(arrays, "masks", path)
        episode_end = terminals
    else:
        raise DatasetError(f"{path}: cannot tell time limits from terminations: add 'timeouts' (D4RL/Minari "
                           "convention) or 'masks' (OGBench convention); see docs/datasets.md")
    notes: list[str] = []
    if not episode_end[-1]:
        episode_end = episode_end.copy()
        episode_end[-1] = True
        notes.append("the last transition ends no episode: treated as a time-limit truncation")

    low = _parse_bound(action_low, actions.shape[1], "--action-low")
    high = _parse_bound(action_high, actions.shape[1], "--action-high")
    stored = {k: _parse_bound(arrays[k], actions.shape[1], k) for k in ("action_low", "action_high") if k in arrays}
    low = low if low is not None else stored.get("action_low")
    high = high if high is not None else stored.get("action_high")
    if low is None or high is None:
        warnings.warn(f"{path}: no action bounds stored or given; using the data's min/max (pass --action-low/"
                      "--action-high for the robot's real limits)", stacklevel=2)
        low = actions.min(axis=0).astype(np.float64) if low is None else low
        high = actions.max(axis=0).astype(np.float64) if high is None else high
        notes.append("action bounds taken from the data's min/max")
    if np.any(low >= high):
        raise DatasetError(f"{path}: action_low must be < action_high in every dimension (low {low}, high {high})")
    outside = (actions < low - BOUND_TOLERANCE) | (actions > high + BOUND_TOLERANCE)
    if np.any(outside):
        rows = np.flatnonzero(outside.any(axis=1))
        raise DatasetError(f"{path}: {rows.size} actions lie outside the action bounds [{low.tolist()}, "
                           f"{high.tolist()}] (first at row {rows[0]})")

    obs32 = np.ascontiguousarray(obs, dtype=np.float32)
    train = {
        "observations": obs32,
        "actions": np.ascontiguousarray(actions, dtype=np.float32),
        "rewards": rewards.astype(np.float32),
        "masks": (~terminated).astype(np.float32),
        "terminals": episode_end.astype(np.float32),
    }
    if "next_observations" in arrays:
        train["next_observations"] = np.ascontiguousarray(arrays["next_observations"], dtype=np.float32)
    else:
        train = _shift_next_observations(train, notes)
    if len(train["observations"]) < 1:
        raise DatasetError(f"{path}: no transition has a next observation (every episode has one step?)")
    metadata = _metadata(arrays, path)
    metadata.setdefault("notes", []).extend(notes)
    return OfflineDataset(train, low.astype(np.float32), high.astype(np.float32), convention, metadata)


def _shift_next_observations(train: dict[str, np.ndarray], notes: list[str]) -> dict[str, np.ndarray]:
    """next_observations[t] = observations[t + 1] inside episodes; drop truncated episodes' last steps.

    The last step of a terminated episode keeps its own observation as x' (it is never used: mask 0).
    """
    obs, ends, masks = train["observations"], train["terminals"] > 0, train["masks"] > 0
    following = np.concatenate([obs[1:], obs[-1:]])
    next_obs = np.where(ends[:, None], obs, following)
    keep = ~(ends & masks)  # a truncated episode's last step has no recorded successor
    dropped = int(np.count_nonzero(~keep))
    if dropped:
        notes.append(f"{dropped} truncated episode ends dropped (no next observation recorded)")
    # The step before a dropped truncation now ends its episode.
    next_dropped = np.concatenate([~keep[1:], [False]])
    out = {k: v[keep] for k, v in train.items()}
    out["next_observations"] = next_obs[keep]
    out["terminals"] = (ends | next_dropped)[keep].astype(np.float32)
    return out


def _metadata(arrays: dict[str, np.ndarray], path: Path) -> dict[str, Any]:
    if "metadata" not in arrays:
        return {}
    try:
        data = json.loads(str(arrays["metadata"]))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: 'metadata' is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: 'metadata' must be a JSON object")
    return data


def write_offline_dataset(path: str | os.PathLike[str], arrays: dict[str, np.ndarray],
                          metadata: dict[str, Any]) -> Path:
    """Write a file of this format atomically (temp file + rename); `metadata` becomes the JSON entry."""
    from evor_edge.io import atomic_write_bytes

    path = Path(path)
    if path.suffix != ".npz":
        raise DatasetError(f"output must end in .npz: {path}")
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **metadata}
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays, metadata=np.array(json.dumps(meta)))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def import_ogbench(task: str, dataset_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Relabel an OGBench single-task dataset once (OGBench's own relabelling) and write it in this format."""
    from evor_edge.datasets import load_task_dataset

    env, train, _val = load_task_dataset(task, dataset_path)
    space = env.action_space
    arrays = {k: train[k] for k in ("observations", "actions", "next_observations", "rewards", "terminals", "masks")}
    arrays["action_low"] = np.broadcast_to(space.low, space.shape).astype(np.float32)
    arrays["action_high"] = np.broadcast_to(space.high, space.shape).astype(np.float32)
    env.close()
    written = write_offline_dataset(out, arrays, {"source": "ogbench", "task": task, "dataset": str(dataset_path),
                                                  "convention": "ogbench"})
    return _import_report(written, arrays, task)


def import_minari(dataset_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Concatenate a local Minari dataset's episodes into this format (D4RL convention)."""
    try:
        import minari
    except ImportError:
        raise DatasetError("importing a Minari dataset needs the 'minari' package (pip install minari)") from None
    source = Path(dataset_dir)
    if not source.is_dir():
        raise DatasetError(f"Minari dataset directory not found: {source}")
    try:
        dataset = minari.MinariDataset(source / "data" if (source / "data").is_dir() else source)
    except Exception as e:  # noqa: BLE001 - minari raises many types for a bad directory
        raise DatasetError(f"{source}: Minari could not open it ({type(e).__name__}: {e})") from None
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("observations", "next_observations", "actions",
                                                             "rewards", "terminals", "timeouts")}
    for episode in dataset.iterate_episodes():
        obs = np.asarray(episode.observations)
        if obs.ndim != 2:
            raise DatasetError(f"{source}: only flat Box observations are supported (got shape {obs.shape})")
        columns["observations"].append(obs[:-1])
        columns["next_observations"].append(obs[1:])
        columns["actions"].append(np.asarray(episode.actions).reshape(len(obs) - 1, -1))
        columns["rewards"].append(np.asarray(episode.rewards, dtype=np.float32))
        columns["terminals"].append(np.asarray(episode.terminations, dtype=np.float32))
        columns["timeouts"].append(np.asarray(episode.truncations, dtype=np.float32))
    if not columns["observations"]:
        raise DatasetError(f"{source}: the Minari dataset has no episodes")
    arrays = {k: np.concatenate(v) for k, v in columns.items()}
    space = dataset.action_space
    if hasattr(space, "low"):
        arrays["action_low"] = np.broadcast_to(space.low, space.shape).astype(np.float32)
        arrays["action_high"] = np.broadcast_to(space.high, space.shape).astype(np.float32)
    written = write_offline_dataset(out, arrays, {"source": "minari", "dataset": str(source), "convention": "d4rl"})
    return _import_report(written, arrays, None)


def _import_report(path: Path, arrays: dict[str, np.ndarray], task: str | None) -> dict[str, Any]:
    return {"path": str(path), "task": task, "transitions": int(len(arrays["observations"])),
            "obs_dim": int(arrays["observations"].shape[1]), "act_dim": int(arrays["actions"].shape[1]),
            "bytes": path.stat().st_size}
