"""Which torch device training and checkpoint evaluation run on (`--device auto|cpu|cuda[:N]`)."""

from __future__ import annotations

import re

import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


class DeviceError(ValueError):
    """A device that was asked for but is not there (one-line message)."""


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` = the current CUDA GPU when torch sees one, else the CPU; `cuda[:N]` must exist."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = _CUDA_RE.match(name)
    if not match:
        raise DeviceError(f"--device {name!r}: expected {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        built = "this torch build has no CUDA support" if torch.version.cuda is None else "torch sees no CUDA GPU"
        raise DeviceError(f"--device {name}: {built}; use --device cpu (or auto)")
    index = int(match.group(1) or torch.cuda.current_device())
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"--device {name}: only {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def describe_device(device: torch.device) -> str:
    """Human name of a device, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        return f"cuda:{device.index} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def use_tf32_matmuls(device: torch.device) -> None:
    """On CUDA, float32 matmuls in TF32 (`set_float32_matmul_precision("high")`): what JAX does by default
    on Ampere and later, so our steps and the JAX reference's do the same arithmetic. No-op on the CPU."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
