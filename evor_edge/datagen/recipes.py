"""OGBench's official generation recipes, one per dataset (``data_gen_scripts/commands.sh`` flag by flag).

See the package docstring (`evor_edge.datagen`) for the recipes and the deliberate differences.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from evor_edge.datasets import DatasetError

OGBENCH_COMMIT = "1d4140997f60c52c6fb0702ec100dc988b18c548"
"""Commit of github.com/seohongpark/ogbench whose ``data_gen_scripts`` the recipes follow."""

NUM_EVAL_TASKS = 5
"""Evaluation tasks per OGBench environment (``singletask-task1`` .. ``task5``)."""

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
