"""Checkpoint save / load / resume round-trips and clear errors for damaged checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from toy_mdp import make_transitions, write_toy_training_file

from evor_edge.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from evor_edge.config import preset_config
from evor_edge.train import RunError, train


class _ToyEnv:
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)


def _toy_dataset() -> tuple[_ToyEnv, dict[str, np.ndarray], dict[str, np.ndarray]]:
    data = make_transitions(2000, np.random.default_rng(0))
    return _ToyEnv(), data, data


def _config(agent: str, steps: int):
    return preset_config("small", agent=agent, steps=steps, hidden_dims=(32, 32), batch_size=32,
                         checkpoint_every=10, log_every=10, qc_target_candidates=4)


def _train(tmp: Path, agent: str, steps: int, resume: bool = False) -> dict:
    return train("toy-task", "toy.npz", _config(agent, steps), tmp, resume=resume, progress=False,
                 dataset=_toy_dataset())


@pytest.mark.parametrize("agent", ["evor", "qc"])
def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path, agent: str) -> None:
    _train(tmp_path / "straight", agent, 40)
    _train(tmp_path / "resumed", agent, 20)
    summary = _train(tmp_path / "resumed", agent, 40, resume=True)
    assert summary["steps"] == 40 and summary["steps_this_run"] == 20
    a = load_checkpoint(tmp_path / "straight").agent.state_dict()
    b = load_checkpoint(tmp_path / "resumed").agent.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20, 30, 40]


def test_load_round_trip_restores_weights_optimizer_and_spec(tmp_path: Path) -> None:
    _train(tmp_path / "run", "evor", 20)
    loaded = load_checkpoint(tmp_path / "run", with_optimizer=True)
    assert loaded.step == 20
    assert loaded.agent.spec.act_dim == 1 and loaded.agent.spec.obs_dim == 3
    assert len(loaded.agent.critic_opt.state) > 0
    assert resolve_checkpoint(tmp_path / "run").name == "step_0000000020"
    # Only the newest checkpoints are kept (keep_checkpoints = 2).
    assert len(list((tmp_path / "run" / "checkpoints").glob("step_*"))) == 2


def test_truncated_tensors_give_a_clear_error(tmp_path: Path) -> None:
    _train(tmp_path / "run", "evor", 10)
    tensors = resolve_checkpoint(tmp_path / "run") / "model.safetensors"
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or modified"):
        load_checkpoint(tmp_path / "run")


def test_garbage_state_and_missing_paths_give_clear_errors(tmp_path: Path) -> None:
    _train(tmp_path / "run", "qc", 10)
    step_dir = resolve_checkpoint(tmp_path / "run")
    (step_dir / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(step_dir)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "empty")


def test_existing_run_dir_needs_resume_and_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    _train(tmp_path / "run", "evor", 10)
    with pytest.raises(RunError, match="--resume"):
        _train(tmp_path / "run", "evor", 20)
    with pytest.raises(RunError, match="nothing to resume"):
        _train(tmp_path / "fresh", "evor", 20, resume=True)


def test_run_killed_before_its_first_checkpoint_restarts_under_resume(tmp_path: Path) -> None:
    """A run killed before its first checkpoint leaves config.json and a partial metrics.jsonl: plain
    training still refuses the directory, --resume starts it again from step 0 (nothing trained was lost),
    and the result equals a run that was never interrupted."""
    straight = tmp_path / "straight"
    _train(straight, "evor", 20)
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.json").write_text((straight / "config.json").read_text())
    (killed / "metrics.jsonl").write_text(json.dumps({"step": 10, "loss": 1.0}) + "\n")
    with pytest.raises(RunError, match="--resume"):
        _train(killed, "evor", 20)
    _train(killed, "evor", 20, resume=True)
    a = load_checkpoint(straight).agent.state_dict()
    b = load_checkpoint(killed).agent.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # the killed attempt's line is not kept beside the new one
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text("{}")
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="nothing to resume"):  # a directory with other files is never reused
        _train(tmp_path / "foreign", "evor", 20, resume=True)


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path: Path) -> None:
    """`kill` / a scheduler's stop / `timeout` (SIGTERM) saves the current step like Ctrl-C, exit 130, and
    --resume finishes the run. Periodic checkpoints are off, so the checkpoint can only come from the signal."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = write_toy_training_file(tmp_path / "toy.npz", rows=300, obs_dim=3)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "evor_edge.cli", "train", "--dataset", str(data), "--out", str(run), "--steps",
           "1000000", "--batch-size", "16", "--device", "cpu", "--threads", "1", "--checkpoint-every", "1000000",
           "--set", "hidden_dims=16,16", "--set", "euler_steps=2", "--set", "log_every=5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while (not metrics.exists() or not metrics.read_text().strip()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    saved = load_checkpoint(run).step
    assert saved >= 5
    resumed = subprocess.run([*cmd[:cmd.index("--steps") + 1], str(saved + 5), *cmd[cmd.index("--steps") + 2:],
                              "--resume"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(run).step == saved + 5
