"""examples/control_loop.py: a short real-time run against an OGBench pointmaze (skipped without ogbench)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from engine_fixtures import write_engine

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "control_loop.py"


@pytest.mark.skipif(importlib.util.find_spec("ogbench") is None, reason="ogbench not installed")
def test_control_loop_example(tmp_path: Path) -> None:
    engine_dir, _ = write_engine(tmp_path / "engine", obs_dim=2, act_dim=2)  # pointmaze: obs 2, act 2
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), str(engine_dir), "--task",
         "pointmaze-medium-navigate-singletask-task1-v0", "--max-ticks", "25"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["ticks"] == 25
    assert 0 <= summary["deadline_misses"] <= 25
    assert summary["controller"]["backend"] == "onnxruntime"
    assert len(summary["episodes"]) == 1


def test_control_loop_rejects_mismatched_engine(tmp_path: Path) -> None:
    if importlib.util.find_spec("ogbench") is None:
        pytest.skip("ogbench not installed")
    engine_dir, _ = write_engine(tmp_path / "engine", obs_dim=5, act_dim=2)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), str(engine_dir), "--task",
         "pointmaze-medium-navigate-singletask-task1-v0", "--max-ticks", "5"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "obs_dim" in proc.stderr
