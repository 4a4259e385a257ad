"""`generate_dataset`: a recipe's episodes simulated by its family's collector, written as OGBench files."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from evor_edge.datasets import DatasetError, val_path_for
from evor_edge.io import atomic_write_many

from . import manipspace, pointmaze
from .episodes import Recorder, seeded_global_numpy
from .recipes import OGBENCH_COMMIT, Recipe, official_recipe, resolve_recipe, val_episode_count


def _collect(recipe: Recipe, n_episodes: int, seed: int, progress: bool) -> tuple[Recorder, int]:
    """Run the family's collector (looked up at call time, so tests can replace one)."""
    collector = pointmaze.collect if recipe.family == "pointmaze" else manipspace.collect
    return collector(recipe, n_episodes, seed, progress)


def _check_out_path(out_path: str | Path) -> tuple[Path, Path]:
    """Validate the output path and make sure its directory exists and is writable."""
    if not isinstance(out_path, (str, os.PathLike)):
        raise DatasetError(f"output path must be a path, got {type(out_path).__name__}")
    path = Path(out_path)
    val_path = val_path_for(path)  # checks the .npz suffix
    if path.name == ".npz":
        raise DatasetError(f"output path needs a file name before .npz: {path}")
    for p in (path, val_path):
        if p.is_dir():
            raise DatasetError(f"output path is a directory: {p}")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise DatasetError(f"cannot write to directory {parent} (it is not a directory)")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise DatasetError(f"cannot write to directory {parent} ({e.strerror or e})") from e
    return path, val_path


def _write_npz_atomic(files: list[tuple[Path, dict[str, np.ndarray]]]) -> None:
    """Write each dict as a compressed ``.npz`` beside its target, then rename them all into place
    (`evor_edge.io.atomic_write_many`: on any failure none of the targets remains)."""
    atomic_write_many([(final, lambda handle, arrays=arrays: np.savez_compressed(handle, **arrays))
                       for final, arrays in files])


