"""The training loop: dataset -> agent updates -> JSON-lines metrics and periodic atomic checkpoints.

The dataset is a file loaded into RAM (`evor_edge.offline_data`, OGBench raw) or a converted directory read
through memory maps (`evor_edge.shards`). Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the
environment) the same loop runs data-parallel with DistributedDataParallel (`evor_edge.distributed`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from evor_edge.agents import AgentSpec, BaseAgent, make_agent
from evor_edge.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint, save_checkpoint
from evor_edge.config import TrainConfig
from evor_edge.device import describe_device, use_tf32_matmuls
from evor_edge.distributed import (
    World,
    any_rank,
    backend_for,
    barrier,
    destroy_process_group,
    gather_objects,
    init_process_group,
    launch_identity,
    mean_over_ranks,
    per_rank_batch,
    rank_device,
    restart_count,
    world_from_env,
    wrap_losses,
)
from evor_edge.normalization import ObsNormalizer, ReturnScaler
from evor_edge.offline_data import OfflineDataset, is_offline_file, load_offline_dataset
from evor_edge.run_lock import LOCK_NAME, run_directory_lock
from evor_edge.shards import ShardedDataset
from evor_edge.targets import monte_carlo_returns, n_step_targets
from evor_edge.train_step import DeviceBatches, ShardedBatches, TrainStep, choose_step_mode, optimizer_flags

SHARD_READ_ENV = "EVOR_EDGE_SHARD_READ"  # pread (default) | mmap: how minibatches are read from a converted dir
TIME_LIMIT_SYNC_STEPS = 10  # data-parallel runs agree on a --time-limit stop every this many steps


class RunError(ValueError):
    """A run directory that cannot be used as asked (exists without --resume, nothing to resume...)."""


def build_spec(data: OfflineDataset | ShardedDataset, config: TrainConfig) -> AgentSpec:
    if isinstance(data, ShardedDataset):  # statistics computed once at conversion, over every shard
        stats = data.stats
        std = np.maximum(np.asarray(stats["obs_std"], np.float64), 1e-3)  # ObsNormalizer.fit's floor
        return AgentSpec(
            config=config, obs_dim=data.obs_dim, act_dim=data.act_dim,
            action_low=tuple(float(x) for x in data.action_low),
            action_high=tuple(float(x) for x in data.action_high),
            obs_norm=ObsNormalizer(tuple(float(m) for m in stats["obs_mean"]), tuple(float(s) for s in std)),
            returns=ReturnScaler.fit(np.array([stats["reward_min"], stats["reward_max"]]), config.discount,
                                     terminates=bool(stats["terminates"])),
        )
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
                       action_low: Any = None, action_high: Any = None) -> OfflineDataset | ShardedDataset:
    """A dataset in any form: a converted directory (`evor-edge data convert`, memory-mapped), our
    self-contained file (no environment needed) or an OGBench raw file, which needs its single-task name
    for OGBench's reward relabelling."""
    if Path(dataset_path).is_dir():
        if action_low is not None or action_high is not None:
            raise RunError(f"{dataset_path}: a converted dataset stores its action bounds (set at `data convert`); "
                           "drop --action-low/--action-high")
        return ShardedDataset(dataset_path)
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


def _this_launch_wrote(run_dir: Path) -> bool:
    """run_dir/config.json was written by an earlier attempt of this torchrun launch (same agent)."""
    identity = launch_identity()
    try:
        recorded = json.loads((run_dir / "config.json").read_text()).get("distributed", {}).get("launch")
    except (OSError, ValueError):
        return False
    return identity is not None and recorded == identity


