"""`evor-edge export CHECKPOINT --out ENGINE_DIR`: compile a checkpoint into one ONNX engine (evor_edge.export).

The command's options live in `evor_edge.cli`; this module does its work and words the report for people.
Errors follow the CLI's convention (`evor_edge.cli_errors.friendly_errors` on the command).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def run_export(checkpoint: str, out: str, *, euler_steps: int | None, critic_steps: int | None,
               critic_solver: str, prune: str | None, opset: int, overwrite: bool,
               ) -> tuple[dict[str, Any], Callable[[dict[str, Any]], str]]:
    """Export CHECKPOINT to OUT; the report and its one-line human summary."""
    from evor_edge.export import export_engine

    report = export_engine(checkpoint, out, euler_steps=euler_steps, opset=opset, overwrite=overwrite,
                           critic_steps=critic_steps, critic_solver=critic_solver, prune=prune)
    return report, lambda r: f"wrote {out} ({json.dumps({k: r[k] for k in list(r)[:4]})})"
