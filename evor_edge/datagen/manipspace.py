"""Cube and scene datasets (OGBench ``generate_manipspace.py``): the plan / Markov oracles shipped in
ogbench, per-episode stacking probability and noise, random actions, the scene health check."""

from __future__ import annotations

from typing import Any

import numpy as np

from .episodes import Recorder, record_steps, run_episodes
from .recipes import Recipe


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


def collect(recipe: Recipe, n_episodes: int, seed: int, progress: bool) -> tuple[Recorder, int]:
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
        rec = Recorder(env, n_episodes, recipe.max_episode_steps)
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
            reached = 0
            cube_xyz: list[np.ndarray] = []

            def act(ob: np.ndarray, info: dict[str, Any]) -> np.ndarray:
                if rng.random() < p_random:  # L125-127
                    action = rng.uniform(low, high)
                else:
                    action = np.asarray(agent.select_action(ob, info), dtype=np.float64)
                    if markov:
                        action = action + rng.normal(0.0, noise_scale)
                return np.clip(action, -1.0, 1.0)

            def after_step(info: dict[str, Any]) -> None:
                nonlocal agent, reached
                if agent.done:  # L139-143
                    reached += int(bool(info["success"]))
                    agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=p_stack)
                    agent = agents[agent_info["privileged/target_task"]]
                    agent.reset(agent_ob, agent_info)
                if scene:
                    cube_xyz.append(np.asarray(info["prev_qpos"][14:17], dtype=np.float64))

            record_steps(env, rec, ob, info, act, after_step)
            if scene and not scene_cube_in_view(np.asarray(cube_xyz)):
                return None
            return reached

        discarded = run_episodes(recipe.dataset, rec, n_episodes, episode, progress)
    finally:
        env.close()
    return rec, discarded