def generate_dataset(
    dataset_name: str,
    out_path: str | Path,
    episodes: int | None = None,
    seed: int = 0,
    max_episode_steps: int | None = None,
    noise: float | None = None,
    progress: bool = True,
    expert_eval_episodes: int = 2,
    *,
    noise_smoothing: float | None = None,
    min_norm: float | None = None,
    p_random_action: float | None = None,
) -> dict[str, Any]:
    """Generate an OGBench-format dataset (train + validation file) locally, OGBench's way.

    Every recipe argument left at ``None`` takes the dataset's official value
    (:data:`RECIPES`, from OGBench's ``data_gen_scripts/commands.sh``).

    Args:
        dataset_name: one of :data:`SUPPORTED_DATASETS`, e.g. ``'pointmaze-medium-navigate-v0'``.
        out_path: train file path, ending in ``.npz``; the validation file goes to ``-val.npz``.
        episodes: train episodes (>= 1); the validation file gets ``max(1, episodes // 10)``.
            Official: 1000 (navigate, cube single/double, scene), 500 (pointmaze giant
            navigate), 5000 (stitch, cube quadruple), 3000 (cube triple).
        seed: seed of everything random; same seed -> same files.
        max_episode_steps: steps per episode. Official: 1001; 2001 giant navigate; 201 stitch.
        noise: pointmaze: std of the Gaussian action noise (official 0.5); play: plan noise
            (0.1); noisy: upper end of the per-episode noise scale xi ~ U(0, noise) (0.1).
        progress: show a tqdm bar over episodes.
        expert_eval_episodes: pointmaze: episodes per evaluation task for ``expert_success``
            (0 skips it).
        noise_smoothing: play datasets: Gaussian smoothing sigma of the plan noise (0.5).
        min_norm: noisy datasets: the Markov oracles' minimum action norm (0.4).
        p_random_action: manipspace: probability of a uniformly random action (noisy 0.1,
            play 0).

    Returns:
        JSON-able report: ``dataset``, ``path``, ``val_path``, ``episodes``, ``val_episodes``,
        ``max_episode_steps``, ``noise``, ``seed``, ``recipe`` (every value used),
        ``official_recipe``, ``official_command``, ``deviations`` (``{field: {'official',
        'ours'}}`` for overridden values), ``discarded_episodes`` (scene episodes redrawn by the
        health check), ``transitions`` / ``val_transitions`` (steps stored in each file),
        ``file_bytes`` / ``val_file_bytes``, ``seconds`` (simulation + writing),
        ``seconds_per_episode``, ``goals_reached_per_episode`` (mean over train episodes of
        targets the expert achieved; stitch: fraction of episodes that reached the goal) and
        ``expert_success`` (per-task and mean success of the same expert on the five
        single-task evaluation envs; ``None`` when skipped or for manipspace datasets, whose
        oracles only run in data-collection mode).

    Raises:
        DatasetError: bad arguments or output path (checked before any simulation), or a
            write failure (nothing is left under either file name).
    """
    recipe, deviations = resolve_recipe(
        dataset_name,
        num_episodes=episodes,
        max_episode_steps=max_episode_steps,
        noise=noise,
        noise_smoothing=noise_smoothing,
        min_norm=min_norm,
        p_random_action=p_random_action,
    )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DatasetError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(expert_eval_episodes, bool) or not isinstance(expert_eval_episodes, int) or expert_eval_episodes < 0:
        raise DatasetError(f"expert_eval_episodes must be an integer >= 0, got {expert_eval_episodes!r}")
    path, val_path = _check_out_path(out_path)
    n_train = recipe.num_episodes
    val_episodes = val_episode_count(n_train)

    t0 = time.perf_counter()
    with seeded_global_numpy(seed):
        rec, discarded = _collect(recipe, n_train + val_episodes, seed, progress)
    sim_seconds = time.perf_counter() - t0
    data, lengths = rec.arrays(), rec.lengths
    n_train_steps = int(sum(lengths[:n_train]))
    train = {k: v[:n_train_steps] for k, v in data.items()}
    val = {k: v[n_train_steps:] for k, v in data.items()}
    try:
        _write_npz_atomic([(path, train), (val_path, val)])
    except OSError as e:
        raise DatasetError(f"cannot write {path} ({e.strerror or e})") from e
    seconds = time.perf_counter() - t0

    expert_success: dict[str, Any] | None = None
    if expert_eval_episodes > 0 and recipe.family == "pointmaze":
        per_task = {
            name: pointmaze.evaluate_expert(name, expert_eval_episodes, recipe.noise, seed)["success_rate"]
            for name in recipe.task_env_ids
        }
        expert_success = {
            "episodes_per_task": expert_eval_episodes,
            "per_task": per_task,
            "mean": float(np.mean(list(per_task.values()))),
        }

    return {
        "dataset": dataset_name,
        "path": str(path),
        "val_path": str(val_path),
        "episodes": n_train,
        "val_episodes": val_episodes,
        "max_episode_steps": recipe.max_episode_steps,
        "noise": recipe.noise,
        "seed": seed,
        "recipe": recipe.as_dict(),
        "official_recipe": official_recipe(dataset_name).as_dict(),
        "official_command": official_recipe(dataset_name).official_command(),
        "ogbench_commit": OGBENCH_COMMIT,
        "deviations": deviations,
        "discarded_episodes": discarded,
        "transitions": n_train_steps,
        "val_transitions": int(sum(lengths[n_train:])),
        "file_bytes": path.stat().st_size,
        "val_file_bytes": val_path.stat().st_size,
        "seconds": round(seconds, 3),
        "seconds_per_episode": round(sim_seconds / (n_train + val_episodes + discarded), 4),
        "goals_reached_per_episode": float(np.mean(rec.goals[:n_train])),
        "expert_success": expert_success,
    }
