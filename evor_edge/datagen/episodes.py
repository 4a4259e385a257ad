"""The episode loop shared by every dataset family: seeded global RNG, the OGBench-layout recorder, the
step loop (`record_steps`) and the episode loop with redraws (`run_episodes`)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from evor_edge.datasets import DatasetError

MAX_CONSECUTIVE_DISCARDS = 1000
"""Scene episodes discarded in a row (cube out of view) before generation gives up."""


@contextlib.contextmanager
def seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (which OGBench envs use) and restore the caller's state after."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


class Recorder:
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


def run_episodes(name: str, rec: Recorder, n_episodes: int, run_episode: EpisodeFn, progress: bool) -> int:
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
            bar.set_postfix(goals_per_ep=f"{np.mean(rec.goals):.1f}", discarded=discarded, refresh=sys.stderr.isatty())
    return discarded


def record_steps(env: Any, rec: Recorder, ob: np.ndarray, info: dict[str, Any],
                 act: Callable[[np.ndarray, dict[str, Any]], np.ndarray],
                 after_step: Callable[[dict[str, Any]], None]) -> None:
    """One episode's steps until the env terminates or truncates: ``action = act(ob, info)``, step,
    ``after_step(info)`` (the family's goal bookkeeping), then record the step (both OGBench scripts' loop)."""
    done = False
    while not done:
        action = act(ob, info)
        next_ob, _, terminated, truncated, info = env.step(action)
        done = bool(terminated or truncated)
        after_step(info)
        rec.add(ob, action, done, info)
        ob = next_ob
