"""n-step targets end to end through the dataset pipeline (file -> load_offline_dataset -> tensors_from_dataset):
hand-computed reward sums, bootstrap factors and x'_{i+K-1} across a termination and a time-limit truncation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evor_edge.config import preset_config
from evor_edge.offline_data import load_offline_dataset
from evor_edge.train import tensors_from_dataset


def test_n_step_targets_through_the_dataset_pipeline(tmp_path: Path) -> None:
    # Episode A: observations 0..3, terminates at its last row. Episode B: 10..13, cut by a time limit at its
    # last row, which has no recorded successor and is dropped (row 6, observation 12, then ends B).
    path = tmp_path / "d.npz"
    np.savez(path, observations=np.array([0, 1, 2, 3, 10, 11, 12, 13], np.float32)[:, None],
             actions=np.zeros((8, 1), np.float32), rewards=np.array([1, 2, 3, 4, 5, 6, 7, 8], np.float32),
             terminals=np.array([0, 0, 0, 1, 0, 0, 0, 0]), timeouts=np.array([0, 0, 0, 0, 0, 0, 0, 1]),
             action_low=[-1.0], action_high=[1.0])
    data = load_offline_dataset(path)
    tensors = tensors_from_dataset(data.train, preset_config("small", discount=0.5, n_step=3))
    g = 0.5
    expected_rewards = [1 + g * 2 + g**2 * 3, 2 + g * 3 + g**2 * 4, 3 + g * 4, 4,
                        5 + g * 6 + g**2 * 7, 6 + g * 7, 7]
    expected_bootstrap = [g**3, 0.0, 0.0, 0.0,  # rows 1-3 reach the termination (mask 0): no bootstrap
                          g**3, g**2, g]       # episode B ends by a time limit: bootstrap from x' = 13
    expected_next = [3, 3, 3, 3, 13, 13, 13]   # x'_{i+K-1}: never across an episode end
    np.testing.assert_allclose(tensors["rewards"].numpy(), expected_rewards, rtol=1e-6)
    np.testing.assert_allclose(tensors["bootstrap"].numpy(), expected_bootstrap, rtol=1e-6)
    np.testing.assert_array_equal(tensors["next_observations"].numpy()[:, 0], expected_next)
    np.testing.assert_array_equal(tensors["observations"].numpy()[:, 0], [0, 1, 2, 3, 10, 11, 12])
    # n = 1 is Algorithm 1's one-step target: r, gamma * mask, the recorded successor.
    one = tensors_from_dataset(data.train, preset_config("small", discount=0.5, n_step=1))
    np.testing.assert_allclose(one["rewards"].numpy(), [1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_allclose(one["bootstrap"].numpy(), [g, g, g, 0, g, g, g])
    np.testing.assert_array_equal(one["next_observations"].numpy()[:, 0], [1, 2, 3, 3, 11, 12, 13])
    assert tensors["rewards"].dtype == one["bootstrap"].dtype == pytest.importorskip("torch").float32
