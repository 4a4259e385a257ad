r"""Memory-mapped sharded datasets for 100M-transition training (docs/datasets.md, "Sharded layout").

A converted dataset is a directory:

    DIR/dataset.json                      header: format, dims, action box, counts, dtypes, provenance,
                                          normalisation statistics, and the sha256 of every array file
    DIR/train/shard_00000/states.npy       [S] x obs_dim float32: every distinct observation of the shard
    DIR/train/shard_00000/transitions.npy  [T] records, one per transition (numpy structured dtype):
        obs_row          int32             row of x_t in states
        actions          float32 [act_dim]
        rewards          float32           one-step reward
        mc_returns       float32           Monte-Carlo return at the header's discount (Eq. 13)
        next_row_n{n}    int32             row of x'_{t,n} in states          } one triple per stored
        reward_sum_n{n}  float32           n-step reward sum R_t              } n-step horizon
        bootstrap_n{n}   float32           b_t = gamma^K prod(masks)          } (evor_edge.targets)
        masks            uint8             0 where the task terminated (no bootstrap)
        terminals        uint8             1 at the last transition of an episode
    DIR/val/shard_00000/...                the -val files of an OGBench source, same layout

Transition t of a shard has x_t = states[obs_row[t]] and, for horizon n, x'_{t,n} = states[next_row_n{n}[t]]:
next observations are indices into `states`, never a copy (an episode of L transitions stores L + 1 states).
Episodes never cross shards (conversion refuses a source whose last transition ends no episode), so every
n-step window lies inside one shard and the targets are computed per shard, once, at conversion time.

One record per transition keeps a row's training fields in one read (one page) instead of one per field.
Training opens both arrays with ``np.load(mmap_mode="r")`` and gathers a minibatch by global index (sorted,
split per shard) straight into preallocated batch buffers: uniform over the whole dataset with memory bounded
by the batch buffers (`ShardReader`: preadv per row by default, or `take` on the memory maps).
Opening checks headers, dtypes and file sizes only; `verify_dataset` (``evor-edge data verify``) hashes
every byte.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import hashlib
import json
import mmap
import os
import resource
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evor_edge.datasets import DatasetError
from evor_edge.io import atomic_write_json
from evor_edge.targets import n_step_targets

FORMAT_NAME = "evor-edge-sharded"
FORMAT_VERSION = 1
HEADER_FILE = "dataset.json"
PROGRESS_FILE = "progress.json"
PARTIAL_SUFFIX = ".partial"
DEFAULT_N_STEPS = (1, 50)  # the paper preset's horizon and the small preset's
DEFAULT_DISCOUNT = 0.99
SPLITS = ("train", "val")
ARRAYS = ("states", "transitions")
_STAT_CHUNK = 1 << 16
PREAD_MAX_ROWS = 1 << 14  # larger gathers (to_arrays, tests) go through the memory maps


class ShardError(DatasetError):
    """A converted dataset (or a conversion source) that cannot be used, with a one-line message."""


# ------------------------------------------------------------------------------------------ .npy files
class _HashingWriter:
    """A binary file wrapper that feeds every byte written to sha256 (np.lib.format writes through it)."""

    def __init__(self, handle: Any):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)


def write_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Write one C-contiguous .npy; return its shape, dtype, byte size and sha256 (computed while writing)."""
    array = np.ascontiguousarray(array)
    with open(path, "wb") as handle:
        writer = _HashingWriter(handle)
        np.lib.format.write_array(writer, array, allow_pickle=False)  # type: ignore[arg-type]
    return {"shape": list(array.shape), "dtype": array.dtype.str, "descr": _descr(array.dtype),
            "bytes": writer.size, "sha256": writer.digest.hexdigest()}


def _descr(dtype: np.dtype) -> Any:
    """The .npy header's dtype description, JSON-normalised (structured dtypes keep their fields)."""
    return json.loads(json.dumps(np.lib.format.dtype_to_descr(dtype)))


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a .npy file, from its header only."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return tuple(shape), dtype, fortran, handle.tell()


def _check_npy(path: Path, meta: dict[str, Any]) -> None:
    """Header, dtype and size of one array file against the dataset header (no hashing)."""
    if not path.is_file():
        raise ShardError(f"{path} is missing (the dataset is incomplete; convert it again)")
    try:
        shape, dtype, fortran, offset = read_npy_header(path)
    except (ValueError, OSError, EOFError) as exc:
        raise ShardError(f"{path}: not a readable .npy file ({exc})") from None
    if list(shape) != list(meta["shape"]) or _descr(dtype) != meta["descr"] or fortran:
        raise ShardError(f"{path}: holds {_descr(dtype)} {list(shape)}, the header says {meta['descr']} "
                         f"{meta['shape']}")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise ShardError(f"{path}: {actual} bytes, expected {expected} (truncated or padded file)")


