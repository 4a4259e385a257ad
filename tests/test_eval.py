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


# ----------------------------------------------------------------------------------------------------- videos
# MuJoCo chooses its OpenGL backend once, when it is imported, so rendering runs in a fresh process.
def _subprocess_eval(engine: Path, *args: str, env_update: dict[str, str | None] | None = None):
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    for key, value in (env_update or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-m", "evor_edge.cli", "eval", str(engine), "--env", TASK, "--threads", "1",
                           *args], capture_output=True, text=True, env=env, timeout=300)


def _renderer_or_skip() -> None:
    import os
    import subprocess
    import sys

    code = ("import gymnasium, ogbench\n"
            "env = gymnasium.make('pointmaze-medium-singletask-task1-v0', render_mode='rgb_array',\n"
            "                     width=16, height=16)\n"
            "env.reset(seed=0)\nassert env.render().shape == (16, 16, 3)\n")
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "MUJOCO_GL": "egl"})
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"no MuJoCo EGL renderer here (.ci/run installs libegl1 + libgl1-mesa-dri): {last}")


@pytest.mark.parametrize("fmt", ["gif", "mp4"])
def test_eval_video_writes_one_file_per_filmed_episode(tmp_path: Path, fmt: str) -> None:
    _renderer_or_skip()
    if fmt == "mp4":
        pytest.importorskip("imageio_ffmpeg", reason="mp4 needs imageio-ffmpeg (optional); GIF is the fallback")
    engine, _ = write_engine(tmp_path / "engine", obs_dim=2, act_dim=2)
    out = tmp_path / "videos"
    result = _subprocess_eval(engine, "--episodes", "3", "--video", str(out), "--video-episodes", "2",
                              "--video-size", "32", "--video-every", "100", "--video-format", fmt, "--json",
                              env_update={"MUJOCO_GL": None})  # the command sets MUJOCO_GL=egl itself
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout[result.stdout.index("{"):])
    files = sorted(out.iterdir())
    assert [Path(v).name for v in report["videos"]] == [f.name for f in files] and report["video_format"] == fmt
    assert [f.name for f in files] == [f"pointmaze-medium-navigate-singletask-task1-v0_ep{i:03d}_seed{i}_failure.{fmt}"
                                       for i in range(2)]  # the fixture never reaches the goal
    if fmt == "gif":
        from PIL import Image

        with Image.open(files[0]) as gif:
            assert gif.size == (32, 32) and gif.n_frames == 1 + 1000 // 100  # the first frame, then every 100th
    else:
        assert files[0].read_bytes()[4:8] == b"ftyp"  # an MP4 container


def test_eval_video_without_a_renderer_is_one_line_before_any_episode(tmp_path: Path) -> None:
    engine, _ = write_engine(tmp_path / "engine", obs_dim=2, act_dim=2)
    # GLFW needs a display: with none, MuJoCo cannot render (EGL / OSMesa are the headless backends).
    result = _subprocess_eval(engine, "--video", str(tmp_path / "v"), "--episodes", "1",
                              env_update={"MUJOCO_GL": "glfw", "DISPLAY": None, "WAYLAND_DISPLAY": None})
    if result.returncode == 0:
        pytest.skip("GLFW rendered here (a display is available)")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: --video: MuJoCo cannot render offscreen here (MUJOCO_GL=glfw")
    assert not (tmp_path / "v").exists() or not any((tmp_path / "v").iterdir())


def test_eval_video_bad_options_are_one_line(tmp_path: Path) -> None:
    engine, _ = write_engine(tmp_path / "engine", obs_dim=2, act_dim=2)
    result = _run("eval", str(engine), "--env", TASK, "--video", str(tmp_path / "v"), "--video-size", "8")
    assert result.exit_code == 2 and "--video-size" in result.output
    engine4, _ = write_engine(tmp_path / "engine4", obs_dim=4, act_dim=2)
    result = _run("eval", str(engine4), "--env", TASK, "--video", str(tmp_path / "v"))
    assert result.exit_code != 0 and "expects obs/act dims (4, 2)" in result.output
