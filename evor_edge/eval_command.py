"""`evor-edge eval (CHECKPOINT|ENGINE_DIR) --env TASK`: closed-loop success, optionally swept over one run-time
knob (`--sweep`) and filmed (`--video`).

The command's options live in `evor_edge.cli`; this module builds the policy (the torch-free runtime for an
engine directory, the torch reference for a checkpoint), runs the episodes (evor_edge.evaluation) and words the
result for people. Errors follow the CLI's convention (`evor_edge.cli_errors.friendly_errors` on the command).
Nothing heavy is imported until the command runs: MUJOCO_GL has to be set before mujoco is imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def run_eval(source: str, task: str, *, episodes: int, num_candidates: int | None, num_rtg: int | None,
             tau_r: float | None, tau_q: float | None, rtg_top_k: int | None, crn: bool, sweep_spec: str | None,
             plot_path: str | None, parallel: int, seed: int, threads: int | None, device: str,
             video_dir: str | None, video_episodes: int, video_size: int, video_every: int, video_format: str,
             ) -> tuple[dict[str, Any], Callable[[dict[str, Any]], str]]:
    """Evaluate SOURCE on TASK (once, or at each `--sweep` value, with a progress line per value on stderr);
    the result and its human wording."""
    if video_dir is not None and "MUJOCO_GL" not in os.environ and "mujoco" not in sys.modules:
        os.environ["MUJOCO_GL"] = "egl"  # read once, when mujoco is imported: offscreen without a display
    from evor_edge.datasets import make_env
    from evor_edge.evaluation import VideoSettings, check_renderer, evaluate
    from evor_edge.sweep import parse_sweep, plot_sweep

    sweep = parse_sweep(sweep_spec) if sweep_spec else None
    if plot_path and not sweep:
        raise ValueError("--plot needs --sweep")
    video = None
    if video_dir is not None:
        video = VideoSettings(video_dir, episodes=video_episodes, size=video_size + video_size % 2,
                              every=video_every, fmt=video_format)
        video.check()
        video.resolved_format()
    env = make_env(task)
    env_dims = (env.observation_space.shape[-1], env.action_space.shape[-1])
    env.close()
    knobs: dict[str, Any] = {"num_candidates": num_candidates, "num_rtg": num_rtg, "tau_r": tau_r, "tau_q": tau_q}
    engine_only = {"rtg_top_k": rtg_top_k, "common_rtg_noise": crn or None}
    policy_factory, dims, kind = _policy_factory(source, seed, threads, device)
    asked = [k for k, v in engine_only.items() if v is not None] + ([sweep[0]] if sweep and sweep[0] in engine_only
                                                                      else [])
    if asked and kind != "engine":
        raise ValueError(f"{', '.join(sorted(set(asked)))}: run-time engine options; {source} is a checkpoint "
                         "(export it and evaluate the ENGINE_DIR)")
    knobs.update({k: v for k, v in engine_only.items() if v is not None})
    if dims != env_dims:
        raise ValueError(f"{source} expects obs/act dims {dims} but {task} has {env_dims}")
    if video is not None:
        check_renderer(task)  # one line, before any episode
    values = sweep[1] if sweep else [None]
    runs = []
    for value in values:
        settings = dict(knobs, **({sweep[0]: value} if sweep else {}))
        film = video
        if video is not None and sweep:
            film = VideoSettings(Path(video.directory) / f"{sweep[0]}={value}", episodes=video.episodes,
                                 size=video.size, every=video.every, fps=video.fps, fmt=video.fmt)
        result = evaluate(policy_factory(**settings), task, episodes=episodes, seed=seed, parallel=parallel,
                          video=film)
        result.update({"value": value, "settings": settings})
        runs.append(result)
        if sweep:
            click.echo(f"{sweep[0]}={value}: success {100 * result['success_rate']:.1f}%", err=True)
    if not sweep:
        result = runs[0]
        result.update({"source": source, "source_kind": kind})
        return result, (lambda r: f"{task}: success {100 * r['success_rate']:.1f}% over {r['episodes']} "
                        f"episodes ({r['seconds']} s)" + "".join(f"\nvideo: {v}" for v in r.get("videos", [])))
    report = {"source": source, "source_kind": kind, "task": task, "episodes": episodes, "seed": seed,
              "sweep": sweep[0], "results": runs}
    if plot_path:
        report["plot"] = plot_sweep(sweep[0], runs, plot_path, f"{Path(source).name} on {task}")
    return report, sweep_summary


def sweep_summary(r: dict[str, Any]) -> str:
    return "\n".join(f"{r['sweep']}={x['value']}: {100 * x['success_rate']:.1f}%" for x in r["results"])


def _policy_factory(source: str, seed: int, threads: int | None = None, device: str = "cpu"
                    ) -> tuple[Callable[..., Any], tuple[int, int], str]:
    """A function building a fresh policy for given knobs, the (obs, act) dims and the source kind."""
    if (Path(source) / "manifest.json").is_file():
        if device not in ("cpu", "auto"):
            raise ValueError(f"--device {device}: applies to checkpoints; an ENGINE_DIR runs on its runtime backend")
        from evor_edge.runtime import EvorPolicy
        from evor_edge.runtime.manifest import load_manifest

        manifest = load_manifest(source)
        return ((lambda **k: EvorPolicy.load(source, seed=seed, intra_op_threads=threads, **k)),
                (manifest.obs_dim, manifest.act_dim), "engine")
    import torch

    from evor_edge.checkpoint import load_checkpoint
    from evor_edge.inference import TorchPolicy

    if threads:
        torch.set_num_threads(threads)

    from evor_edge.device import resolve_device

    loaded = load_checkpoint(source, device=resolve_device(device))
    spec = loaded.agent.spec
    return (lambda **k: TorchPolicy(loaded.agent, seed=seed, **k)), (spec.obs_dim, spec.act_dim), "checkpoint"
