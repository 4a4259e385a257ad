"""Data-parallel training with PyTorch DistributedDataParallel, launched by torchrun.

    torchrun --nproc_per_node K -m evor_edge.cli train --dataset D --out RUN ...
    evor-edge train --nproc K --dataset D --out RUN ...        (torchrun's launcher, called in-process)

`evor_edge.train.train` detects torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK; MASTER_ADDR /
MASTER_PORT for the rendezvous) and then:

* backend `gloo` on the CPU, `nccl` on GPUs (rank r uses cuda:LOCAL_RANK);
* the config's batch_size is the GLOBAL batch: each rank draws batch_size / K rows (it must divide, and
  K > batch_size is refused before anything is written);
* every rank builds the same initial weights (same seed; DDP also broadcasts rank 0's at wrap time), draws
  minibatches from its own disjoint share of the rows (rows r, r + K, r + 2K, ...) with its own seeded
  generator, and its own noise; `wrap_losses` routes `BaseAgent.losses` through DDP so that backward
  all-reduces (averages) the actor's and the critic's gradients. Both losses are means over the batch, so
  one data-parallel update equals one single-process update on the concatenated global batch and noise
  (tests/test_ddp.py). Adam and the target EMA then run on identical gradients from identical states: the
  weights, Adam moments and target networks stay identical on every rank;
* metrics are averaged over ranks at each log step and written by rank 0; checkpoints are written by rank 0
  (atomically, `evor_edge.checkpoint`) with every rank's RNG state, so `--resume` restores every rank.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ENV_TIMEOUT = "EVOR_EDGE_DIST_TIMEOUT_S"  # collective timeout in seconds (default 1800, PyTorch's)
RANK_SEED_STRIDE = 1_000_003  # rank r's generators use seed + r * stride (runs with seeds 0, 1, 2 stay apart)


class DistributedError(ValueError):
    """A data-parallel setup that cannot run (one-line message)."""


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run (world_size 1: a plain single-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """Seed of this rank's generators (rank 0 keeps `seed`: a 1-process run is unchanged)."""
        return seed + self.rank * RANK_SEED_STRIDE


