"""Engine backends: ONNX Runtime (with I/O binding) here, native TensorRT 10 plans in
`evor_edge.runtime.tensorrt` (torch-free).

A backend owns the session and, per (B, N_pi, N) shape, a set of pre-allocated host buffers
(:class:`IOBuffers`). The policy writes inputs into ``buffers.inputs[name]`` in place, calls
``backend.run(buffers)`` and reads ``buffers.outputs[name]``; no array is allocated per tick.

Backend choice (`make_backend`): ``backend="auto"`` uses the TensorRT plan when it is usable and
otherwise degrades to ONNX Runtime, never crashes: a missing plan, a missing or stale plan record
(``engine.plan.json``, written by build_trt.sh: the plan was built from another engine.onnx, or is
corrupt / truncated), a plan built by another TensorRT version, ``tensorrt`` or ``cuda-python`` missing,
no CUDA device, or a plan TensorRT cannot deserialize all fall back with the reason in
``describe()["fallback"]`` and one ``RuntimeWarning`` (no warning on a plain CPU install: no plan and no
``tensorrt``). ``backend="tensorrt"`` raises `EngineError` with that reason instead. Shapes outside the
plan's optimisation profile are refused with one clear line when their buffers are first asked for.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import PLAN_FILE, SURVIVOR_INDEX, EngineError, Manifest, engine_min_shape, load_manifest, prune_spec
from .sessions import ort_session

__all__ = ["PLAN_FILE", "Backend", "IOBuffers", "OnnxRuntimeBackend", "make_backend"]

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_MAX_CACHED_SHAPES = 4


def _shapes(manifest: Manifest, batch: int, num_candidates: int, num_rtg: int) -> dict[str, tuple[int, ...]]:
    """Input and output shapes for (B, N_pi, N); a pruned engine outputs only its K1 survivors."""
    pruned = prune_spec(manifest)
    out_candidates = pruned[0] if pruned else num_candidates
    shapes = {
        "obs": (batch, manifest.obs_dim),
        "action_noise": (batch, num_candidates, manifest.act_dim),
        "actions": (batch, out_candidates, manifest.act_dim),
    }
    if manifest.kind == "evor":
        shapes["rtg_noise"] = (batch, num_candidates, num_rtg)
        shapes["returns"] = (batch, out_candidates, num_rtg)
        if pruned:
            shapes[SURVIVOR_INDEX] = (batch, out_candidates)
    else:
        shapes["q"] = (batch, num_candidates)
    return shapes


class IOBuffers:
    """Pre-allocated host buffers for one (B, N_pi, N) shape (float32; survivor_index int64), plus backend
    state."""

    def __init__(self, shape: tuple[int, int, int], inputs: dict[str, np.ndarray],
                 outputs: dict[str, np.ndarray]) -> None:
        self.shape = shape
        self.inputs = inputs
        self.outputs = outputs
        self.state: Any = None  # backend-specific (an ORT IOBinding, TensorRT device pointers, ...)


class Backend:
    """Common base: shape-keyed buffer cache. Subclasses implement ``_bind`` and ``run``."""

    name = "backend"

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._cache: OrderedDict[tuple[int, int, int], IOBuffers] = OrderedDict()
        self.fallback: dict[str, str] | None = None  # set by make_backend when "auto" fell back to this one

    def check_shape(self, batch: int, num_candidates: int, num_rtg: int) -> None:
        """ValueError (one line) unless the engine accepts (B, N_pi, N): all >= 1, and for a pruned engine
        N_pi >= K1 and N >= N1. Backends with a fixed shape range (TensorRT profiles) check that too."""
        key = (int(batch), int(num_candidates), int(num_rtg) if self.manifest.kind == "evor" else 1)
        if min(key) < 1:
            raise ValueError(f"B, N_pi and N must be >= 1, got {key}")
        low = engine_min_shape(self.manifest)
        if key[1] < low[1] or key[2] < low[2]:
            raise ValueError(f"(B, N_pi, N) = {key} is below this pruned engine's minimum (1, {low[1]}, {low[2]}): "
                             f"it keeps {low[1]} candidates after a screen on {low[2]} samples")

    def buffers(self, batch: int, num_candidates: int, num_rtg: int) -> IOBuffers:
        """Buffers for (B, N_pi, N); allocated on first use and cached (a few shapes, LRU).
        Raises ValueError (one line) for a shape the engine or the backend cannot run (`check_shape`)."""
        if self.manifest.kind != "evor":
            num_rtg = 1
        key = (int(batch), int(num_candidates), int(num_rtg))
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        self.check_shape(*key)
        shapes = _shapes(self.manifest, *key)
        inputs = {n: self._alloc(shapes[n]) for n in self.manifest.input_names}
        outputs = {n: self._alloc(shapes[n], np.int64 if n == SURVIVOR_INDEX else np.float32)
                   for n in self.manifest.output_names}
        for arr in inputs.values():
            arr.fill(0.0)
        bufs = IOBuffers(key, inputs, outputs)
        self._bind(bufs)
        self._cache[key] = bufs
        while len(self._cache) > _MAX_CACHED_SHAPES:
            _, old = self._cache.popitem(last=False)
            self._release(old)
        return bufs

    def _alloc(self, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def _bind(self, bufs: IOBuffers) -> None:
        raise NotImplementedError

    def _release(self, bufs: IOBuffers) -> None:
        bufs.state = None

    def run(self, bufs: IOBuffers) -> None:
        """Run the engine on ``bufs.inputs``, writing ``bufs.outputs`` in place."""
        raise NotImplementedError

    def close(self) -> None:
        """Release cached buffers (and device memory where there is any)."""
        while self._cache:
            _, old = self._cache.popitem()
            self._release(old)

    def describe(self) -> dict[str, Any]:
        """JSON-able description of the backend (for bench reports)."""
        return {"backend": self.name, **({"fallback": dict(self.fallback)} if self.fallback else {})}


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime session tuned for single-request latency, fed through I/O binding.

    * graph optimisation ORT_ENABLE_ALL, sequential execution, inter-op threads 1,
      intra-op threads = physical cores (``intra_op_threads``), spinning allowed;
    * providers: the first available of TensorRT, CUDA, CPU execution providers unless
      ``providers`` is given (names or ``(name, options)`` tuples, as ORT accepts);
    * inputs and outputs are pre-allocated numpy arrays wrapped as CPU OrtValues that share
      their memory, bound once per (B, N_pi, N); a tick only rewrites the arrays and calls
      ``run_with_iobinding``.
    """

    name = "onnxruntime"

    def __init__(
        self,
        engine_path: str | os.PathLike[str],
        providers: list[Any] | None = None,
        intra_op_threads: int | None = None,
        manifest: Manifest | None = None,
    ) -> None:
        if manifest is None:
            manifest = load_manifest(Path(engine_path).parent)
        super().__init__(manifest)
        import onnxruntime as ort

        self._ort = ort
        if providers is None:
            available = set(ort.get_available_providers())
            providers = [p for p in PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]
            providers = [_default_provider_options(p, manifest) for p in providers]
        try:
            self.session = ort_session(engine_path, threads=intra_op_threads or None, providers=providers,
                                       spinning=True)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise EngineError(f"onnxruntime could not load {engine_path}: {exc}") from None
        self.intra_op_threads = int(self.session.get_session_options().intra_op_num_threads)
        self.providers = self.session.get_providers()
        got_in = [i.name for i in self.session.get_inputs()]
        got_out = [o.name for o in self.session.get_outputs()]
        if sorted(got_in) != sorted(manifest.input_names) or not set(manifest.output_names) <= set(got_out):
            raise EngineError(
                f"{engine_path} has inputs {got_in} / outputs {got_out}; the manifest kind "
                f"{manifest.kind!r} needs inputs {manifest.input_names} and outputs {manifest.output_names}"
            )

    def _bind(self, bufs: IOBuffers) -> None:
        ort = self._ort
        binding = self.session.io_binding()
        values = []  # keep the OrtValues alive as long as the binding
        for name, arr in bufs.inputs.items():
            val = ort.OrtValue.ortvalue_from_numpy(arr)
            binding.bind_ortvalue_input(name, val)
            values.append(val)
        for name, arr in bufs.outputs.items():
            val = ort.OrtValue.ortvalue_from_numpy(arr)
            binding.bind_ortvalue_output(name, val)
            values.append(val)
        bufs.state = (binding, values)

    def run(self, bufs: IOBuffers) -> None:
        """Run the engine on ``bufs.inputs``, writing ``bufs.outputs`` in place."""
        binding = bufs.state[0]
        self.session.run_with_iobinding(binding)

    def describe(self) -> dict[str, Any]:
        """JSON-able description of the backend (for bench reports)."""
        return {"backend": self.name, "providers": list(self.providers),
                "intra_op_threads": self.intra_op_threads,
                **({"fallback": dict(self.fallback)} if self.fallback else {})}


