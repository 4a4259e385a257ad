"""Closed-loop evaluation: vectorised bookkeeping, engine and checkpoint sources, sweeps, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from engine_fixtures import write_engine

from evor_edge.cli import main
from evor_edge.evaluation import evaluate
from evor_edge.sweep import parse_sweep

TASK = "pointmaze-medium-navigate-singletask-task1-v0"  # obs (x, y), action (dx, dy); start far from goal


class StandStill:
    """Zero actions: the point never leaves task 1's start cell, so no episode can succeed."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def act_batch(self, obs: np.ndarray) -> np.ndarray:
        self.batches.append(len(obs))
        return np.zeros((len(obs), 2), dtype=np.float32)


@pytest.mark.parametrize(("episodes", "parallel", "calls"), [(3, 3, 200), (3, 1, 600), (5, 2, 600)])
def test_one_policy_call_per_tick_for_all_environments(episodes: int, parallel: int, calls: int) -> None:
    policy = StandStill()
    result = evaluate(policy, TASK, episodes=episodes, seed=7, parallel=parallel, progress=False, max_steps=200)
    assert result["success_rate"] == 0.0 and result["successes"] == [0] * episodes
    assert result["seeds"] == [7 + i for i in range(episodes)]
    assert result["mean_episode_length"] == 200.0
    assert result["policy_calls"] == calls == len(policy.batches)  # waves of `parallel` envs, 200 ticks each
    assert max(policy.batches) == parallel


def test_parse_sweep_checks_every_value() -> None:
    assert parse_sweep("num_candidates=1,2,32") == ("num_candidates", [1, 2, 32])
    assert parse_sweep("tau-q=0,0.01") == ("tau_q", [0.0, 0.01])
    assert parse_sweep("rtg_top_k=4,16") == ("rtg_top_k", [4, 16])
    for bad, match in [("num_candidates=1,0", "out of range"), ("tau_r=0", "out of range"),
                       ("num_rtg=2,x", "not an integer"), ("temperature=1", "expected KNOB"),
                       ("num_candidates", "expected KNOB")]:
        with pytest.raises(ValueError, match=match):
            parse_sweep(bad)


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_eval_engine_json_and_sweep(tmp_path: Path) -> None:
    engine, _ = write_engine(tmp_path / "engine", obs_dim=2, act_dim=2)
    result = _run("eval", str(engine), "--env", TASK, "--episodes", "2", "--seed", "3", "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["source_kind"] == "engine" and report["episodes"] == 2 and report["seeds"] == [3, 4]
    assert 1 <= report["policy_calls"] <= 1000  # both episodes in one wave
    plot = tmp_path / "sweep.png"
    result = _run("eval", str(engine), "--env", TASK, "--episodes", "1", "--sweep", "rtg_top_k=1,2",
                  "--num-rtg", "4", "--plot", str(plot), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert [r["settings"]["rtg_top_k"] for r in report["results"]] == [1, 2]
    assert plot.stat().st_size > 0


@pytest.mark.parametrize(("args", "match"), [
    (["--sweep", "num_candidates=0"], "out of range"),
    (["--plot", "x.png"], "--plot needs --sweep"),
])
def test_eval_bad_input_is_one_line_before_any_episode(tmp_path: Path, args: list[str], match: str) -> None:
    engine, _ = write_engine(tmp_path / "engine", obs_dim=2, act_dim=2)
    result = _run("eval", str(engine), "--env", TASK, *args)
    assert result.exit_code != 0 and match in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_eval_refuses_mismatched_dims_and_unknown_tasks(tmp_path: Path) -> None:
    engine, _ = write_engine(tmp_path / "engine", obs_dim=4, act_dim=2)
    result = _run("eval", str(engine), "--env", TASK)
    assert result.exit_code != 0 and "expects obs/act dims (4, 2)" in result.output
    result = _run("eval", str(engine), "--env", "pointmaze-medium-navigate-singletask-task9-v0")
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_engine_only_options_refused_for_checkpoints(tmp_path: Path) -> None:
    from agent_fixtures import random_agent

    from evor_edge.checkpoint import save_checkpoint
    from evor_edge.normalization import ReturnScaler

    agent = random_agent("evor", 2, 2, hidden_dims=(16, 16), euler_steps=2, obs_mean=(0.0, 0.0), obs_std=(1.0, 1.0),
                         returns=ReturnScaler(center=-50.0, half_width=50.0))
    ckpt = save_checkpoint(tmp_path / "run", agent, 1)
    for args in (["--rtg-top-k", "2"], ["--crn"], ["--sweep", "rtg_top_k=1,2"]):
        result = _run("eval", str(ckpt), "--env", TASK, "--episodes", "1", *args)
        assert result.exit_code != 0 and "run-time engine options" in result.output, result.output