def world_from_env(environ: dict[str, str] | None = None) -> World:
    """The World torchrun describes in the environment; a plain World() outside torchrun."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return World()
    try:
        world_size = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world_size)))
    except ValueError:
        raise DistributedError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") from None
    if world_size < 1 or not 0 <= rank < world_size or not 0 <= local_rank < max(local_world, 1):
        raise DistributedError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world_size} "
                               f"LOCAL_RANK={local_rank}")
    return World(rank, world_size, local_rank, max(local_world, 1))


def restart_count(environ: dict[str, str] | None = None) -> int:
    """How many times torchrun's agent has restarted this worker group (`--max-restarts`); 0 outside torchrun."""
    env = os.environ if environ is None else environ
    try:
        return int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def launch_identity(environ: dict[str, str] | None = None) -> dict[str, int] | None:
    """Who launched this worker group: the torchrun agent's pid and start time (Linux /proc), the same for
    every restart of one launch and different for another launch. Recorded in config.json, it tells a
    restarted group that the run directory is its own earlier attempt's (so it resumes), not a directory an
    earlier, separate launch left behind. None outside torchrun or where /proc is absent."""
    env = os.environ if environ is None else environ
    if "TORCHELASTIC_RESTART_COUNT" not in env:
        return None
    agent = os.getppid()
    try:
        start = int(Path(f"/proc/{agent}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
    return {"agent_pid": agent, "agent_start_ticks": start}


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Rows each rank draws: the global batch split evenly (a clear error where it cannot be)."""
    if world_size > global_batch:
        raise DistributedError(f"{world_size} ranks but a batch of {global_batch} rows: each rank needs at least "
                               f"one row; use --batch-size >= {world_size} (the global batch) or fewer ranks")
    if global_batch % world_size:
        raise DistributedError(f"batch size {global_batch} does not split over {world_size} ranks; use a multiple "
                               f"of {world_size} (--batch-size is the global batch)")
    return global_batch // world_size


def rank_device(name: str, world: World) -> torch.device:
    """Rank r's device: cuda:LOCAL_RANK under auto / cuda when GPUs are present, else the CPU."""
    from evor_edge.device import DeviceError, resolve_device

    name = (name or "auto").strip().lower()
    if not world.distributed:
        return resolve_device(name)
    if name.startswith("cuda:"):
        raise DistributedError(f"--device {name}: in a data-parallel run each rank uses cuda:LOCAL_RANK; pass "
                               "--device cuda (or auto)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: torch sees no CUDA GPU; use --device cpu (or auto)")
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise DistributedError(f"local rank {world.local_rank} needs cuda:{world.local_rank}, but only {count} GPU(s) "
                               "are visible: use --nproc_per_node <= the number of GPUs")
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(world: World, device: torch.device) -> bool:
    """Join torchrun's rendezvous (env://); True when this call created the group (so it must destroy it)."""
    import torch.distributed as dist

    if not world.distributed or dist.is_initialized():
        return False
    timeout = datetime.timedelta(seconds=float(os.environ.get(ENV_TIMEOUT, "1800")))
    kwargs: dict[str, Any] = {"backend": backend_for(device), "rank": world.rank, "world_size": world.world_size,
                              "timeout": timeout}
    if device.type == "cuda":
        kwargs["device_id"] = device
    # Every attempt of a torchrun launch (--max-restarts) under its own key prefix: the agent's store outlives
    # a failed attempt, and without a prefix the restarted ranks read the dead ranks' gloo/nccl addresses
    # ("Connection refused" until connectFullMesh times out; seen with torch 2.13's c10d rendezvous).
    store, _rank, _size = next(dist.rendezvous("env://", world.rank, world.world_size, timeout=timeout))
    kwargs["store"] = dist.PrefixStore(f"evor_edge/attempt_{restart_count()}", store)
    dist.init_process_group(**kwargs)
    return True


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


class _Losses(nn.Module):
    """`forward(batch, noise) = agent.losses(batch, noise)`: the module DDP wraps (its forward is what arms
    DDP's gradient all-reduce for the following backward)."""

    def __init__(self, agent: nn.Module):
        super().__init__()
        self.agent = agent

    def forward(self, batch: dict[str, torch.Tensor], noise: dict[str, torch.Tensor]) -> Any:
        return self.agent.losses(batch, noise)


def wrap_losses(agent: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel over the agent's trainable parameters (actor + critic; the target critic has
    requires_grad=False and is never reduced). Buffers (normalisers, action box) are identical by
    construction and not re-broadcast every step."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DistributedDataParallel(_Losses(agent), device_ids=[device.index] if device.type == "cuda" else None,
                                   **no_sync)


def collective_device(device: torch.device) -> torch.device:
    """Where tensors of a collective must live: the GPU for nccl, the CPU for gloo."""
    return device if device.type == "cuda" else torch.device("cpu")


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average each metric over ranks (every rank must call this with the same keys, in the same order)."""
    import torch.distributed as dist

    if not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=collective_device(device))
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, tensor.cpu().tolist(), strict=True)}


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank (one all-reduce)."""
    import torch.distributed as dist

    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=collective_device(device))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` on every rank (small objects: RNG states)."""
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier(device: torch.device) -> None:
    import torch.distributed as dist

    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


# ------------------------------------------------------------------------------------ --nproc launcher
def _rank_main(train_args: tuple[Any, ...], train_kwargs: dict[str, Any]) -> dict[str, Any]:
    """One rank started by `launch_train` (torchrun's environment is set): train, one-line errors."""
    from evor_edge.train import train

    try:
        return train(*train_args, **train_kwargs)
    except (ValueError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


def _quiet_elastic_logs() -> None:
    """torchrun's agent logs a multi-line report per failed worker; our ranks already printed one line."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed", "torch.multiprocessing")):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def launch_train(nproc: int, *train_args: Any, max_restarts: int = 0, **train_kwargs: Any) -> dict[str, Any]:
    """`evor-edge train --nproc K`: run `evor_edge.train.train(*train_args, **train_kwargs)` on K local ranks
    through torchrun's launcher (torch.distributed.launcher: the same rendezvous and environment torchrun
    sets up) and return rank 0's summary. nproc 1 runs in this process. With `max_restarts` > 0 a failed
    group is started again, and the restart resumes from the run's last checkpoint (`launch_identity`).

    Checks that can fail before any process starts (the batch split) raise DistributedError here; a rank that
    fails prints its own one-line error and the launcher exits with that rank's status (2 for bad input).
    """
    from evor_edge.train import train

    if nproc <= 1:
        return train(*train_args, **train_kwargs)
    if world_from_env().distributed:
        raise DistributedError("--nproc starts its own ranks: leave it out under torchrun (or drop torchrun)")
    config = train_kwargs.get("config", train_args[2] if len(train_args) > 2 else None)
    if config is not None:
        per_rank_batch(config.batch_size, nproc)
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launch = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"evor-edge-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=max_restarts,
                          monitor_interval=0.5,
                          start_method="spawn")
    _quiet_elastic_logs()
    try:
        results = elastic_launch(launch, _rank_main)(train_args, train_kwargs)
    except ChildFailedError as exc:
        codes = [failure.exitcode for failure in exc.failures.values()]
        raise SystemExit(next((c for c in codes if c and c > 0), 1)) from None
    return results[0]
