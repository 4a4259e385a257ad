"""Generate OGBench-format datasets locally, following OGBench's own recipe.

OGBench's download server is out of reach here, so this module makes the files itself,
the way OGBench's ``data_gen_scripts`` do:

* ``pointmaze-*-navigate-v0``: a noisy oracle expert. Each episode starts in a random free
  cell with a goal in a random "vertex" cell (a free cell that is not a straight hallway
  cell). Every step the expert heads for the next cell on the BFS shortest path to the
  goal (``get_oracle_subgoal``), action = clip(unit direction + N(0, noise^2), -1, 1); on
  reaching the goal a new vertex-cell goal is drawn. The env runs with
  ``terminate_at_goal=False`` and ``max_episode_steps`` (1001 by default), so every
  episode has exactly that many steps.

* ``cube-{single,double,triple}-{play,noisy}-v0``: OGBench's manipspace recipe with the
  oracles shipped in the ogbench package, env made with ``terminate_at_goal=False,
  mode='data_collection'``. The env scatters the cubes and picks a target cube and pose;
  the oracle carries the cube there, then ``set_new_target`` draws the next one (stacked on
  another cube with the episode's probability p_stack ~ U(0, 0.25) for double), until the
  time limit. ``play`` uses the plan oracle (``CubePlanOracle``, temporally correlated plan
  noise 0.1, smoothing 0.5); ``noisy`` uses the Markov oracle (``CubeMarkovOracle``,
  min_norm 0.4) with Gaussian noise of per-episode scale xi ~ U(0, 0.1) (x[1,1,1,3,10]
  per action dimension) and 10% uniformly random actions. These are the settings of
  OGBench's ``generate_manipspace.py`` for those dataset names.

Files have OGBench's layout (``observations``/``actions``/``qpos``/``qvel`` float32,
``terminals`` bool, where ``qpos``/``qvel`` are the simulator state *before* each step
so single-task rewards can be relabelled), written with ``np.savez_compressed``. The
train file goes to ``out_path`` and the validation file (``max(1, episodes // 10)`` more
episodes, same recipe, drawn after the train episodes) to ``out_path`` with ``.npz``
replaced by ``-val.npz``. Both are written atomically.

Determinism: OGBench's envs and oracles draw some noise from numpy's *global* RNG (start /
goal jitter, oracle plans). Generation seeds it for its duration and restores the
caller's global state afterwards; everything the recipe itself draws (cells, action
noise, stacking probability, random actions) comes from a seeded
``numpy.random.Generator``, so the streams differ from OGBench's script but the
distributions are the same. Same seed, same arguments, same MuJoCo build -> identical
arrays.

Two deliberate, output-neutral deviations from OGBench's pointmaze script: the oracle
subgoal is cached per (current cell, goal cell), which is exactly what
``get_oracle_subgoal`` depends on (it halves the cost per step); and a new goal is set as
``set_goal(goal_xy=add_noise(ij_to_xy(goal_ij)))`` rather than ``set_goal(goal_ij)``,
which draws the same noise but leaves the rendered target marker at the goal instead of
at NaN (``set_goal(goal_ij)`` writes ``None`` into the marker position).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evor_edge.datasets import DatasetError, val_path_for


@dataclass(frozen=True)
class _Spec:
    """How to generate one dataset (OGBench's settings for it)."""

    dataset: str
    env_id: str  # goal-conditioned env used for collection
    kind: str  # 'maze' or 'cube'
    default_noise: float
    oracle: str = ""  # cube: 'plan' (play datasets) or 'markov' (noisy datasets)
    p_random_action: float = 0.0  # cube: probability of a uniformly random action
    p_stack: tuple[float, float] = (0.0, 0.0)  # cube: per-episode stacking probability ~ U(lo, hi)

    @property
    def task_env_ids(self) -> list[str]:
        """The single-task evaluation env ids that go with this dataset."""
        base = self.env_id[: -len("-v0")]
        return [f"{base}-singletask-task{i}-v0" for i in range(1, NUM_EVAL_TASKS + 1)]


NUM_EVAL_TASKS = 5
"""Evaluation tasks per OGBench environment (``singletask-task1`` .. ``task5``)."""


def _build_specs() -> dict[str, _Spec]:
    specs: dict[str, _Spec] = {}
    for maze in ("medium", "large", "giant", "teleport"):
        name = f"pointmaze-{maze}-navigate-v0"
        specs[name] = _Spec(name, f"pointmaze-{maze}-v0", "maze", default_noise=0.2)
    # OGBench's generate_manipspace.py: 'play' follows the plan oracles (noise 0.1, smoothing
    # 0.5); 'noisy' the Markov oracles (per-episode noise scale ~ U(0, 0.1)) with 10% random actions.
    for size, p_stack in (("single", (0.0, 0.0)), ("double", (0.0, 0.25)), ("triple", (0.05, 0.35))):
        env_id = f"cube-{size}-v0"
        specs[f"cube-{size}-play-v0"] = _Spec(
            f"cube-{size}-play-v0", env_id, "cube", default_noise=0.1, oracle="plan", p_stack=p_stack
        )
        specs[f"cube-{size}-noisy-v0"] = _Spec(
            f"cube-{size}-noisy-v0",
            env_id,
            "cube",
            default_noise=0.1,
            oracle="markov",
            p_random_action=0.1,
            p_stack=p_stack,
        )
    return specs


_SPECS: dict[str, _Spec] = _build_specs()

SUPPORTED_DATASETS: tuple[str, ...] = tuple(_SPECS)
"""Dataset names :func:`generate_dataset` can make."""


def _spec(dataset_name: str) -> _Spec:
    if dataset_name not in _SPECS:
        raise DatasetError(f"unsupported dataset '{dataset_name}'; supported: {', '.join(SUPPORTED_DATASETS)}")
    return _SPECS[dataset_name]


@contextlib.contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (which OGBench envs use) and restore the caller's state after."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


# --------------------------------------------------------------------------- maze expert


def maze_cells(maze_map: np.ndarray) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Free cells of a maze and its "vertex" cells (free cells that are not straight hallways).

    A straight hallway cell has free cells above and below and walls left and right, or free
    cells left and right and walls above and below. The outer border is always wall.
    """
    all_cells: list[tuple[int, int]] = []
    vertex_cells: list[tuple[int, int]] = []
    rows, cols = maze_map.shape
    for i in range(1, rows - 1):
        for j in range(1, cols - 1):
            if maze_map[i, j] != 0:
                continue
            all_cells.append((i, j))
            up, down, left, right = (
                maze_map[i - 1, j],
                maze_map[i + 1, j],
                maze_map[i, j - 1],
                maze_map[i, j + 1],
            )
            vertical_hall = up == 0 and down == 0 and left == 1 and right == 1
            horizontal_hall = left == 0 and right == 0 and up == 1 and down == 1
            if not (vertical_hall or horizontal_hall):
                vertex_cells.append((i, j))
    return all_cells, vertex_cells


class _MazeExpert:
    """OGBench's noisy oracle-subgoal expert for point mazes."""

    def __init__(self, env: Any, noise: float, rng: np.random.Generator) -> None:
        self._u = env.unwrapped
        self._noise = float(noise)
        self._rng = rng
        self._cache: dict[tuple[tuple[int, int], tuple[int, int]], np.ndarray] = {}

    def act(self) -> np.ndarray:
        """Noisy action towards the next BFS cell on the way to the current goal."""
        u = self._u
        xy = np.asarray(u.get_xy(), dtype=np.float64)
        goal_xy = u.cur_goal_xy
        key = (u.xy_to_ij(xy), u.xy_to_ij(goal_xy))
        subgoal = self._cache.get(key)
        if subgoal is None:
            subgoal, _ = u.get_oracle_subgoal(xy, goal_xy)
            self._cache[key] = subgoal
        direction = subgoal - xy
        direction = direction / (np.linalg.norm(direction) + 1e-6)
        action = direction + self._rng.normal(0.0, self._noise, size=direction.shape)
        return np.clip(action, -1.0, 1.0)


def _set_maze_goal(env: Any, goal_ij: tuple[int, int]) -> None:
    """``env.unwrapped.set_goal(goal_ij)`` with the same noise, keeping the target marker valid."""
    u = env.unwrapped
    goal_xy = u.ij_to_xy(goal_ij)
    if u._add_noise_to_goal:
        goal_xy = u.add_noise(goal_xy)
    u.set_goal(goal_xy=np.asarray(goal_xy, dtype=np.float64))


class _Recorder:
    """Preallocated OGBench-layout arrays, filled one step at a time."""

    def __init__(self, env: Any, n_episodes: int, max_episode_steps: int) -> None:
        u = env.unwrapped
        model = getattr(u, "model", None) or u._model
        self._cap = n_episodes * max_episode_steps
        cap = self._cap
        self.buf: dict[str, np.ndarray] = {
            "observations": np.empty((cap, *env.observation_space.shape), dtype=np.float32),
            "actions": np.empty((cap, *env.action_space.shape), dtype=np.float32),
            "terminals": np.zeros((cap,), dtype=bool),
            "qpos": np.empty((cap, int(model.nq)), dtype=np.float32),
            "qvel": np.empty((cap, int(model.nv)), dtype=np.float32),
        }
        if hasattr(u, "_cur_button_states"):
            n_buttons = len(np.atleast_1d(u._cur_button_states))
            self.buf["button_states"] = np.empty((cap, n_buttons), dtype=np.int64)
        self.t = 0
        self.lengths: list[int] = []  # per finished episode
        self.goals: list[int] = []  # goals the expert reached per finished episode
        self._episode_start = 0

    def end_episode(self, goals_reached: int, bar: Any) -> None:
        """Close the current episode: record its length and goals, advance the progress bar."""
        self.lengths.append(self.t - self._episode_start)
        self.goals.append(int(goals_reached))
        self._episode_start = self.t
        bar.update(1)
        bar.set_postfix(goals_per_ep=f"{np.mean(self.goals):.1f}")

    def add(self, ob: np.ndarray, action: np.ndarray, done: bool, info: dict[str, Any]) -> None:
        """Record one step: the observation *before* it, the action, done, and the prior state."""
        t = self.t
        if t >= self._cap:
            raise RuntimeError("episode ran past max_episode_steps (TimeLimit missing?)")
        b = self.buf
        b["observations"][t] = ob
        b["actions"][t] = action
        b["terminals"][t] = done
        b["qpos"][t] = info["prev_qpos"]
        b["qvel"][t] = info["prev_qvel"]
        if "button_states" in b:
            b["button_states"][t] = info["prev_button_states"]
        self.t = t + 1

    def arrays(self) -> dict[str, np.ndarray]:
        """The filled part of the arrays (views, no copy)."""
        return {k: v[: self.t] for k, v in self.buf.items()}


def _collect_maze(
    spec: _Spec, n_episodes: int, max_episode_steps: int, noise: float, seed: int, progress: bool
) -> tuple[dict[str, np.ndarray], list[int], list[int]]:
    """Run the navigate recipe; returns the arrays, episode lengths and goals reached per episode."""
    import gymnasium
    import ogbench  # noqa: F401  (registers the environments)
    from tqdm import tqdm

    env = gymnasium.make(spec.env_id, terminate_at_goal=False, max_episode_steps=max_episode_steps)
    try:
        all_cells, vertex_cells = maze_cells(np.asarray(env.unwrapped.maze_map))
        rng = np.random.default_rng(seed)
        expert = _MazeExpert(env, noise, rng)
        env.action_space.seed(seed)
        rec = _Recorder(env, n_episodes, max_episode_steps)
        with tqdm(total=n_episodes, desc=spec.dataset, unit="ep", disable=not progress) as bar:
            for ep in range(n_episodes):
                init_ij = all_cells[rng.integers(len(all_cells))]
                goal_ij = vertex_cells[rng.integers(len(vertex_cells))]
                ob, _ = env.reset(
                    seed=seed if ep == 0 else None,
                    options=dict(task_info=dict(init_ij=init_ij, goal_ij=goal_ij)),
                )
                reached, done = 0, False
                while not done:
                    action = expert.act()
                    next_ob, _, terminated, truncated, info = env.step(action)
                    done = bool(terminated or truncated)
                    if info["success"]:
                        reached += 1
                        _set_maze_goal(env, vertex_cells[rng.integers(len(vertex_cells))])
                    rec.add(ob, action, done, info)
                    ob = next_ob
                rec.end_episode(reached, bar)
    finally:
        env.close()
    return rec.arrays(), rec.lengths, rec.goals


def _collect_cube(
    spec: _Spec, n_episodes: int, max_episode_steps: int, noise: float, seed: int, progress: bool
) -> tuple[dict[str, np.ndarray], list[int], list[int]]:
    """Run OGBench's manipspace play / noisy recipe with the oracles shipped in ogbench.

    Each episode the env (``mode='data_collection'``) places the cubes at random and picks a
    target cube and pose; the oracle carries it there, then a new target is drawn (stacked on
    another cube with the episode's stacking probability), until the time limit.
    Goals reached counts targets that were in place when the oracle finished with them.
    """
    import gymnasium
    import ogbench  # noqa: F401  (registers the environments)
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from tqdm import tqdm

    env = gymnasium.make(
        spec.env_id, terminate_at_goal=False, mode="data_collection", max_episode_steps=max_episode_steps
    )
    try:
        if spec.oracle == "plan":
            agents: dict[str, Any] = {"cube": CubePlanOracle(env=env, noise=noise, noise_smoothing=0.5)}
        else:
            agents = {"cube": CubeMarkovOracle(env=env, min_norm=0.4)}
        rng = np.random.default_rng(seed)
        # Manipspace envs build a new (unseedable) action_space on every access, so random
        # actions are drawn from the seeded generator instead of action_space.sample().
        space = env.action_space
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        rec = _Recorder(env, n_episodes, max_episode_steps)
        with tqdm(total=n_episodes, desc=spec.dataset, unit="ep", disable=not progress) as bar:
            for ep in range(n_episodes):
                ob, info = env.reset(seed=seed if ep == 0 else None)
                p_stack = rng.uniform(*spec.p_stack)
                xi = rng.uniform(0.0, noise)  # Markov oracle: this episode's noise scale
                noise_scale = np.array([xi, xi, xi, 3 * xi, 10 * xi])
                agent = agents[info["privileged/target_task"]]
                agent.reset(ob, info)
                reached, done = 0, False
                while not done:
                    if rng.random() < spec.p_random_action:
                        action = rng.uniform(low, high)
                    else:
                        action = np.asarray(agent.select_action(ob, info), dtype=np.float64)
                        if spec.oracle == "markov":
                            action = action + rng.normal(0.0, noise_scale)
                    action = np.clip(action, -1.0, 1.0)
                    next_ob, _, terminated, truncated, info = env.step(action)
                    done = bool(terminated or truncated)
                    if agent.done:
                        reached += int(bool(info["success"]))
                        agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=p_stack)
                        agent = agents[agent_info["privileged/target_task"]]
                        agent.reset(agent_ob, agent_info)
                    rec.add(ob, action, done, info)
                    ob = next_ob
                rec.end_episode(reached, bar)
    finally:
        env.close()
    return rec.arrays(), rec.lengths, rec.goals


