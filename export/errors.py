"""Errors of the exporter (torch-free so validation and the TensorRT recipe import without torch)."""

from __future__ import annotations


class ExportError(ValueError):
    """The engine cannot be exported; the message is one user-facing line."""


class EngineValidationError(ExportError):
    """An ONNX graph that breaks the engine contract (opset, op set, I/O names or shapes)."""
