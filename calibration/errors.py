"""Errors of the calibration step (one user-facing line each)."""

from __future__ import annotations


class CalibrationError(ValueError):
    """A calibration that cannot run (bad dataset, engine already quantised, existing output, ...)."""
