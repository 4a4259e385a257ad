"""INT8 engines: static QDQ quantisation of the MLP bodies' big matmuls, calibrated on dataset states.

What gets quantised: the hidden -> hidden dense layers of every network body (`graph.dense_layers` role
"hidden"; optionally the heads). Weights are per-output-channel symmetric INT8; activations (the inputs of
those layers) are per-tensor INT8 (symmetric, zero point 0: what TensorRT's explicit quantisation accepts)
or UINT8 (asymmetric; onnxruntime CPU only). Everything else stays float32: observation normalisation,
the first layers (they read the float32 Euler state and observation), GELU, LayerNorm, the bias adds,
the Euler updates, the action clip and the return un-scaling. Q/DQ pairs are inserted only in front of
the quantised layers, so no QuantizeLinear ever sits on the Euler state.

The exporter writes each hidden layer as ``Gemm`` with its bias; the bias is split off into a float32
``Add`` first (`graph.split_gemm_bias`). onnxruntime's CPU provider then fuses DQ -> Gemm into an integer
QGemm with float output (and the bias add into BiasGelu), and no INT32 bias DequantizeLinear appears, which
TensorRT's parser rejects. Measured at the paper config (1 thread, loaded 2-core machine): QGemm without
bias 1.87x faster than FP32; QGemm with INT32 bias 1.96x (not TensorRT-parsable); DQ -> MatMul -> Add
0.74x (onnxruntime leaves it in float and dequantises the weights every run); MatMul with a quantised
output (QLinearMatMul) 1.77x, with an extra rounding of every pre-activation. Hidden layers that are
MatMul + Add (the QC engine's Q heads) are quantised as MatMul (valid QDQ; onnxruntime keeps them float).

Activation scales: the loops are unrolled, so by default the input of each layer at each Euler step is
calibrated on its own ("per-step scales"; the flow's activations drift with t). With
``shared_scales=True`` the ranges of one layer are merged over the M steps (min of mins, max of maxes),
i.e. one scale per layer as a rolled loop would have.

Where the time goes (pointmaze-medium paper engine, N_pi 32, N 50, 1 thread, onnxruntime profile on the
shared 2-core machine under load): FP32 219 ms = Gemm 172 + GELU 22 + LayerNorm 19 + rest; INT8 117 ms =
QGemm 50 + BiasGelu 27 + LayerNorm 19 + QuantizeLinear 6.5 + rest. The matmuls get 3.3x faster; the
float32 GELU / LayerNorm that stay float bound the end-to-end speed-up near 1.9x on this CPU.

Calibration runs onnxruntime's calibrators (MinMax / Percentile / Entropy) restricted to exactly the
quantised layers' inputs, fed by `data.EngineCalibrationReader`; the ranges then go to
``quantize_static`` through its calibration cache (``calibration_cache_path``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static
from onnxruntime.quantization.calibrate import (
    CalibraterBase,
    EntropyCalibrater,
    MinMaxCalibrater,
    PercentileCalibrater,
    TensorData,
    TensorsData,
    save_tensors_data,
)
from tqdm import tqdm

from evor_edge.runtime.sessions import ort_session

from .data import EngineCalibrationReader
from .errors import CalibrationError
from .graph import DenseLayer, dense_layers, layer_groups, split_gemm_bias

ACTIVATION_TYPES = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
OP_TYPES = ("Gemm", "MatMul")
CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}


def layer_labels(layers: Sequence[DenseLayer]) -> dict[str, str]:
    """Weight name -> readable label per layer ("actor.h0", "critic.h2", "critic.head", "q0.h1", ...)."""
    labels: dict[str, str] = {}
    hidden_count: dict[str, int] = {}
    for layer in layers:
        if layer.weight in labels or layer.role == "input":
            continue
        if layer.role == "head":
            labels[layer.weight] = f"{layer.network}.head"
        else:
            index = hidden_count.get(layer.network, 0)
            hidden_count[layer.network] = index + 1
            labels[layer.weight] = f"{layer.network}.h{index}"
    return labels


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence onnxruntime.quantization's root-logger advice ("consider pre-processing") for one call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def select_targets(
    layers: Sequence[DenseLayer], quantize_heads: bool = False, keep_fp32: Sequence[str] = (),
) -> tuple[list[DenseLayer], dict[str, str]]:
    """The dense nodes to quantise and the label of every candidate layer.

    keep_fp32: layer labels ("critic.h0") or network names ("critic") left in float32.
    """
    labels = layer_labels(layers)
    known = set(labels.values()) | {layer.network for layer in layers if layer.network}
    unknown = sorted(set(keep_fp32) - known)
    if unknown:
        raise CalibrationError(f"unknown layer(s) {unknown} to keep in fp32; this engine has {sorted(known)}")
    targets = []
    for layer in layers:
        if layer.role == "input" or (layer.role == "head" and not quantize_heads):
            continue
        label = labels[layer.weight]
        if label in keep_fp32 or layer.network in keep_fp32:
            continue
        targets.append(layer)
    if not targets:
        raise CalibrationError("nothing to quantise: the engine has no hidden dense layers left after exclusions")
    return targets, labels


def _make_calibrator(model_path: Path, augmented: Path, method: CalibrationMethod, tensors: set[str],
                     activation_symmetric: bool) -> CalibraterBase:
    """An onnxruntime calibrator that observes exactly `tensors`."""
    calibrator: CalibraterBase
    ops, path, aug = list(OP_TYPES), str(model_path), str(augmented)
    if method == CalibrationMethod.MinMax:
        # no max_intermediate_outputs: ranges merge on every collect_data call (one per chunk of feeds)
        calibrator = MinMaxCalibrater(path, ops, aug)
    elif method == CalibrationMethod.Percentile:
        calibrator = PercentileCalibrater(path, ops, aug, symmetric=activation_symmetric, num_bins=2048,
                                          percentile=99.999)
    elif method == CalibrationMethod.Entropy:
        calibrator = EntropyCalibrater(path, ops, aug, symmetric=activation_symmetric, num_bins=512,
                                       num_quantized_bins=128)
    else:
        raise CalibrationError(f"unsupported calibration method {method}")
    original = calibrator.select_tensors_to_calibrate

    def only_targets(model: onnx.ModelProto) -> tuple[set[str], dict]:
        found, value_infos = original(model)
        missing = tensors - found
        if missing:
            raise CalibrationError(f"calibration cannot observe {sorted(missing)[:3]} (no type information)")
        return set(tensors), value_infos

    calibrator.select_tensors_to_calibrate = only_targets  # type: ignore[method-assign]
    calibrator.augment_graph()
    calibrator.infer_session = ort_session(augmented, threads=1, optimize=False)  # observe tensors as written
    return calibrator


def share_ranges(ranges: TensorsData, groups: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Merge the ranges of each group's tensors (in place): min of lowest, max of highest.

    Returns {group: {"lowest", "highest", "widest_step_over_narrowest"}} for the report.
    """
    summary: dict[str, dict[str, float]] = {}
    for group, tensors in groups.items():
        lows = [float(np.min(ranges[t].range_value[0])) for t in tensors]
        highs = [float(np.max(ranges[t].range_value[1])) for t in tensors]
        low, high = min(lows), max(highs)
        spans = [max(abs(lo), abs(hi)) for lo, hi in zip(lows, highs, strict=True)]
        merged = {"lowest": np.array(low, dtype=np.float32), "highest": np.array(high, dtype=np.float32)}
        for tensor in tensors:
            ranges[tensor] = TensorData(**merged)
        summary[group] = {"lowest": low, "highest": high,
                          "widest_step_over_narrowest": max(spans) / max(min(spans), 1e-12)}
    return summary


