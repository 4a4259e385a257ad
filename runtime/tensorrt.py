"""Native TensorRT 10 plans (``engine.plan``) as a runtime backend, and opening one with its checks (torch-free).

Chosen by `evor_edge.runtime.backends.make_backend` (``backend="tensorrt"``, or ``"auto"`` when the plan is
usable). ``tensorrt`` and ``cuda-python`` are imported lazily: neither is a robot-install dependency.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, IOBuffers
from .manifest import (
    PLAN_FILE,
    SURVIVOR_INDEX,
    EngineError,
    Manifest,
    ShapeProfile,
    load_manifest,
    load_plan_record,
    tensorrt_version_key,
)

__all__ = ["TensorRTBackend", "open_tensorrt", "tensorrt_available"]


def tensorrt_available() -> bool:
    """True when ``import tensorrt`` works (the native plan backend can be tried)."""
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA install raising something else
        return False
    return True


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
        # survivor_index may come out as int32 (TensorRT's TopK indices) or int64; the rest is float32
        self._index_dtype = {getattr(trt, n): d for n, d in (("int32", np.int32), ("int64", np.int64))
                             if hasattr(trt, n)}
        not_fp32 = [n for n in manifest.input_names + manifest.output_names
                    if self.engine.get_tensor_dtype(n) != trt.float32
                    and not (n == SURVIVOR_INDEX and self.engine.get_tensor_dtype(n) in self._index_dtype)]
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

    def _alloc(self, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        if np.dtype(dtype).kind == "i":  # the index output in the plan's own integer type
            dtype = self._index_dtype[self.engine.get_tensor_dtype(SURVIVOR_INDEX)]
        itemsize = np.dtype(dtype).itemsize
        nbytes = max(itemsize, int(np.prod(shape)) * itemsize)
        ptr = self._check(self._cudart.cudaMallocHost(nbytes))
        raw = np.ctypeslib.as_array(ctypes.cast(int(ptr), ctypes.POINTER(ctypes.c_uint8)), (nbytes,))
        arr = raw.view(dtype)[: int(np.prod(shape))].reshape(shape)
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


def open_tensorrt(engine_dir: Path, manifest: Manifest) -> TensorRTBackend:
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
