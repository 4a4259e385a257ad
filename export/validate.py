"""Static checks that an engine.onnx obeys the engine contract (torch-free).

Used by `export_engine` on every graph it writes, by the calibration step on its FP16 / INT8 variants,
and by the tests. A failed check raises `EngineValidationError` with one line saying what is wrong.

The op allow-list below is a fast pre-filter and a statement of the contract (no control flow, no
custom ops), not the TensorRT verdict: `evor_edge.export.trt_check` parses and builds every engine with
TensorRT's own ONNX parser and builder (TensorRT-RTX on a CPU) whenever it is installed, and CI does.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from evor_edge.runtime.manifest import SURVIVOR_INDEX

from .errors import EngineValidationError

MAX_OPSET = 17

# ONNX ops that TensorRT 10's ONNX parser imports natively (no plugin), taken from the operator support
# matrix of onnx-tensorrt for TensorRT 10.x:
#   https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md  (release/10.x branches; "Y" rows)
# Deliberately a subset: elementwise math, matrix products, normalisation, shape plumbing, Q/DQ and Cast
# for the calibrated FP16 / INT8 variants. Control flow (Loop, If, Scan), data-dependent output shapes
# (NonZero, NonMaxSuppression, Unique) and random generators are excluded even where TensorRT accepts
# them: the engine contract wants a straight-line, unrolled, deterministic graph.
TENSORRT10_ALLOWED_OPS: frozenset[str] = frozenset({
    # elementwise arithmetic and activations
    "Abs", "Add", "Ceil", "Clip", "Div", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish",
    "LeakyRelu", "Log", "Max", "Mean", "Min", "Mul", "Neg", "Pow", "PRelu", "Reciprocal", "Relu", "Round",
    "Selu", "Sigmoid", "Sign", "Softplus", "Softsign", "Sqrt", "Sub", "Sum", "Tanh", "Sin", "Cos",
    "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Where",
    # matrix products and normalisation
    "Gemm", "MatMul", "LayerNormalization", "Softmax", "LogSoftmax",
    "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "ReduceSumSquare", "ReduceLogSumExp", "ReduceProd",
    # shapes and data movement
    "Cast", "CastLike", "Concat", "Constant", "ConstantOfShape", "Expand", "Flatten", "Gather", "Identity",
    "Reshape", "Shape", "Slice", "Split", "Squeeze", "Tile", "Transpose", "Unsqueeze",
    # candidate pruning (export --prune): TopK with a constant K, GatherElements of the survivors' rows
    "TopK", "GatherElements",
    # explicit quantisation (INT8 QDQ variant; zero points must be 0 for TensorRT)
    "QuantizeLinear", "DequantizeLinear",
})

# Never in an engine, whatever TensorRT accepts: the contract requires unrolled loops and static control.
FORBIDDEN_OPS: frozenset[str] = frozenset({
    "Loop", "If", "Scan", "NonZero", "Unique", "NonMaxSuppression", "Compress",
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SplitToSequence", "ConcatFromSequence", "Optional", "OptionalGetElement", "OptionalHasElement",
})

# Inputs that TensorRT requires to be build-time constants (operators.md "Restrictions" column).
_CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {
    "Unsqueeze": (1,), "Squeeze": (1,), "Slice": (3,),
    "ReduceMax": (1,), "ReduceMean": (1,), "ReduceMin": (1,), "ReduceSum": (1,), "ReduceSumSquare": (1,),
    "ReduceLogSumExp": (1,), "ReduceProd": (1,), "TopK": (1,),
}

# Symbolic dims: (name, dims) with ints = fixed size taken from the manifest, strings = dynamic axes.
_BATCH, _CAND, _RTG = "batch", "num_candidates", "num_rtg"
INT64_OUTPUTS = frozenset({SURVIVOR_INDEX})  # every other engine tensor is float32


def contract_io(kind: str, obs_dim: int, act_dim: int,
                survivors: int | None = None) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """The engine contract's inputs and outputs: name -> dims (str = dynamic axis name, int = fixed).

    survivors = K1 for a pruned EVOR engine (export --prune K1:N1): same inputs, outputs
    actions [batch, K1, act_dim], returns [batch, K1, num_rtg] (the survivors of the screen) and
    survivor_index [batch, K1] (INT64, `INT64_OUTPUTS`; every other tensor is FLOAT).
    """
    if kind not in ("evor", "qc"):
        raise EngineValidationError(f"unknown engine kind {kind!r}")
    if survivors is not None and (kind != "evor" or int(survivors) < 1):
        raise EngineValidationError(f"survivors={survivors!r}: only EVOR engines can be pruned, with K1 >= 1")
    out_cand: str | int = _CAND if survivors is None else int(survivors)
    inputs: dict[str, tuple] = {"obs": (_BATCH, obs_dim), "action_noise": (_BATCH, _CAND, act_dim)}
    outputs: dict[str, tuple] = {"actions": (_BATCH, out_cand, act_dim)}
    if kind == "evor":
        inputs["rtg_noise"] = (_BATCH, _CAND, _RTG)
        outputs["returns"] = (_BATCH, out_cand, _RTG)
        if survivors is not None:
            outputs[SURVIVOR_INDEX] = (_BATCH, out_cand)
    else:
        outputs["q"] = (_BATCH, _CAND)
    return inputs, outputs


def _iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _iter_nodes(sub)


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    shape = value.type.tensor_type.shape
    if not value.type.tensor_type.HasField("shape"):
        return []
    out: list[int | str | None] = []
    for d in shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _check_io(values: Any, expected: dict[str, tuple], what: str) -> None:
    names = [v.name for v in values]
    if names != list(expected):
        raise EngineValidationError(f"engine {what} are {names}, the contract wants {list(expected)}")
    for value in values:
        want_type = TensorProto.INT64 if value.name in INT64_OUTPUTS else TensorProto.FLOAT
        if value.type.tensor_type.elem_type != want_type:
            dtype = TensorProto.DataType.Name(value.type.tensor_type.elem_type)
            raise EngineValidationError(f"engine {what[:-1]} {value.name!r} is {dtype}, the contract wants "
                                        f"{TensorProto.DataType.Name(want_type)}")
        dims = _dims(value)
        want = expected[value.name]
        if len(dims) != len(want):
            raise EngineValidationError(
                f"engine {what[:-1]} {value.name!r} has rank {len(dims)} {dims}, the contract wants {list(want)}")
        for axis, (got, exp) in enumerate(zip(dims, want, strict=True)):
            if isinstance(exp, str) and not isinstance(got, str):
                raise EngineValidationError(
                    f"engine {what[:-1]} {value.name!r} axis {axis} is {got!r}; it must be the symbolic "
                    f"dynamic axis {exp!r}")
            if isinstance(exp, str) and got != exp:
                raise EngineValidationError(
                    f"engine {what[:-1]} {value.name!r} axis {axis} is named {got!r}, expected {exp!r}")
            if isinstance(exp, int) and got != exp:
                raise EngineValidationError(
                    f"engine {what[:-1]} {value.name!r} axis {axis} is {got!r}, expected {exp}")


def validate_engine(
    model: onnx.ModelProto | str | os.PathLike[str],
    kind: str | None = None,
    obs_dim: int | None = None,
    act_dim: int | None = None,
    max_opset: int = MAX_OPSET,
    survivors: int | None = None,
) -> dict[str, Any]:
    """Check an engine graph against the contract; return a JSON-able summary, raise EngineValidationError.

    Checks: default-domain opset <= max_opset and no other domains (no custom ops);
    `onnx.checker.check_model(full_check=True)`; strict shape inference; every op in
    `TENSORRT10_ALLOWED_OPS` and none in `FORBIDDEN_OPS` (subgraphs included); constant axes where
    TensorRT needs them; input / output names, FLOAT dtype and shapes per the contract with B, N_pi, N
    symbolic ("batch", "num_candidates", "num_rtg"). kind / obs_dim / act_dim default to what the graph
    declares (kind from its output names). survivors = K1 checks a pruned engine's outputs ([batch, K1, ...]);
    with survivors=None a graph whose outputs have a fixed candidate axis and that contains TopK is read as
    pruned (K1 from the graph).
    """
    if not isinstance(model, onnx.ModelProto):
        path = Path(model)
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad engine
            raise EngineValidationError(f"{path} is not a readable ONNX model: {exc}") from None

    opsets = {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import}
    foreign = sorted(d for d in opsets if d != "ai.onnx")
    if foreign:
        raise EngineValidationError(f"engine imports non-standard op domains {foreign} (custom ops)")
    opset = opsets.get("ai.onnx")
    if opset is None:
        raise EngineValidationError("engine declares no default-domain opset")
    if opset > max_opset:
        raise EngineValidationError(f"engine opset {opset} is above {max_opset}, the highest this toolkit allows")

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise EngineValidationError(f"onnx checker: {str(exc).strip().splitlines()[0]}") from None
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise EngineValidationError(f"shape inference: {str(exc).strip().splitlines()[0]}") from None

    graph = model.graph
    counts: Counter[str] = Counter()
    for node in _iter_nodes(graph):
        if node.domain not in ("", "ai.onnx"):
            raise EngineValidationError(f"node {node.name!r} uses custom op {node.domain}::{node.op_type}")
        counts[node.op_type] += 1
    bad = sorted(set(counts) & FORBIDDEN_OPS)
    if bad:
        raise EngineValidationError(f"engine contains {bad}: loops must be unrolled and control flow static")
    unknown = sorted(set(counts) - TENSORRT10_ALLOWED_OPS)
    if unknown:
        raise EngineValidationError(f"engine uses ops outside the TensorRT 10 allow-list: {unknown}")

    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    for node in graph.node:
        for index in _CONSTANT_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] and node.input[index] not in constants:
                raise EngineValidationError(
                    f"{node.op_type} node {node.name!r}: input {index} must be a constant for TensorRT")

    declared_outputs = [o.name for o in graph.output]
    if kind is None:
        kind = "evor" if "returns" in declared_outputs else "qc"
    inputs_by_name = {v.name: v for v in graph.input}
    if obs_dim is None and "obs" in inputs_by_name:
        dims = _dims(inputs_by_name["obs"])
        obs_dim = dims[-1] if dims and isinstance(dims[-1], int) else -1
    if act_dim is None and "action_noise" in inputs_by_name:
        dims = _dims(inputs_by_name["action_noise"])
        act_dim = dims[-1] if dims and isinstance(dims[-1], int) else -1
    if survivors is None and "TopK" in counts:
        outputs_by_name = {v.name: v for v in graph.output}
        dims = _dims(outputs_by_name["actions"]) if "actions" in outputs_by_name else []
        if len(dims) == 3 and isinstance(dims[1], int):
            survivors = dims[1]
    exp_in, exp_out = contract_io(kind, int(obs_dim or -1), int(act_dim or -1), survivors)
    initializer_names = {init.name for init in graph.initializer}
    _check_io([v for v in graph.input if v.name not in initializer_names], exp_in, "inputs")
    _check_io(list(graph.output), exp_out, "outputs")
    # the inferred output shapes must agree with the declared ones (catches a mis-wired graph)
    _check_io(list(inferred.graph.output), exp_out, "outputs")

    return {
        "kind": kind,
        "opset": opset,
        "ir_version": int(model.ir_version),
        "num_nodes": sum(counts.values()),
        "num_initializers": len(graph.initializer),
        "op_types": dict(sorted(counts.items())),
        "inputs": {k: list(v) for k, v in exp_in.items()},
        "outputs": {k: list(v) for k, v in exp_out.items()},
        "survivors": survivors,
    }