# --------------------------------------------------------------------------- expert evaluation


def evaluate_expert(task_env_name: str, episodes: int = 2, noise: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """Goal-reaching rate of the dataset's noisy expert on an OGBench single-task env.

    The env is the evaluation one (``terminate_at_goal=True``, 1000 steps, fixed task), so
    an episode succeeds when ``info['success']`` is set at its last step, as OGBench counts it.

    Args:
        task_env_name: e.g. ``'pointmaze-medium-singletask-task1-v0'``.
        episodes: number of episodes (>= 1).
        noise: Gaussian action-noise standard deviation, as in generation.
        seed: seed for the env, numpy's global RNG (restored afterwards) and the expert.

    Returns:
        ``{'env', 'episodes', 'noise', 'successes', 'success_rate', 'mean_steps'}``.
    """
    import gymnasium
    import ogbench  # noqa: F401

    if not isinstance(episodes, int) or episodes < 1:
        raise DatasetError(f"episodes must be an integer >= 1, got {episodes!r}")
    if task_env_name not in gymnasium.registry:
        raise DatasetError(f"environment '{task_env_name}' is not registered by ogbench")
    if "maze" not in task_env_name or "singletask" not in task_env_name:
        raise DatasetError(f"no expert for '{task_env_name}' (pointmaze single-task envs only)")
    successes: list[bool] = []
    steps: list[int] = []
    with _seeded_global_numpy(seed):
        env = gymnasium.make(task_env_name)
        try:
            rng = np.random.default_rng(seed)
            expert = _MazeExpert(env, noise, rng)
            env.action_space.seed(seed)
            for ep in range(episodes):
                env.reset(seed=seed if ep == 0 else None)
                done, n, info = False, 0, {}
                while not done:
                    _, _, terminated, truncated, info = env.step(expert.act())
                    done = bool(terminated or truncated)
                    n += 1
                successes.append(bool(info.get("success", 0.0)))
                steps.append(n)
        finally:
            env.close()
    return {
        "env": task_env_name,
        "episodes": episodes,
        "noise": float(noise),
        "successes": successes,
        "success_rate": float(np.mean(successes)),
        "mean_steps": float(np.mean(steps)),
    }


# --------------------------------------------------------------------------- writing


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
    """Write each dict to a temp file beside its target, then ``os.replace`` them all.

    On any exception (KeyboardInterrupt included) no temp file remains and none of the
    targets written by this call remains either.
    """
    temps: list[str] = []
    placed: list[Path] = []
    try:
        for final, arrays in files:
            fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
        for (final, _), tmp in zip(files, temps, strict=True):
            os.replace(tmp, final)
            placed.append(final)
    except BaseException:
        for name in [*temps, *placed]:
            with contextlib.suppress(OSError):
                os.unlink(name)
        raise


def generate_dataset(
    dataset_name: str,
    out_path: str | Path,
    episodes: int = 1000,
    seed: int = 0,
    max_episode_steps: int = 1001,
    noise: float | None = None,
    progress: bool = True,
    expert_eval_episodes: int = 2,
) -> dict[str, Any]:
    """Generate an OGBench-format dataset (train + validation file) locally.

    Args:
        dataset_name: one of :data:`SUPPORTED_DATASETS`, e.g. ``'pointmaze-medium-navigate-v0'``.
        out_path: train file path, ending in ``.npz``; the validation file goes to ``-val.npz``.
        episodes: train episodes (>= 1); the validation file gets ``max(1, episodes // 10)``.
        seed: seed of everything random; same seed -> same files.
        max_episode_steps: steps per episode (OGBench uses 1001).
        noise: action-noise level; ``None`` takes OGBench's value for the dataset (pointmaze:
            standard deviation 0.2 of the Gaussian action noise; cube play: plan noise 0.1;
            cube noisy: the per-episode noise scale is drawn from U(0, 0.1)).
        progress: show a tqdm bar over episodes.
        expert_eval_episodes: episodes per evaluation task for ``expert_success`` (0 skips it).

    Returns:
        JSON-able report: ``dataset``, ``path``, ``val_path``, ``episodes``, ``val_episodes``,
        ``transitions`` / ``val_transitions`` (steps stored in each file), ``file_bytes`` /
        ``val_file_bytes``, ``seconds`` (simulation + writing), ``goals_reached_per_episode``
        (mean over train episodes of goals the noisy expert reached), ``expert_success``
        (per-task and mean success of the same expert on the five single-task evaluation
        envs; ``None`` when skipped or for cube datasets, whose oracles only run in
        data-collection mode) and the generation parameters. For cube datasets
        ``goals_reached_per_episode`` counts targets in place when the oracle finished them.

    Raises:
        DatasetError: bad arguments or output path (checked before any simulation), or a
            write failure (nothing is left under either file name).
    """
    spec = _spec(dataset_name)
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise DatasetError(f"episodes must be an integer >= 1, got {episodes!r}")
    if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 2:
        raise DatasetError(f"max_episode_steps must be an integer >= 2, got {max_episode_steps!r}")
    if noise is None:
        noise = spec.default_noise
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
        raise DatasetError(f"noise must be a finite number >= 0, got {noise!r}")
    if not isinstance(seed, int) or seed < 0:
        raise DatasetError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(expert_eval_episodes, int) or expert_eval_episodes < 0:
        raise DatasetError(f"expert_eval_episodes must be an integer >= 0, got {expert_eval_episodes!r}")
    path, val_path = _check_out_path(out_path)
    val_episodes = max(1, episodes // 10)

    t0 = time.perf_counter()
    with _seeded_global_numpy(seed):
        collect = _collect_maze if spec.kind == "maze" else _collect_cube
        data, lengths, goals = collect(spec, episodes + val_episodes, max_episode_steps, float(noise), seed, progress)
    n_train = int(sum(lengths[:episodes]))
    train = {k: v[:n_train] for k, v in data.items()}
    val = {k: v[n_train:] for k, v in data.items()}
    try:
        _write_npz_atomic([(path, train), (val_path, val)])
    except OSError as e:
        raise DatasetError(f"cannot write {path} ({e.strerror or e})") from e
    seconds = time.perf_counter() - t0

    expert_success: dict[str, Any] | None = None
    if expert_eval_episodes > 0 and spec.kind == "maze":
        per_task = {
            name: evaluate_expert(name, expert_eval_episodes, float(noise), seed)["success_rate"]
            for name in spec.task_env_ids
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
        "episodes": episodes,
        "val_episodes": val_episodes,
        "max_episode_steps": max_episode_steps,
        "noise": float(noise),
        "seed": seed,
        "transitions": n_train,
        "val_transitions": int(sum(lengths[episodes:])),
        "file_bytes": path.stat().st_size,
        "val_file_bytes": val_path.stat().st_size,
        "seconds": round(seconds, 3),
        "goals_reached_per_episode": float(np.mean(goals[:episodes])),
        "expert_success": expert_success,
    }
