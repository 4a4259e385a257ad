"""evor_edge.runtime: the torch-free runtime that ships to the robot (numpy + onnxruntime only).

    from evor_edge.runtime import EvorPolicy
    policy = EvorPolicy.load("ENGINE_DIR", backend="auto", num_candidates=32, num_rtg=50,
                             tau_r=1.0, tau_q=1e-3, seed=0)
    action = policy.act(obs)            # (obs_dim,) -> (act_dim,)
    actions = policy.act_batch(obs_b)   # (B, obs_dim) -> (B, act_dim)

Nothing under this package may import torch, onnx or ogbench (a test enforces it).
"""

from .backends import OnnxRuntimeBackend, TensorRTBackend, make_backend
from .manifest import EngineError, Manifest, load_manifest
from .policy import (
    EngineOutputError,
    EvorPolicy,
    InvalidObservationError,
    TickInfo,
    draw_engine_noise,
    select_from_outputs,
)
from .selection import q_star, select

__all__ = [
    "EngineError",
    "EngineOutputError",
    "EvorPolicy",
    "InvalidObservationError",
    "Manifest",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "TickInfo",
    "draw_engine_noise",
    "load_manifest",
    "make_backend",
    "q_star",
    "select",
    "select_from_outputs",
]
