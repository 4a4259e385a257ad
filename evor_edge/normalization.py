"""Observation normalisation and return scaling, fitted on the dataset and stored in checkpoints.

Returns are mapped affinely so that the range of possible discounted returns,
[r_min / (1 - gamma), r_max / (1 - gamma)], lands on [-1, 1], matching the N(0, 1) noise of the flow.
The map commutes with the distributional Bellman equation (see `ReturnScaler.bellman_target`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ObsNormalizer:
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, observations: np.ndarray, min_std: float = 1e-3) -> ObsNormalizer:
        mean = observations.mean(axis=0, dtype=np.float64)
        std = np.maximum(observations.std(axis=0, dtype=np.float64), min_std)
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def torch(self, obs: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=obs.dtype, device=obs.device)
        std = torch.as_tensor(self.std, dtype=obs.dtype, device=obs.device)
        return (obs - mean) / std

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> ObsNormalizer:
        return cls(tuple(data["mean"]), tuple(data["std"]))


@dataclass(frozen=True)
class ReturnScaler:
    """u = (z - center) / half_width, with the discounted-return range mapped onto [-1, 1]."""

    center: float
    half_width: float

    @classmethod
    def fit(cls, rewards: np.ndarray, discount: float, terminates: bool = False) -> ReturnScaler:
        """Map [r_min, r_max] / (1 - gamma) onto [-1, 1]; with terminations the hull also holds 0 (a return
        that stops early). Constant returns (one reward, no termination) keep a unit half-width: every
        target is then exactly the centre, and no division by a vanishing range can blow it up."""
        low = float(rewards.min()) / (1.0 - discount)
        high = float(rewards.max()) / (1.0 - discount)
        if terminates:
            low, high = min(low, 0.0), max(high, 0.0)
        center = (high + low) / 2.0
        half = (high - low) / 2.0
        if half <= 1e-6 * max(1.0, abs(center)):
            half = max(1.0, abs(center))
        return cls(center=center, half_width=half)

    def normalize(self, z):
        return (z - self.center) / self.half_width

    def denormalize(self, u):
        return u * self.half_width + self.center

    def bellman_target(self, reward: torch.Tensor, bootstrap: torch.Tensor, next_u: torch.Tensor) -> torch.Tensor:
        """Normalised sample of R + b * Z' given a normalised sample u' of Z' (b = gamma * mask for one step).

        With z = c + s u: u = (R + b (c + s u') - c) / s = (R - c (1 - b)) / s + b u'.
        """
        return (reward - self.center * (1.0 - bootstrap)) / self.half_width + bootstrap * next_u

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ReturnScaler:
        return cls(float(data["center"]), float(data["half_width"]))