def _default_provider_options(provider: str, manifest: Manifest) -> Any:
    """Provider entry for ORT: TensorRT EP gets an engine cache and the manifest's precision.

    UNVERIFIED on this project's machines (no TensorRT / CUDA here). Without a cache, the
    TensorRT EP rebuilds its engine whenever (B, N_pi, N) changes.
    """
    if provider != "TensorrtExecutionProvider":
        return provider
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evor-edge" / "ort-trt"
    options = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
               "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache)}
    if manifest.precision in ("fp16", "int8"):
        options["trt_fp16_enable"] = "True"
    if manifest.precision == "int8":
        options["trt_int8_enable"] = "True"  # explicit QDQ graphs need no calibration table
    return (provider, options)


def make_backend(
    engine_dir: str | os.PathLike[str],
    manifest: Manifest,
    backend: str = "auto",
    providers: list[Any] | None = None,
    intra_op_threads: int | None = None,
) -> Backend:
    """Open the engine in ENGINE_DIR with the requested backend.

    ``tensorrt``: the native plan or EngineError (one line: missing / stale / corrupt plan, other
    TensorRT version, no ``tensorrt`` / ``cuda-python`` / GPU). ``onnxruntime``: engine.onnx.
    ``auto``: the plan when that works, else ONNX Runtime with ``backend.fallback = {"from": "tensorrt",
    "reason": ...}`` (shown by ``describe()``) and one RuntimeWarning, unless this is a plain CPU
    install (no plan and no ``tensorrt``), where the fallback is only recorded.
    """
    engine_dir = Path(engine_dir)
    if backend not in ("auto", "onnxruntime", "tensorrt"):
        raise ValueError(f"backend must be 'auto', 'onnxruntime' or 'tensorrt', got {backend!r}")
    reason = None
    if backend != "onnxruntime":
        try:
            from .tensorrt import open_tensorrt

            return open_tensorrt(engine_dir, manifest)
        except EngineError as exc:
            if backend == "tensorrt":
                raise
            reason = str(exc)
    ort_backend = OnnxRuntimeBackend(engine_dir / manifest.engine_file, providers, intra_op_threads,
                                     manifest=manifest)
    if reason is not None:
        ort_backend.fallback = {"from": "tensorrt", "reason": reason}
        from .tensorrt import tensorrt_available

        if (engine_dir / PLAN_FILE).exists() or tensorrt_available():
            warnings.warn(f"TensorRT plan not used, running onnxruntime: {reason}", RuntimeWarning, stacklevel=2)
    return ort_backend