def quantize_int8(
    model: onnx.ModelProto,
    feeds: list[dict[str, np.ndarray]],
    workdir: Path,
    hidden: set[int],
    activation_type: str = "qint8",
    calibration_method: str = "minmax",
    shared_scales: bool = False,
    quantize_heads: bool = False,
    keep_fp32: Sequence[str] = (),
    preprocess: bool = False,
    progress: bool = True,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Calibrate on `feeds` (engine input dicts) and return the QDQ INT8 model and a JSON-able summary.

    preprocess: run onnxruntime's ``quant_pre_process`` (symbolic shape inference + basic graph
    optimisation) on the prepared graph first. Off by default: on these graphs it changed neither the
    quantised layers nor the speed / accuracy (measured), and the graph is already shape-inferred.
    """
    if activation_type not in ACTIVATION_TYPES:
        raise CalibrationError(f"activation type {activation_type!r} is not one of {sorted(ACTIVATION_TYPES)}")
    if calibration_method not in CALIBRATION_METHODS:
        raise CalibrationError(
            f"calibration method {calibration_method!r} is not one of {sorted(CALIBRATION_METHODS)}")
    method = CALIBRATION_METHODS[calibration_method]
    symmetric = activation_type == "qint8"
    started = time.perf_counter()

    layers = dense_layers(model, hidden)
    targets, labels = select_targets(layers, quantize_heads, keep_fp32)
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    split_gemm_bias(prepared, [t.node for t in targets])
    prepared_path = workdir / "fp32_prepared.onnx"
    onnx.save(prepared, str(prepared_path))
    if preprocess:
        processed = workdir / "fp32_preprocessed.onnx"
        with _quiet_quantizer():
            quant_pre_process(str(prepared_path), str(processed))
        names = {n.name for n in onnx.load(str(processed)).graph.node}
        if not {t.node for t in targets} <= names:
            raise CalibrationError("quant_pre_process renamed the layers to quantise; calibrate without it")
        prepared_path = processed

    activations = {t.activation for t in targets}
    calibrator = _make_calibrator(prepared_path, workdir / "augmented.onnx", method, activations, symmetric)
    reader = EngineCalibrationReader(feeds)
    chunk = 4 if method == CalibrationMethod.MinMax else 1  # histogram calibrators keep whole tensors per run
    bar = tqdm(total=len(feeds), desc="calibrate int8", unit="obs", disable=not progress, leave=False)
    for start in range(0, len(feeds), chunk):
        reader.set_range(start, min(start + chunk, len(feeds)))
        with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print progress to stdout
            calibrator.collect_data(reader)
        bar.update(min(chunk, len(feeds) - start))
    bar.close()
    with contextlib.redirect_stdout(io.StringIO()):
        ranges = calibrator.compute_data()
    del calibrator
    calibrate_seconds = time.perf_counter() - started

    by_weight = layer_groups(targets)
    groups = {labels[w]: sorted({t.activation for t in nodes}) for w, nodes in by_weight.items()}
    step_spread = {}
    for label, tensors in groups.items():
        spans = [max(abs(float(np.min(ranges[t].range_value[0]))), abs(float(np.max(ranges[t].range_value[1]))))
                 for t in tensors]
        step_spread[label] = round(max(spans) / max(min(spans), 1e-12), 3)
    shared = share_ranges(ranges, groups) if shared_scales else None

    cache = workdir / "calibration_cache.json"
    save_tensors_data(ranges, cache)
    out_path = workdir / "int8.onnx"
    with _quiet_quantizer():
        quantize_static(
            str(prepared_path), str(out_path), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(OP_TYPES), per_channel=True, reduce_range=False,
            activation_type=ACTIVATION_TYPES[activation_type], weight_type=QuantType.QInt8,
            nodes_to_quantize=[t.node for t in targets], calibrate_method=method, calibration_cache_path=str(cache),
            extra_options={
                "ActivationSymmetric": symmetric,
                "WeightSymmetric": True,
                "MatMulConstBOnly": True,
                "OpTypesToExcludeOutputQuantization": list(OP_TYPES),  # float outputs feed the float32 bias add
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                "DedicatedQDQPair": False,
            },
        )
    quantized = onnx.load(str(out_path))
    summary = {
        "quant_format": "QDQ",
        "weights": "int8 symmetric, per output channel",
        "activations": f"{activation_type} per tensor, {'symmetric (zero point 0)' if symmetric else 'asymmetric'}",
        "calibration_method": calibration_method,
        "scales": "shared over Euler steps" if shared_scales else "per Euler step",
        "quantized_nodes": len(targets),
        "quantized_layers": sorted(groups),
        "kept_fp32_layers": sorted(set(labels.values()) - set(groups)),
        "activation_range_spread_over_steps": step_spread,
        "calibration_seconds": round(calibrate_seconds, 2),
        "tensorrt_explicit_quantization": symmetric,
    }
    if shared is not None:
        summary["shared_ranges"] = {k: {kk: round(vv, 6) for kk, vv in v.items()} for k, v in shared.items()}
    return quantized, summary
