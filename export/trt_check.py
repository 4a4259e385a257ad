"""`trt-check`: parse and build an ENGINE_DIR's engine.onnx with NVIDIA's own ONNX parser and builder.

What it does: parse engine.onnx with TensorRT's `OnnxParser`, check the parsed network's inputs and
outputs against the manifest, add one optimisation profile with exactly the min / opt / max that
`build_trt.sh` passes to trtexec (`runtime.manifest.manifest_profile`, i.e. `default_profile` at export),
build a serialized plan, and fail on any parser error, build failure, builder error, or builder warning
that the profile is not self-consistent (e.g. a pruned engine's TopK needing N_pi >= K1 at the profile's
minimum). The plan is thrown away: it proves the graph builds, nothing here runs it.

Which TensorRT: `tensorrt` (TensorRT 10 / 11; needs a GPU to build) when it imports and a builder can be
created, else `tensorrt_rtx_bindings` (TensorRT-RTX, pip-installable, shares TensorRT's ONNX parser and
builds ahead of time on a CPU-only machine; by default for compute capabilities 8.0+). Passing it is
necessary, not sufficient, for TensorRT 10 on a Jetson. ``EVOR_EDGE_TRT_CHECK`` = ``auto`` (default),
``tensorrt``, ``tensorrt-rtx`` or ``off`` chooses.

The result (tool, version, build seconds, plan bytes, warnings, profile) is recorded in
manifest.extra["tensorrt"]["check"]. `evor-edge export` / `calibrate` run the check when a TensorRT
module imports (`run_check_hook`), `evor-edge trt-check ENGINE_DIR` on demand (`check_engine_dir`).
Torch-free and onnx-free.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evor_edge.io import atomic_write_bytes
from evor_edge.runtime.manifest import (
    MANIFEST_FILE,
    SURVIVOR_INDEX,
    EngineError,
    Manifest,
    ShapeProfile,
    check_profile,
    load_manifest,
    manifest_profile,
)

from .errors import EngineValidationError

__all__ = [
    "ENV_VAR",
    "TOOLS",
    "TrtCheckError",
    "TrtTool",
    "check_engine",
    "check_engine_dir",
    "find_tool",
    "run_check_hook",
]

ENV_VAR = "EVOR_EDGE_TRT_CHECK"
TOOLS = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx_bindings"}  # tool name -> Python module
CHOICES = ("auto", *TOOLS, "off")
MAX_RECORDED_WARNINGS = 20
# Builder messages meaning that the optimisation profile contradicts the graph's own shape constraints.
PROFILE_PROBLEM = re.compile(r"profile.*(not self-consistent|inconsistent|invalid)|self-consistent", re.IGNORECASE)
# Harmless noise TensorRT prints when a second module / builder registers a logger; never a finding.
_IGNORED = re.compile(r"logger passed into createInferBuilder differs", re.IGNORECASE)


class TrtCheckError(EngineValidationError):
    """TensorRT's parser or builder rejected the engine (one line: what, and the first message)."""


@dataclass(frozen=True)
class TrtTool:
    """An importable TensorRT flavour: its tool name, Python module and version."""

    name: str
    module: Any
    version: str