def _started_without_checkpoint(run_dir: Path) -> bool:
    """A run directory this tool started (config.json) that holds no checkpoint yet: only the files a run
    writes at its start (config.json, metrics.jsonl, an empty checkpoints/)."""
    if not (run_dir / "config.json").is_file():
        return False
    checkpoints = run_dir / "checkpoints"
    if checkpoints.exists() and any(checkpoints.iterdir()):
        return False
    return all(p.name in ("config.json", "metrics.jsonl", "checkpoints", LOCK_NAME) for p in run_dir.iterdir())


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _sigterm_as_interrupt(world: World) -> Any:
    """SIGTERM (a job scheduler's stop, `kill`, `timeout`) saves a checkpoint like Ctrl-C does, so the run
    resumes from where it stopped. Background jobs of a non-interactive shell ignore SIGINT, so SIGTERM is
    the signal that reaches them. Single-process runs in the main thread only (torchrun stops ranks with
    SIGTERM when one fails, and a rank cannot gather the others' state then). Returns the previous handler
    (None when not installed)."""
    if world.distributed or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


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
    prefetch: int = 2,
    explicit_fields: Collection[str] = (),
) -> dict[str, Any]:
    """Train `config.agent` on a dataset into run directory `out`; return a summary dict.

    `explicit_fields`: the config fields the user set for this call (CLI flags, --set). On `resume` the run
    keeps its stored configuration: `steps` is applied (and recorded in config.json), any other explicit
    field whose value differs from the stored one is refused with one line naming it (never ignored).

    `task` is the OGBench single-task name (needed for OGBench raw files, recorded otherwise; None for a
    robot's own data). `dataset_path` may be a converted directory (memory-mapped shards). `dataset` may pass
    already loaded data (tests use toy data this way). `device`: auto | cpu | cuda[:N]; `step_mode`: auto |
    eager | compile | cuda-graph (`evor_edge.train_step`). `time_limit_s` stops the run cleanly (final
    checkpoint at the step reached) after that many seconds. `prefetch`: batches a background thread gathers
    ahead from a converted directory (0 = none).

    Under torchrun (WORLD_SIZE > 1 in the environment) every rank runs this function: see
    `evor_edge.distributed`. `config.batch_size` is then the global batch. Nothing is written before the
    dataset, device, step mode and batch split have been checked (on every rank).
    """
    world = world_from_env()
    # one trainer per run directory (evor_edge.run_lock), held by rank 0 until the run ends
    with run_directory_lock(Path(out)) if world.is_main else contextlib.nullcontext():
        try:
            prepared = _prepare(world, task, dataset_path, config, out, resume, dataset, device, step_mode,
                                action_low, action_high, explicit_fields)
        except (ValueError, OSError):
            if world.distributed and not world.is_main:
                raise SystemExit(2) from None  # every rank found the same problem; rank 0 reports it in one line
            raise
        created = init_process_group(world, prepared["device"])
        try:
            return _run(world, prepared, dataset_path, out, resume, progress, on_log, threads, save_optimizer,
                        time_limit_s, prefetch)
        finally:
            if created:
                destroy_process_group()


def _prepare(world: World, task: str | None, dataset_path: str | os.PathLike[str], config: TrainConfig,
             out: str | os.PathLike[str], resume: bool, dataset: Any, device: str, step_mode: str,
             action_low: Any, action_high: Any, explicit_fields: Collection[str] = ()) -> dict[str, Any]:
    """Everything that can refuse the run, read-only: run directory, device, step mode, batch split, data,
    checkpoint. Runs on every rank before the ranks meet."""
    run_dir = Path(out)
    if not resume and world.distributed and restart_count() > 0 and _this_launch_wrote(run_dir):
        # torchrun restarted the group after a failure (--max-restarts): continue the first attempt's run
        if world.is_main:
            print(f"note: torchrun restart {restart_count()}: resuming {run_dir} from its last checkpoint",
                  file=sys.stderr)
        resume = True
    if resume and _started_without_checkpoint(run_dir):
        # killed before its first checkpoint: nothing trained is lost by starting again from step 0
        if world.is_main:
            print(f"note: {run_dir} has no checkpoint yet (the run stopped before its first one); "
                  "starting it again from step 0", file=sys.stderr)
        resume = False
    elif resume:
        try:
            resolve_checkpoint(run_dir)
        except CheckpointError as exc:
            raise RunError(f"nothing to resume in {run_dir}: {exc}") from None
    elif run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise RunError(f"run directory {run_dir} already exists and is not empty; pass --resume or another --out")

    torch_device = rank_device(device, world)
    mode = choose_step_mode(step_mode, torch_device, distributed=world.distributed)
    batch = per_rank_batch(config.batch_size, world.world_size)
    use_tf32_matmuls(torch_device)
    if isinstance(dataset, tuple):
        dataset = from_env_dataset(dataset, task)
    data_source = dataset if dataset is not None else load_training_data(dataset_path, task, action_low, action_high)
    task = task or data_source.metadata.get("task")
    size = data_source.size if isinstance(data_source, ShardedDataset) else len(data_source.train["observations"])
    if size < world.world_size:
        raise RunError(f"{size} transitions cannot be shared by {world.world_size} ranks")
    loaded = None
    if resume:
        loaded = load_checkpoint(run_dir, with_optimizer=True, device=torch_device,
                                 optimizer_flags=optimizer_flags(torch_device, mode))
        if loaded.meta.get("extra", {}).get("task") not in (None, task):
            raise RunError(f"{run_dir} was trained on {loaded.meta['extra']['task']!r}, not {task!r}")
        refuse_changed_fields(loaded.agent.config, config, explicit_fields)
        config = loaded.agent.config.replace(steps=config.steps)
        batch = per_rank_batch(config.batch_size, world.world_size)
    if isinstance(data_source, ShardedDataset):
        data_source.check_targets(config.n_step, config.discount, config.reward_model)
    return {"run_dir": run_dir, "device": torch_device, "mode": mode, "batch": batch, "data": data_source,
            "task": task, "config": config, "loaded": loaded}


