"""The engine manifest: what an ENGINE_DIR promises about its engine.onnx (torch-free).

Written by `evor_edge.export` and `evor_edge.calibration`, read and verified by the runtime.
A manifest is JSON; the runtime refuses an engine whose format, version or sha256 does not match.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evor_edge.io import atomic_write_bytes, read_json, sha256_file

__all__ = [
    "ENGINE_FILE",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "SURVIVOR_INDEX",
    "EngineError",
    "Manifest",
    "ShapeProfile",
    "atomic_write_bytes",
    "default_profile",
    "load_manifest",
    "load_plan_record",
    "manifest_profile",
    "prune_spec",
    "sha256_file",
    "write_plan_record",
]

FORMAT_NAME = "evor-edge-engine"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# Version history: 1 = the first engines; 2 = a pruned engine (export --prune) also outputs survivor_index
# [B, K1] int64, each survivor's index among the N_pi candidates (version-1 pruned engines lack it and
# still load; their survivors cannot be traced back to candidates).
SURVIVOR_INDEX = "survivor_index"
MANIFEST_FILE = "manifest.json"
ENGINE_FILE = "engine.onnx"
KINDS = ("evor", "qc")
PRECISIONS = ("fp32", "fp16", "int8")


class EngineError(ValueError):
    """An engine directory that cannot be run (missing file, wrong format, hash mismatch)."""


@dataclass
class Manifest:
    """Everything a runtime needs to feed an engine and interpret its outputs.

    kind "evor": inputs obs [B, obs_dim], action_noise [B, N_pi, act_dim], rtg_noise [B, N_pi, N];
                 outputs actions [B, N_pi, act_dim], returns [B, N_pi, N].
    kind "qc":   inputs obs, action_noise; outputs actions [B, N_pi, act_dim], q [B, N_pi].
    A pruned EVOR engine (extra["prune"]) outputs K1 survivors instead of N_pi candidates and, from format
    version 2 on, survivor_index [B, K1] int64 (every other tensor is float32).
    """

    kind: str
    obs_dim: int
    act_dim: int
    action_low: list[float]
    action_high: list[float]
    euler_steps: int
    discount: float
    engine_sha256: str
    precision: str = "fp32"
    default_num_candidates: int = 32
    default_num_rtg: int = 50
    default_tau_r: float = 1.0
    default_tau_q: float = 1e-3
    obs_mean: list[float] = field(default_factory=list)
    obs_std: list[float] = field(default_factory=list)
    env: str = ""
    source_checkpoint: dict[str, Any] = field(default_factory=dict)
    training_config: dict[str, Any] = field(default_factory=dict)
    flops: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    tool_version: str = ""
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    engine_file: str = ENGINE_FILE

    @property
    def input_names(self) -> list[str]:
        return ["obs", "action_noise", "rtg_noise"] if self.kind == "evor" else ["obs", "action_noise"]

    @property
    def output_names(self) -> list[str]:
        if self.kind != "evor":
            return ["actions", "q"]
        return ["actions", "returns", SURVIVOR_INDEX] if self.has_survivor_index else ["actions", "returns"]

    @property
    def has_survivor_index(self) -> bool:
        """A pruned engine of format version >= 2: its outputs say which candidates survived the screen."""
        return bool(self.kind == "evor" and self.format_version >= 2 and isinstance(self.extra, dict)
                    and self.extra.get("prune"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT_NAME:
            raise EngineError(f"not an evor-edge manifest (format={data.get('format')!r})")
        if data.get("format_version") not in READABLE_VERSIONS:
            raise EngineError(
                f"manifest format_version {data.get('format_version')!r} is not supported "
                f"(this runtime reads versions {', '.join(map(str, READABLE_VERSIONS))}); re-export the engine"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise EngineError(f"manifest has unknown fields {unknown}")
        try:
            manifest = cls(**data)
        except TypeError as exc:
            raise EngineError(f"manifest is missing fields: {exc}") from None
        if manifest.kind not in KINDS:
            raise EngineError(f"manifest kind {manifest.kind!r} is not one of {KINDS}")
        if manifest.precision not in PRECISIONS:
            raise EngineError(f"manifest precision {manifest.precision!r} is not one of {PRECISIONS}")
        if len(manifest.action_low) != manifest.act_dim or len(manifest.action_high) != manifest.act_dim:
            raise EngineError("manifest action bounds do not match act_dim")
        return manifest


def load_manifest(engine_dir: str | os.PathLike[str], verify_hash: bool = True) -> Manifest:
    """Read ENGINE_DIR/manifest.json and check engine.onnx against its sha256."""
    engine_dir = Path(engine_dir)
    if not engine_dir.is_dir():
        raise EngineError(f"engine directory {str(engine_dir)!r} does not exist")
    manifest_path = engine_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise EngineError(f"{manifest_path} is missing: not an engine directory (run `evor-edge export`)")
    data = read_json(manifest_path, EngineError)
    if not isinstance(data, dict):
        raise EngineError(f"{manifest_path} is not a JSON object")
    manifest = Manifest.from_dict(data)
    engine_path = engine_dir / manifest.engine_file
    if not engine_path.is_file():
        raise EngineError(f"{engine_path} is missing")
    if verify_hash:
        actual = sha256_file(engine_path)
        if actual != manifest.engine_sha256:
            raise EngineError(
                f"{engine_path} sha256 {actual[:12]}... does not match the manifest's "
                f"{manifest.engine_sha256[:12]}...: the engine was modified or corrupted"
            )
    return manifest


def prune_spec(manifest: Manifest) -> tuple[int, int] | None:
    """(K1 survivors, N1 screening samples) of a pruned EVOR engine (``export --prune``), else None."""
    prune = manifest.extra.get("prune") if manifest.kind == "evor" and isinstance(manifest.extra, dict) else None
    if not prune:
        return None
    try:
        return int(prune["survivors"]), int(prune["screen_rtg"])
    except (KeyError, TypeError, ValueError):
        raise EngineError("manifest extra.prune must have integer 'survivors' and 'screen_rtg'") from None


# ------------------------------------------------------------------------------------------ TensorRT
PLAN_FILE = "engine.plan"
PLAN_RECORD_FILE = "engine.plan.json"  # written by build_trt.sh beside the plan: what it was built from
PLAN_RECORD_FORMAT = "evor-edge-plan"
Dims = tuple[int, int, int]


@dataclass(frozen=True)
class ShapeProfile:
    """One TensorRT optimisation profile over the dynamic axes (B, N_pi, N); N is 1 for kind "qc"."""

    min: Dims = (1, 1, 1)
    opt: Dims = (1, 32, 50)
    max: Dims = (16, 64, 64)

    def as_dict(self) -> dict[str, list[int]]:
        """{"min": [B, N_pi, N], "opt": [...], "max": [...]} (the manifest's form)."""
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: Any) -> ShapeProfile:
        """Parse the manifest's form; EngineError on anything that is not three triples of ints >= 1."""
        try:
            dims = [tuple(int(x) for x in data[key]) for key in ("min", "opt", "max")]
        except (KeyError, TypeError, ValueError):
            raise EngineError(f"TensorRT profile {data!r} is not {{min, opt, max}} of [B, N_pi, N]") from None
        if any(len(d) != 3 or min(d) < 1 for d in dims):
            raise EngineError(f"TensorRT profile {data!r}: each of min / opt / max must be 3 sizes >= 1")
        return cls(*dims)  # type: ignore[arg-type]

    def outside(self, dims: Dims) -> str | None:
        """Why (B, N_pi, N) = dims is outside [min, max], or None when it is inside."""
        for axis, value, lo, hi in zip(("B", "N_pi", "N"), dims, self.min, self.max, strict=True):
            if not lo <= value <= hi:
                return f"{axis}={value} is outside the TensorRT profile's [{lo}, {hi}]"
        return None


