"""One training step on a device, in one of four forms that all run the same `BaseAgent.losses`.

* ``eager``: PyTorch eager mode (the reference).
* ``compile``: `torch.compile` of the loss computation (forward, the critic target's Euler integrations,
  and through AOTAutograd the backward); the Adam steps and the EMA stay multi-tensor eager ops.
* ``cuda-graph``: the whole step (minibatch indices, noise, forward, backward, both fused Adam steps, EMA,
  metric accumulation) captured once in a `torch.cuda.CUDAGraph` and replayed: one launch per step.
  Small MLPs on a GPU are launch-bound; this removes the per-kernel launch cost.
* ``compiled-cuda-graph``: both: the compiled (fused) loss kernels captured in the same CUDA graph.

A graph capture that fails falls back to replaying nothing: the step runs eagerly from then on, and
`TrainStep.mode` / `fallback` say so (recorded in the run's metrics).

Data placement (`DeviceBatches`): on a GPU the dataset tensors are moved to the device once when they
take at most half of its free memory; minibatch indices are then drawn on the device. Otherwise they stay
in pinned host memory and each minibatch is gathered on the host and copied with `non_blocking=True`
into fixed device buffers (double-buffered pinned staging, so the copy overlaps the previous step).

Memory-mapped sharded datasets (`ShardedBatches`, `evor_edge.shards`): each minibatch is gathered on
the host from the shard files (preadv; EVOR_EDGE_SHARD_READ=mmap reads through memory maps instead) into
preallocated (pinned on CUDA) buffers by a background thread
a few batches ahead, then copied like the pinned path above. Indices of step s are a pure function of
(seed, rank, s), so a resumed run continues the same stream.

Data-parallel runs (`evor_edge.distributed`): each rank draws from its own disjoint share of the rows
(`offset` / `stride`: rows rank, rank + K, ...) and `TrainStep(losses=...)` runs the loss through the
DistributedDataParallel wrapper so that backward all-reduces the gradients.

No step reads anything back to the host: metrics are summed on the device (`MetricSums`) and read
every `log_every` steps.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from evor_edge.agents import BaseAgent
from evor_edge.agents.common import Batch, Metrics

if TYPE_CHECKING:
    from evor_edge.shards import ShardReader

STEP_MODES = ("auto", "eager", "compile", "cuda-graph", "compiled-cuda-graph")
GRAPH_MODES = ("cuda-graph", "compiled-cuda-graph")
COMPILED_MODES = ("compile", "compiled-cuda-graph")
GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture (allocates Adam state, cuBLAS workspaces)


class StepModeError(ValueError):
    """A step mode that cannot run on the chosen device (one-line message)."""


def choose_step_mode(mode: str, device: torch.device, distributed: bool = False) -> str:
    """`auto` = cuda-graph on CUDA, eager on the CPU (docs/performance.md: compile is no faster there).

    Data-parallel runs: `auto` = eager; the graph modes are refused (a captured step would replay the
    gradient all-reduce without DDP's per-backward bookkeeping, which is not verified here).
    """
    if mode not in STEP_MODES:
        raise StepModeError(f"unknown step mode {mode!r}; choose one of {STEP_MODES}")
    if mode == "auto":
        return "cuda-graph" if device.type == "cuda" and not distributed else "eager"
    if mode in GRAPH_MODES and device.type != "cuda":
        raise StepModeError(f"--step-mode {mode} needs a CUDA device, not {device.type}")
    if mode in GRAPH_MODES and distributed:
        raise StepModeError(f"--step-mode {mode} is not supported in data-parallel runs; use eager or compile")
    return mode


def optimizer_flags(device: torch.device, mode: str) -> dict[str, Any]:
    """Adam implementation flags: fused on CUDA (one kernel for all tensors), capturable under a graph."""
    if device.type != "cuda":
        return {}
    return {"fused": True, "capturable": mode in GRAPH_MODES}


class DeviceBatches:
    """Uniform minibatches of the training tensors on `device`, without host synchronisation.

    `generator` must live on the sampling device (the CPU for host-resident data); on CUDA pass None to
    use the default CUDA generator, the one a CUDA graph replays safely.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], device: torch.device, batch_size: int,
                 generator: torch.Generator | None = None, resident: bool | None = None,
                 offset: int = 0, stride: int = 1):
        """offset / stride: draw only rows offset, offset + stride, ... (rank r of K ranks: r, K); the
        default draws from all rows exactly as before."""
        self.device = device
        self.batch_size = batch_size
        self.size = int(next(iter(tensors.values())).shape[0])
        if not 0 <= offset < stride or offset >= self.size:
            raise ValueError(f"rows offset {offset} / stride {stride} do not fit {self.size} rows")
        self.offset, self.stride = offset, stride
        self.rows = (self.size - offset + stride - 1) // stride
        if resident is None:
            resident = device.type != "cuda" or _fits_on_gpu(tensors, device)
        self.resident = resident
        self.generator = generator
        if resident:
            self.data = {k: v.to(device) for k, v in tensors.items()}
            self.staging: list[dict[str, torch.Tensor]] = []
            self.buffers: dict[str, torch.Tensor] = {}
        else:
            self.data = {k: v.contiguous() for k, v in tensors.items()}
            self.staging = [{k: torch.empty((batch_size, *v.shape[1:]), dtype=v.dtype).pin_memory()
                             for k, v in self.data.items()} for _ in range(2)]
            self.events = [torch.cuda.Event(), torch.cuda.Event()]
            self.turn = 0
            self.buffers = {k: torch.empty((batch_size, *v.shape[1:]), dtype=v.dtype, device=device)
                            for k, v in self.data.items()}

    @property
    def static(self) -> bool:
        """True when `sample()` fills the same device tensors every call (host-resident data)."""
        return not self.resident

    def _index(self, device: torch.device | None = None) -> torch.Tensor:
        index = torch.randint(0, self.rows, (self.batch_size,), device=device, generator=self.generator)
        if self.stride != 1:
            index = index * self.stride + self.offset
        return index

    def sample(self) -> Batch:
        if self.resident:
            index = self._index(self.device)
            return {k: v.index_select(0, index) for k, v in self.data.items()}
        index = self._index()
        stage, event = self.staging[self.turn], self.events[self.turn]
        event.synchronize()  # the copy that last used this staging buffer is done (normally long ago)
        for key, value in self.data.items():
            torch.index_select(value, 0, index, out=stage[key])
            self.buffers[key].copy_(stage[key], non_blocking=True)
        event.record()
        self.turn ^= 1
        return self.buffers


