"""`evor-edge data generate DATASET --out FILE`: an OGBench dataset made locally with the official recipe.

The command's options live in `evor_edge.cli`; this module does its work (evor_edge.datagen) and words the
report for people. Errors follow the CLI's convention (`evor_edge.cli_errors.friendly_errors` on the command).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_generate(dataset: str, out: str, *, episodes: int | None, max_episode_steps: int | None,
                 noise: float | None, noise_smoothing: float | None, min_norm: float | None,
                 p_random_action: float | None, seed: int, expert_eval_episodes: int,
                 ) -> tuple[dict[str, Any], Callable[[dict[str, Any]], str]]:
    """Generate DATASET into OUT (and its -val.npz); the report and its one-line human summary."""
    from evor_edge.datagen import generate_dataset

    report = generate_dataset(dataset, out, episodes=episodes, seed=seed, max_episode_steps=max_episode_steps,
                              noise=noise, expert_eval_episodes=expert_eval_episodes,
                              noise_smoothing=noise_smoothing, min_norm=min_norm, p_random_action=p_random_action)
    return report, summary


def summary(r: dict[str, Any]) -> str:
    return (f"wrote {r['path']} ({r['transitions']} transitions) and {r['val_path']}; "
            f"recipe {'official' if not r['deviations'] else 'official except ' + ', '.join(r['deviations'])}; "
            f"expert success {(r.get('expert_success') or {}).get('mean', 'not measured')}")
