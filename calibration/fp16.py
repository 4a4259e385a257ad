"""FP16 engines: the MLP bodies in float16, everything that accumulates or rescales in float32.

Region in float16: every node of the network bodies (`graph.network_body_nodes`: GELU, the hidden and
head layers), except LayerNormalization (kept float32 by default: its variance of float16 activations
is where float16 overflows / loses precision, and TensorRT warns about float16 LayerNorm for the same
reason). Float32: graph inputs and outputs, observation normalisation, the first layers (they read the
float32 state), the Euler updates ``state + dt * v`` (the velocity is cast back to float32 before the
multiply-add), the action clip and the return un-scaling. See `graph.convert_region_to_float16` for why
this does not use onnxconverter-common's whole-graph converter.

onnxruntime's CPU provider has few float16 kernels; it runs most float16 nodes by inserting casts to
float32 around them, so on this CPU an FP16 engine is an accuracy check, not a speed-up. The speed-up is
on GPUs / Jetson (TensorRT, ``--stronglyTyped`` keeps exactly these types).
"""

from __future__ import annotations

from typing import Any

import onnx

from .errors import CalibrationError
from .graph import convert_region_to_float16, euler_state_tensors, network_body_nodes


def convert_fp16(model: onnx.ModelProto, kind: str, keep_layernorm_fp32: bool = True) -> tuple[onnx.ModelProto,
                                                                                                 dict[str, Any]]:
    """The FP16 variant of an FP32 engine graph and a JSON-able summary."""
    body = set(network_body_nodes(model))
    if not body:
        raise CalibrationError("engine graph has no recognisable network bodies (re-export it with this version)")
    skip = {"Shape"} | ({"LayerNormalization"} if keep_layernorm_fp32 else set())  # Shape only reads dims
    region = [n.name for n in model.graph.node if n.name in body and n.op_type not in skip]
    state = euler_state_tensors(model, kind)
    by_name = {n.name: n for n in model.graph.node}
    touching = [name for name in region if state & (set(by_name[name].input) | set(by_name[name].output))]
    if touching:
        raise CalibrationError(f"float16 region would touch the Euler state at {touching[:3]}")
    converted, summary = convert_region_to_float16(model, region)
    summary["layernorm"] = "float32" if keep_layernorm_fp32 else "float16"
    summary["float32"] = ("I/O, observation normalisation, first layers, Euler updates, action clip, "
                          "return un-scaling" + (", LayerNorm" if keep_layernorm_fp32 else ""))
    return converted, summary
