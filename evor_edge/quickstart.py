"""`evor-edge quickstart`: the main job end to end on a small pointmaze default.

dataset (generate) -> train (small preset) -> export -> bench at 50 Hz with --fit -> closed-loop eval
through the torch-free runtime. Each stage is skipped when its output already exists, so a re-run after
an interruption continues where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

TASK = "pointmaze-medium-navigate-singletask-task1-v0"
DATASET = "pointmaze-medium-navigate-v0"


def _stage(title: str) -> None:
    click.echo(click.style(f"==> {title}", bold=True), err=True)


def run_quickstart(out: Path, episodes: int = 100, steps: int = 20_000, eval_episodes: int = 20,
                   hz: float = 50.0) -> dict[str, Any]:
    from evor_edge.bench_command import bench_engine
    from evor_edge.checkpoint import CheckpointError, load_checkpoint
    from evor_edge.config import preset_config
    from evor_edge.datagen import generate_dataset
    from evor_edge.evaluation import evaluate
    from evor_edge.export import export_engine
    from evor_edge.runtime import EvorPolicy
    from evor_edge.train import train

    out.mkdir(parents=True, exist_ok=True)
    dataset_path = out / "data" / f"{DATASET}.npz"
    run_dir = out / "run"
    engine_dir = out / "engine"
    report: dict[str, Any] = {"task": TASK}

    _stage(f"1/5 dataset: {episodes} episodes of {DATASET} (OGBench recipe, generated locally)")
    if dataset_path.exists() and dataset_path.with_name(dataset_path.stem + "-val.npz").exists():
        click.echo(f"    reusing {dataset_path}", err=True)
    else:
        dataset_path.parent.mkdir(parents=True, exist_ok=True)
        report["dataset"] = generate_dataset(DATASET, dataset_path, episodes=episodes, seed=0,
                                             expert_eval_episodes=0)

    _stage(f"2/5 train: EVOR, small preset, {steps} steps")
    config = preset_config("small", agent="evor", steps=steps)
    try:
        done = load_checkpoint(run_dir).step >= steps
        resume = True
    except CheckpointError:
        done, resume = False, False
    if done:
        click.echo(f"    reusing {run_dir} (already at {steps} steps)", err=True)
    else:
        report["train"] = train(TASK, dataset_path, config, run_dir, resume=resume)

    _stage("3/5 export: one ONNX engine, Euler loops unrolled")
    if (engine_dir / "manifest.json").exists():
        click.echo(f"    reusing {engine_dir}", err=True)
    else:
        report["export"] = export_engine(run_dir, engine_dir)

    _stage(f"4/5 bench: {hz:g} Hz, fitting (N_pi, N) to the deadline")
    try:
        bench = bench_engine(engine_dir, hz=hz, ticks=300, fit=True, plot_path=str(out / "latency.png"))
    except ValueError as exc:  # nothing fits (a loaded or slow machine): bench the smallest useful setting
        click.echo(f"    {exc}; benching N_pi=8 N=8 instead", err=True)
        bench = bench_engine(engine_dir, hz=hz, ticks=300, num_candidates=8, num_rtg=8,
                             plot_path=str(out / "latency.png"))
        bench["fit"] = {"num_candidates": 8, "num_rtg": 8, "deadline_met": False, "reason": str(exc)}
    report["bench"] = bench
    (out / "bench.json").write_text(json.dumps(bench, indent=2))

    _stage(f"5/5 eval: {eval_episodes} closed-loop episodes through the runtime (N_pi/N from the fit)")
    fit = bench.get("fit") or {}
    policy = EvorPolicy.load(engine_dir, num_candidates=fit.get("num_candidates"), num_rtg=fit.get("num_rtg"))
    result = evaluate(policy, TASK, episodes=eval_episodes, seed=0)
    report["eval"] = result
    (out / "eval.json").write_text(json.dumps(result, indent=2))

    lat = bench.get("latency_ms", {})
    report["summary"] = (
        f"{100 * result['success_rate']:.0f}% success on {TASK} ({eval_episodes} episodes); "
        f"p99 {lat.get('p99_ms', float('nan')):.2f} ms per tick at N_pi={bench.get('num_candidates')} "
        f"N={bench.get('num_rtg')} ({bench.get('deadline_misses')} deadline misses at {hz:g} Hz)"
    )
    report["where"] = {
        "dataset": str(dataset_path),
        "run": str(run_dir),
        "metrics": str(run_dir / "metrics.jsonl"),
        "engine": str(engine_dir),
        "bench": str(out / "bench.json"),
        "latency plot": str(out / "latency.png"),
        "eval": str(out / "eval.json"),
    }
    (out / "quickstart.json").write_text(json.dumps(report, indent=2, default=str))
    return report
