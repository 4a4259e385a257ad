"""Closed-loop evaluation in an OGBench singletask environment (OGBench protocol: success rate).

Episodes run vectorised: up to `parallel` environments are stepped together and the policy is asked
for all their actions in one `act_batch` call per tick (one engine call for all of them).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm


class BatchPolicy(Protocol):
    def act_batch(self, obs: np.ndarray) -> np.ndarray: ...


def evaluate(
    policy: BatchPolicy, task: str, episodes: int = 50, seed: int = 0, parallel: int = 25,
    progress: bool = True, max_steps: int | None = None,
) -> dict[str, Any]:
    """Run `episodes` episodes of `task`; episode i is reset with seed `seed + i` (recorded)."""
    from evor_edge.datasets import make_env

    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    parallel = max(1, min(parallel, episodes))
    envs = [make_env(task) for _ in range(parallel)]
    limit = max_steps or envs[0].spec.max_episode_steps or 1000
    successes: list[bool] = [False] * episodes
    lengths: list[int] = [0] * episodes
    started = time.perf_counter()
    bar = tqdm(total=episodes, disable=not progress, desc=f"eval {task}", unit="ep", dynamic_ncols=True)
    next_episode = 0
    ticks = 0
    while next_episode < episodes:
        wave = list(range(next_episode, min(next_episode + parallel, episodes)))
        next_episode += len(wave)
        obs = np.stack([envs[k].reset(seed=seed + ep)[0] for k, ep in enumerate(wave)]).astype(np.float32)
        active = np.ones(len(wave), dtype=bool)
        for step in range(limit):
            idx = np.flatnonzero(active)
            actions = policy.act_batch(obs[idx])
            ticks += 1
            for row, k in enumerate(idx):
                ob, _r, terminated, truncated, info = envs[k].step(actions[row])
                obs[k] = ob
                if info.get("success", False):
                    successes[wave[k]] = True
                if terminated or truncated:
                    active[k] = False
                    lengths[wave[k]] = step + 1
                    bar.update(1)
            if not active.any():
                break
        for k in np.flatnonzero(active):
            lengths[wave[k]] = limit
            bar.update(1)
    bar.close()
    for env in envs:
        env.close()
    return {
        "task": task,
        "episodes": episodes,
        "success_rate": float(np.mean(successes)),
        "successes": [int(s) for s in successes],
        "seeds": [seed + i for i in range(episodes)],
        "mean_episode_length": float(np.mean(lengths)),
        "policy_calls": ticks,
        "seconds": round(time.perf_counter() - started, 1),
    }
