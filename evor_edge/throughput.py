"""Training throughput (steps/s) of one configuration in one step mode, for `benchmarks/train_throughput.py`.

Every figure times the same thing: `TrainStep.step()` (or the jitted JAX step) on synthetic data resident
on the device, after warm-up (compilation / graph capture excluded, reported separately), synchronising
the device before reading the clock. `flops_per_step` counts one eager step's forward + backward matmul
FLOPs with `torch.utils.flop_counter`.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from evor_edge.agents import AgentSpec, BaseAgent, make_agent
from evor_edge.config import TrainConfig, preset_config
from evor_edge.device import use_tf32_matmuls
from evor_edge.normalization import ObsNormalizer, ReturnScaler
from evor_edge.train_step import DeviceBatches, TrainStep, optimizer_flags

DATA_SIZE = 100_000


def synthetic_data(obs_dim: int, act_dim: int, size: int = DATA_SIZE, seed: int = 0) -> dict[str, torch.Tensor]:
    """Training tensors in `tensors_from_dataset`'s layout (values do not change the cost)."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return {
        "observations": torch.from_numpy(rng.standard_normal((size, obs_dim), dtype=f32)),
        "actions": torch.from_numpy(rng.uniform(-1, 1, (size, act_dim)).astype(f32)),
        "rewards": torch.from_numpy(-(rng.random(size) < 0.9).astype(f32)),
        "bootstrap": torch.from_numpy(np.full(size, 0.99, f32)),
        "next_observations": torch.from_numpy(rng.standard_normal((size, obs_dim), dtype=f32)),
    }


def make_bench_agent(config: TrainConfig, obs_dim: int, act_dim: int, device: torch.device, mode: str) -> BaseAgent:
    spec = AgentSpec(config, obs_dim, act_dim, (-1.0,) * act_dim, (1.0,) * act_dim,
                     ObsNormalizer((0.0,) * obs_dim, (1.0,) * obs_dim), ReturnScaler(-50.0, 50.0))
    torch.manual_seed(config.seed)
    agent = make_agent(spec).to(device)
    agent.build_optimizers(**optimizer_flags(device, mode))
    return agent.train()


def flops_per_step(config: TrainConfig, obs_dim: int, act_dim: int) -> int:
    """Forward + backward FLOPs of one update (counted on the CPU in eager mode)."""
    from torch.utils.flop_counter import FlopCounterMode

    agent = make_bench_agent(config, obs_dim, act_dim, torch.device("cpu"), "eager")
    batches = DeviceBatches(synthetic_data(obs_dim, act_dim, size=1024), torch.device("cpu"), config.batch_size,
                            generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        TrainStep(agent, batches, "eager", torch.Generator().manual_seed(0)).step()
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_torch(preset: str, agent: str, device: torch.device, mode: str, obs_dim: int, act_dim: int,
                  steps: int, repeats: int = 3, warmup: int = 5) -> dict[str, Any]:
    """Median steps/s over `repeats` windows of `steps` steps, after `warmup` steps (compile / capture)."""
    config = preset_config(preset, agent=agent)
    use_tf32_matmuls(device)
    model = make_bench_agent(config, obs_dim, act_dim, device, mode)
    on_cuda = device.type == "cuda"
    generator = None if on_cuda else torch.Generator().manual_seed(0)
    batches = DeviceBatches(synthetic_data(obs_dim, act_dim), device, config.batch_size, generator=generator)
    trainer = TrainStep(model, batches, mode, noise_generator=generator)
    t0 = time.perf_counter()
    for _ in range(warmup):
        trainer.step()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    rates = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.step()
        _sync(device)
        rates.append(steps / (time.perf_counter() - t0))
    losses = trainer.metrics.read()
    return {"framework": "torch", "mode": mode, "steps_per_s": round(statistics.median(rates), 2),
            "steps_per_s_all": [round(r, 2) for r in rates], "warmup_s": round(warmup_s, 2),
            "finite": all(np.isfinite(v) for v in losses.values())}


def measure_jax(preset: str, agent: str, platform: str, obs_dim: int, act_dim: int, steps: int,
                repeats: int = 3, warmup: int = 5) -> dict[str, Any]:
    """The same update in JAX (`evor_edge.jax_reference`), jitted, data on the JAX device `platform`."""
    import jax

    from evor_edge.jax_reference import JaxUpdate, params_from_torch

    config = preset_config(preset, agent=agent)
    model = make_bench_agent(config, obs_dim, act_dim, torch.device("cpu"), "eager")
    update = JaxUpdate(model)
    jax_device = jax.devices(platform)[0]
    with jax.default_device(jax_device):
        data = {k: jax.device_put(v.numpy(), jax_device) for k, v in synthetic_data(obs_dim, act_dim).items()}
        state = jax.device_put(update.init_state(params_from_torch(model)), jax_device)
        step = update.make_step(data)
        t0 = time.perf_counter()
        for _ in range(warmup):
            state, metrics = step(state)
        jax.block_until_ready(state)
        warmup_s = time.perf_counter() - t0
        rates = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(steps):
                state, metrics = step(state)
            jax.block_until_ready(state)
            rates.append(steps / (time.perf_counter() - t0))
    return {"framework": "jax", "mode": "jit", "jax_device": str(jax_device),
            "steps_per_s": round(statistics.median(rates), 2), "steps_per_s_all": [round(r, 2) for r in rates],
            "warmup_s": round(warmup_s, 2), "finite": all(bool(np.isfinite(v)) for v in metrics.values())}


def matmul_peak_gflops(device: torch.device, size: int | None = None, repeats: int = 10) -> float:
    """Measured float32 GEMM throughput (GFLOP/s) of `device` with torch's current thread setting, in the
    matmul precision training uses (TF32 on CUDA, `use_tf32_matmuls`): a peak measured in strict FP32 would
    sit below what a TF32 training step achieves. Square `size` GEMMs (2048 on a CPU, 8192 on a GPU, which a
    2048 GEMM does not fill), 8 per timed sample."""
    use_tf32_matmuls(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    per_sample = 8
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(per_sample):
            a @ b
        _sync(device)
        times.append((time.perf_counter() - t0) / per_sample)
    return 2 * size ** 3 / statistics.median(times) / 1e9
