"""Checkpoints: safetensors (tensors) + JSON (everything else), never pickle; written atomically.

Layout of a run directory:

    RUN/checkpoints/step_0000020000/model.safetensors   weights, target weights, Adam moments, torch RNG
    RUN/checkpoints/step_0000020000/state.json          spec, step, numpy RNG, sha256 of the tensors file
    RUN/checkpoints/LATEST                              name of the newest complete checkpoint

A checkpoint directory is assembled under a temporary name and renamed into place, then LATEST is
replaced atomically, so a kill at any point leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from evor_edge import __version__
from evor_edge.agents import AgentSpec, BaseAgent, make_agent
from evor_edge.io import atomic_write_bytes, atomic_write_json, sha256_file, staged_dir

CHECKPOINT_FORMAT = "evor-edge-checkpoint"
CHECKPOINT_VERSION = 1
TENSORS_FILE = "model.safetensors"
STATE_FILE = "state.json"
LATEST_FILE = "LATEST"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (missing, truncated, tampered, wrong format)."""


@dataclass
class LoadedCheckpoint:
    agent: BaseAgent
    step: int
    path: Path
    meta: dict[str, Any]
    sha256: str


# How Adam runs on this device (fused kernel, CUDA-graph safe, multi-tensor), not what it computes: never
# stored, so a checkpoint is the same whatever device or step mode wrote it; taken from the optimiser that
# the loading side built for its own device.
IMPLEMENTATION_FLAGS = ("fused", "capturable", "foreach", "differentiable")


def _optimizer_tensors(agent: BaseAgent) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    groups: dict[str, Any] = {}
    for name, opt in agent.optimizers().items():
        state = opt.state_dict()
        groups[name] = [{k: v for k, v in group.items() if k not in IMPLEMENTATION_FLAGS}
                        for group in state["param_groups"]]
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                tensors[f"optim.{name}.{index}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    return tensors, groups


def _load_optimizers(agent: BaseAgent, tensors: dict[str, torch.Tensor], groups: dict[str, Any]) -> None:
    for name, opt in agent.optimizers().items():
        state: dict[int, dict[str, torch.Tensor]] = {}
        prefix = f"optim.{name}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, field = key[len(prefix):].split(".", 1)
                state.setdefault(int(index), {})[field] = value
        current = opt.param_groups
        if len(current) != len(groups[name]):
            raise ValueError(f"optimizer {name}: {len(groups[name])} parameter groups stored, {len(current)} built")
        merged = [{**saved, **{k: now[k] for k in IMPLEMENTATION_FLAGS if k in now}}
                  for saved, now in zip(groups[name], current, strict=True)]
        opt.load_state_dict({"state": state, "param_groups": merged})


def save_checkpoint(
    run_dir: str | os.PathLike[str], agent: BaseAgent, step: int, extra: dict[str, Any] | None = None,
    torch_rng: torch.Generator | None = None, keep: int = 2, rng_states: dict[str, torch.Tensor] | None = None,
    with_optimizer: bool = True,
) -> Path:
    """Write RUN/checkpoints/step_N atomically, point LATEST at it, prune to the `keep` newest.

    Tensors are stored from host copies whatever device the agent is on. `rng_states` adds named RNG
    states (e.g. ``{"cuda": ...}``) as ``rng.NAME``; `with_optimizer=False` writes the weights only (an
    inference checkpoint: it exports and evaluates, but cannot be resumed).
    """
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:010d}"
    with staged_dir(final, overwrite=True, exists_error=FileExistsError(final), tag="checkpoint") as tmp:
        tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in agent.state_dict().items()}
        groups: dict[str, Any] = {}
        if with_optimizer:
            opt_tensors, groups = _optimizer_tensors(agent)
            tensors.update(opt_tensors)
        if torch_rng is not None:
            tensors["rng.torch"] = torch_rng.get_state()
        for name, value in (rng_states or {}).items():
            tensors[f"rng.{name}"] = value.detach().cpu().clone()
        save_file(tensors, str(tmp / TENSORS_FILE))
        state = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "tool_version": __version__,
            "step": step,
            "spec": agent.spec.to_dict(),
            "optimizer_groups": groups,
            "tensors_sha256": sha256_file(tmp / TENSORS_FILE),
            "extra": extra or {},
        }
        atomic_write_json(tmp / STATE_FILE, state)
    atomic_write_bytes(ckpt_root / LATEST_FILE, final.name.encode())
    for old in sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Accept a step directory, a run's checkpoints/ directory or a run directory; return the step dir."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if (path / STATE_FILE).is_file():
        return path
    for root in (path / "checkpoints", path):
        latest = root / LATEST_FILE
        if latest.is_file():
            step_dir = root / latest.read_text().strip()
            if (step_dir / STATE_FILE).is_file():
                return step_dir
            raise CheckpointError(f"{latest} points to {step_dir.name!r}, which is missing or incomplete")
    raise CheckpointError(f"{str(path)!r} is not a checkpoint (no {STATE_FILE}) nor a run directory")


def load_checkpoint(path: str | os.PathLike[str], with_optimizer: bool = False,
                    device: torch.device | str = "cpu",
                    optimizer_flags: dict[str, Any] | None = None) -> LoadedCheckpoint:
    """Load and verify a checkpoint onto `device`; any defect raises CheckpointError with a one-line reason.

    With `with_optimizer`, the Adam optimisers are rebuilt for `device` with `optimizer_flags` (see
    `evor_edge.train_step.optimizer_flags`) before their state is loaded, so a run resumes on any device.
    """
    step_dir = resolve_checkpoint(path)
    try:
        meta = json.loads((step_dir / STATE_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(f"{step_dir / STATE_FILE} is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{step_dir} is not an evor-edge checkpoint")
    if meta.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{step_dir}: unsupported checkpoint format_version {meta.get('format_version')!r}")
    tensors_path = step_dir / TENSORS_FILE
    if not tensors_path.is_file():
        raise CheckpointError(f"{tensors_path} is missing")
    digest = sha256_file(tensors_path)
    if digest != meta.get("tensors_sha256"):
        raise CheckpointError(f"{tensors_path} is truncated or modified (sha256 does not match state.json)")
    try:
        tensors = load_file(str(tensors_path))
        agent = make_agent(AgentSpec.from_dict(meta["spec"]))
        model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        agent.load_state_dict(model, strict=True)
        agent.to(device)
        if with_optimizer:
            if not meta.get("optimizer_groups"):
                raise ValueError("it holds weights only (no optimizer state) and cannot be resumed")
            agent.build_optimizers(**(optimizer_flags or {}))
            _load_optimizers(agent, tensors, meta["optimizer_groups"])
    except (SafetensorError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{step_dir} cannot be loaded: {str(exc).splitlines()[0]}") from None
    if "rng.torch" in tensors:
        meta["_torch_rng_state"] = tensors["rng.torch"]
    if "rng.cuda" in tensors:
        meta["_cuda_rng_state"] = tensors["rng.cuda"]
    return LoadedCheckpoint(agent=agent, step=int(meta["step"]), path=step_dir, meta=meta, sha256=digest)