class ShardedBatches:
    """Uniform minibatches over a memory-mapped sharded dataset, gathered on the host.

    Minibatch s on `rank` holds the rows `reader.draw(s, ...)` names (sorted; uniform over this rank's
    disjoint share of the whole dataset). With `prefetch` > 0 a background thread gathers that many
    batches ahead into rotating staging buffers (preadv and numpy's take release the GIL while they
    copy); on CUDA the staging buffers are pinned and each batch is copied with `non_blocking=True` into
    fixed device buffers (`static`: what a captured CUDA graph reads). The default `pread` reader maps
    nothing; with the `mmap` reader, when the process's file-backed resident memory exceeds `rss_budget`
    bytes the reader drops its mappings (`ShardReader.release`), so RSS stays bounded either way.
    """

    resident = False

    def __init__(self, reader: ShardReader, device: torch.device, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, start_step: int = 0, prefetch: int = 2, rss_budget: int = 768 << 20,
                 release_every: int = 1):
        self.reader = reader
        self.device = device
        self.batch_size = batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.step = start_step
        self.prefetch = max(0, int(prefetch))
        self.rss_budget, self.release_every = rss_budget, max(1, release_every)
        self.filled = 0
        self.generator = None  # indices come from `reader.draw`, not from a torch generator
        on_cuda = device.type == "cuda"
        self.on_cuda = on_cuda
        slots = max(2, self.prefetch + 1)
        self.staging = [{k: torch.empty((batch_size, *shape), dtype=torch.from_numpy(np.empty(0, dtype)).dtype,
                                        pin_memory=on_cuda) for k, (shape, dtype) in reader.fields.items()}
                        for _ in range(slots)]
        self.views = [{k: v.numpy() for k, v in slot.items()} for slot in self.staging]
        self.buffers: dict[str, torch.Tensor] = {}
        if on_cuda:
            self.buffers = {k: torch.empty_like(v, device=device) for k, v in self.staging[0].items()}
            self.events = [torch.cuda.Event() for _ in range(slots)]
        self.turn = 0
        self.held: int | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.prefetch:
            self.free: queue.Queue[int | None] = queue.Queue()
            self.ready: queue.Queue[int | BaseException] = queue.Queue()
            for slot in range(slots):
                self.free.put(slot)
            self._thread = threading.Thread(target=self._produce, name="shard-prefetch", daemon=True)
            self._thread.start()

    @property
    def static(self) -> bool:
        return self.on_cuda

    def _fill(self, slot: int, step: int) -> None:
        if self.on_cuda:
            self.events[slot].synchronize()  # the copy that last read this staging buffer is done
        index = self.reader.draw(step, self.batch_size, self.seed, self.rank, self.world_size)
        self.reader.gather(index, self.views[slot])
        self.filled += 1
        if self.reader.read == "mmap" and self.filled % self.release_every == 0:
            from evor_edge.shards import file_backed_rss_bytes

            if file_backed_rss_bytes() > self.rss_budget:
                self.reader.release()

    def _produce(self) -> None:
        step = self.step
        while not self._stop.is_set():
            slot = self.free.get()
            if slot is None:
                return
            try:
                self._fill(slot, step)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread, raised there
                self.ready.put(exc)
                return
            self.ready.put(slot)
            step += 1

    def sample(self) -> Batch:
        if self.prefetch:
            if self.held is not None:
                self.free.put(self.held)
                self.held = None
            item = self.ready.get()
            if isinstance(item, BaseException):
                raise item
            slot = item
        else:
            slot = self.turn
            self.turn = (self.turn + 1) % len(self.staging)
            self._fill(slot, self.step)
        self.step += 1
        if not self.on_cuda:
            self.held = slot if self.prefetch else None
            return self.staging[slot]
        for key, value in self.staging[slot].items():
            self.buffers[key].copy_(value, non_blocking=True)
        self.events[slot].record()
        if self.prefetch:
            self.free.put(slot)
        return self.buffers

    def close(self) -> None:
        """Stop the prefetch thread (idempotent)."""
        if self._thread is not None:
            self._stop.set()
            self.free.put(None)
            self._thread.join(timeout=10)
            self._thread = None


