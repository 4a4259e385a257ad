"""Point maze datasets (OGBench ``generate_locomaze.py``): the noisy oracle-subgoal expert, navigate and
stitch episodes, and the expert's own success rate on the evaluation tasks."""

from __future__ import annotations

from typing import Any

import numpy as np

from evor_edge.datasets import DatasetError

from .episodes import Recorder, record_steps, run_episodes, seeded_global_numpy
from .recipes import RECIPES, Recipe, _check_number


def maze_cells(maze_map: np.ndarray) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Free cells of a maze and its "vertex" cells (generate_locomaze.py L68-93).

    A vertex cell is a free cell that is not a straight hallway cell: free above and below with
    walls left and right, or free left and right with walls above and below. The outer border
    is always wall.
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


STITCH_GOAL_STEPS = 4
"""Stitch datasets: BFS distance from the start cell to the goal cell (generate_locomaze.py L113)."""


def stitch_goal_cells(maze_map: np.ndarray, init_ij: tuple[int, int]) -> list[tuple[int, int]]:
    """Free cells exactly :data:`STITCH_GOAL_STEPS` BFS steps from ``init_ij``, in BFS order.

    generate_locomaze.py L111-133; the stitch goal is drawn uniformly from them, or is the
    start cell itself when there is none (L136).
    """
    rows, cols = maze_map.shape
    dist = np.full((rows, cols), -1, dtype=np.int64)
    dist[init_ij] = 0
    queue = [init_ij]
    found: list[tuple[int, int]] = []
    while queue:
        i, j = queue.pop(0)
        for di, dj in ((-1, 0), (0, -1), (1, 0), (0, 1)):
            ni, nj = i + di, j + dj
            if 0 <= ni < rows and 0 <= nj < cols and maze_map[ni, nj] == 0 and dist[ni, nj] == -1:
                dist[ni, nj] = dist[i, j] + 1
                queue.append((ni, nj))
                if dist[ni, nj] == STITCH_GOAL_STEPS:
                    found.append((ni, nj))
    return found


class _MazeExpert:
    """OGBench's noisy oracle-subgoal expert for point mazes (generate_locomaze.py L45-48, L155-166)."""

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


def collect(recipe: Recipe, n_episodes: int, seed: int, progress: bool) -> tuple[Recorder, int]:
    """Run generate_locomaze.py's navigate / stitch loop (L95-188) for a point maze."""
    import gymnasium
    import ogbench  # noqa: F401  (registers the environments)

    env = gymnasium.make(recipe.env_id, terminate_at_goal=False, max_episode_steps=recipe.max_episode_steps)
    try:
        maze_map = np.asarray(env.unwrapped.maze_map)
        all_cells, vertex_cells = maze_cells(maze_map)
        rng = np.random.default_rng(seed)
        expert = _MazeExpert(env, recipe.noise, rng)
        env.action_space.seed(seed)
        rec = Recorder(env, n_episodes, recipe.max_episode_steps)
        navigate = recipe.dataset_type == "navigate"

        def episode(first: bool) -> int:
            init_ij = all_cells[rng.integers(len(all_cells))]
            if navigate:
                goal_ij = vertex_cells[rng.integers(len(vertex_cells))]
            else:
                near = stitch_goal_cells(maze_map, init_ij)
                goal_ij = near[rng.integers(len(near))] if near else init_ij
            ob, _ = env.reset(
                seed=seed if first else None, options=dict(task_info=dict(init_ij=init_ij, goal_ij=goal_ij))
            )
            reached = 0

            def after_step(info: dict[str, Any]) -> None:
                nonlocal reached
                if info["success"]:
                    reached += 1
                    if navigate:  # L173-175: a new goal; stitch keeps its goal and stays there
                        _set_maze_goal(env, vertex_cells[rng.integers(len(vertex_cells))])

            record_steps(env, rec, ob, {}, lambda ob, info: expert.act(), after_step)
            # navigate: goals reached; stitch: steps spent at the goal reduced to 0/1 (goal reached)
            return reached if navigate else int(reached > 0)

        discarded = run_episodes(recipe.dataset, rec, n_episodes, episode, progress)
    finally:
        env.close()
    return rec, discarded


def evaluate_expert(task_env_name: str, episodes: int = 2, noise: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Goal-reaching rate of the pointmaze datasets' noisy expert on an OGBench single-task env.

    The env is the evaluation one (``terminate_at_goal=True``, 1000 steps, fixed task), so
    an episode succeeds when ``info['success']`` is set at its last step, as OGBench counts it.

    Args:
        task_env_name: e.g. ``'pointmaze-medium-singletask-task1-v0'``.
        episodes: number of episodes (>= 1).
        noise: Gaussian action-noise standard deviation; ``None`` takes the pointmaze datasets'
            official 0.5 (commands.sh L14-28).
        seed: seed for the env, numpy's global RNG (restored afterwards) and the expert.

    Returns:
        ``{'env', 'episodes', 'noise', 'successes', 'success_rate', 'mean_steps'}``.
    """
    import gymnasium
    import ogbench  # noqa: F401

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise DatasetError(f"episodes must be an integer >= 1, got {episodes!r}")
    noise = RECIPES["pointmaze-medium-navigate-v0"].noise if noise is None else _check_number("noise", noise, 0.0)
    if task_env_name not in gymnasium.registry:
        raise DatasetError(f"environment '{task_env_name}' is not registered by ogbench")
    if "maze" not in task_env_name or "singletask" not in task_env_name:
        raise DatasetError(f"no expert for '{task_env_name}' (pointmaze single-task envs only)")
    successes: list[bool] = []
    steps: list[int] = []
    with seeded_global_numpy(seed):
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
