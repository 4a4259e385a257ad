"""LogSumExp Q* (Eq. 39) and softmax selection (Eq. 40) of the torch reference: known limits."""

from __future__ import annotations

import math

import pytest
import torch

from evor_edge.inference import q_star, selection_probabilities


def test_q_star_small_temperature_is_max() -> None:
    z = torch.tensor([[1.0, -3.0, 2.5, 0.0]])
    assert q_star(z, 1e-4).item() == pytest.approx(2.5, abs=1e-3)


def test_q_star_large_temperature_is_mean() -> None:
    z = torch.tensor([[1.0, -3.0, 2.5, 0.0]], dtype=torch.float64)
    assert q_star(z, 1e6).item() == pytest.approx(0.125, abs=1e-4)
    assert q_star(z, math.inf).item() == pytest.approx(0.125)


def test_q_star_hand_computed_two_samples() -> None:
    # tau * log((e^{0} + e^{2}) / 2) with tau = 1
    z = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    assert q_star(z, 1.0).item() == pytest.approx(math.log((1 + math.e**2) / 2))


def test_q_star_is_stable_for_large_returns() -> None:
    z = torch.tensor([[1e4, 1e4 - 1.0]])
    value = q_star(z, 1.0).item()
    assert math.isfinite(value)
    assert value == pytest.approx(1e4 + math.log((1 + math.exp(-1)) / 2), abs=1e-2)


def test_q_star_rejects_non_positive_temperature() -> None:
    with pytest.raises(ValueError):
        q_star(torch.zeros(1, 3), 0.0)


def test_softmax_limits() -> None:
    q = torch.tensor([[0.1, 0.5, 0.3]])
    assert selection_probabilities(q, 1e-6)[0].tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert selection_probabilities(q, 0.0)[0].tolist() == [0.0, 1.0, 0.0]
    assert selection_probabilities(q, 1e6)[0].tolist() == pytest.approx([1 / 3] * 3, abs=1e-6)
    expected = torch.softmax(q / 0.2, dim=-1)
    assert torch.allclose(selection_probabilities(q, 0.2), expected)
