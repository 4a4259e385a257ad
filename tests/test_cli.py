"""The CLI: --help everywhere, and one clear line + non-zero exit for bad input (never a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from evor_edge.cli import main

TASK = "pointmaze-medium-navigate-singletask-task1-v0"


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("command", [[], ["data", "generate"], ["data", "import"], ["train"], ["eval"],
                                     ["export"], ["bench"], ["quickstart"], ["trt-check"]])
def test_every_command_explains_itself(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 5


def _assert_one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert any(pattern in line for line in lines), result.output


def test_unknown_task_is_one_line(tmp_path: Path) -> None:
    result = run("train", "--env", "pointmaze-huge-navigate-singletask-task1-v0", "--dataset", "x.npz",
                 "--out", str(tmp_path / "run"))
    _assert_one_line_error(result, "error:")
    assert not (tmp_path / "run").exists()


def test_missing_dataset_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    result = run("train", "--env", TASK, "--dataset", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "run"))
    _assert_one_line_error(result, "error:")
    assert not (tmp_path / "run").exists()


def test_unknown_dataset_name_for_generate(tmp_path: Path) -> None:
    result = run("data", "generate", "pointmaze-tiny-navigate-v0", "--out", str(tmp_path / "d.npz"))
    _assert_one_line_error(result, "error:")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_for_generate(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run("data", "generate", "pointmaze-medium-navigate-v0", "--out", str(blocker / "d.npz"),
                 "--episodes", "1")
    _assert_one_line_error(result, "error:")


def test_eval_of_non_checkpoint_is_one_line(tmp_path: Path) -> None:
    result = run("eval", str(tmp_path), "--env", TASK, "--episodes", "1")
    _assert_one_line_error(result, "error:")


def test_bench_of_non_engine_is_one_line(tmp_path: Path) -> None:
    result = run("bench", str(tmp_path), "--hz", "50")
    _assert_one_line_error(result, "error:")


def test_bad_option_values_are_rejected_before_work(tmp_path: Path) -> None:
    result = run("bench", str(tmp_path), "--hz", "0")
    assert result.exit_code == 2 and "Traceback" not in result.output
    result = run("train", "--env", TASK, "--steps", "0", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and not (tmp_path / "r").exists()


def test_set_overrides_are_typed_by_the_config_fields() -> None:
    from evor_edge.train_command import _typed_value, parse_overrides

    assert parse_overrides(("hidden_dims=64, 32", "learning_rate=1e-3", "n_step=3", "qc_q_agg=min")) == {
        "hidden_dims": (64, 32), "learning_rate": 1e-3, "n_step": 3, "qc_q_agg": "min"}
    assert _typed_value(bool, "False") is False and _typed_value(bool, "yes") is True  # bool("False") is True
    for bad, why in (("steps=1.5", "not a valid int"), ("hidden_dims=a,b", "not a valid tuple"),
                     ("extra=1", "FIELD one of"), ("steps", "FIELD one of")):
        with pytest.raises(ValueError, match=why):
            parse_overrides((bad,))
    with pytest.raises(ValueError):
        _typed_value(bool, "maybe")
