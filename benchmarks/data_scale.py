"""Training reads from a >= 50M-transition memory-mapped sharded dataset vs the in-RAM loader, and DDP scaling.

    python benchmarks/data_scale.py --dir /work/data-scale --out data_scale.json
    python benchmarks/data_scale.py --dir DIR --transitions 100000000 --ram-shards 10 --rounds 3

1. build: writes a synthetic sharded dataset with cube-double dims (obs 40, act 5) through the conversion
   writer (`evor_edge.shards.write_synthetic_dataset`: the code `data convert` runs per shard), 1M
   transitions per shard (1000 episodes x 1000 steps, OGBench's 100M layout), n-step targets for n = 1
   and 50. Reused when DIR already holds it. Records disk use, time and the writer's peak RSS.
2. loaders, interleaved over --rounds, each measurement in a fresh process (so its peak RSS is its own):
     ram      the in-RAM loader (`DeviceBatches`, what `train --dataset FILE` uses) on the first
              --ram-shards shards, loaded into RAM (a size that fits);
     memmap   `ShardedBatches` (what `train --dataset DIR` uses) on the same first --ram-shards shards;
     memmap-all  `ShardedBatches` on every shard (>= 50M transitions).
   Each process times (a) sampling alone: batches/s of `sample()` (prefetch 0 = gathered in the calling
   thread, and prefetch 2 = a background thread), (b) training: `TrainStep` steps/s with that loader
   (small preset, MLP 3x256, batch 256, n_step 50, eager, 1 thread, --device cpu by default; on a GPU
   the RAM loader is device-resident and the sharded one goes through pinned buffers), and reports VmHWM (peak RSS,
   file-backed mapped pages included), RssAnon and RssFile at the end.
3. ddp: `train()` through torchrun's launcher (`evor_edge.distributed.launch_train`) on the memmap
   dataset, 1 process vs K processes (K = --nproc, default: the GPU count, else 2 CPU processes with
   gloo), per-rank batch 256: samples/s and scaling efficiency = samples/s(K) / (K * samples/s(1)).
   On a multi-GPU machine the same command uses nccl, one GPU per rank.

The JSON records the 1/5/15-minute load averages before and after every measurement: on a shared machine
the absolute figures move with the load; the interleaved rounds make the ratios comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

OBS_DIM, ACT_DIM = 40, 5
SHARD_EPISODES, EPISODE_STEPS = 1000, 1000
N_STEPS = (1, 50)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _status() -> dict[str, int]:
    """VmHWM / VmRSS / RssAnon / RssFile of this process in bytes (Linux)."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _disk(path: Path) -> dict[str, int]:
    usage = shutil.disk_usage(path)
    return {"total": usage.total, "used": usage.used, "free": usage.free}


# ---------------------------------------------------------------------------------------------- build
def synthetic_shard(index: int) -> dict[str, np.ndarray]:
    """One 1M-transition shard in OGBench's loaded layout: 1000 episodes, x_{t+1} == x'_t inside each."""
    rng = np.random.default_rng(index)
    rows = SHARD_EPISODES * (EPISODE_STEPS + 1)
    states = rng.standard_normal((rows, OBS_DIM), dtype=np.float32).reshape(SHARD_EPISODES, EPISODE_STEPS + 1, OBS_DIM)
    size = SHARD_EPISODES * EPISODE_STEPS
    rewards = rng.integers(-2, 1, size).astype(np.float32)  # cube-double: -(cubes not at their goal)
    terminals = np.zeros((SHARD_EPISODES, EPISODE_STEPS), np.float32)
    terminals[:, -1] = 1.0
    return {"observations": states[:, :-1].reshape(size, OBS_DIM),
            "next_observations": states[:, 1:].reshape(size, OBS_DIM),
            "actions": rng.uniform(-1, 1, (size, ACT_DIM)).astype(np.float32),
            "rewards": rewards, "masks": (rewards != 0).astype(np.float32), "terminals": terminals.reshape(size)}


