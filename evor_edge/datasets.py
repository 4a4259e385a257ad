"""Loading OGBench single-task datasets from a local file, with validation.

OGBench normally downloads its datasets from a server this machine cannot reach. This
module reads files in the official OGBench format (the ``ogbench.load_dataset`` layout:
``observations``, ``actions``, ``terminals``, ``qpos``, ``qvel`` and, for some
environments, ``button_states``), whether they were downloaded elsewhere or made locally
by :mod:`evor_edge.datagen`.

Loading always goes through ``ogbench.make_env_and_datasets`` so that the single-task
reward relabelling (``rewards`` in {-k, ..., 0} and ``masks`` = 0 on success states) is
OGBench's own. The files are checked before loading (existence, zip structure, required
keys, array shapes against the environment's spaces, read from the ``.npy`` headers
without decompressing the arrays) and after loading (non-finite values, emptiness). Every
problem is reported as a :class:`DatasetError` with a one-line message.

Memory: ``.npz`` members are (compressed) zip entries, so ``np.load`` cannot memory-map
them; each array is decompressed into RAM once. ``ogbench.load_dataset`` converts dtypes
with ``astype(copy=False)`` and this module adds no further copies of the large arrays
(the boolean masks used for the NaN/Inf checks are transient).
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

REQUIRED_KEYS: tuple[str, ...] = ("observations", "actions", "terminals", "qpos", "qvel")
"""Arrays every OGBench dataset file must hold (``qpos``/``qvel`` drive the relabelling)."""

_VERSION_RE = re.compile(r"^v\d+$")
_TASK_RE = re.compile(r"^task\d+$")
_LOADER_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    KeyError,
    ValueError,
    EOFError,
    OSError,
    zlib.error,
    IndexError,
)


class DatasetError(ValueError):
    """A dataset or task name problem, with a one-line, user-facing message."""


def _registered_env_ids() -> set[str]:
    """Gymnasium env ids after OGBench has registered its environments."""
    import gymnasium
    import ogbench  # noqa: F401  (registers the OGBench environments)

    return set(gymnasium.registry.keys())


def split_task_name(task: str) -> tuple[str, str]:
    """Split an OGBench single-task name into (env name, dataset name).

    ``'pointmaze-medium-navigate-singletask-task1-v0'`` gives
    ``('pointmaze-medium-singletask-task1-v0', 'pointmaze-medium-navigate-v0')``, the same
    split ``ogbench.make_env_and_datasets`` performs.

    Raises:
        DatasetError: if ``task`` is not of that form or its env id is not registered.
    """
    example = "e.g. 'pointmaze-medium-navigate-singletask-task1-v0'"
    if not isinstance(task, str) or not task:
        raise DatasetError(f"task name must be a non-empty string, {example}")
    parts = task.split("-")
    if "singletask" not in parts or any(not p for p in parts):
        raise DatasetError(f"'{task}' is not an OGBench single-task name ({example})")
    pos = parts.index("singletask")
    tail = parts[pos + 1 :]
    tail_ok = (len(tail) == 1 and _VERSION_RE.match(tail[0])) or (
        len(tail) == 2 and _TASK_RE.match(tail[0]) and _VERSION_RE.match(tail[1])
    )
    # At least one env word and the dataset type ('navigate', 'play', ...) before 'singletask'.
    if pos < 2 or not tail_ok:
        raise DatasetError(f"'{task}' is not an OGBench single-task name ({example})")
    env_name = "-".join(parts[: pos - 1] + parts[pos:])
    dataset_name = "-".join(parts[:pos] + parts[-1:])
    if env_name not in _registered_env_ids():
        raise DatasetError(f"'{task}': environment '{env_name}' is not registered by ogbench ({example})")
    return env_name, dataset_name


def make_env(task: str, **kwargs: Any) -> Any:
    """Make the single-task evaluation environment of an OGBench task name.

    Args:
        task: OGBench single-task name, e.g. ``'pointmaze-medium-navigate-singletask-task1-v0'``.
        **kwargs: passed to ``gymnasium.make``.

    Returns:
        The ``gymnasium.Env`` (wrapped as ``gymnasium.make`` returns it).
    """
    import gymnasium

    env_name, _ = split_task_name(task)
    return gymnasium.make(env_name, **kwargs)


def val_path_for(dataset_path: str | Path) -> Path:
    """The validation-file path OGBench derives from a train path (``.npz`` -> ``-val.npz``).

    Raises:
        DatasetError: if the path does not end in ``.npz`` or contains ``.npz`` more than once
            (OGBench's loader replaces every occurrence, so it would look in the wrong place).
    """
    s = str(dataset_path)
    if not s.endswith(".npz"):
        raise DatasetError(f"dataset path must end in .npz: {s}")
    if s.count(".npz") != 1:
        raise DatasetError(
            f"dataset path contains '.npz' more than once, OGBench's loader would look for the "
            f"validation file at {s.replace('.npz', '-val.npz')}: {s}"
        )
    return Path(s[: -len(".npz")] + "-val.npz")


def _read_npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of the arrays in an ``.npz`` file, read from the ``.npy`` headers only."""
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                headers[name[: -len(".npy")]] = (tuple(shape), dtype)
    except _LOADER_ERRORS as e:
        raise DatasetError(f"not a valid .npz file ({type(e).__name__}: {e}): {path}") from e
    return headers


def _space_shape(space: Any) -> tuple[int, ...] | None:
    shape = getattr(space, "shape", None)
    return tuple(shape) if shape is not None else None


def _env_nq(env: Any) -> int | None:
    """Number of MuJoCo position coordinates of an env, if it exposes its model."""
    unwrapped = env.unwrapped
    model = getattr(unwrapped, "model", None) or getattr(unwrapped, "_model", None)
    nq = getattr(model, "nq", None)
    return int(nq) if nq is not None else None


def _check_file(path: Path, env: Any, which: str) -> None:
    """Validate one dataset file's structure and shapes against ``env`` before loading it."""
    headers = _read_npz_headers(path)
    missing = [k for k in REQUIRED_KEYS if k not in headers]
    if missing:
        raise DatasetError(f"{which} file lacks required arrays {missing} (has {sorted(headers)}): {path}")
    if len(headers["observations"][0]) < 2:
        raise DatasetError(
            f"{which} file: 'observations' has shape {headers['observations'][0]}, expected (N, ...): {path}"
        )
    n = headers["observations"][0][0]
    if n == 0:
        raise DatasetError(f"{which} file is empty (0 transitions): {path}")
    for k in REQUIRED_KEYS + tuple(k for k in ("button_states",) if k in headers):
        shape = headers[k][0]
        if not shape or shape[0] != n:
            raise DatasetError(f"{which} file: '{k}' has shape {shape}, expected {n} rows like 'observations': {path}")
    if len(headers["terminals"][0]) != 1:
        raise DatasetError(f"{which} file: 'terminals' has shape {headers['terminals'][0]}, expected ({n},)")
    for key, label, space in (("observations", "observation", env.observation_space),
                              ("actions", "action", env.action_space)):
        file_shape, env_shape = headers[key][0][1:], _space_shape(space)
        if env_shape is not None and file_shape != env_shape:
            raise DatasetError(f"{which} file: {label} shape {file_shape} does not match the environment's "
                               f"{label}_space shape {env_shape}: {path}")
    nq = _env_nq(env)
    qpos_shape = headers["qpos"][0][1:]
    if nq is not None and qpos_shape != (nq,):
        raise DatasetError(f"{which} file: qpos shape {qpos_shape} does not match the environment's nq ({nq},): {path}")
    # OGBench's loader shifts observations by one inside each trajectory; a file whose last
    # step is not terminal would silently misalign next_observations.
    try:
        with np.load(path) as f:
            last_terminal = bool(f["terminals"][-1])
    except _LOADER_ERRORS as e:
        raise DatasetError(f"cannot read 'terminals' ({type(e).__name__}: {e}): {path}") from e
    if not last_terminal:
        raise DatasetError(f"{which} file: the last step is not terminal (truncated trajectory?): {path}")


def _count_nonfinite(arr: np.ndarray) -> int:
    if not np.issubdtype(arr.dtype, np.floating):
        return 0
    return int(arr.size - np.count_nonzero(np.isfinite(arr)))


def _check_loaded(ds: dict[str, np.ndarray], path: Path, which: str) -> None:
    """Validate a dataset dict returned by OGBench's loader."""
    n = len(ds.get("observations", ()))
    if n == 0:
        raise DatasetError(f"{which} dataset has no transitions after loading: {path}")
    for k in ("observations", "next_observations", "actions", "rewards"):
        if k in ds:
            bad = _count_nonfinite(ds[k])
            if bad:
                raise DatasetError(f"{which} dataset: '{k}' has {bad} NaN/Inf values: {path}")
    for k, v in ds.items():
        if len(v) != n:
            raise DatasetError(f"{which} dataset: '{k}' has {len(v)} rows, 'observations' has {n}: {path}")


def load_task_dataset(task: str, dataset_path: str | Path) -> tuple[Any, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Load an OGBench single-task dataset from a local file, with OGBench's reward relabelling.

    The validation file is expected next to it (``X.npz`` -> ``X-val.npz``), as OGBench does.

    Args:
        task: OGBench single-task name, e.g. ``'pointmaze-medium-navigate-singletask-task1-v0'``.
        dataset_path: path of the train ``.npz`` file.

    Returns:
        ``(env, train, val)``: the single-task evaluation env and two dicts with
        ``observations``, ``actions``, ``next_observations``, ``terminals``, ``rewards`` and
        ``masks`` (as returned by ``ogbench.make_env_and_datasets``).

    Raises:
        DatasetError: for a bad task name, a missing / corrupt / mismatched file, or NaN/Inf values.
    """
    import ogbench

    split_task_name(task)
    path = Path(dataset_path)
    val_path = val_path_for(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    if not val_path.is_file():
        raise DatasetError(f"validation file not found (expected next to the dataset): {val_path}")

    env = make_env(task)
    _check_file(path, env, "train")
    _check_file(val_path, env, "validation")
    try:
        # Same as make_env_and_datasets(task, dataset_path=...), reusing the env made above.
        train, val = ogbench.make_env_and_datasets(task, dataset_path=os.fspath(path), dataset_only=True, cur_env=env)
    except _LOADER_ERRORS as e:
        raise DatasetError(f"OGBench could not load the dataset ({type(e).__name__}: {e}): {path}") from e
    _check_loaded(train, path, "train")
    _check_loaded(val, val_path, "validation")
    return env, train, val


def dataset_summary(ds: dict[str, np.ndarray]) -> dict[str, Any]:
    """JSON-able summary of a loaded dataset dict (as returned by :func:`load_task_dataset`).

    Keys: ``transitions``, ``obs_dim``, ``act_dim``, ``trajectories`` (from ``terminals``),
    ``reward_min`` / ``reward_max`` / ``reward_mean`` and ``success_fraction`` (fraction of
    ``masks == 0``); the last four are ``None`` when the dict has no rewards / masks.
    """
    obs = ds["observations"]
    act = ds["actions"]
    obs_shape = tuple(int(d) for d in obs.shape[1:])
    act_shape = tuple(int(d) for d in act.shape[1:])
    out: dict[str, Any] = {
        "transitions": int(len(obs)),
        "obs_dim": obs_shape[0] if len(obs_shape) == 1 else list(obs_shape),
        "act_dim": act_shape[0] if len(act_shape) == 1 else list(act_shape),
        "trajectories": int(np.count_nonzero(ds["terminals"])) if "terminals" in ds else None,
        "reward_min": None,
        "reward_max": None,
        "reward_mean": None,
        "success_fraction": None,
    }
    rewards = ds.get("rewards")
    if rewards is not None and len(rewards):
        out["reward_min"] = float(np.min(rewards))
        out["reward_max"] = float(np.max(rewards))
        out["reward_mean"] = float(np.mean(rewards, dtype=np.float64))
    masks = ds.get("masks")
    if masks is not None and len(masks):
        out["success_fraction"] = float(np.count_nonzero(masks == 0) / len(masks))
    return out