def engine_min_shape(manifest: Manifest) -> Dims:
    """The smallest (B, N_pi, N) the engine graph itself accepts: (1, K1, N1) for a pruned engine
    (its TopK keeps K1 of N_pi candidates after a screen on N1 samples), else (1, 1, 1)."""
    pruned = prune_spec(manifest)
    return (1, pruned[0], pruned[1]) if pruned else (1, 1, 1)


def default_profile(manifest: Manifest, max_batch: int = 16, max_candidates: int = 64,
                    max_rtg: int = 64) -> ShapeProfile:
    """The profile `build_trt.sh` writes and `trt-check` builds: the one source of truth for both.

    min = the engine's own minimum (`engine_min_shape`: N_pi >= K1 and N >= N1 for a pruned engine, so
    the profile is self-consistent for its TopK); opt at B=1 with the manifest's default N_pi / N; max
    (16, 64, 64) or the defaults if larger. N is 1 throughout for kind "qc" (no reward-to-go axis).

    The max batch is 16 rather than 64: TensorRT reserves activation memory for the max shapes, and at
    B * N_pi * N rows of hidden-width activations (B=64: 262k rows x 512 x 4 B = 512 MiB per tensor) that
    does not fit an 8 GB Jetson next to a robot stack. Rebuild with a wider profile when needed.
    """
    low = engine_min_shape(manifest)
    n_opt = manifest.default_num_rtg if manifest.kind == "evor" else 1
    opt = (1, int(manifest.default_num_candidates), int(n_opt))
    opt = (max(opt[0], low[0]), max(opt[1], low[1]), max(opt[2], low[2]))
    maximum = (max(max_batch, opt[0]), max(max_candidates, opt[1]), max(max_rtg, opt[2]))
    if manifest.kind != "evor":
        low, opt, maximum = (low[0], low[1], 1), (opt[0], opt[1], 1), (maximum[0], maximum[1], 1)
    profile = ShapeProfile(min=low, opt=opt, max=maximum)
    check_profile(manifest, profile)
    return profile


