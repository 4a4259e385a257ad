"""Algorithm 2 selection math (runtime.selection) against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evor_edge.runtime.selection import SelectionScratch, q_star, select, softmax_probs


def test_q_star_two_sample_known_value() -> None:
    # tau * log((e^{1/tau} + e^{3/tau}) / 2) with tau = 1
    r = np.array([[[1.0, 3.0]]], dtype=np.float32)
    expected = math.log((math.e**1 + math.e**3) / 2)
    assert q_star(r, 1.0)[0, 0] == pytest.approx(expected, rel=1e-12)
    # tau = 2: 2 * log((e^{0.5} + e^{1.5}) / 2)
    assert q_star(r, 2.0)[0, 0] == pytest.approx(2 * math.log((math.exp(0.5) + math.exp(1.5)) / 2), rel=1e-12)


def test_q_star_limits_max_and_mean() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(size=(3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(q_star(r, 1e-6), r.max(axis=-1), atol=1e-4)
    np.testing.assert_allclose(q_star(r, 1e8), r.astype(np.float64).mean(axis=-1), atol=1e-6)
    np.testing.assert_allclose(q_star(r, math.inf), r.astype(np.float64).mean(axis=-1), atol=1e-12)
    # Monotone in tau between mean and max.
    mid = q_star(r, 1.0)
    assert np.all(mid <= r.max(axis=-1) + 1e-9) and np.all(mid >= r.mean(axis=-1) - 1e-6)


def test_q_star_stable_for_large_returns() -> None:
    r = np.array([[[1e4, 1e4 - 1.0, 9.0e3]]], dtype=np.float32)
    q = q_star(r, 1.0)
    assert np.isfinite(q).all()
    expected = 1e4 + math.log((1 + math.exp(-1.0) + math.exp(-1000.0)) / 3)
    assert q[0, 0] == pytest.approx(expected, abs=1e-6)
    assert np.isfinite(q_star(-r, 1e-3)).all()


def test_q_star_out_and_scratch_match() -> None:
    rng = np.random.default_rng(1)
    r = rng.normal(size=(2, 4, 6)).astype(np.float32) * 10
    out = np.empty((2, 4))
    scratch = SelectionScratch(2, 4, 6)
    res = q_star(r, 0.5, out=out, scratch=scratch)
    assert res is out
    np.testing.assert_allclose(out, q_star(r, 0.5), rtol=1e-12)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_tau_r_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="tau_r"):
        q_star(np.zeros((1, 2, 3)), bad)


def test_select_argmax_at_zero_temperature_draws_nothing() -> None:
    q = np.array([[0.1, 0.5, 0.3], [2.0, -1.0, 1.9]])
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert select(q, 0.0, rng).tolist() == [1, 0]
    assert rng.bit_generator.state == state


def test_select_tiny_temperature_is_argmax() -> None:
    q = np.array([[0.1, 0.5, 0.3], [2.0, -1.0, 1.9]])
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert select(q, 1e-4, rng).tolist() == [1, 0]


def test_select_infinite_temperature_is_uniform() -> None:
    q = np.tile(np.array([[100.0, 0.0, -50.0, 3.0]]), (20000, 1))
    idx = select(q, math.inf, np.random.default_rng(0))
    freq = np.bincount(idx, minlength=4) / idx.size
    np.testing.assert_allclose(freq, 0.25, atol=0.015)


def test_select_matches_softmax_frequencies() -> None:
    q = np.tile(np.array([[0.0, math.log(2.0), math.log(5.0)]]), (40000, 1))  # p = 1/8, 2/8, 5/8
    idx = select(q, 1.0, np.random.default_rng(3))
    freq = np.bincount(idx, minlength=3) / idx.size
    np.testing.assert_allclose(freq, [1 / 8, 2 / 8, 5 / 8], atol=0.01)
    np.testing.assert_allclose(softmax_probs(q[:1], 1.0)[0], [1 / 8, 2 / 8, 5 / 8], rtol=1e-12)


def test_select_large_values_are_stable() -> None:
    q = np.array([[1e4, 1e4 + 1e-3, 1e4 - 5.0]])
    idx = select(q, 1e-3, np.random.default_rng(0))
    assert idx.tolist()[0] in (0, 1)
    assert np.isfinite(softmax_probs(q, 1e-3)).all()


def test_select_uses_one_uniform_per_row() -> None:
    q = np.zeros((3, 4))
    rng = np.random.default_rng(9)
    select(q, 1.0, rng, scratch=SelectionScratch(3, 4))
    ref = np.random.default_rng(9)
    ref.random(3)
    assert rng.random() == ref.random()


def test_select_rejects_negative_temperature() -> None:
    with pytest.raises(ValueError, match="tau_q"):
        select(np.zeros((1, 2)), -1.0, np.random.default_rng(0))
