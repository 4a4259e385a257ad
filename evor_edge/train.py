"""The training loop: dataset -> agent updates -> JSON-lines metrics and periodic atomic checkpoints."""

from __future__ import annotations

import json
import os
import sys
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
from evor_edge.device import describe_device, resolve_device, use_tf32_matmuls
from evor_edge.normalization import ObsNormalizer, ReturnScaler
from evor_edge.offline_data import OfflineDataset, is_offline_file, load_offline_dataset
from evor_edge.targets import monte_carlo_returns, n_step_targets
from evor_edge.train_step import DeviceBatches, TrainStep, choose_step_mode, optimizer_flags


class RunError(ValueError):
    """A run directory that cannot be used as asked (exists without --resume, nothing to resume...)."""


def build_spec(data: OfflineDataset, config: TrainConfig) -> AgentSpec:
    train = data.train
    return AgentSpec(
        config=config,
        obs_dim=data.obs_dim,
        act_dim=data.act_dim,
        action_low=tuple(float(x) for x in data.action_low),
        action_high=tuple(float(x) for x in data.action_high),
        obs_norm=ObsNormalizer.fit(train["observations"]),
        returns=ReturnScaler.fit(train["rewards"], config.discount, terminates=bool(np.any(train["masks"] == 0))),
    )


def load_training_data(dataset_path: str | os.PathLike[str], task: str | None = None,
                       action_low: Any = None, action_high: Any = None) -> OfflineDataset:
    """A dataset file in either form: our self-contained format (no environment needed) or an OGBench
    raw file, which needs its single-task name for OGBench's reward relabelling."""
    if is_offline_file(dataset_path):
        return load_offline_dataset(dataset_path, action_low, action_high)
    if task is None:
        raise RunError(f"{dataset_path} is an OGBench-format file without rewards: pass --env TASK (its singletask "
                       "name), or convert it once with `evor-edge data import TASK --dataset FILE --out OUT.npz`")
    from evor_edge.datasets import load_task_dataset

    return from_env_dataset(load_task_dataset(task, dataset_path), task)