def build(args: argparse.Namespace) -> dict[str, Any]:
    from evor_edge.shards import ConvertOptions, partial_dir, write_synthetic_dataset

    out = Path(args.dir)
    shards = -(-args.transitions // (SHARD_EPISODES * EPISODE_STEPS))
    disk_before = _disk(out.parent)
    started = time.perf_counter()
    report = write_synthetic_dataset(
        out, (lambda i=i: synthetic_shard(i) for i in range(shards)), np.full(ACT_DIM, -1.0), np.full(ACT_DIM, 1.0),
        ConvertOptions(n_steps=N_STEPS), metadata={"source": "synthetic", "dims": "cube-double (obs 40, act 5)"},
        resume=partial_dir(out).exists(), progress=sys.stderr.isatty(), total=shards)
    return {**report, "seconds": round(time.perf_counter() - started, 1), "peak_rss_bytes": _status()["VmHWM"],
            "disk_before": disk_before, "disk_after": _disk(out.parent)}


# ------------------------------------------------------------------------------------------- loaders
def _agent(device: Any) -> Any:
    import torch

    from evor_edge.agents import AgentSpec, make_agent
    from evor_edge.config import preset_config
    from evor_edge.normalization import ObsNormalizer, ReturnScaler

    cfg = preset_config("small", batch_size=256)
    spec = AgentSpec(cfg, OBS_DIM, ACT_DIM, (-1.0,) * ACT_DIM, (1.0,) * ACT_DIM,
                     ObsNormalizer((0.0,) * OBS_DIM, (1.0,) * OBS_DIM), ReturnScaler(-100.0, 100.0))
    torch.manual_seed(0)
    agent = make_agent(spec).to(device)
    agent.build_optimizers()
    return agent.train()


def _rate(fn: Any, seconds: float, min_calls: int = 20) -> tuple[float, int]:
    fn()
    calls, started = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - started < seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - started), calls


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One loader in this (fresh) process: sampling rate, training rate, peak RSS."""
    import torch

    from evor_edge.shards import ShardedDataset
    from evor_edge.train_step import DeviceBatches, ShardedBatches, TrainStep

    torch.set_num_threads(args.threads)
    from evor_edge.device import resolve_device

    device = resolve_device(args.device)
    on_cuda = device.type == "cuda"
    load_before = _load()
    dataset = ShardedDataset(args.dir)
    shards = None if args.loader == "memmap-all" else args.ram_shards
    opened = time.perf_counter()
    reader = dataset.reader(50, shards=shards)
    result: dict[str, Any] = {"loader": args.loader, "transitions": reader.size, "shards": len(reader.shards),
                              "batch_size": args.batch_size, "device": str(device)}
    if args.loader == "ram":
        arrays = reader.to_arrays()
        reader.release()
        reader.close()
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        result["load_seconds"] = round(time.perf_counter() - opened, 1)
        result["ram_bytes"] = int(sum(v.nbytes for v in arrays.values()))

        def make(prefetch: int) -> Any:
            return DeviceBatches(tensors, device, args.batch_size,
                                 generator=None if on_cuda else torch.Generator().manual_seed(0))
    else:
        result["open_seconds"] = round(time.perf_counter() - opened, 2)

        def make(prefetch: int) -> Any:
            return ShardedBatches(reader, device, args.batch_size, seed=0, prefetch=prefetch)

    for prefetch in (0, 2) if args.loader != "ram" else (0,):
        batches = make(prefetch)
        rate, calls = _rate(batches.sample, args.sample_seconds)
        result[f"sample_batches_per_s_prefetch{prefetch}"] = round(rate, 1)
        result[f"sample_calls_prefetch{prefetch}"] = calls
        if hasattr(batches, "close"):
            batches.close()
    batches = make(2)
    trainer = TrainStep(_agent(device), batches, "eager",
                        noise_generator=None if on_cuda else torch.Generator().manual_seed(1))

    def step() -> None:
        trainer.step()
        if on_cuda:
            torch.cuda.synchronize(device)

    for _ in range(3):
        step()
    rate, calls = _rate(step, args.train_seconds, min_calls=10)
    result["train_steps_per_s"] = round(rate, 2)
    result["train_steps"] = calls
    if hasattr(batches, "close"):
        batches.close()
    result.update({f"{k.lower()}_bytes": v for k, v in _status().items()})
    result["load_before"], result["load_after"] = load_before, _load()
    return result


def _child(args: argparse.Namespace, loader: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--measure", loader, "--dir", args.dir, "--ram-shards", str(args.ram_shards),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device", args.device,
           "--sample-seconds", str(args.sample_seconds), "--train-seconds", str(args.train_seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return {"loader": loader, "error": proc.stderr.strip().splitlines()[-1][:500] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- ddp
def ddp(args: argparse.Namespace, nproc: int) -> dict[str, Any]:
    import tempfile

    import torch

    from evor_edge.config import preset_config
    from evor_edge.distributed import launch_train

    on_gpu = torch.cuda.is_available()
    steps = args.ddp_steps
    cfg = preset_config(args.ddp_preset, steps=steps, batch_size=256 * nproc, n_step=50 if args.ddp_preset == "small"
                        else 1, log_every=max(1, steps // 2), checkpoint_every=10 * steps, keep_checkpoints=1)
    load_before = _load()
    with tempfile.TemporaryDirectory(dir=Path(args.dir).parent) as tmp:
        summary = launch_train(nproc, None, args.dir, cfg, Path(tmp) / "run", progress=False,
                               device="auto", step_mode="eager", threads=None if on_gpu else 1, prefetch=2)
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])  # steps/s over the second half of the run (the first half warms up)
    return {"nproc": nproc, "device": summary["device"], "preset": args.ddp_preset, "per_rank_batch": 256,
            "global_batch": summary["global_batch"], "steps": steps, "steps_per_s": last["steps_per_s"],
            "samples_per_s": round(last["steps_per_s"] * summary["global_batch"], 1),
            "load_before": load_before, "load_after": _load()}


def _ddp_child(args: argparse.Namespace, nproc: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--ddp-measure", str(nproc), "--dir", args.dir, "--ddp-steps",
           str(args.ddp_steps), "--ddp-preset", args.ddp_preset]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return {"nproc": nproc, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:500]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- main
def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return round(statistics.median(values), 2) if values else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from evor_edge.io import atomic_write_json

    out = Path(args.out) if args.out else None
    report: dict[str, Any] = {"benchmark": "data_scale", "cpu_count": os.cpu_count(), "torch": torch.__version__,
                              "load_start": _load(), "dims": {"obs": OBS_DIM, "act": ACT_DIM}}

    def save() -> None:
        if out:
            atomic_write_json(out, report)

    dataset = Path(args.dir)
    if not (dataset / "dataset.json").is_file():
        print(f"building {args.transitions} transitions in {dataset} ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--build-only", "--dir", args.dir, "--transitions",
                               str(args.transitions)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"build failed: {proc.stderr.strip().splitlines()[-1]}")
        report["build"] = json.loads(proc.stdout.strip().splitlines()[-1])
        save()
    header = json.loads((dataset / "dataset.json").read_text())
    report["dataset"] = {"path": str(dataset), "transitions": header["splits"]["train"]["transitions"],
                         "shards": len(header["splits"]["train"]["shards"]),
                         "bytes_on_disk": sum(p.stat().st_size for p in dataset.rglob("*") if p.is_file())}
    rows: list[dict[str, Any]] = []
    report["measurements"] = rows
    if not args.skip_loaders:
        for round_index in range(args.rounds):
            for loader in ("ram", "memmap", "memmap-all"):
                row = _child(args, loader)
                row["round"] = round_index
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                save()
        summary: dict[str, Any] = {}
        for loader in ("ram", "memmap", "memmap-all"):
            mine = [r for r in rows if r.get("loader") == loader and "error" not in r]
            summary[loader] = {k: _median(mine, k) for k in (
                "sample_batches_per_s_prefetch0", "sample_batches_per_s_prefetch2", "train_steps_per_s")}
            summary[loader]["peak_rss_bytes_max"] = max((r["vmhwm_bytes"] for r in mine), default=None)
            summary[loader]["transitions"] = mine[0]["transitions"] if mine else None
        ram = summary["ram"]
        for loader in ("memmap", "memmap-all"):
            entry = summary[loader]
            for key in ("sample_batches_per_s_prefetch0", "sample_batches_per_s_prefetch2", "train_steps_per_s"):
                base = ram["train_steps_per_s"] if key == "train_steps_per_s" else ram["sample_batches_per_s_prefetch0"]
                if entry[key] and base:
                    entry[f"{key}_over_ram"] = round(entry[key] / base, 3)
        report["summary"] = summary
        save()
    if args.nproc != 0:
        import torch as _torch

        nproc = args.nproc or (_torch.cuda.device_count() if _torch.cuda.is_available() else 2)
        ddp_rows = []
        for round_index in range(args.ddp_rounds):
            for k in (1, nproc):
                row = _ddp_child(args, k)
                row["round"] = round_index
                ddp_rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        one = _median([r for r in ddp_rows if r.get("nproc") == 1], "samples_per_s")
        many = _median([r for r in ddp_rows if r.get("nproc") == nproc], "samples_per_s")
        report["ddp"] = {"rows": ddp_rows, "nproc": nproc, "samples_per_s_1": one, f"samples_per_s_{nproc}": many,
                         "scaling_efficiency": round(many / (nproc * one), 3) if one and many else None,
                         "note": "CPU: gloo, 1 torch thread per process, on a shared machine (see loads)"
                         if not _torch.cuda.is_available() else "GPU: nccl, one GPU per rank"}
        save()
    report["load_end"] = _load()
    save()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="Sharded dataset directory (built there when absent).")
    parser.add_argument("--transitions", type=int, default=50_000_000)
    parser.add_argument("--ram-shards", type=int, default=5, help="Shards loaded by the in-RAM baseline.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="Loader comparison: cpu, cuda or auto (eager steps there).")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--train-seconds", type=float, default=15.0)
    parser.add_argument("--nproc", type=int, default=None, help="DDP processes (0 skips; default GPUs or 2).")
    parser.add_argument("--ddp-steps", type=int, default=200)
    parser.add_argument("--ddp-rounds", type=int, default=2)
    parser.add_argument("--ddp-preset", default="small", choices=["small", "paper"])
    parser.add_argument("--skip-loaders", action="store_true")
    parser.add_argument("--out", help="JSON report path (rewritten after every measurement).")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--ddp-measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        print(json.dumps(build(args)))
    elif args.measure:
        args.loader = args.measure
        print(json.dumps(measure(args)))
    elif args.ddp_measure:
        print(json.dumps(ddp(args, args.ddp_measure)))
    else:
        print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
