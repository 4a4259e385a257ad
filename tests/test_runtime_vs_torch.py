"""The shipped path (export -> engine -> EvorPolicy) against the torch reference (Algorithm 2), same noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evor_edge.agents import AgentSpec, make_agent
from evor_edge.checkpoint import save_checkpoint
from evor_edge.config import preset_config
from evor_edge.export import export_engine
from evor_edge.inference import candidates_and_values, q_star, selection_probabilities
from evor_edge.normalization import ObsNormalizer, ReturnScaler
from evor_edge.runtime import EvorPolicy, draw_engine_noise

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # restores torch's thread count afterwards


@pytest.fixture(scope="module", params=["evor", "qc"])
def engine(request, tmp_path_factory, one_torch_thread) -> tuple[Path, object]:
    torch.manual_seed(3)
    cfg = preset_config("small", agent=request.param, hidden_dims=(64, 64), num_candidates=16, num_rtg_eval=8)
    spec = AgentSpec(cfg, 4, 2, (-1.0, -1.0), (1.0, 1.0), ObsNormalizer((5.0, 3.0, 0.0, 0.0), (4.0, 2.0, 1.0, 1.0)),
                     ReturnScaler(-50.0, 50.0))
    agent = make_agent(spec).eval()
    root = tmp_path_factory.mktemp(request.param)
    save_checkpoint(root / "run", agent, 1)
    export_engine(root / "run", root / "engine", progress=False)
    return root / "engine", agent


def test_argmax_selection_matches_torch_reference(engine) -> None:
    engine_dir, agent = engine
    kind = "evor" if hasattr(agent, "sample_returns") else "qc"
    policy = EvorPolicy.load(engine_dir, backend="onnxruntime", tau_q=0.0, seed=7)
    rng = np.random.default_rng(7)
    obs_batch = np.random.default_rng(0).normal([5, 3, 0, 0], [4, 2, 1, 1], (20, 4)).astype(np.float32)
    for obs in obs_batch:
        action = policy.act(obs)
        action_noise, rtg_noise = draw_engine_noise(rng, 1, policy.num_candidates, policy.num_rtg, 2, kind)
        with torch.no_grad():
            actions, values = candidates_and_values(
                agent, torch.from_numpy(obs[None]), torch.from_numpy(action_noise),
                None if rtg_noise is None else torch.from_numpy(rtg_noise))
            q = q_star(values, policy.tau_r) if kind == "evor" else values
        np.testing.assert_allclose(policy.last.q_star[0], q[0].numpy(), atol=1e-3)
        best = int(q[0].argmax())
        if np.sort(q[0].numpy())[-1] - np.sort(q[0].numpy())[-2] > 1e-3:  # a tie is not a disagreement
            assert int(policy.last.chosen[0]) == best
            np.testing.assert_allclose(action, actions[0, best].numpy(), atol=1e-4)


def test_selection_distribution_matches_torch_reference_at_positive_tau_q(engine) -> None:
    """tau_Q > 0: the runtime's candidate probabilities are the torch reference's softmax(Q* / tau_Q) (Eq. 40),
    and its draw is the reference's inverse-CDF draw with the same uniform (not just the argmax)."""
    from evor_edge.runtime.selection import softmax_probs

    engine_dir, agent = engine
    kind = "evor" if hasattr(agent, "sample_returns") else "qc"
    probe = EvorPolicy.load(engine_dir, backend="onnxruntime", tau_q=0.0, seed=11)
    obs_batch = np.random.default_rng(1).normal([5, 3, 0, 0], [4, 2, 1, 1], (24, 4)).astype(np.float32)
    probe.act_batch(obs_batch)
    spread = float(np.median(np.std(probe.last.q_star, axis=1)))
    tau_q = max(spread, 1e-3)  # temperature at the Q* spread: a distribution over several candidates
    policy = EvorPolicy.load(engine_dir, backend="onnxruntime", tau_q=tau_q, seed=11)
    rng = np.random.Generator(np.random.PCG64(11))
    drawn: list[int] = []
    for obs in obs_batch:
        policy.act(obs)
        action_noise, rtg_noise = draw_engine_noise(rng, 1, policy.num_candidates, policy.num_rtg, 2, kind)
        with torch.no_grad():
            _, values = candidates_and_values(
                agent, torch.from_numpy(obs[None]), torch.from_numpy(action_noise),
                None if rtg_noise is None else torch.from_numpy(rtg_noise))
            q = (q_star(values, policy.tau_r) if kind == "evor" else values).double()
            probs = selection_probabilities(q, tau_q)[0].numpy()
        np.testing.assert_allclose(softmax_probs(policy.last.q_star, tau_q)[0], probs, atol=2e-3)
        u = rng.random()  # the one uniform the runtime drew for this row
        cdf = np.cumsum(probs)
        expected = int(min(np.searchsorted(cdf, u, side="right"), len(probs) - 1))
        if np.min(np.abs(cdf - u)) > 2e-3:  # a draw within the error of a CDF step is not a disagreement
            assert int(policy.last.chosen[0]) == expected
        drawn.append(int(policy.last.chosen[0]))
    assert len(set(drawn)) > 1  # the temperature really spreads the choice
