"""One trainer per run directory (evor_edge.run_lock): a second `train` into a directory in use is refused with
one line and changes nothing; a holder that dies (even by SIGKILL) leaves no lock behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from toy_mdp import write_toy_training_file

from evor_edge.checkpoint import load_checkpoint
from evor_edge.cli import main
from evor_edge.run_lock import LOCK_NAME, run_directory_lock


def _train(data: Path, run: Path, *extra: str):
    return CliRunner().invoke(main, ["train", "--dataset", str(data), "--out", str(run), "--steps", "4",
                                     "--batch-size", "16", "--device", "cpu", "--threads", "1",
                                     "--set", "hidden_dims=16,16", "--set", "euler_steps=2", "--json",
                                     *extra])


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != LOCK_NAME}


def test_a_second_trainer_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    data = write_toy_training_file(tmp_path / "toy.npz", rows=200, obs_dim=3)
    run = tmp_path / "run"
    assert _train(data, run).exit_code == 0
    before = _tree(run)
    with run_directory_lock(run):  # another process's lock: flock locks conflict across open() calls
        result = _train(data, run, "--resume")
        assert result.exit_code == 2, result.output
        assert "being trained by another process (pid" in result.output and "Traceback" not in result.output
        fresh = _train(data, run)  # without --resume: the lock is reported, not the non-empty directory
        assert fresh.exit_code == 2 and "being trained by another process" in fresh.output
    assert _tree(run) == before
    resumed = _train(data, run, "--resume", "--steps", "6")  # released: the stale .lock file does not block
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(run).step == 6


def test_a_new_run_may_start_in_a_directory_holding_only_a_stale_lock(tmp_path: Path) -> None:
    data = write_toy_training_file(tmp_path / "toy.npz", rows=200, obs_dim=3)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text("pid 1 on elsewhere\n")
    result = _train(data, run)
    assert result.exit_code == 0, result.output


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = ("import os, signal; from pathlib import Path; from evor_edge.run_lock import run_directory_lock\n"
            f"with run_directory_lock(Path({str(run)!r})):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -9
    assert "pid" in (run / LOCK_NAME).read_text()  # the file stays, the lock does not
    with run_directory_lock(run):
        pass


def test_a_refused_run_removes_the_directory_it_made_for_the_lock(tmp_path: Path) -> None:
    result = _train(tmp_path / "missing.npz", tmp_path / "run")
    assert result.exit_code == 2
    assert not (tmp_path / "run").exists()
