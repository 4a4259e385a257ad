"""The training loop: dataset -> agent updates -> JSON-lines metrics and periodic atomic checkpoints."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from evor_edge.agents import AgentSpec, BaseAgent, make_agent
from evor_edge.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint, save_checkpoint
from evor_edge.config import TrainConfig
from evor_edge.normalization import ObsNormalizer, ReturnScaler
from evor_edge.targets import monte_carlo_returns, n_step_targets


class RunError(ValueError):
    """A run directory that cannot be used as asked (exists without --resume, nothing to resume...)."""


def build_spec(env: Any, train: dict[str, np.ndarray], config: TrainConfig) -> AgentSpec:
    space = env.action_space
    return AgentSpec(
        config=config,
        obs_dim=int(train["observations"].shape[-1]),
        act_dim=int(train["actions"].shape[-1]),
        action_low=tuple(float(x) for x in np.broadcast_to(space.low, space.shape)),
        action_high=tuple(float(x) for x in np.broadcast_to(space.high, space.shape)),
        obs_norm=ObsNormalizer.fit(train["observations"]),
        returns=ReturnScaler.fit(train["rewards"], config.discount),
    )


def tensors_from_dataset(train: dict[str, np.ndarray], config: TrainConfig) -> dict[str, torch.Tensor]:
    """Torch tensors training samples from: (x, a), the n-step reward sum R, bootstrap factor b and x'.

    See `evor_edge.targets`: the critic's target is R + b * Z(x', a'), with b = gamma * mask for n = 1.
    """
    reward_sum, bootstrap, next_index = n_step_targets(
        train["rewards"], train["masks"], train["terminals"], config.discount, config.n_step)
    out = {
        "observations": torch.from_numpy(np.ascontiguousarray(train["observations"], dtype=np.float32)),
        "actions": torch.from_numpy(np.ascontiguousarray(train["actions"], dtype=np.float32)),
        "rewards": torch.from_numpy(reward_sum),
        "bootstrap": torch.from_numpy(bootstrap),
        "next_observations": torch.from_numpy(np.ascontiguousarray(
            train["next_observations"] if config.n_step == 1 else train["next_observations"][next_index],
            dtype=np.float32)),
    }
    if config.reward_model == "mc":
        mc = monte_carlo_returns(train["rewards"], train["masks"], train["terminals"], config.discount)
        out["mc_returns"] = torch.from_numpy(mc)
    return out


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint we resume from."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def train(
    task: str,
    dataset_path: str | os.PathLike[str],
    config: TrainConfig,
    out: str | os.PathLike[str],
    resume: bool = False,
    progress: bool = True,
    dataset: tuple[Any, dict[str, np.ndarray], dict[str, np.ndarray]] | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train `config.agent` on `task`'s dataset into run directory `out`; return a summary dict.

    `dataset` may pass an already loaded (env, train, val) triple (tests use toy data this way).
    """
    from evor_edge.datasets import load_task_dataset

    run_dir = Path(out)
    config_path = run_dir / "config.json"
    if resume:
        try:
            resolve_checkpoint(run_dir)
        except CheckpointError as exc:
            raise RunError(f"nothing to resume in {run_dir}: {exc}") from None
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"run directory {run_dir} already exists and is not empty; pass --resume or another --out")

    env, train_data, _val = dataset if dataset is not None else load_task_dataset(task, dataset_path)
    # Half the cores by default: small networks gain little from more threads, and an oversubscribed
    # torch thread pool (other jobs on the machine) slows a step down 100x.
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) // 2))

    generator = torch.Generator().manual_seed(config.seed)
    start_step = 0
    if resume:
        loaded = load_checkpoint(run_dir, with_optimizer=True)
        agent: BaseAgent = loaded.agent
        if loaded.meta.get("extra", {}).get("task") not in (None, task):
            raise RunError(f"{run_dir} was trained on {loaded.meta['extra']['task']!r}, not {task!r}")
        config = agent.config.replace(steps=config.steps)
        agent.spec = AgentSpec(**{**agent.spec.__dict__, "config": config})
        agent.config = config
        start_step = loaded.step
        if "_torch_rng_state" in loaded.meta:
            generator.set_state(loaded.meta["_torch_rng_state"])
        _truncate_metrics(run_dir / "metrics.jsonl", start_step)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        agent = make_agent(build_spec(env, train_data, config))

    header = {"task": task, "dataset": str(dataset_path), "config": config.to_dict(), "agent": config.agent}
    config_path.write_text(json.dumps(header, indent=2))
    data = tensors_from_dataset(train_data, config)
    size = data["observations"].shape[0]
    extra = {"task": task, "dataset": str(dataset_path)}

    agent.train()
    metrics_file = (run_dir / "metrics.jsonl").open("a")
    bar = tqdm(total=config.steps, initial=start_step, disable=not progress, desc=f"train {config.agent}",
               unit="step", dynamic_ncols=True)
    step = start_step
    t_start = time.perf_counter()
    window: dict[str, list[float]] = {}
    try:
        while step < config.steps:
            index = torch.randint(0, size, (config.batch_size,), generator=generator)
            batch = {k: v[index] for k, v in data.items()}
            for key, value in agent.update(batch, generator).items():
                window.setdefault(key, []).append(value)
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                record = {"step": step, "time_s": round(time.perf_counter() - t_start, 2)}
                record.update({k: float(np.mean(v)) for k, v in window.items()})
                window.clear()
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k.endswith("loss")})
                if on_log:
                    on_log(record)
            if step % config.checkpoint_every == 0 or step == config.steps:
                save_checkpoint(run_dir, agent, step, extra, generator, keep=config.keep_checkpoints)
    except KeyboardInterrupt:
        save_checkpoint(run_dir, agent, step, extra, generator, keep=config.keep_checkpoints)
        raise
    finally:
        bar.close()
        metrics_file.close()
    seconds = time.perf_counter() - t_start
    trained = step - start_step
    return {
        "run": str(run_dir),
        "checkpoint": str(resolve_checkpoint(run_dir)),
        "agent": config.agent,
        "steps": step,
        "steps_this_run": trained,
        "seconds": round(seconds, 1),
        "ms_per_step": round(1000 * seconds / max(trained, 1), 2),
    }
