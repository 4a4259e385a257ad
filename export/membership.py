"""Which engine nodes belong to which network body and evaluation: a contract in the ONNX file (torch-free).

Export records it; calibration reads it (the FP16 region, the INT8 layer labels and per-step scales) instead
of parsing the exporter's private scope names, so renaming a module attribute in `export.graph` cannot
break calibration.

Scheme: the ONNX model's ``metadata_props`` entry ``evor_edge.network_nodes``, a JSON object::

    {"scheme": 1,
     "networks": {"actor": [[node names of call 0], [call 1], ...], "critic": [...], "q0": [...], ...}}

A network's body is its MLP after the first Linear layer (GELU, LayerNorm, the hidden and head layers);
call k is the k-th evaluation of that body in graph order: the k-th Euler step of an Euler loop (two calls
per step for the Heun / midpoint critic; a pruned engine's screen calls come before the survivors').
Nodes outside every body (observation normalisation, first layers, Euler updates, post-processing) are
listed nowhere. Graph rewrites that replace body nodes (e.g. `calibration.graph.gelu_to_tanh`) keep the
record current with `write_network_nodes`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import onnx

__all__ = ["METADATA_KEY", "SCHEME", "network_nodes", "nodes_by_scope", "read_network_nodes",
           "write_network_nodes"]

METADATA_KEY = "evor_edge.network_nodes"
SCHEME = 1


def nodes_by_scope(model: onnx.ModelProto, scopes: Mapping[str, str]) -> dict[str, list[list[str]]]:
    """Group the nodes of a TorchScript-exported graph by network body and call.

    ``scopes``: module path (``"actor_tail"``, ``"tails.0"``) -> network name. The TorchScript exporter
    names a node ``/<path>/<op>`` for the first call of a module and ``/<path>_<k>/<op>`` for call k;
    this knowledge stays here, on the export side.
    """
    prefixes: dict[str, str] = {}
    for path, network in scopes.items():
        prefixes["/" + path] = network
        prefixes["/" + path.replace(".", "/")] = network
    pattern = re.compile("^(" + "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True))
                         + r")(?:_(\d+))?/")
    calls: dict[str, dict[int, list[str]]] = {network: {} for network in scopes.values()}
    for node in model.graph.node:
        match = pattern.match(node.name)
        if match:
            call = int(match.group(2)) if match.group(2) else 0
            calls[prefixes[match.group(1)]].setdefault(call, []).append(node.name)
    return {network: [by_call[k] for k in sorted(by_call)] for network, by_call in calls.items() if by_call}


def write_network_nodes(model: onnx.ModelProto, networks: Mapping[str, list[list[str]]]) -> None:
    """Store the record in ``model.metadata_props`` (in place; replaces an older one)."""
    value = json.dumps({"scheme": SCHEME, "networks": {k: [list(c) for c in v] for k, v in networks.items()}},
                       separators=(",", ":"))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, METADATA_KEY: value})


def network_nodes(model: onnx.ModelProto) -> dict[str, list[list[str]]] | None:
    """The record as written (``{network: [[nodes of call 0], ...]}``), or None when the model has none."""
    raw = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        if data.get("scheme") != SCHEME or not isinstance(data.get("networks"), dict):
            raise ValueError(f"scheme {data.get('scheme')!r}")
        return {str(k): [[str(n) for n in call] for call in v] for k, v in data["networks"].items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{METADATA_KEY} in the engine is not readable ({exc})") from None


def read_network_nodes(model: onnx.ModelProto) -> dict[str, tuple[str, int]] | None:
    """Node name -> (network, call) for every node inside a network body; None when the model has no record."""
    networks = network_nodes(model)
    if networks is None:
        return None
    return {name: (network, call) for network, calls in networks.items()
            for call, names in enumerate(calls) for name in names}
