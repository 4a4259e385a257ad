"""Per-tick latency of the engine's computation in torch on a CUDA GPU, replayed as one CUDA graph.

    python benchmarks/gpu_engine_latency.py --checkpoint RUN --out gpu_engine_latency.json
    python benchmarks/gpu_engine_latency.py --device cpu --ticks 20      # the same code path on a CPU

What one tick does is what `engine.onnx` computes for one observation (batch 1): M Euler steps of the
actor for N_pi candidates, K steps of the reward-to-go flow for N_pi x N samples, Q* = tau_R LogSumExp
over samples (Eq. 39), argmax over candidates; plus the host->device copy of the observation and noise
and the device->host copy of the chosen action (a deployment's real transfers). On CUDA the tick after
the copies is one CUDA graph replay. This measures the same FLOPs on this GPU: it is not a TensorRT
figure and not a Jetson figure (no TensorRT here).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evor_edge.agents import EvorAgent
from evor_edge.checkpoint import load_checkpoint
from evor_edge.config import preset_config
from evor_edge.device import resolve_device, use_tf32_matmuls
from evor_edge.inference import q_star
from evor_edge.io import atomic_write_bytes
from evor_edge.throughput import make_bench_agent

# name: (N_pi, N, critic Euler steps K); the paper configuration and the cheaper variants of
# docs/performance.md (top-1 tail = one evaluated draw per candidate, e1/e3 = 1/3 critic steps).
CONFIGS: dict[str, tuple[int, int, int]] = {
    "paper/Npi32/N50/K10": (32, 50, 10),
    "full/Npi32/top2/K10": (32, 2, 10),
    "full/Npi32/top1/K10": (32, 1, 10),
    "e3/Npi32/top1/K3": (32, 1, 3),
    "e1/Npi32/top1/K1": (32, 1, 1),
    "p8x1/Npi32/top16/K10": (32, 16, 10),
}


def tick_function(agent: EvorAgent, n_pi: int, n: int, k: int, tau_r: float):
    """obs [1, obs], action noise [1, N_pi, act], rtg noise [1, N_pi, N] -> chosen action [1, act]."""

    def tick(obs: torch.Tensor, action_noise: torch.Tensor, rtg_noise: torch.Tensor) -> torch.Tensor:
        obs_n = agent.normalize_obs(obs)
        actions = agent.sample_actions(obs_n[:, None, :], action_noise)
        u = agent.sample_returns_normalized(obs_n[:, None, None, :], actions[:, :, None, :], rtg_noise[..., None],
                                            steps=k)
        returns = agent.spec.returns.denormalize(u[..., 0])
        best = q_star(returns, tau_r).argmax(dim=-1)
        return actions[torch.arange(actions.shape[0], device=actions.device), best]

    return tick


def measure(agent: EvorAgent, device: torch.device, n_pi: int, n: int, k: int, ticks: int, graph: bool
            ) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    spec = agent.spec
    tick = tick_function(agent, n_pi, n, k, agent.config.tau_r)
    host = {"obs": torch.zeros(1, spec.obs_dim), "a": torch.zeros(1, n_pi, spec.act_dim),
            "z": torch.zeros(1, n_pi, n)}
    if device.type == "cuda":
        host = {key: v.pin_memory() for key, v in host.items()}
    static = {key: v.to(device) for key, v in host.items()}
    run = lambda: tick(static["obs"], static["a"], static["z"])  # noqa: E731
    with torch.no_grad():
        for _ in range(3):
            out = run()
        replay = None
        if graph:
            torch.cuda.synchronize(device)
            cuda_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cuda_graph):
                out = run()
            replay = cuda_graph.replay
        times = []
        for _ in range(ticks):
            host["obs"].copy_(torch.from_numpy(rng.standard_normal((1, spec.obs_dim), dtype=np.float32)))
            host["a"].copy_(torch.from_numpy(rng.standard_normal((1, n_pi, spec.act_dim), dtype=np.float32)))
            host["z"].copy_(torch.from_numpy(rng.standard_normal((1, n_pi, n), dtype=np.float32)))
            t0 = time.perf_counter()
            for key in host:
                static[key].copy_(host[key], non_blocking=True)
            if replay is not None:
                replay()
            else:
                out = run()
            action = out.cpu()  # synchronises: the action is on the host, as a controller needs it
            times.append(time.perf_counter() - t0)
    assert np.all(np.isfinite(action.numpy()))
    ms = np.asarray(times) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "max_ms": round(float(ms.max()), 4), "mean_ms": round(float(statistics.fmean(ms)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="EVOR checkpoint / run dir (default: a random paper-size agent).")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ticks", type=int, default=500)
    parser.add_argument("--obs-dim", type=int, default=2, help="Random agent only (pointmaze: 2).")
    parser.add_argument("--act-dim", type=int, default=2)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="Comma list of names from CONFIGS.")
    parser.add_argument("--out", help="JSON file.")
    args = parser.parse_args()
    device = resolve_device(args.device)
    use_tf32_matmuls(device)
    if args.checkpoint:
        agent = load_checkpoint(args.checkpoint, device=device).agent
        source = args.checkpoint
    else:
        agent = make_bench_agent(preset_config("paper"), args.obs_dim, args.act_dim, device, "eager")
        source = "random paper-size agent"
    if not isinstance(agent, EvorAgent):
        raise SystemExit("error: gpu_engine_latency.py measures EVOR engines")
    agent.eval()
    report: dict[str, Any] = {
        "benchmark": "gpu_engine_latency", "source": source, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__, "batch": 1, "ticks": args.ticks, "hidden_dims": list(agent.config.hidden_dims),
        "actor_euler_steps": agent.config.euler_steps, "tf32": device.type == "cuda", "rows": [],
        "note": "the engine's computation in torch on this device (CUDA graph replay on CUDA); not TensorRT, "
                "not a Jetson",
    }
    for name in args.configs.split(","):
        n_pi, n, k = CONFIGS[name]
        for graph in ([False, True] if device.type == "cuda" else [False]):
            row = {"config": name, "num_candidates": n_pi, "num_rtg": n, "critic_steps": k,
                   "mode": "cuda-graph" if graph else "eager", **measure(agent, device, n_pi, n, k, args.ticks, graph)}
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        atomic_write_bytes(Path(args.out), (json.dumps(report, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
