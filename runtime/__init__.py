"""evor_edge.runtime: the torch-free runtime that ships to the robot (numpy + onnxruntime only).

    from evor_edge.runtime import EvorPolicy
    policy = EvorPolicy.load("ENGINE_DIR", backend="auto", num_candidates=32, num_rtg=50,
                             tau_r=1.0, tau_q=1e-3, seed=0)
    action = policy.act(obs)            # (obs_dim,) -> (act_dim,)
    actions = policy.act_batch(obs_b)   # (B, obs_dim) -> (B, act_dim)

Nothing under this package may import torch, onnx or ogbench (a test enforces it).
"""

from .backends import OnnxRuntimeBackend, make_backend
from .manifest import EngineError, Manifest, load_manifest
from .noise import draw_engine_noise
from .policy import EngineOutputError, EvorPolicy, InvalidObservationError, TickInfo
from .selection import SelectionResult, q_star, select, select_from_outputs
from .tensorrt import TensorRTBackend

__all__ = [
    "EngineError",
    "EngineOutputError",
    "EvorPolicy",
    "InvalidObservationError",
    "Manifest",
    "OnnxRuntimeBackend",
    "SelectionResult",
    "TensorRTBackend",
    "TickInfo",
    "draw_engine_noise",
    "load_manifest",
    "make_backend",
    "q_star",
    "select",
    "select_from_outputs",
]