def check_profile(manifest: Manifest, profile: ShapeProfile) -> None:
    """EngineError unless min <= opt <= max per axis and min covers the engine's own minimum."""
    for axis, lo, mid, hi in zip(("B", "N_pi", "N"), profile.min, profile.opt, profile.max, strict=True):
        if not 1 <= lo <= mid <= hi:
            raise EngineError(f"TensorRT profile {profile.as_dict()}: {axis} needs 1 <= min <= opt <= max")
    need = engine_min_shape(manifest)
    for axis, lo, req in zip(("N_pi", "N"), profile.min[1:], need[1:], strict=True):
        if lo < req:
            raise EngineError(
                f"TensorRT profile {profile.as_dict()}: min {axis}={lo} is below {req}, the smallest this pruned "
                f"engine accepts (its TopK keeps {need[1]} candidates after a screen on {need[2]} samples)")
    if manifest.kind != "evor" and (profile.min[2], profile.opt[2], profile.max[2]) != (1, 1, 1):
        raise EngineError(f"TensorRT profile {profile.as_dict()}: a {manifest.kind!r} engine has no N axis (use 1)")


def manifest_profile(manifest: Manifest) -> ShapeProfile:
    """The profile this ENGINE_DIR's build_trt.sh uses (manifest.extra["tensorrt"]["profile"]), checked
    against the engine's own constraints; `default_profile` when the manifest records none."""
    recorded = manifest.extra.get("tensorrt") if isinstance(manifest.extra, dict) else None
    if not isinstance(recorded, dict) or "profile" not in recorded:
        return default_profile(manifest)
    profile = ShapeProfile.from_dict(recorded["profile"])
    check_profile(manifest, profile)
    return profile


def tensorrt_version_key(version: str) -> tuple[int, ...]:
    """"10.3.0.30" -> (10, 3, 0): plans are tied to TensorRT's major.minor.patch."""
    parts: list[int] = []
    for piece in str(version).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def load_plan_record(engine_dir: str | os.PathLike[str], manifest: Manifest) -> dict[str, Any]:
    """Read ENGINE_DIR/engine.plan.json and check that engine.plan is the plan of *this* engine.onnx.

    Raises EngineError (one line) when the record is missing or unreadable, was written for another
    engine (engine sha256 differs from the manifest's: a stale plan), or when engine.plan's sha256
    differs from the recorded one (a corrupt, truncated or swapped plan). The TensorRT version is
    checked by the backend against the installed `tensorrt` (`tensorrt_version_key`).
    """
    engine_dir = Path(engine_dir)
    record_path, plan_path = engine_dir / PLAN_RECORD_FILE, engine_dir / PLAN_FILE
    if not plan_path.is_file():
        raise EngineError(f"{plan_path} is missing: build it on the target with ./build_trt.sh")
    if not record_path.is_file():
        raise EngineError(f"{record_path} is missing: {PLAN_FILE} was not built by ./build_trt.sh "
                          "(rebuild it; the record ties the plan to this engine.onnx)")
    record = read_json(record_path, EngineError)
    if not isinstance(record, dict) or record.get("format") != PLAN_RECORD_FORMAT:
        raise EngineError(f"{record_path} is not an evor-edge plan record; rebuild with ./build_trt.sh")
    if record.get("engine_sha256") != manifest.engine_sha256:
        raise EngineError(f"{plan_path} is stale: built from engine sha256 {str(record.get('engine_sha256'))[:12]}..., "
                          f"this engine.onnx is {manifest.engine_sha256[:12]}...; rebuild with ./build_trt.sh")
    actual = sha256_file(plan_path)
    if record.get("plan_sha256") != actual:
        raise EngineError(f"{plan_path} sha256 {actual[:12]}... does not match {PLAN_RECORD_FILE} "
                          "(corrupt, truncated or replaced plan); rebuild with ./build_trt.sh")
    if not tensorrt_version_key(str(record.get("tensorrt_version", ""))):
        raise EngineError(f"{record_path} records no TensorRT version; rebuild with ./build_trt.sh")
    return record


def write_plan_record(engine_dir: str | os.PathLike[str], manifest: Manifest, tensorrt_version: str,
                      profile: ShapeProfile | None = None, built_by: str = "python") -> dict[str, Any]:
    """Write ENGINE_DIR/engine.plan.json for an engine.plan built outside build_trt.sh (e.g. with the
    TensorRT Python API), so the runtime can check it is current; atomic. Returns the record."""
    engine_dir = Path(engine_dir)
    record = {
        "format": PLAN_RECORD_FORMAT, "engine_file": manifest.engine_file, "engine_sha256": manifest.engine_sha256,
        "plan_file": PLAN_FILE, "plan_sha256": sha256_file(engine_dir / PLAN_FILE),
        "tensorrt_version": str(tensorrt_version), "precision": manifest.precision,
        "profile": (profile or manifest_profile(manifest)).as_dict(), "built_by": built_by,
    }
    atomic_write_bytes(engine_dir / PLAN_RECORD_FILE, (json.dumps(record, indent=1) + "\n").encode())
    return record