def from_env_dataset(dataset: tuple[Any, dict[str, np.ndarray], Any], task: str | None) -> OfflineDataset:
    """An (env, train, val) triple (OGBench's loader, toy tests) with the action box of env.action_space."""
    env, train, _val = dataset
    space = env.action_space
    return OfflineDataset(train=train, action_low=np.broadcast_to(space.low, space.shape).astype(np.float32),
                          action_high=np.broadcast_to(space.high, space.shape).astype(np.float32),
                          convention="ogbench", metadata={"source": "ogbench", "task": task})


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
    task: str | None,
    dataset_path: str | os.PathLike[str],
    config: TrainConfig,
    out: str | os.PathLike[str],
    resume: bool = False,
    progress: bool = True,
    dataset: OfflineDataset | tuple[Any, dict[str, np.ndarray], Any] | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    threads: int | None = None,
    device: str = "auto",
    step_mode: str = "auto",
    action_low: Any = None,
    action_high: Any = None,
    save_optimizer: bool = True,
    time_limit_s: float | None = None,
) -> dict[str, Any]:
    """Train `config.agent` on a dataset into run directory `out`; return a summary dict.

    `task` is the OGBench single-task name (needed for OGBench raw files, recorded otherwise; None for a
    robot's own data). `dataset` may pass already loaded data (tests use toy data this way). `device`:
    auto | cpu | cuda[:N]; `step_mode`: auto | eager | compile | cuda-graph (`evor_edge.train_step`).
    `time_limit_s` stops the run cleanly (final checkpoint at the step reached) after that many seconds.
    Nothing is written before the dataset, device and step mode have been checked.
    """
    run_dir = Path(out)
    config_path = run_dir / "config.json"
    if resume:
        try:
            resolve_checkpoint(run_dir)
        except CheckpointError as exc:
            raise RunError(f"nothing to resume in {run_dir}: {exc}") from None
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"run directory {run_dir} already exists and is not empty; pass --resume or another --out")

    torch_device = resolve_device(device)
    mode = choose_step_mode(step_mode, torch_device)
    use_tf32_matmuls(torch_device)
    if isinstance(dataset, tuple):
        dataset = from_env_dataset(dataset, task)
    data_source = dataset if dataset is not None else load_training_data(dataset_path, task, action_low, action_high)
    task = task or data_source.metadata.get("task")
    # Half the cores by default: small networks gain little from more threads, and an oversubscribed
    # torch thread pool (other jobs on the machine) slows a step down 100x.
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) // 2))

    host_generator = torch.Generator().manual_seed(config.seed)
    start_step = 0
    flags = optimizer_flags(torch_device, mode)
    if resume:
        loaded = load_checkpoint(run_dir, with_optimizer=True, device=torch_device, optimizer_flags=flags)
        agent: BaseAgent = loaded.agent
        if loaded.meta.get("extra", {}).get("task") not in (None, task):
            raise RunError(f"{run_dir} was trained on {loaded.meta['extra']['task']!r}, not {task!r}")
        config = agent.config.replace(steps=config.steps)
        agent.spec = AgentSpec(**{**agent.spec.__dict__, "config": config})
        agent.config = config
        start_step = loaded.step
        if "_torch_rng_state" in loaded.meta:
            host_generator.set_state(loaded.meta["_torch_rng_state"])
        _truncate_metrics(run_dir / "metrics.jsonl", start_step)
    else:
        torch.manual_seed(config.seed)
        agent = make_agent(build_spec(data_source, config)).to(torch_device)
        agent.build_optimizers(**flags)
    if torch_device.type == "cuda":
        if resume and "_cuda_rng_state" in loaded.meta:
            torch.cuda.set_rng_state(loaded.meta["_cuda_rng_state"], torch_device)
        else:  # a fresh run, or a run moved here from the CPU: a new stream, distinct per resumed step
            torch.cuda.manual_seed(config.seed + start_step)
    run_dir.mkdir(parents=True, exist_ok=True)

    header = {"task": task, "dataset": str(dataset_path), "config": config.to_dict(), "agent": config.agent,
              "device": describe_device(torch_device), "step_mode": mode,
              "ld_preload": os.environ.get("LD_PRELOAD"),  # e.g. scripts/mkl_avx512.sh's MKL shim
              "data": {"convention": data_source.convention, "metadata": data_source.metadata,
                       "action_low": data_source.action_low.tolist(), "action_high": data_source.action_high.tolist()}}
    config_path.write_text(json.dumps(header, indent=2))
    tensors = tensors_from_dataset(data_source.train, config)
    on_cuda = torch_device.type == "cuda"
    batches = DeviceBatches(tensors, torch_device, config.batch_size,
                            generator=None if on_cuda else host_generator)
    if on_cuda and not batches.resident:  # indices drawn on the host for pinned host-memory data
        batches.generator = host_generator
    trainer = TrainStep(agent, batches, mode, noise_generator=None if on_cuda else host_generator)
    extra = {"task": task, "dataset": str(dataset_path)}

    def save(at_step: int) -> None:
        rng = {"cuda": torch.cuda.get_rng_state(torch_device)} if on_cuda else None
        save_checkpoint(run_dir, agent, at_step, extra, host_generator, keep=config.keep_checkpoints,
                        rng_states=rng, with_optimizer=save_optimizer)

    agent.train()
    metrics_file = (run_dir / "metrics.jsonl").open("a")
    bar = tqdm(total=config.steps, initial=start_step, disable=not progress, desc=f"train {config.agent}",
               unit="step", dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    step = start_step
    t_start = time.perf_counter()
    t_window, step_window = t_start, start_step
    stopped_by_time = False
    try:
        while step < config.steps:
            if time_limit_s is not None and time.perf_counter() - t_start >= time_limit_s:
                stopped_by_time = True
                save(step)
                break
            trainer.step()
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                values = trainer.metrics.read()  # the only host synchronisation between logs
                now = time.perf_counter()
                record = {"step": step, "time_s": round(now - t_start, 2),
                          "steps_per_s": round((step - step_window) / max(now - t_window, 1e-9), 1)}
                t_window, step_window = now, step
                record.update(values)
                if trainer.fallback:
                    record["step_mode"] = trainer.mode
                    record["fallback"] = trainer.fallback
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k.endswith("loss")})
                if on_log:
                    on_log(record)
            if step % config.checkpoint_every == 0 or step == config.steps:
                save(step)
    except KeyboardInterrupt:
        save(step)
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
        "device": describe_device(torch_device),
        "step_mode": trainer.mode,
        "step_mode_fallback": trainer.fallback,
        "stopped_by_time_limit": stopped_by_time,
        "steps": step,
        "steps_this_run": trained,
        "seconds": round(seconds, 1),
        "ms_per_step": round(1000 * seconds / max(trained, 1), 3),
    }