def _fits_on_gpu(tensors: dict[str, torch.Tensor], device: torch.device) -> bool:
    needed = sum(v.numel() * v.element_size() for v in tensors.values())
    free, _total = torch.cuda.mem_get_info(device)
    return needed <= free // 2


class MetricSums:
    """Per-metric running sums on the device; `read()` is the only host synchronisation."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, metrics: Metrics) -> None:
        if not self.sums:
            self.sums = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in metrics.items()}
        torch._foreach_add_(list(self.sums.values()), [metrics[k].float() for k in self.sums])

    def read(self) -> dict[str, float]:
        """Means since the last read (host copy), then reset."""
        if not self.sums or not self.count:
            return {}
        values = torch.stack(list(self.sums.values())).cpu() / self.count
        for value in self.sums.values():
            value.zero_()
        self.count = 0
        return {k: float(v) for k, v in zip(self.sums, values, strict=True)}


class TrainStep:
    """`step()` runs one update of `agent` on a fresh minibatch and adds its metrics to `metrics`."""

    def __init__(self, agent: BaseAgent, batches: DeviceBatches | ShardedBatches, mode: str,
                 noise_generator: torch.Generator | None = None,
                 losses: Callable[..., Any] | None = None):
        """noise_generator: the CPU generator on the CPU; None on CUDA (the default CUDA generator).
        losses: what computes (loss, metrics) from (batch, noise); default `agent.losses`, in data-parallel
        runs the DistributedDataParallel wrapper of it (`evor_edge.distributed.wrap_losses`)."""
        self.agent = agent
        self.batches = batches
        self.mode = mode
        self.noise_generator = noise_generator
        self.metrics = MetricSums()
        self.fallback: str | None = None
        self._losses: Callable[..., Any] = losses if losses is not None else agent.losses
        self._graph: torch.cuda.CUDAGraph | None = None
        self._warmup_left = GRAPH_WARMUP_STEPS if mode in GRAPH_MODES else 0
        if mode in COMPILED_MODES:
            self._losses = torch.compile(self._losses, dynamic=False)

    def _update(self, batch: Batch) -> None:
        noise = self.agent.sample_noise(self.batches.batch_size, self.noise_generator)
        loss, metrics = self._losses(batch, noise)
        self.agent.apply_gradients(loss)
        self.metrics.add(metrics)

    def _whole_step(self) -> None:
        self._update(self.batches.sample())

    def step(self) -> None:
        self.metrics.count += 1
        if self.mode not in GRAPH_MODES:
            self._whole_step()
            return
        if self._graph is None and self._warmup_left:
            self._warmup_left -= 1
            side = torch.cuda.Stream(self.batches.device)
            side.wait_stream(torch.cuda.current_stream(self.batches.device))
            with torch.cuda.stream(side):
                self._whole_step()
            torch.cuda.current_stream(self.batches.device).wait_stream(side)
            return
        if self._graph is None and not self._capture():
            self._whole_step()
            return
        if self.batches.static:
            self.batches.sample()  # host-resident data: fill the graph's static input buffers first
        self._graph.replay()

    def _capture(self) -> bool:
        """Record one whole step (sampling included when the data are on the device) into a CUDA graph.

        Capturing executes nothing, so a failed capture changes no weight: the run goes on eagerly.
        """
        torch.cuda.synchronize(self.batches.device)
        graph = torch.cuda.CUDAGraph()
        static_batch = self.batches.buffers if self.batches.static else None
        try:
            with torch.cuda.graph(graph):
                self._update(static_batch if static_batch is not None else self.batches.sample())
        except RuntimeError as exc:
            self.fallback = f"CUDA graph capture failed, running eagerly: {str(exc).splitlines()[0][:200]}"
            warnings.warn(self.fallback, stacklevel=2)
            self.mode = "compile" if self.mode == "compiled-cuda-graph" else "eager"
            torch.cuda.synchronize(self.batches.device)
            return False
        self._graph = graph
        return True
