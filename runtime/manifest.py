"""The engine manifest: what an ENGINE_DIR promises about its engine.onnx (torch-free).

Written by `evor_edge.export` and `evor_edge.calibration`, read and verified by the runtime.
A manifest is JSON; the runtime refuses an engine whose format, version or sha256 does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_NAME = "evor-edge-engine"
FORMAT_VERSION = 1
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
        return ["actions", "returns"] if self.kind == "evor" else ["actions", "q"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT_NAME:
            raise EngineError(f"not an evor-edge manifest (format={data.get('format')!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise EngineError(
                f"manifest format_version {data.get('format_version')!r} is not supported "
                f"(this runtime reads version {FORMAT_VERSION}); re-export the engine"
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


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(engine_dir: str | os.PathLike[str], verify_hash: bool = True) -> Manifest:
    """Read ENGINE_DIR/manifest.json and check engine.onnx against its sha256."""
    engine_dir = Path(engine_dir)
    if not engine_dir.is_dir():
        raise EngineError(f"engine directory {str(engine_dir)!r} does not exist")
    manifest_path = engine_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise EngineError(f"{manifest_path} is missing: not an engine directory (run `evor-edge export`)")
    try:
        data = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EngineError(f"{manifest_path} is not valid JSON: {exc}") from None
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


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a file via a temp file in the same directory and os.replace (never half-written)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def move_dir_into_place(tmp: Path, out: Path, overwrite: bool, exists_error: Exception) -> None:
    """Rename a finished sibling temp directory to `out`; an existing `out` is replaced only with
    `overwrite` (moved aside first and restored if the rename fails), else `exists_error` is raised."""
    if not out.exists():
        os.rename(tmp, out)  # atomic on one filesystem; tmp is a sibling of out
        return
    if not overwrite:
        raise exists_error
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(backup)
    os.rename(out, backup)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def prune_spec(manifest: Manifest) -> tuple[int, int] | None:
    """(K1 survivors, N1 screening samples) of a pruned EVOR engine (``export --prune``), else None."""
    prune = manifest.extra.get("prune") if manifest.kind == "evor" and isinstance(manifest.extra, dict) else None
    if not prune:
        return None
    try:
        return int(prune["survivors"]), int(prune["screen_rtg"])
    except (KeyError, TypeError, ValueError):
        raise EngineError("manifest extra.prune must have integer 'survivors' and 'screen_rtg'") from None