# ------------------------------------------------------------------------------------- per-shard math
def state_table(observations: np.ndarray, next_observations: np.ndarray, episode_end: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(states, obs_row, next_row): every distinct observation once, and where x_t and x'_t live in it.

    Inside an episode x_{t+1} is normally x'_t (exactly equal): the two share one row. Where they differ
    (an episode start, or a log whose stored next observation is not the following one) x_t gets its own
    row. next_row = obs_row + 1 always.
    """
    size = len(observations)
    shared = np.zeros(size, dtype=bool)
    if size > 1:
        same_episode = episode_end[:-1] == 0
        shared[1:] = same_episode & np.all(observations[1:] == next_observations[:-1], axis=1)
    counts = np.where(shared, 1, 2).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    obs_row = np.where(shared, first - 1, first)
    next_row = obs_row + 1
    total = int(first[-1] + counts[-1])
    if total >= 2**31:
        raise ShardError(f"a shard of {size} transitions needs {total} state rows; the row index is int32 "
                         "(split the source into smaller files)")
    states = np.empty((total, observations.shape[1]), dtype=np.float32)
    own = ~shared
    states[obs_row[own]] = observations[own]
    states[next_row] = next_observations
    return states, obs_row.astype(np.int32), next_row.astype(np.int32)


def suffix_affine_scan(coef: np.ndarray, const: np.ndarray) -> np.ndarray:
    """y_t = const_t + coef_t * y_{t+1} (coef of the last element ignored), by log2(T) vectorised doublings."""
    y = np.array(const, dtype=np.float64)
    a = np.array(coef, dtype=np.float64)
    a[-1] = 0.0
    step = 1
    while step < len(y):
        y[:-step] += a[:-step] * y[step:]
        a[:-step] *= a[step:]
        step *= 2
    return y


def monte_carlo_returns_fast(rewards: np.ndarray, masks: np.ndarray, episode_end: np.ndarray,
                             discount: float) -> np.ndarray:
    """`evor_edge.targets.monte_carlo_returns`, vectorised (same recursion and the same end-of-episode
    bootstrap r_T / (1 - gamma) for a truncated, non-terminal last step)."""
    r = rewards.astype(np.float64)
    m = masks.astype(np.float64)
    end = episode_end > 0
    tail = np.where(m > 0, r / (1.0 - discount), 0.0)
    const = np.where(end, r + discount * m * tail, r)
    coef = np.where(end, 0.0, discount * m)
    return suffix_affine_scan(coef, const).astype(np.float32)


@dataclass
class RunningStats:
    """Observation mean / M2 (Chan et al.'s parallel combination), reward range, termination flag."""

    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    reward_min: float = float("inf")
    reward_max: float = float("-inf")
    terminates: bool = False

    def add_observations(self, obs: np.ndarray) -> None:
        for start in range(0, len(obs), _STAT_CHUNK):
            chunk = obs[start:start + _STAT_CHUNK].astype(np.float64)
            n = len(chunk)
            mean = chunk.mean(axis=0)
            m2 = ((chunk - mean) ** 2).sum(axis=0)
            self._combine(n, mean, m2)

    def _combine(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        if self.count == 0 or self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean.copy(), m2.copy()
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def merge(self, other: RunningStats) -> None:
        if other.count and other.mean is not None and other.m2 is not None:
            self._combine(other.count, other.mean, other.m2)
        self.reward_min = min(self.reward_min, other.reward_min)
        self.reward_max = max(self.reward_max, other.reward_max)
        self.terminates = self.terminates or other.terminates

    def to_dict(self) -> dict[str, Any]:
        assert self.mean is not None and self.m2 is not None
        return {"count": self.count, "obs_mean": self.mean.tolist(), "obs_m2": self.m2.tolist(),
                "obs_std": np.sqrt(self.m2 / max(self.count, 1)).tolist(), "reward_min": self.reward_min,
                "reward_max": self.reward_max, "terminates": self.terminates}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunningStats:
        return cls(int(data["count"]), np.asarray(data["obs_mean"], np.float64), np.asarray(data["obs_m2"], np.float64),
                   float(data["reward_min"]), float(data["reward_max"]), bool(data["terminates"]))


def transition_dtype(act_dim: int, n_steps: tuple[int, ...]) -> np.dtype:
    """The record of one transition (packed; 4-byte fields first, the two flags last)."""
    fields: list[tuple[Any, ...]] = [("obs_row", "<i4"), ("actions", "<f4", (act_dim,)), ("rewards", "<f4"),
                                     ("mc_returns", "<f4")]
    for n in n_steps:
        fields += [(f"next_row_n{n}", "<i4"), (f"reward_sum_n{n}", "<f4"), (f"bootstrap_n{n}", "<f4")]
    fields += [("masks", "u1"), ("terminals", "u1")]
    return np.dtype(fields)


def shard_arrays(train: dict[str, np.ndarray], discount: float, n_steps: tuple[int, ...]
                 ) -> tuple[dict[str, np.ndarray], RunningStats]:
    """Both arrays of one shard (states, transitions) from training arrays in OGBench's loaded layout
    (`offline_data`), and the shard's statistics."""
    obs, next_obs = train["observations"], train["next_observations"]
    rewards = np.asarray(train["rewards"], dtype=np.float32)
    masks = np.asarray(train["masks"], dtype=np.float32)
    ends = np.asarray(train["terminals"], dtype=np.float32).copy()
    ends[-1] = 1.0  # a shard ends an episode (checked at planning time for multi-file sources)
    states, obs_row, next_row = state_table(obs, next_obs, ends)
    actions = np.asarray(train["actions"], dtype=np.float32)
    table = np.zeros(len(rewards), dtype=transition_dtype(actions.shape[1], n_steps))
    table["obs_row"] = obs_row
    table["actions"] = actions
    table["rewards"] = rewards
    table["mc_returns"] = monte_carlo_returns_fast(rewards, masks, ends, discount)
    for n in n_steps:
        reward_sum, bootstrap, next_index = n_step_targets(rewards, masks, ends, discount, n)
        table[f"next_row_n{n}"] = next_row[next_index]
        table[f"reward_sum_n{n}"] = reward_sum
        table[f"bootstrap_n{n}"] = bootstrap
    table["masks"] = masks > 0
    table["terminals"] = ends > 0
    stats = RunningStats()
    stats.add_observations(obs)
    stats.reward_min, stats.reward_max = float(rewards.min()), float(rewards.max())
    stats.terminates = bool(np.any(masks == 0))
    return {"states": states, "transitions": table}, stats


def _shard_entry(name: str, source: str, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                 stats: RunningStats) -> dict[str, Any]:
    table = arrays["transitions"]
    return {"name": name, "source": source, "transitions": int(len(table)), "states": int(len(arrays["states"])),
            "episodes": int(table["terminals"].sum()), "obs_dim": int(arrays["states"].shape[1]),
            "act_dim": int(table.dtype["actions"].shape[0]), "arrays": meta, "stats": stats.to_dict()}


# ------------------------------------------------------------------------------------------- sources
@dataclass
class SourceFile:
    path: Path
    split: str  # "train" or "val"
    kind: str  # "offline" (own data, rewards stored) or "ogbench" (raw, relabelled with --env)
    obs_dim: int
    act_dim: int

    def describe(self) -> dict[str, Any]:
        stat = self.path.stat()
        return {"path": str(self.path), "split": self.split, "kind": self.kind, "bytes": stat.st_size,
                "mtime_ns": stat.st_mtime_ns}


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    from evor_edge.datasets import _read_npz_headers

    try:
        return _read_npz_headers(path)
    except DatasetError as exc:
        raise ShardError(str(exc)) from None


def _dims(path: Path, headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> tuple[int, int]:
    for key in ("observations", "actions"):
        if key not in headers:
            raise ShardError(f"{path}: has no '{key}' array (has {sorted(headers)})")
        if len(headers[key][0]) != 2:
            raise ShardError(f"{path}: '{key}' has shape {headers[key][0]}, expected [rows, dim]")
    return int(headers["observations"][0][1]), int(headers["actions"][0][1])


def _last_transition_ends_episode(path: Path) -> bool:
    """Own-data file: does its last transition end an episode (terminals or timeouts set)?"""
    with np.load(path, allow_pickle=False) as f:
        last = bool(np.asarray(f["terminals"])[-1])
        if "timeouts" in f.files:
            last = last or bool(np.asarray(f["timeouts"])[-1])
    return last


def plan_sources(src: str | os.PathLike[str], task: str | None) -> list[SourceFile]:
    """The files a conversion reads, checked up front (before anything is written).

    SRC is one .npz (our own-data format, or an OGBench raw file with its -val.npz beside it) or a directory
    of such files (OGBench's 100M layout: shards X-000.npz ... each with X-000-val.npz). Checks: every file
    readable, the same kind, the same dims (a shard whose dims differ is named), -val files present for
    OGBench sources, --env given for them, and episodes never crossing a file boundary.
    """
    from evor_edge.offline_data import is_offline_file

    root = Path(src)
    if root.is_dir():
        files = sorted(Path(p) for p in glob.glob(str(root / "*.npz")) if not p.endswith("-val.npz"))
        if not files:
            raise ShardError(f"{root}: no .npz shards in this directory")
    elif root.is_file():
        files = [root]
    else:
        raise ShardError(f"source not found: {root}")
    kinds = {p: ("offline" if is_offline_file(p) else "ogbench") for p in files}
    if len(set(kinds.values())) > 1:
        own = [p.name for p, k in kinds.items() if k == "offline"][:1]
        raw = [p.name for p, k in kinds.items() if k == "ogbench"][:1]
        raise ShardError(f"{root}: mixes own-data files (e.g. {own[0]}, with rewards) and OGBench raw files "
                         f"(e.g. {raw[0]}); convert them separately")
    kind = kinds[files[0]]
    if kind == "ogbench" and task is None:
        raise ShardError(f"{files[0]} is an OGBench raw file (no rewards): pass --env TASK (its singletask name) "
                         "so that rewards are relabelled once at conversion")
    sources: list[SourceFile] = []
    for path in files:
        pairs = [(path, "train")]
        if kind == "ogbench":
            from evor_edge.datasets import val_path_for

            try:
                val = val_path_for(path)
            except DatasetError as exc:
                raise ShardError(str(exc)) from None
            if not val.is_file():
                raise ShardError(f"validation file missing: {val} (every OGBench shard has its -val.npz beside it)")
            pairs.append((val, "val"))
        for file, split in pairs:
            obs_dim, act_dim = _dims(file, _npz_headers(file))
            sources.append(SourceFile(file, split, kind, obs_dim, act_dim))
    first = sources[0]
    for source in sources[1:]:
        if (source.obs_dim, source.act_dim) != (first.obs_dim, first.act_dim):
            raise ShardError(f"{source.path}: obs_dim {source.obs_dim}, act_dim {source.act_dim}, but "
                             f"{first.path.name} has obs_dim {first.obs_dim}, act_dim {first.act_dim}")
    if kind == "offline" and len(files) > 1:
        for source in sources:
            if not _last_transition_ends_episode(source.path):
                raise ShardError(f"{source.path}: its last transition ends no episode, so an episode would cross "
                                 "into the next shard; end each file on an episode boundary (terminals or timeouts)")
    return sources


class _OGBenchLoader:
    """OGBench raw files -> OGBench's loaded layout with singletask rewards (OGBench's own relabelling)."""

    def __init__(self, task: str):
        from evor_edge.datasets import make_env, split_task_name

        self.task = task
        self.env_name, self.dataset_name = split_task_name(task)
        self.env = make_env(task)
        space = self.env.action_space
        self.action_low = np.broadcast_to(space.low, space.shape).astype(np.float32)
        self.action_high = np.broadcast_to(space.high, space.shape).astype(np.float32)

    def check(self, path: Path, which: str) -> None:
        from evor_edge.datasets import _check_file

        _check_file(path, self.env, which)  # dims against the env, required arrays, last step terminal

    def load(self, path: Path, which: str) -> dict[str, np.ndarray]:
        from ogbench.relabel_utils import relabel_dataset
        from ogbench.utils import load_dataset

        from evor_edge.datasets import _check_loaded

        self.check(path, which)
        data = load_dataset(str(path), add_info=True)
        relabel_dataset(self.env_name, self.env, data)
        _check_loaded(data, path, which)
        return {k: data[k] for k in ("observations", "next_observations", "actions", "rewards", "masks", "terminals")}

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------------------------------- conversion
@dataclass
class ConvertOptions:
    task: str | None = None
    n_steps: tuple[int, ...] = DEFAULT_N_STEPS
    discount: float = DEFAULT_DISCOUNT
    action_low: Any = None
    action_high: Any = None

    def to_dict(self) -> dict[str, Any]:
        bound = lambda b: None if b is None else np.asarray(b, dtype=np.float64).reshape(-1).tolist()  # noqa: E731
        return {"task": self.task, "n_steps": list(self.n_steps), "discount": self.discount,
                "action_low": bound(self.action_low) if not isinstance(self.action_low, str) else self.action_low,
                "action_high": bound(self.action_high) if not isinstance(self.action_high, str) else self.action_high}


def _check_options(options: ConvertOptions) -> ConvertOptions:
    steps = tuple(sorted({int(n) for n in options.n_steps}))
    if not steps or steps[0] < 1:
        raise ShardError(f"--n-step values must be >= 1, got {list(options.n_steps)}")
    if not 0.0 <= options.discount < 1.0:
        raise ShardError(f"--discount must be in [0, 1), got {options.discount}")
    options.n_steps = steps
    return options


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)


@dataclass
class _Progress:
    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


def write_shard(split_dir: Path, name: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write one shard's arrays into split_dir/name atomically (temp dir + rename); return their metadata."""
    final = split_dir / name
    tmp = split_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta = {key: write_npy(tmp / f"{key}.npy", value) for key, value in arrays.items()}
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def convert_dataset(src: str | os.PathLike[str], out: str | os.PathLike[str], options: ConvertOptions | None = None,
                    resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """`evor-edge data convert SRC --out DIR`: stream SRC shard by shard into the sharded layout.

    Peak memory is about one source file's arrays (loaded, plus the shard's derived arrays). Everything is
    written under DIR.partial (one shard directory at a time, each renamed into place when complete, the
    list of finished shards in DIR.partial/progress.json) and DIR.partial is renamed to DIR at the end: an
    interrupted conversion leaves no DIR, and `resume=True` continues it after the last finished shard.
    """
    options = _check_options(options or ConvertOptions())
    out = Path(out)
    work = partial_dir(out)
    if out.exists():
        raise ShardError(f"{out} already exists; choose another --out or delete it")
    if work.exists() and not resume:
        raise ShardError(f"{work} holds an interrupted conversion: pass --resume to continue it, or delete it")
    if resume and not work.exists():
        raise ShardError(f"nothing to resume: {work} does not exist")
    sources = plan_sources(src, options.task)
    kind = sources[0].kind
    loader = _OGBenchLoader(options.task) if kind == "ogbench" else None
    try:
        if loader is not None:  # every file against the environment before anything is written
            for source in sources:
                loader.check(source.path, source.split)
        plan = {"source": str(Path(src)), "kind": kind, "options": options.to_dict(),
                "files": [s.describe() for s in sources]}
        progress_file = _Progress(work / PROGRESS_FILE)
        if resume:
            try:
                progress_file.data = json.loads(progress_file.path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ShardError(f"{progress_file.path}: unreadable ({exc}); delete {work} and convert again") from None
            if progress_file.data.get("plan") != plan:
                raise ShardError(f"{work} was started from other sources or options; delete it or convert with the "
                                 "same SRC and options")
        else:
            work.mkdir(parents=True)
            progress_file.data = {"format": FORMAT_NAME, "plan": plan, "done": {}, "common": {}}
            progress_file.save()
        report = _convert_files(sources, work, options, loader, progress_file, progress)
    finally:
        if loader is not None:
            loader.close()
    header = _assemble_header(progress_file.data, plan, options)
    atomic_write_json(work / HEADER_FILE, header)
    progress_file.path.unlink()
    os.replace(work, out)
    return {"path": str(out), **report, "splits": {k: {kk: v[kk] for kk in ("transitions", "states", "episodes",
                                                                               "shards")}
                                                   for k, v in _split_summaries(header).items()},
            "bytes": _tree_bytes(out)}


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _split_summaries(header: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: {"transitions": split["transitions"], "states": split["states"], "episodes": split["episodes"],
                   "shards": len(split["shards"])} for name, split in header["splits"].items()}


def _convert_files(sources: list[SourceFile], work: Path, options: ConvertOptions, loader: _OGBenchLoader | None,
                   progress_file: _Progress, progress: bool) -> dict[str, Any]:
    from tqdm import tqdm

    from evor_edge.offline_data import load_offline_dataset

    done: dict[str, list[dict[str, Any]]] = progress_file.data["done"]
    common: dict[str, Any] = progress_file.data["common"]
    counters = {split: len(done.get(split, [])) for split in SPLITS}
    finished = {entry["source"] for entries in done.values() for entry in entries}
    for split in SPLITS:  # shard directories that no progress entry names: half-written before a kill
        listed = {entry["name"] for entry in done.get(split, [])}
        for child in (work / split).glob("*") if (work / split).is_dir() else []:
            if child.name not in listed:
                shutil.rmtree(child, ignore_errors=True)
    skipped = len(finished)
    bar = tqdm(total=len(sources), initial=skipped, disable=not progress, desc="convert", unit="shard",
               dynamic_ncols=True)
    try:
        for source in sources:
            if str(source.path) in finished:
                continue
            if loader is not None:
                train = loader.load(source.path, source.split)
                low, high, convention, metadata = loader.action_low, loader.action_high, "ogbench", {
                    "source": "ogbench", "task": loader.task}
            else:
                data = load_offline_dataset(source.path, options.action_low, options.action_high)
                train, low, high, convention, metadata = (data.train, data.action_low, data.action_high,
                                                          data.convention, data.metadata)
            _check_common(common, source, low, high, convention, metadata)
            arrays, stats = shard_arrays(train, options.discount, options.n_steps)
            del train
            name = f"shard_{counters[source.split]:05d}"
            meta = write_shard(work / source.split, name, arrays)
            entry = _shard_entry(name, str(source.path), arrays, meta, stats)
            del arrays
            done.setdefault(source.split, []).append(entry)
            counters[source.split] += 1
            progress_file.save()
            bar.update(1)
    finally:
        bar.close()
    return {"files_converted": len(sources) - skipped, "files_resumed": skipped}


def _check_common(common: dict[str, Any], source: SourceFile, low: np.ndarray, high: np.ndarray, convention: str,
                  metadata: dict[str, Any]) -> None:
    """Action box and convention must agree across files (own data: stored bounds, else the union of min/max)."""
    low_l, high_l = np.asarray(low, np.float64).tolist(), np.asarray(high, np.float64).tolist()
    if not common:
        common.update({"action_low": low_l, "action_high": high_l, "convention": convention, "metadata": metadata,
                       "first": str(source.path)})
        return
    if convention != common["convention"]:
        raise ShardError(f"{source.path}: {convention} convention, {common['first']} uses {common['convention']}")
    from_data = any("min/max" in str(note) for note in metadata.get("notes", []))
    if from_data:  # bounds estimated per file: the dataset's box is their union
        common["action_low"] = np.minimum(common["action_low"], low_l).tolist()
        common["action_high"] = np.maximum(common["action_high"], high_l).tolist()
    elif not (np.allclose(low_l, common["action_low"]) and np.allclose(high_l, common["action_high"])):
        raise ShardError(f"{source.path}: action bounds {low_l} .. {high_l} differ from {common['first']}'s "
                         f"{common['action_low']} .. {common['action_high']}")


def _assemble_header(progress: dict[str, Any], plan: dict[str, Any], options: ConvertOptions) -> dict[str, Any]:
    from evor_edge import __version__

    common = progress["common"]
    splits: dict[str, Any] = {}
    for split, entries in progress["done"].items():
        total = RunningStats()
        for entry in entries:
            total.merge(RunningStats.from_dict(entry["stats"]))
        splits[split] = {
            "transitions": sum(e["transitions"] for e in entries),
            "states": sum(e["states"] for e in entries),
            "episodes": sum(e["episodes"] for e in entries),
            "stats": total.to_dict(),
            "shards": entries,
        }
    first = progress["done"]["train"][0]
    metadata = dict(common.get("metadata") or {})
    if options.task:
        metadata["task"] = options.task
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "obs_dim": int(first["obs_dim"]),
        "act_dim": int(first["act_dim"]),
        "action_low": common["action_low"],
        "action_high": common["action_high"],
        "convention": common["convention"],
        "discount": options.discount,
        "n_steps": list(options.n_steps),
        "arrays": list(ARRAYS),
        "transition_fields": first["arrays"]["transitions"]["descr"],
        "metadata": metadata,
        "made_by": {"tool": "evor-edge", "version": __version__, "command": "data convert",
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    **plan},
        "splits": splits,
    }


def write_synthetic_dataset(out: str | os.PathLike[str], shards: Iterator[dict[str, np.ndarray]] | list,
                            action_low: np.ndarray, action_high: np.ndarray, options: ConvertOptions | None = None,
                            metadata: dict[str, Any] | None = None, resume: bool = False, progress: bool = False,
                            total: int | None = None) -> dict[str, Any]:
    """The conversion writer fed with in-memory shards (training arrays in OGBench's loaded layout) instead of
    files: what benchmarks/data_scale.py uses to build 50M+ transitions without writing the source twice.
    Same temp dir, per-shard atomicity and resume as `convert_dataset` (`shards` may be a lazy iterator; on
    resume the finished ones are skipped by position)."""
    from tqdm import tqdm

    options = _check_options(options or ConvertOptions())
    out = Path(out)
    work = partial_dir(out)
    if out.exists():
        raise ShardError(f"{out} already exists")
    plan = {"source": "synthetic", "kind": "synthetic", "options": options.to_dict(), "files": []}
    progress_file = _Progress(work / PROGRESS_FILE)
    if work.exists() and resume:
        progress_file.data = json.loads(progress_file.path.read_text())
    else:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        progress_file.data = {"format": FORMAT_NAME, "plan": plan, "done": {}, "common": {
            "action_low": np.asarray(action_low, np.float64).tolist(),
            "action_high": np.asarray(action_high, np.float64).tolist(),
            "convention": "ogbench", "metadata": metadata or {"source": "synthetic"}, "first": "synthetic"}}
    done = progress_file.data["done"].setdefault("train", [])
    bar = tqdm(total=total, initial=len(done), disable=not progress, desc="write", unit="shard")
    for index, make in enumerate(shards):
        if index < len(done):
            continue
        train = make() if callable(make) else make
        arrays, stats = shard_arrays(train, options.discount, options.n_steps)
        del train
        name = f"shard_{index:05d}"
        meta = write_shard(work / "train", name, arrays)
        done.append(_shard_entry(name, f"synthetic:{index}", arrays, meta, stats))
        del arrays
        progress_file.save()
        bar.update(1)
    bar.close()
    header = _assemble_header(progress_file.data, plan, options)
    atomic_write_json(work / HEADER_FILE, header)
    progress_file.path.unlink()
    os.replace(work, out)
    return {"path": str(out), "splits": _split_summaries(header), "bytes": _tree_bytes(out)}


# ------------------------------------------------------------------------------------------- reading
def is_sharded_dataset(path: str | os.PathLike[str]) -> bool:
    """True for a directory that is (or was meant to become) a converted dataset."""
    path = Path(path)
    return path.is_dir() and ((path / HEADER_FILE).is_file() or (path / PROGRESS_FILE).is_file()
                              or path.name.endswith(PARTIAL_SUFFIX))


def _shard_dir(root: Path, split: str, entry: dict[str, Any]) -> Path:
    return root / split / entry["name"]


class ShardedDataset:
    """A converted dataset opened for training: header checked, every array's header/dtype/size checked."""

    def __init__(self, path: str | os.PathLike[str], split: str = "train"):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ShardError(f"dataset directory not found: {self.path}")
        if (self.path / PROGRESS_FILE).is_file() or self.path.name.endswith(PARTIAL_SUFFIX):
            target = self.path.name.removesuffix(PARTIAL_SUFFIX)
            raise ShardError(f"{self.path} is an interrupted conversion: rerun `evor-edge data convert SRC --out "
                             f"{target} --resume` to finish it")
        header_path = self.path / HEADER_FILE
        if not header_path.is_file():
            partial = partial_dir(self.path)
            hint = f" ({partial} holds an interrupted conversion: finish it with --resume)" if partial.exists() else ""
            raise ShardError(f"{self.path}: no {HEADER_FILE}, not a converted dataset{hint}")
        try:
            header = json.loads(header_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ShardError(f"{header_path}: unreadable ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise ShardError(f"{header_path}: not an {FORMAT_NAME} header")
        if header.get("format_version") != FORMAT_VERSION:
            raise ShardError(f"{header_path}: format_version {header.get('format_version')!r}, this tool reads "
                             f"{FORMAT_VERSION}")
        if split not in header.get("splits", {}):
            raise ShardError(f"{self.path}: no '{split}' split (has {sorted(header.get('splits', {}))})")
        self.header = header
        self.split = split
        self.entries: list[dict[str, Any]] = header["splits"][split]["shards"]
        self.obs_dim, self.act_dim = int(header["obs_dim"]), int(header["act_dim"])
        for entry in self.entries:
            if (entry["obs_dim"], entry["act_dim"]) != (self.obs_dim, self.act_dim):
                raise ShardError(f"{_shard_dir(self.path, split, entry)}: obs/act dims {entry['obs_dim']}/"
                                 f"{entry['act_dim']}, the dataset's are {self.obs_dim}/{self.act_dim}")
            for name, meta in entry["arrays"].items():
                _check_npy(_shard_dir(self.path, split, entry) / f"{name}.npy", meta)
        counts = np.array([e["transitions"] for e in self.entries], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.size = int(self.offsets[-1])
        self.action_low = np.asarray(header["action_low"], np.float32)
        self.action_high = np.asarray(header["action_high"], np.float32)
        self.convention = str(header.get("convention", "ogbench"))
        self.metadata: dict[str, Any] = dict(header.get("metadata") or {})
        self.stats = header["splits"][split]["stats"]

    def check_targets(self, n_step: int, discount: float, reward_model: str = "sample") -> None:
        """The stored targets must be the ones training asks for (n-step horizon and discount)."""
        stored = [int(n) for n in self.header["n_steps"]]
        if abs(float(self.header["discount"]) - discount) > 1e-12:
            raise ShardError(f"{self.path} stores targets at discount {self.header['discount']}, training asks for "
                             f"{discount}: convert again with --discount {discount}")
        if n_step not in stored:  # the reader gathers x'_{t,n} for every reward model
            raise ShardError(f"{self.path} stores n-step targets for n in {stored}, training asks for n_step={n_step}: "
                             f"convert again with --n-step {','.join(str(n) for n in sorted({*stored, n_step}))}")

    def shard_path(self, index: int) -> Path:
        return _shard_dir(self.path, self.split, self.entries[index])

    def reader(self, n_step: int, with_mc: bool = False, shards: int | None = None, read: str = "pread"
               ) -> ShardReader:
        return ShardReader(self, n_step, with_mc, shards, read)


def _raise_open_files_limit(needed: int) -> None:
    """Each memory map holds a file descriptor (Python's mmap dups it): raise the soft limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


READ_MODES = ("pread", "mmap")


class ShardReader:
    """Batch gathering from one split's shards.

    `fields` are the batch keys training uses (`evor_edge.train.tensors_from_dataset`'s): observations,
    actions, rewards (the n-step reward sum), bootstrap, next_observations and optionally mc_returns.

    Both arrays of every shard are opened with ``np.load(mmap_mode="r")``. A minibatch is gathered
    (`gather`) in one of two ways; per row: the transition record, then x and x' from the states:

    * ``pread`` (default): ``os.preadv`` straight into preallocated buffers (x and x' in one call when
      they are adjacent rows, as for n = 1). Nothing is mapped, so RSS stays flat whatever the dataset size.
    * ``mmap``: ``take`` on the memory maps (three calls per shard). Fastest while the pages stay mapped,
      but every touched page (and the kernel's fault-around neighbours, 64 KiB per fault) counts in RSS
      until `release`; re-faulting a released page cost ~6.5 us in our VM, a preadv ~1 us.
    """

    def __init__(self, dataset: ShardedDataset, n_step: int, with_mc: bool = False, shards: int | None = None,
                 read: str = "pread"):
        if read not in READ_MODES:
            raise ShardError(f"unknown read mode {read!r}; choose one of {READ_MODES}")
        self.dataset = dataset
        self.read = read
        count = len(dataset.entries) if shards is None else min(int(shards), len(dataset.entries))
        _raise_open_files_limit(count * len(ARRAYS) * (2 if read == "pread" else 1))
        self.maps: list[np.memmap] = []
        self.shards: list[dict[str, np.ndarray]] = []
        self.files: list[dict[str, tuple[int, int, int]]] = []  # per shard: array -> (fd, data offset, row bytes)
        for index in range(count):
            folder = dataset.shard_path(index)
            shard, files = {}, {}
            for name in ARRAYS:
                mapped = np.load(folder / f"{name}.npy", mmap_mode="r")
                self.maps.append(mapped)
                _advise(mapped, mmap.MADV_RANDOM)
                shard[name] = np.asarray(mapped)  # a plain ndarray view: no memmap subclass overhead per take
                if read == "pread":
                    fd = os.open(folder / f"{name}.npy", os.O_RDONLY)
                    with contextlib.suppress(AttributeError, OSError):
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead around a row
                    files[name] = (fd, int(mapped.offset), int(shard[name][0:1].nbytes))
            self.shards.append(shard)
            self.files.append(files)
        names = self.shards[0]["transitions"].dtype.names or ()
        self.next_field, self.reward_field, self.bootstrap_field = (f"next_row_n{n_step}", f"reward_sum_n{n_step}",
                                                                    f"bootstrap_n{n_step}")
        if self.next_field not in names:
            raise ShardError(f"{dataset.path} has no n-step targets for n={n_step} "
                             f"(stored: {dataset.header['n_steps']})")
        self.record_dtype = self.shards[0]["transitions"].dtype
        self.offsets = dataset.offsets[: count + 1]
        self.size = int(self.offsets[-1])
        self.n_step = n_step
        self.with_mc = with_mc
        obs, act = dataset.obs_dim, dataset.act_dim
        self.fields: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            "observations": ((obs,), np.dtype(np.float32)), "actions": ((act,), np.dtype(np.float32)),
            "rewards": ((), np.dtype(np.float32)), "bootstrap": ((), np.dtype(np.float32)),
            "next_observations": ((obs,), np.dtype(np.float32))}
        if with_mc:
            self.fields["mc_returns"] = ((), np.dtype(np.float32))
        self._staging: dict[int, tuple[dict[str, np.ndarray], np.ndarray, dict[str, list[memoryview]]]] = {}

    # -- sampling ---------------------------------------------------------------------------------
    def rank_rows(self, rank: int, world_size: int) -> int:
        """Rows of this rank's share: global rows rank, rank + K, rank + 2K, ... (disjoint across ranks)."""
        return (self.size - rank + world_size - 1) // world_size

    def draw(self, step: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Sorted global indices of minibatch `step` on `rank`: a pure function of (seed, rank, step), so a
        resumed run continues the same stream and a prefetching thread cannot reorder it."""
        bits = np.random.Philox(key=int(seed) & (2**64 - 1), counter=[0, 0, int(step), int(rank)])
        local = np.random.Generator(bits).integers(0, self.rank_rows(rank, world_size), batch_size, dtype=np.int64)
        index = rank + world_size * local
        index.sort()
        return index

    def gather(self, index: np.ndarray, out: dict[str, np.ndarray]) -> None:
        """Fill `out` (preallocated arrays, one per field) with the rows at sorted global `index`."""
        records = self._stage(out, len(index))
        if self.read == "pread" and len(index) <= PREAD_MAX_ROWS:
            self._gather_pread(index, out, records)
        else:
            self._gather_mmap(index, out, records)
        rows = len(index)
        out["actions"][:rows] = records["actions"][:rows]
        out["rewards"][:rows] = records[self.reward_field][:rows]
        out["bootstrap"][:rows] = records[self.bootstrap_field][:rows]
        if self.with_mc:
            out["mc_returns"][:rows] = records["mc_returns"][:rows]

    def _stage(self, out: dict[str, np.ndarray], rows: int) -> np.ndarray:
        """The record staging buffer for `out` (cached with per-row byte views: batch buffers are reused)."""
        key = id(out["observations"])
        cached = self._staging.get(key)
        if cached is None or cached[0]["observations"] is not out["observations"] or len(cached[1]) < rows:
            records = np.empty(rows, self.record_dtype)
            views: dict[str, list[memoryview]] = {}
            if self.read == "pread" and rows <= PREAD_MAX_ROWS:
                for name, array in (("records", records), ("observations", out["observations"]),
                                    ("next_observations", out["next_observations"])):
                    flat, width = memoryview(array).cast("B"), array[0:1].nbytes
                    views[name] = [flat[j * width:(j + 1) * width] for j in range(rows)]
            if len(self._staging) > 8:
                self._staging.clear()
            cached = (out, records, views)
            self._staging[key] = cached
        return cached[1]

    def _gather_mmap(self, index: np.ndarray, out: dict[str, np.ndarray], records: np.ndarray) -> None:
        bounds = np.searchsorted(index, self.offsets).tolist()
        for k in np.flatnonzero(np.diff(bounds)).tolist():
            a, b = bounds[k], bounds[k + 1]
            shard = self.shards[k]
            part = records[a:b]
            shard["transitions"].take(index[a:b] - self.offsets[k], out=part, mode="clip")
            states = shard["states"]
            states.take(part["obs_row"], axis=0, out=out["observations"][a:b], mode="clip")
            states.take(part[self.next_field], axis=0, out=out["next_observations"][a:b], mode="clip")

    def _gather_pread(self, index: np.ndarray, out: dict[str, np.ndarray], records: np.ndarray) -> None:
        views = self._staging[id(out["observations"])][2]
        record_views, obs_views, next_views = views["records"], views["observations"], views["next_observations"]
        preadv = os.preadv
        bounds = np.searchsorted(index, self.offsets).tolist()
        got = expected = 0
        for k in np.flatnonzero(np.diff(bounds)).tolist():
            a, b = bounds[k], bounds[k + 1]
            files = self.files[k]
            fd, base, width = files["transitions"]
            for j, row in zip(range(a, b), (index[a:b] - self.offsets[k]).tolist(), strict=True):
                got += preadv(fd, [record_views[j]], base + row * width)
            expected += (b - a) * width
            fd, base, width = files["states"]
            part = records[a:b]
            for j, row, nxt in zip(range(a, b), part["obs_row"].tolist(), part[self.next_field].tolist(),
                                   strict=True):
                if nxt == row + 1:  # x' is the next state row (n = 1 inside an episode): one read
                    got += preadv(fd, [obs_views[j], next_views[j]], base + row * width)
                else:
                    got += preadv(fd, [obs_views[j]], base + row * width) + preadv(fd, [next_views[j]],
                                                                                     base + nxt * width)
            expected += 2 * (b - a) * width
        if got != expected:
            raise ShardError(f"{self.dataset.path}: short read ({got} of {expected} bytes): a shard file was "
                             "truncated or replaced while training")

    def empty_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        return {k: np.empty((batch_size, *shape), dtype) for k, (shape, dtype) in self.fields.items()}

    def rows(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """The rows at any global `index` (unsorted allowed), in that order."""
        index = np.asarray(index, np.int64)
        batch = self.empty_batch(len(index))
        if len(index) < 2 or np.all(index[1:] >= index[:-1]):
            self.gather(index, batch)
            self._staging.pop(id(batch["observations"]), None)
            return batch
        order = np.argsort(index, kind="stable")
        self.gather(index[order], batch)
        self._staging.pop(id(batch["observations"]), None)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return {k: v[inverse] for k, v in batch.items()}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """All rows in RAM (the in-RAM loader's arrays for the same data; tests and the benchmark baseline)."""
        return self.rows(np.arange(self.size, dtype=np.int64))

    # -- memory -----------------------------------------------------------------------------------
    def release(self) -> None:
        """Drop this process's mappings of the pages read so far (they stay in the page cache): the file-backed
        part of RSS goes back to ~0 and the next reads are minor faults."""
        for mapped in self.maps:
            _advise(mapped, mmap.MADV_DONTNEED)

    def close(self) -> None:
        for files in self.files:
            for fd, _offset, _width in files.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.files.clear()
        self._staging.clear()
        self.shards.clear()
        for mapped in self.maps:
            handle = getattr(mapped, "_mmap", None)
            if handle is not None:
                with contextlib.suppress(BufferError, ValueError):  # still exported to a live view: the map
                    handle.close()  # goes with its last reference
        self.maps.clear()


def _advise(mapped: np.memmap, advice: int) -> None:
    handle = getattr(mapped, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise"):
        with contextlib.suppress(OSError, ValueError):
            handle.madvise(advice)


def file_backed_rss_bytes() -> int:
    """Resident file-backed + shared pages of this process (Linux /proc/self/statm 'shared'); 0 elsewhere."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[2]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return 0


# -------------------------------------------------------------------------------------------- verify
def verify_dataset(path: str | os.PathLike[str], progress: bool = True,
                   on_bytes: Callable[[int], None] | None = None) -> dict[str, Any]:
    """`evor-edge data verify DIR`: headers and sizes (as loading does) plus the sha256 of every array file."""
    import time

    from tqdm import tqdm

    root = Path(path)
    started = time.perf_counter()
    datasets = []
    header = ShardedDataset(root, "train").header
    for split in header["splits"]:
        datasets.append(ShardedDataset(root, split))
    files = [(ds.shard_path(i) / f"{name}.npy", meta) for ds in datasets for i, entry in enumerate(ds.entries)
             for name, meta in entry["arrays"].items()]
    total = sum(int(meta["bytes"]) for _, meta in files)
    bar = tqdm(total=total, disable=not progress, desc="verify", unit="B", unit_scale=True, dynamic_ncols=True)
    try:
        for file, meta in files:
            digest = hashlib.sha256()
            with open(file, "rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
                    bar.update(len(block))
                    if on_bytes:
                        on_bytes(len(block))
            if digest.hexdigest() != meta["sha256"]:
                raise ShardError(f"{file}: sha256 {digest.hexdigest()[:16]}... does not match the header's "
                                 f"{meta['sha256'][:16]}... (modified or corrupt)")
    finally:
        bar.close()
    return {"path": str(root), "ok": True, "files": len(files), "bytes": total,
            "splits": _split_summaries(header), "seconds": round(time.perf_counter() - started, 2)}
