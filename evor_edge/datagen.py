"""Generate OGBench-format datasets locally, with OGBench's own recipe for each dataset.

OGBench's download server is out of reach here, so this module makes the files itself, the
way OGBench's ``data_gen_scripts`` do (repository seohongpark/ogbench, commit
``1d4140997f60c52c6fb0702ec100dc988b18c548``; its ``ogbench/`` Python files are identical to
the ogbench 1.2.2 wheel this project installs). Line numbers below refer to that commit.

**Recipes.** :data:`RECIPES` holds one :class:`Recipe` per dataset: the flags of its official
command in ``data_gen_scripts/commands.sh`` plus the script's own defaults for the flags that
command leaves out. :func:`generate_dataset` uses them as its defaults; every keyword it
takes overrides one value, and the JSON report records the recipe used, the official one and
each override. ``docs/datasets.md`` lays the recipes out next to the official commands.

* ``pointmaze-{medium,large,giant,teleport}-{navigate,stitch}-v0`` (``generate_locomaze.py``):
  a noisy oracle expert, action = clip(unit direction to the next cell of the BFS shortest path
  to the goal + N(0, noise^2), -1, 1) with noise 0.5 (commands.sh L14-28; the script's own
  default, 0.2, is not what any pointmaze dataset used). ``navigate``: start in a random free
  cell, goal in a random "vertex" cell (a free cell that is not a straight hallway cell), a new
  vertex goal each time the goal is reached (L102-106, L172-175); 1000 episodes x 1001 steps
  (giant: 500 x 2001). ``stitch``: goal a random cell exactly 4 BFS steps from the start, kept
  for the whole episode (L107-136); 5000 episodes x 201 steps.

* ``cube-{single,double,triple,quadruple}-{play,noisy}-v0`` and ``scene-{play,noisy}-v0``
  (``generate_manipspace.py``, env made with ``terminate_at_goal=False,
  mode='data_collection'``): the oracles shipped in ogbench carry out one target after
  another, ``set_new_target(p_stack)`` drawing the next when the oracle is done (L139-143),
  with a per-episode stacking probability p_stack (L100-111: single 0, double U(0, 0.25),
  triple U(0.05, 0.35), quadruple U(0.1, 0.5), scene 0.5). ``play`` uses the plan oracles
  (noise 0.1, noise_smoothing 0.5, L25-26, L55-57, L66-72); ``noisy`` the Markov oracles
  (min_norm 0.4, L27, L50-53, L59-65; scene's cube oracle with max_step=100, L61) plus
  Gaussian action noise of per-episode scale xi ~ U(0, noise), x[1, 1, 1, 3, 10] per action
  dimension (L113-115, L134), and ``p_random_action`` = 0.1 uniformly random actions
  (commands.sh L120-126, L131; play datasets 0, the flag default, L28). Scene episodes in which
  the cube leaves the camera's view (y >= 0.29, or y <= -0.3 outside the drawer's height band)
  are discarded and redrawn (L157-174). All are 1001-step episodes; 1000 episodes, 3000 for
  triple, 5000 for quadruple (commands.sh L112-131).

**Files** have OGBench's layout (``observations``/``actions``/``qpos``/``qvel`` float32,
``terminals`` bool, ``button_states`` int64 for scene; ``qpos``/``qvel`` are the simulator
state *before* each step so single-task rewards can be relabelled), written with
``np.savez_compressed``. The train file goes to ``out_path``, the validation file (a tenth as
many episodes, drawn after the train episodes, as in both scripts) to ``out_path`` with
``.npz`` replaced by ``-val.npz``. Both are written atomically (temp file + ``os.replace``).

**Determinism.** OGBench's envs and oracles draw noise from numpy's *global* RNG (start / goal
jitter, plan keyframes and plan noise). Generation seeds it for its duration and restores the
caller's state afterwards; everything the recipe itself draws (cells, action noise, p_stack,
xi, random actions) comes from a seeded ``numpy.random.Generator`` and the env's own RNG is
seeded on its first reset. The streams differ from OGBench's scripts (which seed nothing:
their ``--seed`` only seeds the SAC experts of the ant/humanoid mazes), the distributions are
the same. Same seed, same arguments, same MuJoCo build -> identical arrays.

**Deliberate differences** (none changes the distribution of the data):

* validation episodes are ``max(1, episodes // 10)``, not ``episodes // 10``: the same at any
  official size; below 10 episodes OGBench's script would write an empty, unloadable file;
* pointmaze: the oracle subgoal is cached per (current cell, goal cell), exactly what
  ``get_oracle_subgoal`` depends on; a new goal is set as
  ``set_goal(goal_xy=add_noise(ij_to_xy(goal_ij)))``, which draws the same noise as
  ``set_goal(goal_ij)`` (L175) but leaves the rendered target marker at the goal instead of at
  NaN (``set_goal(goal_ij)`` writes ``None`` into the marker position);
* manipspace: random actions are drawn uniformly in the action space's bounds from the seeded
  generator, because the env builds a new, unseedable ``action_space`` on every access
  (``env.action_space.sample()``, L127, has the same distribution);
* a scene run that discards 1000 episodes in a row stops with an error instead of looping
  forever (OGBench retries without bound; none of 46 scene episodes generated while checking
  this module was discarded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evor_edge.datasets import DatasetError, val_path_for
from evor_edge.io import atomic_write_many

OGBENCH_COMMIT = "1d4140997f60c52c6fb0702ec100dc988b18c548"
"""Commit of github.com/seohongpark/ogbench whose ``data_gen_scripts`` the recipes follow."""

NUM_EVAL_TASKS = 5
"""Evaluation tasks per OGBench environment (``singletask-task1`` .. ``task5``)."""

MAX_CONSECUTIVE_DISCARDS = 1000
"""Scene episodes discarded in a row (cube out of view) before generation gives up."""

_LOCOMAZE = "generate_locomaze.py"
_MANIPSPACE = "generate_manipspace.py"

# Which overridable values each script has (the others do not exist for it).
_KNOBS: dict[str, tuple[str, ...]] = {
    "navigate": ("num_episodes", "max_episode_steps", "noise"),
    "stitch": ("num_episodes", "max_episode_steps", "noise"),
    "play": ("num_episodes", "max_episode_steps", "noise", "noise_smoothing", "p_random_action"),
    "noisy": ("num_episodes", "max_episode_steps", "noise", "min_norm", "p_random_action"),
}
_KNOB_MEANING = {
    "noise_smoothing": "play datasets (the plan oracles' noise smoothing)",
    "min_norm": "noisy datasets (the Markov oracles' minimum action norm)",
    "p_random_action": "manipspace datasets (cube, scene)",
}


@dataclass(frozen=True)
class Recipe:
    """OGBench's official generation command for one dataset.

    Values are the flags of the dataset's line in ``data_gen_scripts/commands.sh``
    (``commands_line``) and, for flags that line omits, the defaults of ``script``. ``None``
    marks a flag that script does not have.
    """

    dataset: str
    env_id: str  # goal-conditioned env used for collection (--env_name)
    script: str  # 'generate_locomaze.py' or 'generate_manipspace.py'
    dataset_type: str  # --dataset_type: 'navigate' / 'stitch' (locomaze), 'play' / 'noisy' (manipspace)
    num_episodes: int  # --num_episodes (train episodes; validation gets a tenth more)
    max_episode_steps: int  # --max_episode_steps
    noise: float  # --noise: locomaze Gaussian action std; play: plan noise; noisy: max of per-episode xi
    noise_smoothing: float | None  # --noise_smoothing (plan oracles)
    min_norm: float | None  # --min_norm (Markov oracles)
    p_random_action: float | None  # --p_random_action (manipspace)
    p_stack: tuple[float, float] | None  # manipspace: per-episode stacking probability ~ U(lo, hi)
    commands_line: int  # line of the official command in commands.sh

    @property
    def family(self) -> str:
        """``'pointmaze'``, ``'cube'`` or ``'scene'``."""
        return self.env_id.split("-")[0]

    @property
    def oracle(self) -> str:
        """``'bfs'`` (pointmaze expert), ``'plan'`` (play) or ``'markov'`` (noisy)."""
        return {"navigate": "bfs", "stitch": "bfs", "play": "plan", "noisy": "markov"}[self.dataset_type]

    @property
    def task_env_ids(self) -> list[str]:
        """The single-task evaluation env ids that go with this dataset."""
        base = self.env_id[: -len("-v0")]
        return [f"{base}-singletask-task{i}-v0" for i in range(1, NUM_EVAL_TASKS + 1)]

    def official_command(self) -> str:
        """The dataset's command line as ``commands.sh`` writes it (flag order included)."""
        head = f"python {self.script} --env_name={self.env_id} --save_path=data/{self.dataset}.npz"
        if self.script == _LOCOMAZE:
            return (
                f"{head} --dataset_type={self.dataset_type} --num_episodes={self.num_episodes} "
                f"--max_episode_steps={self.max_episode_steps} --noise={self.noise:g}"
            )
        cmd = f"{head} --num_episodes={self.num_episodes} --max_episode_steps={self.max_episode_steps} "
        cmd += f"--dataset_type={self.dataset_type}"
        if self.p_random_action:
            cmd += f" --p_random_action={self.p_random_action:g}"
        return cmd

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (``p_stack`` as a list)."""
        d = dataclasses.asdict(self)
        if d["p_stack"] is not None:
            d["p_stack"] = list(d["p_stack"])
        return d


def _locomaze_recipe(maze: str, dataset_type: str, line: int) -> Recipe:
    """generate_locomaze.py: pointmaze commands at commands.sh L14-28, all with --noise=0.5."""
    if dataset_type == "navigate":
        episodes, steps = (500, 2001) if maze == "giant" else (1000, 1001)  # L18: giant is 500 x 2001
    else:
        episodes, steps = 5000, 201  # L22-28
    return Recipe(
        dataset=f"pointmaze-{maze}-{dataset_type}-v0",
        env_id=f"pointmaze-{maze}-v0",
        script=_LOCOMAZE,
        dataset_type=dataset_type,
        num_episodes=episodes,
        max_episode_steps=steps,
        noise=0.5,
        noise_smoothing=None,
        min_norm=None,
        p_random_action=None,
        p_stack=None,
        commands_line=line,
    )


# generate_manipspace.py L100-111: the per-episode stacking probability, by env name.
_P_STACK: dict[str, tuple[float, float]] = {
    "cube-single-v0": (0.0, 0.0),
    "cube-double-v0": (0.0, 0.25),
    "cube-triple-v0": (0.05, 0.35),
    "cube-quadruple-v0": (0.1, 0.5),
    "scene-v0": (0.5, 0.5),
}


def _manipspace_recipe(env_id: str, dataset_type: str, episodes: int, line: int) -> Recipe:
    """generate_manipspace.py: defaults L25-30 (noise 0.1, noise_smoothing 0.5, min_norm 0.4,
    p_random_action 0, 1000 x 1001); noisy commands add --p_random_action=0.1 (commands.sh)."""
    name = env_id.replace("-v0", f"-{dataset_type}-v0")
    return Recipe(
        dataset=name,
        env_id=env_id,
        script=_MANIPSPACE,
        dataset_type=dataset_type,
        num_episodes=episodes,
        max_episode_steps=1001,
        noise=0.1,
        noise_smoothing=0.5,
        min_norm=0.4,
        p_random_action=0.1 if dataset_type == "noisy" else 0.0,
        p_stack=_P_STACK[env_id],
        commands_line=line,
    )


def _build_recipes() -> dict[str, Recipe]:
    recipes: list[Recipe] = []
    line = 14  # commands.sh: pointmaze-medium-navigate-v0 at L14, then one command every 2 lines
    for dataset_type in ("navigate", "stitch"):
        for maze in ("medium", "large", "giant", "teleport"):
            recipes.append(_locomaze_recipe(maze, dataset_type, line))
            line += 2
    line = 112  # cube-single-play-v0
    cube_episodes = {"single": 1000, "double": 1000, "triple": 3000, "quadruple": 5000}
    for dataset_type in ("play", "noisy"):
        for size, episodes in cube_episodes.items():
            recipes.append(_manipspace_recipe(f"cube-{size}-v0", dataset_type, episodes, line))
            line += 2
    recipes.append(_manipspace_recipe("scene-v0", "play", 1000, 129))
    recipes.append(_manipspace_recipe("scene-v0", "noisy", 1000, 131))
    return {r.dataset: r for r in recipes}


RECIPES: dict[str, Recipe] = _build_recipes()
"""Official recipe of every dataset :func:`generate_dataset` can make, by dataset name."""

SUPPORTED_DATASETS: tuple[str, ...] = tuple(RECIPES)
"""Dataset names :func:`generate_dataset` can make."""


def official_recipe(dataset_name: str) -> Recipe:
    """OGBench's recipe for ``dataset_name``.

    Raises:
        DatasetError: for a name outside :data:`SUPPORTED_DATASETS` (the message lists them).
    """
    if dataset_name not in RECIPES:
        raise DatasetError(f"unsupported dataset '{dataset_name}'; supported: {', '.join(SUPPORTED_DATASETS)}")
    return RECIPES[dataset_name]


def val_episode_count(episodes: int) -> int:
    """Validation episodes for ``episodes`` train episodes: a tenth (L100 / L93), at least one."""
    return max(1, episodes // 10)


def _check_number(name: str, value: Any, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DatasetError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        bounds = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise DatasetError(f"{name} must be {bounds}, got {value!r}")
    return float(value)


def resolve_recipe(dataset_name: str, **overrides: Any) -> tuple[Recipe, dict[str, dict[str, Any]]]:
    """The official recipe with ``overrides`` (``None`` values ignored) applied and checked.

    Args:
        dataset_name: one of :data:`SUPPORTED_DATASETS`.
        **overrides: ``num_episodes``, ``max_episode_steps``, ``noise``, ``noise_smoothing``,
            ``min_norm``, ``p_random_action``; each must be a flag of the dataset's script.

    Returns:
        ``(recipe, deviations)``: the recipe to run and ``{field: {'official': a, 'ours': b}}``
        for every value that differs from the official one.

    Raises:
        DatasetError: unknown dataset, unknown field, a value out of range, or a flag the
            dataset's recipe does not have (e.g. ``noise_smoothing`` for a navigate dataset).
    """
    official = official_recipe(dataset_name)
    given = {k: v for k, v in overrides.items() if v is not None}
    allowed = _KNOBS[official.dataset_type]
    for k in given:
        if k not in _KNOBS["play"] + _KNOBS["noisy"]:
            raise DatasetError(f"unknown recipe field '{k}'")
        if k not in allowed:
            raise DatasetError(
                f"{k} only applies to {_KNOB_MEANING[k]}; {dataset_name} is a {official.dataset_type} dataset"
            )
    for k in ("num_episodes", "max_episode_steps"):
        if k in given:
            v, low = given[k], 1 if k == "num_episodes" else 2
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise DatasetError(f"{k} must be an integer >= {low}, got {v!r}")
    if "noise" in given:
        given["noise"] = _check_number("noise", given["noise"], 0.0)
    if "noise_smoothing" in given:
        given["noise_smoothing"] = _check_number("noise_smoothing", given["noise_smoothing"], 0.0)
    if "min_norm" in given:
        given["min_norm"] = _check_number("min_norm", given["min_norm"], 0.0)
    if "p_random_action" in given:
        given["p_random_action"] = _check_number("p_random_action", given["p_random_action"], 0.0, 1.0)
    recipe = dataclasses.replace(official, **given)
    deviations = {
        k: {"official": getattr(official, k), "ours": getattr(recipe, k)}
        for k in given
        if getattr(official, k) != getattr(recipe, k)
    }
    return recipe, deviations


@contextlib.contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (which OGBench envs use) and restore the caller's state after."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


# --------------------------------------------------------------------------- shared episode loop


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
        if hasattr(u, "_cur_button_states"):  # generate_manipspace.py L48, L150-151, L196-197
            n_buttons = len(np.atleast_1d(u._cur_button_states))
            self.buf["button_states"] = np.empty((cap, n_buttons), dtype=np.int64)
        self.t = 0
        self.lengths: list[int] = []  # per kept episode
        self.goals: list[int] = []  # goals the expert reached per kept episode
        self._episode_start = 0

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

    def keep_episode(self, goals_reached: int) -> None:
        """Close the current episode: record its length and goals."""
        self.lengths.append(self.t - self._episode_start)
        self.goals.append(int(goals_reached))
        self._episode_start = self.t

    def discard_episode(self) -> None:
        """Drop the steps of the current episode (generate_manipspace.py L171-174)."""
        self.buf["terminals"][self._episode_start : self.t] = False
        self.t = self._episode_start

    def arrays(self) -> dict[str, np.ndarray]:
        """The filled part of the arrays (views, no copy)."""
        return {k: v[: self.t] for k, v in self.buf.items()}


EpisodeFn = Callable[[bool], int | None]
"""Runs one episode into the recorder; gets ``first`` (seed the env), returns goals reached or
``None`` when the episode must be discarded and redrawn."""


def _run_episodes(name: str, rec: _Recorder, n_episodes: int, run_episode: EpisodeFn, progress: bool) -> int:
    """The loop both OGBench scripts share: ``n_episodes`` kept episodes, redrawing discarded ones.

    Returns:
        The number of discarded (redrawn) episodes.
    """
    from tqdm import tqdm

    discarded = in_a_row = 0
    first = True
    with tqdm(total=n_episodes, desc=name, unit="ep", disable=not progress) as bar:
        while len(rec.lengths) < n_episodes:
            goals = run_episode(first)
            first = False
            if goals is None:
                rec.discard_episode()
                discarded += 1
                in_a_row += 1
                if in_a_row >= MAX_CONSECUTIVE_DISCARDS:
                    raise DatasetError(f"{name}: {in_a_row} episodes in a row failed the health check; giving up")
                continue
            in_a_row = 0
            rec.keep_episode(goals)
            bar.update(1)
            bar.set_postfix(goals_per_ep=f"{np.mean(rec.goals):.1f}", discarded=discarded)
    return discarded


# --------------------------------------------------------------------------- pointmaze (generate_locomaze.py)


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


def _collect_maze(recipe: Recipe, n_episodes: int, seed: int, progress: bool) -> tuple[_Recorder, int]:
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
        rec = _Recorder(env, n_episodes, recipe.max_episode_steps)
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
            reached, done = 0, False
            while not done:
                action = expert.act()
                next_ob, _, terminated, truncated, info = env.step(action)
                done = bool(terminated or truncated)
                if info["success"]:
                    reached += 1
                    if navigate:  # L173-175: a new goal; stitch keeps its goal and stays there
                        _set_maze_goal(env, vertex_cells[rng.integers(len(vertex_cells))])
                rec.add(ob, action, done, info)
                ob = next_ob
            # navigate: goals reached; stitch: steps spent at the goal reduced to 0/1 (goal reached)
            return reached if navigate else int(reached > 0)

        discarded = _run_episodes(recipe.dataset, rec, n_episodes, episode, progress)
    finally:
        env.close()
    return rec, discarded


# --------------------------------------------------------------------------- manipspace (generate_manipspace.py)


def scene_cube_in_view(block_xyz: np.ndarray) -> bool:
    """generate_manipspace.py's scene health check (L157-169) on one episode's cube positions.

    Args:
        block_xyz: ``(T, 3)`` cube positions (``qpos[:, 14:17]`` before each step).

    Returns:
        False when the cube went too far right (y >= 0.29) or too far left (y <= -0.3) without
        being in the drawer (z in [0.06, 0.08]); OGBench then discards and redraws the episode.
    """
    y, z = block_xyz[:, 1], block_xyz[:, 2]
    if (y >= 0.29).any():
        return False
    return not ((y <= -0.3) & ((z < 0.06) | (z > 0.08))).any()


def _make_oracles(env: Any, recipe: Recipe) -> dict[str, Any]:
    """The oracles of generate_manipspace.py L46-72, by target task."""
    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
    from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
    from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    if recipe.oracle == "plan":
        kw = dict(env=env, noise=recipe.noise, noise_smoothing=recipe.noise_smoothing)
        if recipe.family == "cube":
            return {"cube": CubePlanOracle(**kw)}
        return {
            "cube": CubePlanOracle(**kw),
            "button": ButtonPlanOracle(**kw),
            "drawer": DrawerPlanOracle(**kw),
            "window": WindowPlanOracle(**kw),
        }
    if recipe.family == "cube":
        return {"cube": CubeMarkovOracle(env=env, min_norm=recipe.min_norm)}
    return {
        "cube": CubeMarkovOracle(env=env, min_norm=recipe.min_norm, max_step=100),  # L61
        "button": ButtonMarkovOracle(env=env, min_norm=recipe.min_norm),
        "drawer": DrawerMarkovOracle(env=env, min_norm=recipe.min_norm),
        "window": WindowMarkovOracle(env=env, min_norm=recipe.min_norm),
    }


def _collect_manip(recipe: Recipe, n_episodes: int, seed: int, progress: bool) -> tuple[_Recorder, int]:
    """Run generate_manipspace.py's loop (L88-180) with the oracles shipped in ogbench.

    Each episode the env (``mode='data_collection'``) randomises the scene and picks a target;
    the oracle carries it out, then a new target is drawn, until the time limit. Goals reached
    counts targets that were achieved when the oracle finished with them.
    """
    import gymnasium
    import ogbench  # noqa: F401  (registers the environments)

    env = gymnasium.make(
        recipe.env_id, terminate_at_goal=False, mode="data_collection", max_episode_steps=recipe.max_episode_steps
    )
    try:
        agents = _make_oracles(env, recipe)
        rng = np.random.default_rng(seed)
        space = env.action_space
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        rec = _Recorder(env, n_episodes, recipe.max_episode_steps)
        p_stack_range, p_random = recipe.p_stack or (0.0, 0.0), recipe.p_random_action or 0.0
        markov, scene = recipe.oracle == "markov", recipe.family == "scene"

        def episode(first: bool) -> int | None:
            ob, info = env.reset(seed=seed if first else None)
            p_stack = float(rng.uniform(*p_stack_range))  # L100-111
            if markov:  # L113-115: this episode's action-noise scale
                xi = rng.uniform(0.0, recipe.noise)
                noise_scale = np.array([xi, xi, xi, 3 * xi, 10 * xi])  # L134
            agent = agents[info["privileged/target_task"]]
            agent.reset(ob, info)
            reached, done = 0, False
            cube_xyz: list[np.ndarray] = []
            while not done:
                if rng.random() < p_random:  # L125-127
                    action = rng.uniform(low, high)
                else:
                    action = np.asarray(agent.select_action(ob, info), dtype=np.float64)
                    if markov:
                        action = action + rng.normal(0.0, noise_scale)
                action = np.clip(action, -1.0, 1.0)
                next_ob, _, terminated, truncated, info = env.step(action)
                done = bool(terminated or truncated)
                if agent.done:  # L139-143
                    reached += int(bool(info["success"]))
                    agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=p_stack)
                    agent = agents[agent_info["privileged/target_task"]]
                    agent.reset(agent_ob, agent_info)
                rec.add(ob, action, done, info)
                if scene:
                    cube_xyz.append(np.asarray(info["prev_qpos"][14:17], dtype=np.float64))
                ob = next_ob
            if scene and not scene_cube_in_view(np.asarray(cube_xyz)):
                return None
            return reached

        discarded = _run_episodes(recipe.dataset, rec, n_episodes, episode, progress)
    finally:
        env.close()
    return rec, discarded


def _collect(recipe: Recipe, n_episodes: int, seed: int, progress: bool) -> tuple[_Recorder, int]:
    """Run the family's collector (looked up at call time, so tests can replace one)."""
    collector = _collect_maze if recipe.family == "pointmaze" else _collect_manip
    return collector(recipe, n_episodes, seed, progress)


# --------------------------------------------------------------------------- expert evaluation


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
    with _seeded_global_numpy(seed):
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
            name: evaluate_expert(name, expert_eval_episodes, recipe.noise, seed)["success_rate"]
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
