"""Flow-matching primitives: linear-path targets and forward-Euler integration (Algorithm 3).

Linear paths (Lipman et al., Eq. 11): x^t = (1 - t) x^0 + t x^1, target velocity x^1 - x^0.
Forward Euler with M uniform steps: x <- x + v(x, m / M) / M for m = 0..M-1. (Algorithm 3 in the paper
writes m in {0..M}, i.e. M + 1 steps of size 1/M, which would overshoot t = 1; we take M steps.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (x^t, velocity target x^1 - x^0) for the linear probability path."""
    return (1.0 - t) * x0 + t * x1, x1 - x0


def euler_integrate(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, steps: int
) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t = 0 to 1 with `steps` forward-Euler steps."""
    x = x0
    dt = 1.0 / steps
    for m in range(steps):
        t = torch.full((*x.shape[:-1], 1), m * dt, dtype=x.dtype, device=x.device)
        x = x + dt * velocity(x, t)
    return x


def flow_matching_loss(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    generator: torch.Generator | None = None,
    x0: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
) -> torch.Tensor:
    """Conditional flow-matching loss E ||v(x^t, t) - (x^1 - x^0)||^2 (Eq. 12 / Eq. 13), mean over batch.

    x0 (noise, like x1) and t ([..., 1], uniform on [0, 1]) are drawn from `generator` when not given.
    """
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
    if t is None:
        t = torch.rand((*x1.shape[:-1], 1), generator=generator, dtype=x1.dtype, device=x1.device)
    xt, target = interpolate(x0, x1, t)
    return ((velocity(xt, t) - target) ** 2).sum(dim=-1).mean()