# How a config field is set on the command line, for messages.
FIELD_FLAGS = {"agent": "--agent", "preset": "--preset", "steps": "--steps", "batch_size": "--batch-size",
               "reward_model": "--reward-model", "checkpoint_every": "--checkpoint-every", "seed": "--seed"}


def refuse_changed_fields(stored: TrainConfig, given: TrainConfig, explicit_fields: Collection[str]) -> None:
    """A resumed run keeps its configuration: an explicitly given value that differs is an error, not ignored."""
    for name in sorted(set(explicit_fields) - {"steps"}):
        old, new = getattr(stored, name), getattr(given, name)
        if old != new:
            flag = FIELD_FLAGS.get(name, f"--set {name}=...")
            raise RunError(f"--resume: {flag} gives {name}={new!r} but the run was trained with {old!r} (config.json); "
                           "a resumed run keeps its configuration: drop the flag, or train a new run")


def _rank_rng_states(step_dir: Path, rank: int) -> dict[str, torch.Tensor]:
    """RNG states a data-parallel checkpoint stored for `rank` (rank 0's are the plain rng.torch / rng.cuda)."""
    from safetensors import safe_open

    with safe_open(str(step_dir / "model.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
        return {name: handle.get_tensor(f"rng.rank{rank}.{name}") for name in ("torch", "cuda")
                if f"rng.rank{rank}.{name}" in keys}


def _run(world: World, prepared: dict[str, Any], dataset_path: str | os.PathLike[str], out: str | os.PathLike[str],
         resume: bool, progress: bool, on_log: Callable[[dict[str, Any]], None] | None, threads: int | None,
         save_optimizer: bool, time_limit_s: float | None, prefetch: int) -> dict[str, Any]:
    run_dir: Path = prepared["run_dir"]
    torch_device: torch.device = prepared["device"]
    mode: str = prepared["mode"]
    data_source = prepared["data"]
    task = prepared["task"]
    config: TrainConfig = prepared["config"]
    loaded = prepared["loaded"]
    sharded = isinstance(data_source, ShardedDataset)
    # Half the cores by default (shared among this machine's ranks): small networks gain little from more
    # threads, and an oversubscribed torch thread pool (other jobs on the machine) slows a step down 100x.
    torch.set_num_threads(threads or max(1, ((os.cpu_count() or 2) // 2) // world.local_world_size))

    host_generator = torch.Generator().manual_seed(world.seed(config.seed))
    start_step = 0
    rng_note = None
    rank_states: dict[str, torch.Tensor] = {}
    if loaded is not None:
        agent: BaseAgent = loaded.agent
        agent.spec = AgentSpec(**{**agent.spec.__dict__, "config": config})
        agent.config = config
        start_step = loaded.step
        saved_world = int(loaded.meta.get("extra", {}).get("world_size", 1))
        same_world = saved_world == world.world_size
        if world.rank == 0:
            if "_torch_rng_state" in loaded.meta:
                host_generator.set_state(loaded.meta["_torch_rng_state"])
        else:
            rank_states = _rank_rng_states(loaded.path, world.rank) if same_world else {}
            if "torch" in rank_states:
                host_generator.set_state(rank_states["torch"])
            else:
                host_generator.manual_seed(world.seed(config.seed) + start_step)
        if not same_world:
            rng_note = (f"resumed a {saved_world}-rank run with {world.world_size} rank(s): ranks > 0 draw new "
                        "random streams (not bit-exact)")
    else:
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        agent = make_agent(build_spec(data_source, config)).to(torch_device)
        agent.build_optimizers(**optimizer_flags(torch_device, mode))
    if torch_device.type == "cuda":
        cuda_state = None
        if loaded is not None:
            cuda_state = loaded.meta.get("_cuda_rng_state") if world.rank == 0 else rank_states.get("cuda")
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, torch_device)
        else:  # a fresh run, or a run moved here from the CPU: a new stream, distinct per resumed step
            torch.cuda.manual_seed(world.seed(config.seed) + start_step)
    per_rank = prepared["batch"]
    distributed_info = {"world_size": world.world_size, "per_rank_batch": per_rank, "launch": launch_identity(),
                        "global_batch": per_rank * world.world_size,
                        "backend": backend_for(torch_device) if world.distributed else None,
                        "rank_rows": "rows r, r + K, r + 2K, ... (disjoint)" if world.distributed else "all"}
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(run_dir / "metrics.jsonl", start_step)  # a restart keeps no line past its start
        if sharded:
            data_info = {"layout": "sharded", "path": str(data_source.path), "transitions": data_source.size,
                         "shards": len(data_source.entries), "convention": data_source.convention,
                         "metadata": data_source.metadata, "action_low": data_source.action_low.tolist(),
                         "action_high": data_source.action_high.tolist()}
        else:
            data_info = {"convention": data_source.convention, "metadata": data_source.metadata,
                         "action_low": data_source.action_low.tolist(),
                         "action_high": data_source.action_high.tolist()}
        header = {"task": task, "dataset": str(dataset_path), "config": config.to_dict(), "agent": config.agent,
                  "device": describe_device(torch_device), "step_mode": mode,
                  "ld_preload": os.environ.get("LD_PRELOAD"),  # e.g. scripts/mkl_avx512.sh's MKL shim
                  "distributed": distributed_info, "data": data_info}
        if rng_note:
            header["resume_note"] = rng_note
        if loaded is not None:  # the history of resumes: where each started and what it changed
            previous = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
            header["resumes"] = [*previous.get("resumes", []), {
                "from_step": start_step, "steps": config.steps, "device": header["device"], "step_mode": mode}]
        (run_dir / "config.json").write_text(json.dumps(header, indent=2))

    on_cuda = torch_device.type == "cuda"
    batches: DeviceBatches | ShardedBatches
    if sharded:
        reader = data_source.reader(config.n_step, with_mc=config.reward_model == "mc",
                                    read=os.environ.get(SHARD_READ_ENV, "pread"))
        batches = ShardedBatches(reader, torch_device, per_rank, seed=config.seed, rank=world.rank,
                                 world_size=world.world_size, start_step=start_step, prefetch=prefetch)
    else:
        tensors = tensors_from_dataset(data_source.train, config)
        batches = DeviceBatches(tensors, torch_device, per_rank, generator=None if on_cuda else host_generator,
                                offset=world.rank, stride=world.world_size)
        if on_cuda and not batches.resident:  # indices drawn on the host for pinned host-memory data
            batches.generator = host_generator
    losses = wrap_losses(agent, torch_device) if world.distributed else None
    trainer = TrainStep(agent, batches, mode, noise_generator=None if on_cuda else host_generator, losses=losses)
    extra = {"task": task, "dataset": str(dataset_path), "world_size": world.world_size}

    def save(at_step: int) -> None:
        rng: dict[str, torch.Tensor] = {"cuda": torch.cuda.get_rng_state(torch_device)} if on_cuda else {}
        if world.distributed:  # every rank's streams, so that --resume restores each rank
            everyone = gather_objects({"torch": host_generator.get_state(), **rng})
            for rank, states in enumerate(everyone[1:], start=1):
                rng.update({f"rank{rank}.{name}": value for name, value in states.items()})
        if world.is_main:
            save_checkpoint(run_dir, agent, at_step, extra, host_generator, keep=config.keep_checkpoints,
                            rng_states=rng or None, with_optimizer=save_optimizer)
        if world.distributed:
            barrier(torch_device)  # no rank runs ahead of a checkpoint that is not yet on disk

    agent.train()
    metrics_file = (run_dir / "metrics.jsonl").open("a") if world.is_main else None
    bar = tqdm(total=config.steps, initial=start_step, disable=not (progress and world.is_main),
               desc=f"train {config.agent}", unit="step", dynamic_ncols=True,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    step = start_step
    t_start = time.perf_counter()
    t_window, step_window = t_start, start_step
    stopped_by_time = False
    previous_sigterm = _sigterm_as_interrupt(world)
    try:
        while step < config.steps:
            if time_limit_s is not None:
                over = time.perf_counter() - t_start >= time_limit_s
                if world.distributed:  # the ranks agree (one all-reduce every few steps)
                    over = step % TIME_LIMIT_SYNC_STEPS == 0 and any_rank(over, torch_device)
                if over:
                    stopped_by_time = True
                    save(step)
                    break
            trainer.step()
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                values = trainer.metrics.read()  # the only host synchronisation between logs
                if world.distributed:
                    values = mean_over_ranks(values, torch_device)
                now = time.perf_counter()
                record = {"step": step, "time_s": round(now - t_start, 2),
                          "steps_per_s": round((step - step_window) / max(now - t_window, 1e-9), 1)}
                t_window, step_window = now, step
                record.update(values)
                if trainer.fallback:
                    record["step_mode"] = trainer.mode
                    record["fallback"] = trainer.fallback
                if metrics_file is not None:
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k.endswith("loss")},
                                refresh=sys.stderr.isatty())
                if on_log and world.is_main:
                    on_log(record)
            if step % config.checkpoint_every == 0 or step == config.steps:
                save(step)
    except KeyboardInterrupt:
        if not world.distributed:  # a rank cannot gather the others' state once they stop
            save(step)
        raise
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
        if isinstance(batches, ShardedBatches):
            batches.close()
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
        "world_size": world.world_size,
        "global_batch": per_rank * world.world_size,
    }
