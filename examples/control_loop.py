"""Real-time control loop: an OGBench simulator and an EvorPolicy controller in two processes.

    python examples/control_loop.py ENGINE_DIR --task pointmaze-medium-navigate-singletask-task1-v0

The parent process plays the robot: it steps the OGBench environment on a fixed 50 Hz clock,
sends each observation to the controller and waits for the action until the tick's deadline.
A reply that misses the deadline is a *deadline miss*: the robot applies the previous action
(hold) and the late reply is discarded. The controller is a separate process started with the
"spawn" method, so it imports only numpy, onnxruntime and ``evor_edge.runtime`` (what a robot's
control process embeds), never ogbench / mujoco / torch.

Prints one JSON summary (deadline misses, latencies, episode returns and successes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import sys
import time
from typing import Any

import numpy as np


# ---------------------------------------------------------------------------- controller process
def controller(conn: Any, engine_dir: str, settings: dict[str, Any]) -> None:
    """Child process: load the policy, then answer (seq, obs) with (seq, action, compute_s)."""
    from evor_edge.runtime import EvorPolicy  # torch-free import, in the child only

    try:
        policy = EvorPolicy.load(engine_dir, on_invalid="hold", **settings)
        policy.warmup()
    except Exception as exc:  # report to the parent instead of dying silently
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", {"obs_dim": policy.obs_dim, "act_dim": policy.act_dim, **policy.describe()}))
    while True:
        msg = conn.recv()
        if msg is None:
            conn.send(("bye", {"invalid_count": policy.invalid_count}))
            return
        kind, seq, obs = msg
        if kind == "reset":
            policy.reset()
            conn.send(("reset", seq, None, 0.0))
            continue
        start = time.perf_counter()
        action = policy.act(obs)
        conn.send(("action", seq, action, time.perf_counter() - start))


# ---------------------------------------------------------------------------- simulator process
def make_env(task: str) -> Any:
    """``gymnasium.make`` for an OGBench task; accepts dataset-style names with the dataset word
    (``pointmaze-medium-navigate-singletask-task1-v0`` -> ``pointmaze-medium-singletask-task1-v0``)."""
    import gymnasium
    import ogbench  # noqa: F401  (registers the environments)

    if task not in gymnasium.registry:
        parts = task.split("-")
        if "singletask" in parts and parts.index("singletask") >= 2:
            pos = parts.index("singletask")
            task = "-".join(parts[: pos - 1] + parts[pos:])
    if task not in gymnasium.registry:
        raise SystemExit(f"error: unknown OGBench task {task!r}")
    return gymnasium.make(task)


def _sleep_until(deadline: float) -> None:
    while (remaining := deadline - time.perf_counter()) > 0:
        if remaining > 0.0005:
            time.sleep(remaining - 0.0005)


def _stats_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    arr = np.asarray(values) * 1e3
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)), "max": float(arr.max())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the controller process, run the episodes in real time, return the summary."""
    env = make_env(args.task)
    settings = {k: v for k, v in {
        "backend": args.backend, "num_candidates": args.num_candidates, "num_rtg": args.num_rtg,
        "seed": args.seed,
    }.items() if v is not None}
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=controller, args=(child, args.engine_dir, settings), daemon=True)
    proc.start()
    try:
        if not parent.poll(120):
            raise SystemExit("error: controller did not start within 120 s")
        status, info = parent.recv()
        if status == "error":
            raise SystemExit(f"error: controller could not load the engine: {info}")
        obs_dim = int(np.prod(env.observation_space.shape))
        if info["obs_dim"] != obs_dim:
            raise SystemExit(f"error: engine expects obs_dim {info['obs_dim']}, {args.task} gives {obs_dim}")
        return _loop(env, parent, info, args)
    finally:
        if proc.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                parent.send(None)
            proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
        env.close()


def _loop(env: Any, conn: Any, info: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    period = 1.0 / args.hz
    low = np.asarray(env.action_space.low, dtype=np.float32)
    high = np.asarray(env.action_space.high, dtype=np.float32)
    hold = np.where(np.isfinite(low) & np.isfinite(high), (low + high) / 2, 0).astype(np.float32)
    round_trip, compute, sim_step, lateness = [], [], [], []
    misses = ticks = overruns = 0
    episodes: list[dict[str, Any]] = []
    seq = 0
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + episode)
        conn.send(("reset", -1, None))
        while conn.recv()[0] != "reset":  # drain late replies of the previous episode
            pass
        ep_return, success, ep_ticks = 0.0, False, 0
        t0 = time.perf_counter() + period
        slot = 0
        while True:
            ideal = t0 + slot * period
            _sleep_until(ideal)
            start = time.perf_counter()
            lateness.append(start - ideal)
            seq += 1
            conn.send(("obs", seq, np.asarray(obs, dtype=np.float32)))
            action = None
            while conn.poll(max(0.0, ideal + period - time.perf_counter())):
                _, got_seq, got_action, compute_s = conn.recv()
                if got_seq == seq:
                    action = got_action
                    round_trip.append(time.perf_counter() - start)
                    compute.append(compute_s)
                    break  # older seqs are late replies: dropped
            if action is None:
                misses += 1
                action = hold
            hold = action
            sim_start = time.perf_counter()
            obs, reward, terminated, truncated, step_info = env.step(action)
            sim_step.append(time.perf_counter() - sim_start)
            ep_return += float(reward)
            success = success or bool(step_info.get("success", False))
            ticks += 1
            ep_ticks += 1
            slot += 1
            now = time.perf_counter()
            if now > t0 + slot * period:  # the tick (policy + simulation) overran its slot
                overruns += 1
                slot = int((now - t0) // period) + 1
            if terminated or truncated or (args.max_ticks and ep_ticks >= args.max_ticks):
                break
        episodes.append({"episode": episode, "ticks": ep_ticks, "return": ep_return, "success": success})
    return {
        "task": args.task,
        "engine_dir": args.engine_dir,
        "controller": info,
        "hz": args.hz,
        "ticks": ticks,
        "deadline_misses": misses,
        "deadline_miss_pct": 100.0 * misses / max(1, ticks),
        "slot_overruns": overruns,
        "round_trip_ms": _stats_ms(round_trip),
        "policy_compute_ms": _stats_ms(compute),
        "sim_step_ms": _stats_ms(sim_step),
        "jitter_ms": float(np.std(lateness) * 1e3) if lateness else None,
        "episodes": episodes,
        "success_rate": float(np.mean([e["success"] for e in episodes])) if episodes else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engine_dir", help="engine directory (engine.onnx + manifest.json)")
    parser.add_argument("--task", default="pointmaze-medium-navigate-singletask-task1-v0",
                        help="OGBench single-task name")
    parser.add_argument("--hz", type=float, default=50.0, help="control rate (default 50)")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--max-ticks", type=int, default=0, help="stop an episode after this many ticks (0: env limit)")
    parser.add_argument("--num-candidates", type=int, default=None)
    parser.add_argument("--num-rtg", type=int, default=None)
    parser.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "tensorrt"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