# --------------------------------------------------------------------------------------------- logger
class _Capture:
    """Per-module singleton ILogger: TensorRT keeps the first logger a process registers and ignores later
    ones (it warns that the "logger passed into createInferBuilder differs"), so one logger per module
    collects the messages of whichever check is running."""

    _by_module: dict[int, Any] = {}  # by id(module): a stand-in module never shares a real one's logger

    @classmethod
    def get(cls, module: Any) -> Any:
        found = cls._by_module.get(id(module))
        if found is not None:
            return found

        class CaptureLogger(module.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                module.ILogger.__init__(self)
                self.records: list[tuple[str, str]] | None = None

            def log(self, severity: Any, msg: str) -> None:
                if self.records is None or int(severity) > int(module.ILogger.Severity.WARNING):
                    return
                self.records.append((str(severity).rsplit(".", 1)[-1], str(msg)))

            @contextmanager
            def capture(self) -> Iterator[list[tuple[str, str]]]:
                self.records = []
                try:
                    yield self.records
                finally:
                    self.records = None

        logger = CaptureLogger()
        cls._by_module[id(module)] = logger
        return logger


# ----------------------------------------------------------------------------------------------- tools
def _import(name: str) -> TrtTool | None:
    try:
        module = importlib.import_module(TOOLS[name])
    except Exception:  # noqa: BLE001 - ImportError, or a broken CUDA install raising something else
        return None
    return TrtTool(name, module, str(getattr(module, "__version__", "unknown")))


def _builder_ok(tool: TrtTool) -> str | None:
    """None when a builder can be created (TensorRT proper needs a GPU for that), else the reason."""
    logger = _Capture.get(tool.module)
    try:
        with logger.capture() as records:
            builder = tool.module.Builder(logger)
    except Exception as exc:  # noqa: BLE001 - no GPU / no driver surfaces as various errors
        return f"{tool.name} {tool.version} cannot create a builder here ({_first_line(str(exc))})"
    if builder is None:
        errors = [m for s, m in records if s in ("ERROR", "INTERNAL_ERROR")]
        detail = _first_line(errors[0]) if errors else "no GPU?"
        return f"{tool.name} {tool.version} cannot create a builder here ({detail})"
    del builder
    return None


def find_tool(choice: str | None = None) -> tuple[TrtTool | None, str]:
    """(tool, note): the TensorRT flavour to check with, or (None, why there is none).

    choice: "auto" (default: ``$EVOR_EDGE_TRT_CHECK`` or "auto"), "tensorrt", "tensorrt-rtx" or "off".
    auto prefers `tensorrt` when it can create a builder (a GPU is present), else TensorRT-RTX.
    """
    choice = (choice or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if choice not in CHOICES:
        raise TrtCheckError(f"{ENV_VAR}={choice!r}: choose one of {', '.join(CHOICES)}")
    if choice == "off":
        return None, f"{ENV_VAR}=off"
    names = list(TOOLS) if choice == "auto" else [choice]
    reasons: list[str] = []
    for name in names:
        tool = _import(name)
        if tool is None:
            reasons.append(f"{TOOLS[name]} does not import")
            continue
        problem = _builder_ok(tool)
        if problem is None:
            return tool, ""
        reasons.append(problem)
    return None, "; ".join(reasons)


# ----------------------------------------------------------------------------------------------- check
def _first_line(text: str) -> str:
    text = str(text).strip()
    return text.splitlines()[0] if text else ""


def _shape(manifest: Manifest, name: str, dims: tuple[int, int, int]) -> tuple[int, ...]:
    b, n_pi, n = dims
    return {"obs": (b, manifest.obs_dim), "action_noise": (b, n_pi, manifest.act_dim),
            "rtg_noise": (b, n_pi, n)}[name]


def _network_io(trt: Any, network: Any) -> tuple[dict[str, list[int]], dict[str, list[int]], list[str]]:
    inputs = {network.get_input(i).name: list(network.get_input(i).shape) for i in range(network.num_inputs)}
    outputs = {network.get_output(i).name: list(network.get_output(i).shape) for i in range(network.num_outputs)}
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    tensors += [network.get_output(i) for i in range(network.num_outputs)]
    index_types = {getattr(trt, n) for n in ("int32", "int64") if hasattr(trt, n)}  # TopK indices: either
    not_fp32 = [t.name for t in tensors if t.dtype != trt.float32
                and not (t.name == SURVIVOR_INDEX and t.dtype in index_types)]
    return inputs, outputs, not_fp32


def _parse_and_build(trt: Any, logger: Any, label: str, engine_path: Path, manifest: Manifest,
                     profile: ShapeProfile, strongly_typed: bool) -> dict[str, Any]:
    """Parser + builder calls (messages go to `logger`); raises TrtCheckError for what they refuse."""
    builder = trt.Builder(logger)
    if builder is None:
        raise TrtCheckError(f"{label} cannot create a builder here (no GPU?)")
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    started = time.perf_counter()
    parsed = parser.parse_from_file(str(engine_path))
    parse_seconds = time.perf_counter() - started
    errors = [_first_line(parser.get_error(i).desc()) for i in range(parser.num_errors)]
    if not parsed or errors:
        raise TrtCheckError(f"{label} ONNX parser rejected {engine_path.name}: "
                            f"{errors[0] if errors else 'parse failed without a message'}")
    inputs, outputs, not_fp32 = _network_io(trt, network)
    if list(inputs) != manifest.input_names or sorted(outputs) != sorted(manifest.output_names):
        raise TrtCheckError(f"{label} parsed inputs {list(inputs)} / outputs {sorted(outputs)}; the manifest's "
                            f"{manifest.kind!r} engine has {manifest.input_names} / {manifest.output_names}")
    if not_fp32:
        raise TrtCheckError(f"{label}: engine I/O {not_fp32} is not float32 (the engine contract)")
    config = builder.create_builder_config()
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # FP32 means FP32 (build_trt.sh passes --noTF32)
    opt_profile = builder.create_optimization_profile()
    for name in manifest.input_names:
        opt_profile.set_shape(name, _shape(manifest, name, profile.min), _shape(manifest, name, profile.opt),
                              _shape(manifest, name, profile.max))
    if config.add_optimization_profile(opt_profile) < 0:
        raise TrtCheckError(f"{label} refused the optimisation profile {profile.as_dict()}")
    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - started
    plan_bytes = int(plan.nbytes) if plan is not None else 0
    del plan, config, parser, network, builder
    return {"parse_seconds": parse_seconds, "build_seconds": build_seconds, "plan_bytes": plan_bytes,
            "inputs": inputs, "outputs": outputs}


def check_engine(
    engine_path: str | os.PathLike[str],
    manifest: Manifest,
    profile: ShapeProfile | None = None,
    tool: TrtTool | None = None,
) -> dict[str, Any]:
    """Parse + build `engine_path` with `tool` (default: `find_tool()`) and `profile` (default: the
    manifest's, as build_trt.sh uses it). Returns the JSON-able record; raises TrtCheckError (one line)
    on a parser error, I/O that differs from the manifest, a failed build, a builder error, or a profile
    the builder calls inconsistent."""
    engine_path = Path(engine_path)
    if tool is None:
        tool, why = find_tool()
        if tool is None:
            raise TrtCheckError(f"no TensorRT to check with: {why} (pip install -e '.[trt]' for TensorRT-RTX)")
    try:
        profile = profile or manifest_profile(manifest)
    except EngineError as exc:
        raise TrtCheckError(f"{exc}; re-export (or re-calibrate) to write a valid profile") from None
    trt = tool.module
    label = f"{tool.name} {tool.version}"
    logger = _Capture.get(trt)
    strongly_typed = tool.name == "tensorrt-rtx" or manifest.precision in ("fp16", "int8")
    with logger.capture() as records:
        try:
            built = _parse_and_build(trt, logger, label, engine_path, manifest, profile, strongly_typed)
        except TrtCheckError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the bindings raise is a failed check, in one line
            raise TrtCheckError(f"{label} failed on {engine_path.name}: {type(exc).__name__}: "
                                f"{_first_line(str(exc))[:300]}") from None
    parse_seconds, build_seconds, plan_bytes = built["parse_seconds"], built["build_seconds"], built["plan_bytes"]
    inputs, outputs = built["inputs"], built["outputs"]
    messages = [(s, m) for s, m in records if not _IGNORED.search(m)]
    errors = [m for s, m in messages if s in ("ERROR", "INTERNAL_ERROR")]
    inconsistent = [m for s, m in messages if PROFILE_PROBLEM.search(m)]
    if inconsistent:
        raise TrtCheckError(f"{label}: the optimisation profile {profile.as_dict()} is not valid for this engine: "
                            f"{_first_line(inconsistent[0])[:300]}")
    if not plan_bytes:
        raise TrtCheckError(f"{label} failed to build {engine_path.name}: "
                            f"{_first_line(errors[0])[:300] if errors else 'no plan and no message'}")
    if errors:
        raise TrtCheckError(f"{label} reported an error building {engine_path.name}: {_first_line(errors[0])[:300]}")
    warnings = [f"{s}: {_first_line(m)[:300]}" for s, m in messages]
    return {
        "passed": True,
        "tool": tool.name,
        "version": tool.version,
        "onnx_parser_version": int(trt.get_nv_onnx_parser_version()) if hasattr(trt, "get_nv_onnx_parser_version")
        else None,
        "strongly_typed": strongly_typed,
        "profile": profile.as_dict(),
        "parse_seconds": round(parse_seconds, 3),
        "build_seconds": round(build_seconds, 3),
        "plan_bytes": plan_bytes,
        "warnings": warnings[:MAX_RECORDED_WARNINGS],
        "num_warnings": len(warnings),
        "network": {"inputs": inputs, "outputs": outputs},
        "engine_sha256": manifest.engine_sha256,
        "checked_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "verified": "ONNX parser + builder with the build_trt.sh profile"
                    + (" (TensorRT-RTX, ahead-of-time on CPU)" if tool.name == "tensorrt-rtx" else "")
                    + "; the plan is not run",
    }


def _record(engine_dir: Path, manifest: Manifest, record: dict[str, Any]) -> Manifest:
    """Store `record` as manifest.extra["tensorrt"]["check"] and rewrite manifest.json atomically."""
    extra = dict(manifest.extra)
    recipe = dict(extra.get("tensorrt") or {})
    recipe["check"] = record
    extra["tensorrt"] = recipe
    updated = dataclasses.replace(manifest, extra=extra)
    atomic_write_bytes(engine_dir / MANIFEST_FILE, (updated.to_json() + "\n").encode())
    return updated


def check_engine_dir(engine_dir: str | os.PathLike[str], tool: str | None = None,
                     record: bool = True) -> dict[str, Any]:
    """`evor-edge trt-check ENGINE_DIR`: check the directory's engine with its build_trt.sh profile.

    Verifies the manifest and engine sha256 first. With record=True the outcome (pass, or the failure's
    message) is stored in manifest.json. Raises TrtCheckError (one line) when no TensorRT is usable or
    the check fails; EngineError for a directory that is not an engine.
    """
    engine_dir = Path(engine_dir)
    manifest = load_manifest(engine_dir)
    found, why = find_tool(tool)
    if found is None:
        raise TrtCheckError(f"no TensorRT to check with: {why} (pip install -e '.[trt]' for TensorRT-RTX)")
    try:
        result = check_engine(engine_dir / manifest.engine_file, manifest, tool=found)
    except TrtCheckError as exc:
        if record:
            _record(engine_dir, manifest, {"passed": False, "tool": found.name, "version": found.version,
                                           "error": str(exc), "engine_sha256": manifest.engine_sha256})
        raise
    if record:
        _record(engine_dir, manifest, result)
    return {"engine_dir": str(engine_dir), **result}


def run_check_hook(engine_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The step `export` and `calibrate` run on the directory they are assembling (before it is renamed
    into place): check it when a TensorRT module is usable and record the result in its manifest.json.

    No usable TensorRT (or ``EVOR_EDGE_TRT_CHECK=off``): records {"skipped": reason} and returns it.
    A failed check raises TrtCheckError, so nothing is written at the output path.
    """
    engine_dir = Path(engine_dir)
    manifest = load_manifest(engine_dir)
    try:
        check_profile(manifest, manifest_profile(manifest))
    except EngineError as exc:
        raise TrtCheckError(str(exc)) from None
    found, why = find_tool()
    if found is None:
        result: dict[str, Any] = {"skipped": why or "no TensorRT module imports",
                                  "verified": False}
    else:
        result = check_engine(engine_dir / manifest.engine_file, manifest, tool=found)
    _record(engine_dir, manifest, result)
    return result
