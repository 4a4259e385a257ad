"""The campaign's collectors (scripts/collect_results.py, scripts/collect_sweep.py) on hand-made result files
with known answers: the numbers in docs/results.md come from these functions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_run(results: Path, agent: str, task: int, seed: int, success: float, variant: str | None = None) -> None:
    env = f"pointmaze-medium-navigate-singletask-task{task}-v0"
    name = f"{agent}_{env[:-3]}_s{seed}"
    run = results.parent / "runs" / name
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({"task": env, "config": {
        "agent": agent, "preset": "small", "seed": seed, "n_step": 50}}))
    (results / f"train_{name}.json").write_text(json.dumps({"run": str(run), "steps": 20000, "seconds": 100.0}))
    file = f"vareval_{variant}__{name}.json" if variant else f"eval_{name}.json"
    (results / file).write_text(json.dumps({"task": env, "episodes": 20, "success_rate": success, "seconds": 10.0}))


def test_collect_results_pairs_agents_only_on_runs_both_have(tmp_path: Path) -> None:
    collect_results = _load("collect_results")
    results = tmp_path / "results"
    results.mkdir()
    _write_run(results, "evor", 1, 0, 1.0)
    _write_run(results, "evor", 4, 0, 0.0)
    _write_run(results, "evor", 4, 1, 1.0)  # QC-1 has no seed 1: left out of the paired mean
    _write_run(results, "qc", 1, 0, 0.5)
    _write_run(results, "qc", 4, 0, 0.2)
    _write_run(results, "evor", 4, 0, 0.8, variant="tau_r_inf")  # a variant never enters the paired mean
    table = collect_results.collect(results)
    assert len(table["runs"]) == 6
    (pair,) = table["paired_env_means"]
    assert pair["pairs"] == 2
    assert pair["evor"] == pytest.approx(0.5) and pair["qc"] == pytest.approx(0.35)
    task4 = [r for r in table["summary"] if r["task"] == 4 and r["agent"] == "evor" and r["selection"] == "default"]
    assert task4[0]["seeds"] == 2 and task4[0]["mean"] == pytest.approx(0.5) and task4[0]["std"] == pytest.approx(0.5)
    text = collect_results.markdown(table)
    assert "| 50 +- 50 (2 seeds) |" in text and "mean over the 2 (task, seed) runs both agents have | 50 |" in text
    per_seed = collect_results.per_seed_markdown(table)
    assert "| pointmaze-medium-navigate | EVOR | 100 / 0 (mean 50) | - / 100 |" in per_seed
    assert "| pointmaze-medium-navigate | QC-1 | 50 / 20 (mean 35) |  |" in per_seed


def test_collect_sweep_adds_the_campaign_point_at_the_exported_n_pi(tmp_path: Path) -> None:
    collect_sweep = _load("collect_sweep")
    results = tmp_path / "results"
    (results / "sweep").mkdir(parents=True)
    run = "evor_pointmaze-medium-navigate-singletask-task4_s1"
    engine = tmp_path / "engines" / run
    engine.mkdir(parents=True)
    (engine / "manifest.json").write_text(json.dumps({"default_num_candidates": 32}))

    def evaluation(success: float, length: float) -> dict:
        return {"task": "t", "episodes": 20, "success_rate": success, "mean_episode_length": length, "seconds": 1.0}

    for k, success in [(1, 0.0), (8, 0.5), (64, 1.0)]:
        (results / "sweep" / f"num_candidates={k}__{run}.json").write_text(json.dumps(evaluation(success, 900)))
    (results / "sweep" / f"num_candidates=2__{run}x.json").write_text(json.dumps(evaluation(0.9, 1)))  # other run
    (results / f"eval_{run}.json").write_text(json.dumps({**evaluation(0.95, 400), "source": str(engine)}))
    points = collect_sweep.collect(results, run)
    assert [p["value"] for p in points] == [1, 8, 32, 64]
    assert [p["success_rate"] for p in points] == [0.0, 0.5, 0.95, 1.0]
    assert "| success (20 ep) | 0 % | 50 % | 95 % | 100 % |" in collect_sweep.markdown(points)
