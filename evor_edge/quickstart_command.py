"""`evor-edge quickstart [--out DIR]`: the whole job on a small default (evor_edge.quickstart.run_quickstart).

The command's options live in `evor_edge.cli`; this module runs the stages and words the final report for
people. Errors follow the CLI's convention (`evor_edge.cli_errors.friendly_errors` on the command).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_quickstart(out: str, *, episodes: int, steps: int, eval_episodes: int
                   ) -> tuple[dict[str, Any], Callable[[dict[str, Any]], str]]:
    """Run (or continue) the quickstart under OUT; the report and its human summary."""
    from evor_edge import quickstart

    report = quickstart.run_quickstart(Path(out), episodes=episodes, steps=steps, eval_episodes=eval_episodes)
    return report, summary


def summary(r: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in r["where"].items()) + f"\nsuccess: {r['summary']}"
