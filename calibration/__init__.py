"""FP16 and INT8 (QDQ, explicit quantisation) variants of an FP32 engine, with a parity report.

Public API::

    from evor_edge.calibration import calibrate_engine, CalibrationError
    report = calibrate_engine("engines/pm", "data/pm.npz", "int8", "engines/pm-int8", samples=64)

The output directory is a complete ENGINE_DIR (engine.onnx, manifest.json with ``precision`` and a
fresh ``engine_sha256``, build_trt.sh with the matching trtexec flags) that ``EvorPolicy.load`` runs
unchanged, plus parity.json / parity.md (selection agreement, Q* and action errors on held-out dataset
observations with identical noise, per-tick latency of both engines). See `calibration.calibrate`,
`calibration.int8`, `calibration.fp16`, `calibration.data` and `calibration.parity`.

Only the MLP bodies run in reduced precision; observation normalisation, the first layers, the Euler
updates, LayerNorm (INT8 always, FP16 by default), the action clip and the return un-scaling stay float32
(`calibration.graph.state_precision_violations` checks the Euler part on every graph written).
"""

from __future__ import annotations

from .calibrate import PARITY_JSON, PARITY_MD, PRECISIONS, calibrate_engine
from .data import MIN_SAMPLES, MIN_TRAJECTORIES, split_observations, stratified_indices, trajectory_bounds
from .errors import CalibrationError

__all__ = [
    "MIN_SAMPLES",
    "MIN_TRAJECTORIES",
    "PARITY_JSON",
    "PARITY_MD",
    "PRECISIONS",
    "CalibrationError",
    "calibrate_engine",
    "split_observations",
    "stratified_indices",
    "trajectory_bounds",
]
