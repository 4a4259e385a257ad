"""Engine backends: ONNX Runtime (with I/O binding) and native TensorRT 10 plans (torch-free).

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

import ctypes
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import (
    PLAN_FILE,
    EngineError,
    Manifest,
    ShapeProfile,
    engine_min_shape,
    load_manifest,
    load_plan_record,
    prune_spec,
    tensorrt_version_key,
)

__all__ = [
    "Backend",
    "IOBuffers",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "PLAN_FILE",
    "make_backend",
    "physical_cores",
    "tensorrt_available",
]

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_MAX_CACHED_SHAPES = 4


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


def tensorrt_available() -> bool:
    """True when ``import tensorrt`` works (the native plan backend can be tried)."""
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA install raising something else
        return False
    return True


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
    else:
        shapes["q"] = (batch, num_candidates)
    return shapes


class IOBuffers:
    """Pre-allocated float32 host buffers for one (B, N_pi, N) shape, plus backend state."""

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
        outputs = {n: self._alloc(shapes[n]) for n in self.manifest.output_names}
        for arr in inputs.values():
            arr.fill(0.0)
        bufs = IOBuffers(key, inputs, outputs)
        self._bind(bufs)
        self._cache[key] = bufs
        while len(self._cache) > _MAX_CACHED_SHAPES:
            _, old = self._cache.popitem(last=False)
            self._release(old)
        return bufs

    def _alloc(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.empty(shape, dtype=np.float32)

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
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = int(intra_op_threads) if intra_op_threads else physical_cores()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        opts.log_severity_level = 3
        if providers is None:
            available = set(ort.get_available_providers())
            providers = [p for p in PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]
            providers = [_default_provider_options(p, manifest) for p in providers]
        try:
            self.session = ort.InferenceSession(str(engine_path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise EngineError(f"onnxruntime could not load {engine_path}: {exc}") from None
        self.intra_op_threads = opts.intra_op_num_threads
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


class TensorRTBackend(Backend):
    """Native TensorRT 10 plan runner. UNVERIFIED: written against the documented TensorRT 10
    Python API and cuda-python's runtime bindings, never executed on this project's machines
    (TensorRT cannot be installed here). Treat it as a starting point and test it on the target.

    * the plan (``engine.plan``, built on the target by the ``trtexec`` command the exporter
      writes) is deserialised with ``trt.Runtime.deserialize_cuda_engine``;
    * per (B, N_pi, N): ``set_input_shape`` (checked against optimisation profile 0),
      pinned host buffers (``cudaMallocHost``) exposed as numpy arrays, device buffers
      (``cudaMalloc``), ``set_tensor_address``;
    * a tick: async H2D copies, ``execute_async_v3(stream)``, async D2H copies, stream sync;
      with ``cuda_graph=True`` that sequence is captured once per shape and replayed with
      ``cudaGraphLaunch``.
    """

    name = "tensorrt"

    def __init__(
        self,
        plan_path: str | os.PathLike[str],
        manifest: Manifest | None = None,
        cuda_graph: bool = True,
        device: int = 0,
        record: dict[str, Any] | None = None,
    ) -> None:
        """Open the plan; EngineError (one line) when it cannot run here.

        record: the plan record (``engine.plan.json``, see `manifest.load_plan_record`); when given, its
        TensorRT version must equal the installed one (major.minor.patch): plans do not load across versions.
        """
        if manifest is None:
            manifest = load_manifest(Path(plan_path).parent)
        super().__init__(manifest)
        try:
            import tensorrt as trt
        except Exception as exc:  # ImportError, or a broken CUDA install raising something else
            raise EngineError(f"the `tensorrt` Python package does not import here ({exc})") from None

        self._trt = trt
        self.record = record
        installed = str(getattr(trt, "__version__", ""))
        if record is not None:
            built = str(record.get("tensorrt_version", ""))
            if tensorrt_version_key(built) != tensorrt_version_key(installed):
                raise EngineError(f"{plan_path} was built by TensorRT {built}, this is TensorRT {installed}: "
                                  "rebuild it here with ./build_trt.sh")
        self.tensorrt_version = installed
        self._cudart = _import_cudart()
        err = self._cudart.cudaSetDevice(device)
        code = err[0] if isinstance(err, tuple) else err
        if int(code) != 0:
            raise EngineError(f"no usable CUDA device {device} for TensorRT (cudaSetDevice: {code}); "
                              "use backend='onnxruntime'")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        plan = Path(plan_path).read_bytes()
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineError(f"TensorRT could not deserialize {plan_path} (corrupt, or built for another GPU/version)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        missing = set(manifest.input_names + manifest.output_names) - set(names)
        if missing:
            raise EngineError(f"{plan_path} lacks tensors {sorted(missing)} required by the manifest")
        not_fp32 = [n for n in manifest.input_names + manifest.output_names
                    if self.engine.get_tensor_dtype(n) != trt.float32]
        if not_fp32:
            raise EngineError(
                f"{plan_path}: tensors {not_fp32} are not float32; build the plan without "
                "--inputIOFormats/--outputIOFormats (the engine contract has float32 I/O)"
            )
        self.profile = self._plan_profile()
        self.context = self.engine.create_execution_context()
        self.stream = self._check(self._cudart.cudaStreamCreate())
        self.cuda_graph = bool(cuda_graph)
        self._current: tuple[int, int, int] | None = None

    def _plan_profile(self) -> ShapeProfile:
        """(B, N_pi, N) ranges of the plan's optimisation profile 0, read from the plan itself."""
        lo, opt, hi = (tuple(int(x) for x in dims) for dims in self.engine.get_tensor_profile_shape("action_noise", 0))
        dims = [(lo[0], lo[1], 1), (opt[0], opt[1], 1), (hi[0], hi[1], 1)]
        if self.manifest.kind == "evor":
            rtg = [tuple(int(x) for x in d) for d in self.engine.get_tensor_profile_shape("rtg_noise", 0)]
            dims = [(d[0], d[1], r[2]) for d, r in zip(dims, rtg, strict=True)]
        return ShapeProfile(*dims)  # type: ignore[arg-type]

    def check_shape(self, batch: int, num_candidates: int, num_rtg: int) -> None:
        """The engine's own limits, then the plan's optimisation profile (ValueError, one line)."""
        super().check_shape(batch, num_candidates, num_rtg)
        key = (int(batch), int(num_candidates), int(num_rtg) if self.manifest.kind == "evor" else 1)
        why = self.profile.outside(key)
        if why:
            raise ValueError(f"(B, N_pi, N) = {key}: {why} (min {self.profile.min}, max {self.profile.max}); "
                             "rebuild engine.plan with a wider profile or use backend='onnxruntime'")

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA runtime error {err}")
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else tuple(rest)

    def _alloc(self, shape: tuple[int, ...]) -> np.ndarray:
        nbytes = max(4, int(np.prod(shape)) * 4)
        ptr = self._check(self._cudart.cudaMallocHost(nbytes))
        flat = np.ctypeslib.as_array(ctypes.cast(int(ptr), ctypes.POINTER(ctypes.c_float)), (nbytes // 4,))
        arr = flat[: int(np.prod(shape))].reshape(shape)
        self._pinned = getattr(self, "_pinned", {})
        self._pinned[id(arr)] = ptr
        return arr

    def _bind(self, bufs: IOBuffers) -> None:
        device = {}
        for name, arr in {**bufs.inputs, **bufs.outputs}.items():
            device[name] = self._check(self._cudart.cudaMalloc(max(4, arr.nbytes)))
        bufs.state = {"device": device, "graph": None}

    def _activate(self, bufs: IOBuffers) -> None:
        for name, arr in bufs.inputs.items():
            self.context.set_input_shape(name, arr.shape)
        for name, ptr in bufs.state["device"].items():
            self.context.set_tensor_address(name, int(ptr))
        self._current = bufs.shape

    def _enqueue(self, bufs: IOBuffers) -> None:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        dev = bufs.state["device"]
        for name, arr in bufs.inputs.items():
            self._check(cudart.cudaMemcpyAsync(dev[name], arr.ctypes.data, arr.nbytes, h2d, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for name, arr in bufs.outputs.items():
            self._check(cudart.cudaMemcpyAsync(arr.ctypes.data, dev[name], arr.nbytes, d2h, self.stream))

    def run(self, bufs: IOBuffers) -> None:
        """Run the engine on ``bufs.inputs``, writing ``bufs.outputs`` in place."""
        cudart = self._cudart
        if self._current != bufs.shape:
            self._activate(bufs)
        state = bufs.state
        if self.cuda_graph and state["graph"] is None:
            # One plain run first (TensorRT may allocate / set up on the first enqueue of a shape).
            self._enqueue(bufs)
            self._check(cudart.cudaStreamSynchronize(self.stream))
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            self._check(cudart.cudaStreamBeginCapture(self.stream, mode))
            self._enqueue(bufs)
            graph = self._check(cudart.cudaStreamEndCapture(self.stream))
            state["graph"] = self._check(cudart.cudaGraphInstantiate(graph, 0))
            state["graph_src"] = graph
        if self.cuda_graph:
            self._check(cudart.cudaGraphLaunch(state["graph"], self.stream))
        else:
            self._enqueue(bufs)
        self._check(cudart.cudaStreamSynchronize(self.stream))

    def _release(self, bufs: IOBuffers) -> None:
        cudart = self._cudart
        state = bufs.state or {}
        if state.get("graph") is not None:
            cudart.cudaGraphExecDestroy(state["graph"])
            cudart.cudaGraphDestroy(state["graph_src"])
        for ptr in state.get("device", {}).values():
            cudart.cudaFree(ptr)
        pinned = getattr(self, "_pinned", {})
        for arr in (*bufs.inputs.values(), *bufs.outputs.values()):
            ptr = pinned.pop(id(arr), None)
            if ptr is not None:
                cudart.cudaFreeHost(ptr)
        if self._current == bufs.shape:
            self._current = None
        bufs.state = None

    def describe(self) -> dict[str, Any]:
        """JSON-able description of the backend (for bench reports)."""
        return {"backend": self.name, "cuda_graph": self.cuda_graph, "tensorrt_version": self.tensorrt_version,
                "profile": self.profile.as_dict(), "verified": False}


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


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise EngineError(
                "the TensorRT backend needs cuda-python (`pip install cuda-python`) for CUDA memory "
                "and streams; install it or use backend='onnxruntime'"
            ) from None
    return cudart


def _open_tensorrt(engine_dir: Path, manifest: Manifest) -> TensorRTBackend:
    """The TensorRT backend on ENGINE_DIR/engine.plan, or EngineError saying why it cannot run here."""
    plan = engine_dir / PLAN_FILE
    if not plan.is_file():
        raise EngineError(f"{plan} is missing: build it on the target with ./build_trt.sh, "
                          "or use backend='onnxruntime'")
    if not tensorrt_available():
        raise EngineError("the `tensorrt` Python package does not import here")
    record = load_plan_record(engine_dir, manifest)  # stale (other engine) / corrupt plan / no record
    try:
        return TensorRTBackend(plan, manifest=manifest, record=record)
    except EngineError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything TensorRT / CUDA raise while loading is one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"TensorRT could not load {plan}: {first}") from None


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
            return _open_tensorrt(engine_dir, manifest)
        except EngineError as exc:
            if backend == "tensorrt":
                raise
            reason = str(exc)
    ort_backend = OnnxRuntimeBackend(engine_dir / manifest.engine_file, providers, intra_op_threads,
                                     manifest=manifest)
    if reason is not None:
        ort_backend.fallback = {"from": "tensorrt", "reason": reason}
        if (engine_dir / PLAN_FILE).exists() or tensorrt_available():
            warnings.warn(f"TensorRT plan not used, running onnxruntime: {reason}", RuntimeWarning, stacklevel=2)
    return ort_backend
