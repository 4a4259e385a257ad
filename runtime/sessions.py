"""The one place an ONNX Runtime session is configured (runtime, calibration, export checks, benchmarks).

`ort_session` is tuned for single-request latency the way the runtime runs engines: graph optimisation
ORT_ENABLE_ALL, sequential execution, one inter-op thread, intra-op threads = physical cores unless given,
errors only in the log. Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["ort_session", "physical_cores"]


def physical_cores() -> int:
    """Physical cores usable by this process (affinity-aware; hyper-threads counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                ((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip())
            )
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def ort_session(model: str | os.PathLike[str] | bytes, threads: int | None = 1, providers: list[Any] | None = None,
                optimize: bool = True, spinning: bool = False) -> Any:
    """An ``onnxruntime.InferenceSession`` on a model path (or serialized bytes).

    threads: intra-op threads (None: physical cores); providers: default the CPU provider; optimize: False
    runs the graph as written (ORT_DISABLE_ALL, e.g. to observe tensors a fusion would remove); spinning:
    let idle intra-op threads spin (lower latency in a control loop, burns CPU between ticks).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads) if threads else physical_cores()
    opts.inter_op_num_threads = 1
    if spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    opts.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=opts, providers=providers or ["CPUExecutionProvider"])
