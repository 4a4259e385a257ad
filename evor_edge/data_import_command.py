"""`evor-edge data import (TASK --dataset FILE | MINARI_DIR --minari) --out FILE`: a self-contained training file.

The command's options live in `evor_edge.cli`; this module picks the importer (evor_edge.offline_data) and
words the report for people. Errors follow the CLI's convention (`evor_edge.cli_errors.friendly_errors` on
the command): a missing --dataset for an OGBench task is one `error: ...` line, exit 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_import(source: str, out: str, *, dataset_path: str | None, is_minari: bool
               ) -> tuple[dict[str, Any], Callable[[dict[str, Any]], str]]:
    """Import SOURCE (an OGBench task with its raw file, or a Minari directory) into OUT; report + summary."""
    from evor_edge.offline_data import import_minari, import_ogbench

    if is_minari:
        report = import_minari(source, out)
    else:
        if dataset_path is None:
            raise ValueError("OGBench import needs --dataset FILE (the raw .npz of the task's dataset); "
                             "for a Minari directory pass --minari")
        report = import_ogbench(source, dataset_path, out)
    return report, summary


def summary(r: dict[str, Any]) -> str:
    return f"wrote {r['path']} ({r['transitions']} transitions, obs {r['obs_dim']}, act {r['act_dim']})"
