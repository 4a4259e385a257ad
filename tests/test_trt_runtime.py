"""Runtime backends degrade, not crash: a fake `tensorrt` (and `cuda-python`) module drives every TensorRT
path on a CPU. backend="auto" falls back to onnxruntime with the reason in describe() and one warning;
backend="tensorrt" fails with one clear line; shapes outside the plan's profile are refused clearly."""

from __future__ import annotations

import shutil
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from engine_fixtures import write_engine

from evor_edge.runtime import EngineError, EvorPolicy
from evor_edge.runtime.backends import make_backend
from evor_edge.runtime.manifest import (
    PLAN_FILE,
    PLAN_RECORD_FILE,
    ShapeProfile,
    default_profile,
    load_manifest,
    write_plan_record,
)
from evor_edge.runtime.tensorrt import TensorRTBackend

VERSION = "10.3.0.26"
PLAN_BYTES = b"fake serialized plan"


class FakeEngine:
    """What TensorRTBackend reads from a deserialized plan (I/O names, modes, dtypes, profile 0)."""

    def __init__(self, trt: types.ModuleType, manifest, profile: ShapeProfile) -> None:
        self.trt, self.manifest, self.profile = trt, manifest, profile
        self.names = manifest.input_names + manifest.output_names
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return self.trt.TensorIOMode.INPUT if name in self.manifest.input_names else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> str:
        return self.trt.float32

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        assert index == 0
        last = self.manifest.act_dim if name == "action_noise" else None
        return [(b, n_pi, last if last else n) for b, n_pi, n in (self.profile.min, self.profile.opt,
                                                                    self.profile.max)]

    def create_execution_context(self) -> object:
        return object()


def _fake_modules(monkeypatch: pytest.MonkeyPatch, manifest, *, version: str = VERSION, cuda: bool = True,
                  gpu: bool = True, deserializes: bool = True) -> None:
    """Install fake `tensorrt` and `cuda.bindings.runtime` modules for this test only."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32 = "float32"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT")

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine | None:
            if not deserializes or plan != PLAN_BYTES:
                return None
            return FakeEngine(trt, manifest, default_profile(manifest))

    trt.Logger, trt.Runtime = Logger, Runtime
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    if not cuda:  # cuda-python not installed: both import paths fail
        monkeypatch.setitem(sys.modules, "cuda", None)
        monkeypatch.setitem(sys.modules, "cuda.bindings", None)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
        return
    cudart = types.ModuleType("cuda.bindings.runtime")
    cudart.cudaSetDevice = lambda device: (0 if gpu else 100,)  # 100 = cudaErrorNoDevice
    cudart.cudaStreamCreate = lambda: (0, 7)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)


@pytest.fixture()
def engine(tmp_path: Path) -> Path:
    """A fixture engine with a (fake) plan and a current plan record, as build_trt.sh leaves it."""
    d, _ = write_engine(tmp_path / "e")
    (d / PLAN_FILE).write_bytes(PLAN_BYTES)
    write_plan_record(d, load_manifest(d), VERSION)
    return d


def _auto(d: Path) -> tuple[EvorPolicy, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy = EvorPolicy.load(d, backend="auto", seed=0)
    return policy, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_a_usable_plan_is_opened(engine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = load_manifest(engine)
    _fake_modules(monkeypatch, manifest)
    backend = make_backend(engine, manifest, backend="auto")
    assert isinstance(backend, TensorRTBackend) and backend.fallback is None
    described = backend.describe()
    assert described["backend"] == "tensorrt" and described["tensorrt_version"] == VERSION
    assert described["profile"] == default_profile(manifest).as_dict()
    # shapes outside the plan's profile: one clear line, before any device memory is touched
    with pytest.raises(ValueError, match=r"N_pi=65 is outside the TensorRT profile's \[1, 64\].*onnxruntime"):
        backend.buffers(1, 65, 4)
    with pytest.raises(ValueError, match=r"B=17 is outside"):
        backend.check_shape(17, 8, 4)
    backend.check_shape(16, 64, 64)


def _corrupt(d: Path) -> str:
    (d / PLAN_FILE).write_bytes(PLAN_BYTES[:-3])
    return "does not match engine.plan.json"


def _stale(d: Path) -> str:  # the plan was built from another engine.onnx
    shutil.copy(d / PLAN_RECORD_FILE, d / "record")
    text = (d / "record").read_text().replace(load_manifest(d).engine_sha256, "0" * 64)
    (d / PLAN_RECORD_FILE).write_text(text)
    return "is stale: built from engine sha256 000000000000"


def _no_record(d: Path) -> str:
    (d / PLAN_RECORD_FILE).unlink()
    return "engine.plan.json is missing"


def _no_plan(d: Path) -> str:
    (d / PLAN_FILE).unlink()
    return "engine.plan is missing"


CASES = {
    "corrupt plan": (_corrupt, {}),
    "stale plan": (_stale, {}),
    "no plan record": (_no_record, {}),
    "no plan": (_no_plan, {}),
    "other TensorRT version": (lambda d: "was built by TensorRT 10.3.0.26, this is TensorRT 10.4.0",
                               {"version": "10.4.0"}),
    "no cuda-python": (lambda d: "needs cuda-python", {"cuda": False}),
    "TensorRT but no GPU": (lambda d: "no usable CUDA device 0", {"gpu": False}),
    "plan TensorRT cannot load": (lambda d: "could not deserialize", {"deserializes": False}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_auto_falls_back_with_the_reason_and_one_warning(engine: Path, monkeypatch: pytest.MonkeyPatch,
                                                         case: str) -> None:
    spoil, fake = CASES[case]
    expected = spoil(engine)
    _fake_modules(monkeypatch, load_manifest(engine), **fake)
    policy, caught = _auto(engine)
    assert policy.backend_name == "onnxruntime"
    fallback = policy.describe()["fallback"]
    assert fallback["from"] == "tensorrt" and expected in fallback["reason"], fallback
    assert len(caught) == 1 and expected in str(caught[0].message)
    assert policy.act(np.zeros(4, dtype=np.float32)).shape == (2,)  # and it runs
    # asked for explicitly, the same reason is a loud, one-line error
    with pytest.raises(EngineError, match=expected.replace("(", r"\(").replace(")", r"\)")) as info:
        EvorPolicy.load(engine, backend="tensorrt")
    assert "\n" not in str(info.value)


def test_plain_cpu_install_falls_back_quietly(tmp_path: Path) -> None:
    d, _ = write_engine(tmp_path / "e")
    if "tensorrt" in sys.modules or _importable("tensorrt"):
        pytest.skip("tensorrt imports here: the fallback is not the quiet CPU-install case")
    policy, caught = _auto(d)
    assert policy.backend_name == "onnxruntime" and not caught
    assert "engine.plan is missing" in policy.describe()["fallback"]["reason"]


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except Exception:  # noqa: BLE001
        return False
    return True

