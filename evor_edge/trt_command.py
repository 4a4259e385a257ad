"""`evor-edge trt-check ENGINE_DIR [--json]`: TensorRT's own ONNX parser and builder on an engine directory.

Registered in `evor_edge.cli` with ``main.add_command(trt_check_command)``. Self-contained error handling
(the CLI's convention): a user error prints one ``error: ...`` line and exits 2.
"""

from __future__ import annotations

import json
from typing import Any

import click

from evor_edge.cli_errors import friendly_errors


def _summary(result: dict[str, Any]) -> str:
    profile = result["profile"]
    lines = [
        f"{result['engine_dir']}: passed {result['tool']} {result['version']} (ONNX parser + builder, "
        f"{'strongly typed' if result['strongly_typed'] else 'weakly typed'})",
        f"profile (B, N_pi, N): min {tuple(profile['min'])} opt {tuple(profile['opt'])} max {tuple(profile['max'])}",
        f"build {result['build_seconds']:.2f} s, plan {result['plan_bytes'] / 1e6:.1f} MB (not saved), "
        f"{result['num_warnings']} builder warning(s)",
    ]
    lines += [f"  {w}" for w in result["warnings"]]
    lines.append("recorded in manifest.json (extra.tensorrt.check); the plan is not run here")
    return "\n".join(lines)


@click.command("trt-check")
@click.argument("engine_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--tool", type=click.Choice(["auto", "tensorrt", "tensorrt-rtx"]), default=None,
              help="TensorRT flavour (default: $EVOR_EDGE_TRT_CHECK or auto = tensorrt with a GPU, else "
                   "TensorRT-RTX, which builds on a CPU).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@friendly_errors
def trt_check_command(engine_dir: str, tool: str | None, as_json: bool) -> None:
    """Parse ENGINE_DIR/engine.onnx with TensorRT's ONNX parser and build it with the build_trt.sh profile.

    Fails (exit 2) on a parser error, a build failure, or a builder warning that the optimisation profile
    is inconsistent with the engine. The result is recorded in manifest.json. Needs `tensorrt` or the
    TensorRT-RTX wheels (`pip install -e ".[trt]"`); passing is necessary, not sufficient, for TensorRT 10
    on a Jetson (the plan is built for desktop GPUs and never run here).
    """
    from evor_edge.export.trt_check import check_engine_dir

    result = check_engine_dir(engine_dir, tool=tool)
    click.echo(json.dumps(result, indent=2) if as_json else _summary(result))
