"""torch -> ONNX engine export: one graph for Algorithm 2 (minus the selection) with Algorithm 3 unrolled.

Public API::

    from evor_edge.export import export_engine, ExportError
    report = export_engine("RUN/checkpoints/step_0000020000", "ENGINE_DIR", euler_steps=None, opset=17)

ENGINE_DIR gets engine.onnx, manifest.json and build_trt.sh (see `evor_edge.export.engine`). The
validation (`validate_engine`), FLOP model (`engine_flops`) and TensorRT recipe (`trtexec_command`) are
torch-free and importable without triggering the torch import that `export_engine` needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import EngineValidationError, ExportError
from .flops import engine_flops, per_tick_coefficients
from .trt import ShapeProfile, build_script, default_profile, precision_flags, trtexec_command
from .validate import FORBIDDEN_OPS, TENSORRT10_ALLOWED_OPS, contract_io, validate_engine

if TYPE_CHECKING:
    from .engine import export_engine
    from .graph import build_engine_module

__all__ = [
    "FORBIDDEN_OPS",
    "TENSORRT10_ALLOWED_OPS",
    "EngineValidationError",
    "ExportError",
    "ShapeProfile",
    "build_engine_module",
    "build_script",
    "contract_io",
    "default_profile",
    "engine_flops",
    "export_engine",
    "per_tick_coefficients",
    "precision_flags",
    "trtexec_command",
    "validate_engine",
]


def __getattr__(name: str) -> Any:
    """Import the torch-backed parts (export_engine, build_engine_module) on first use."""
    if name == "export_engine":
        from .engine import export_engine

        return export_engine
    if name == "build_engine_module":
        from .graph import build_engine_module

        return build_engine_module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
