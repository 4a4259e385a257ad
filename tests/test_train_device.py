"""Device handling and step modes: device choice and refusal, one update identical in every step mode
that runs here, checkpoints independent of the optimiser implementation, the JAX reference update equal to
ours. CUDA-only paths (CUDA graph capture, fused Adam) run in scripts/device_check.sh, not here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_mdp import make_transitions

from evor_edge.agents import AgentSpec, make_agent
from evor_edge.checkpoint import IMPLEMENTATION_FLAGS, load_checkpoint
from evor_edge.config import preset_config
from evor_edge.device import DeviceError, resolve_device
from evor_edge.normalization import ObsNormalizer, ReturnScaler
from evor_edge.train import train
from evor_edge.train_step import DeviceBatches, MetricSums, StepModeError, TrainStep, choose_step_mode

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _agent(kind: str, seed: int = 0):
    cfg = preset_config("small", agent=kind, hidden_dims=(32, 32), euler_steps=3, qc_target_candidates=4,
                        batch_size=16)
    spec = AgentSpec(cfg, 3, 1, (-1.0,), (1.0,), ObsNormalizer((0.1, 0.2, 0.3), (1.0, 2.0, 0.5)),
                     ReturnScaler(0.5, 2.0))
    torch.manual_seed(seed)
    return make_agent(spec)


def _batches(batch_size: int = 16) -> DeviceBatches:
    data = make_transitions(500, np.random.default_rng(0))
    tensors = {"observations": torch.from_numpy(data["observations"]), "actions": torch.from_numpy(data["actions"]),
               "rewards": torch.from_numpy(data["rewards"]), "bootstrap": torch.from_numpy(0.8 * data["masks"]),
               "next_observations": torch.from_numpy(data["next_observations"])}
    return DeviceBatches(tensors, torch.device("cpu"), batch_size, generator=torch.Generator().manual_seed(3))


def test_device_choice_and_refusal() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(DeviceError, match="use --device cpu"):
                resolve_device(name)
    with pytest.raises(StepModeError, match="needs a CUDA device"):
        choose_step_mode("cuda-graph", torch.device("cpu"))
    assert choose_step_mode("auto", torch.device("cpu")) == "eager"
    assert choose_step_mode("auto", torch.device("cuda")) == "cuda-graph"


def test_update_is_one_backward_of_the_summed_losses() -> None:
    """`update` = gradient of actor loss + critic loss, applied by Adam: check against a hand-written step."""
    agent, reference = _agent("evor"), _agent("evor")
    batch = _batches().sample()
    noise = agent.sample_noise(16, torch.Generator().manual_seed(5))
    loss, _ = reference.losses(batch, noise)
    actor_grads = torch.autograd.grad(reference.actor_loss(batch, noise), list(reference.actor.parameters()))
    critic_loss, _ = reference.critic_loss(batch, noise)
    critic_grads = torch.autograd.grad(critic_loss, list(reference.critic.parameters()))
    agent.apply_gradients(agent.losses(batch, noise)[0])
    # Adam's first step moves every parameter by -lr * sign(grad) (m/sqrt(v) = g/|g| up to eps).
    lr = agent.config.learning_rate
    for params, ref_params, grads in ((agent.actor, reference.actor, actor_grads),
                                      (agent.critic, reference.critic, critic_grads)):
        for p, p0, g in zip(params.parameters(), ref_params.parameters(), grads, strict=True):
            expected = p0 - lr * g / (g.abs() + 1e-8)
            torch.testing.assert_close(p, expected, atol=1e-6, rtol=0)
    # The target network moved toward the updated online critic by the EMA rate.
    rate = agent.config.target_ema
    for t, t0, o in zip(agent.target_critic.parameters(), reference.target_critic.parameters(),
                        agent.critic.parameters(), strict=True):
        torch.testing.assert_close(t, (1 - rate) * t0 + rate * o, atol=1e-6, rtol=0)
    assert torch.isfinite(loss)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["evor", "qc"])
def test_compiled_step_matches_eager(kind: str) -> None:
    """torch.compile of the losses (fused fwd + bwd) gives the eager update to float tolerance."""
    results = []
    for mode in ("eager", "compile"):
        agent = _agent(kind)
        step = TrainStep(agent, _batches(), mode, noise_generator=torch.Generator().manual_seed(9))
        for _ in range(3):
            step.step()
        results.append(({k: v.detach().clone() for k, v in agent.state_dict().items()}, step.metrics.read()))
    (eager, eager_metrics), (compiled, compiled_metrics) = results
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], atol=2e-5, rtol=1e-4, msg=key)
    assert compiled_metrics == pytest.approx(eager_metrics, rel=1e-4, abs=1e-5)


def test_metric_sums_are_means_since_last_read() -> None:
    sums = MetricSums()
    for value in (1.0, 2.0, 6.0):
        sums.add({"loss": torch.tensor(value)})
        sums.count += 1
    assert sums.read() == {"loss": pytest.approx(3.0)}
    sums.add({"loss": torch.tensor(5.0)})
    sums.count += 1
    assert sums.read() == {"loss": pytest.approx(5.0)}


class _ToyEnv:
    import gymnasium

    action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)


def _train(out: Path, steps: int, resume: bool = False) -> dict:
    data = make_transitions(1000, np.random.default_rng(0))
    cfg = preset_config("small", agent="evor", steps=steps, hidden_dims=(16, 16), batch_size=16, euler_steps=2,
                        checkpoint_every=5, log_every=5)
    return train("toy-task", "toy.npz", cfg, out, resume=resume, progress=False, dataset=(_ToyEnv(), data, data),
                 device="cpu")


def test_checkpoint_holds_no_optimizer_implementation_flags_and_resumes_with_others(tmp_path: Path) -> None:
    """A checkpoint is the same whatever Adam implementation wrote it (fused on CUDA, foreach on CPU); the
    loading side's flags win, and the run continues bit-exactly (the CPU proxy for a CUDA <-> CPU resume)."""
    _train(tmp_path / "straight", 10)
    _train(tmp_path / "resumed", 5)
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "step_0000000005" / "state.json").read_text())
    for groups in state["optimizer_groups"].values():
        assert not set(IMPLEMENTATION_FLAGS) & set(groups[0])
    loaded = load_checkpoint(tmp_path / "resumed", with_optimizer=True, optimizer_flags={"foreach": False})
    assert all(g["foreach"] is False for g in loaded.agent.actor_opt.param_groups)
    _train(tmp_path / "resumed", 10, resume=True)
    a = load_checkpoint(tmp_path / "straight").agent.state_dict()
    b = load_checkpoint(tmp_path / "resumed").agent.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_weights_only_checkpoint_exports_but_cannot_resume(tmp_path: Path) -> None:
    from evor_edge.checkpoint import CheckpointError, save_checkpoint

    agent = _agent("evor")
    agent.update(_batches().sample(), torch.Generator().manual_seed(0))  # Adam state exists now
    save_checkpoint(tmp_path, agent, 7, with_optimizer=False)
    full = save_checkpoint(tmp_path / "full", agent, 7)
    light = tmp_path / "checkpoints" / "step_0000000007" / "model.safetensors"
    assert light.stat().st_size < (full / "model.safetensors").stat().st_size / 2
    assert load_checkpoint(tmp_path).step == 7
    with pytest.raises(CheckpointError, match="weights only"):
        load_checkpoint(tmp_path, with_optimizer=True)


@pytest.mark.parametrize("kind", ["evor", "qc"])
def test_jax_reference_update_equals_ours(kind: str) -> None:
    """The benchmark's JAX update computes our losses and gradients (identical weights, batch, noise)."""
    jax = pytest.importorskip("jax", reason="jax is optional (benchmarks/train_throughput.py compares against it)")
    from evor_edge.jax_reference import JaxUpdate, params_from_torch

    jax.config.update("jax_default_matmul_precision", "highest")
    agent = _agent(kind)
    batch = _batches().sample()
    noise = agent.sample_noise(16, torch.Generator().manual_seed(1))
    loss, metrics = agent.losses(batch, noise)
    grads = torch.autograd.grad(loss, list(agent.actor.parameters()))
    update = JaxUpdate(agent)
    params = params_from_torch(agent)
    as_jax = lambda d: {k: jax.numpy.asarray(v.numpy()) for k, v in d.items()}  # noqa: E731
    (jax_loss, jax_metrics), jax_grads = jax.value_and_grad(update.losses, has_aux=True)(
        params["online"], params["target"], as_jax(batch), as_jax(noise))
    assert float(jax_loss) == pytest.approx(float(loss), rel=1e-4)
    for key, value in metrics.items():
        assert float(jax_metrics[key]) == pytest.approx(float(value), rel=1e-4, abs=1e-5), key
    first_layer = np.asarray(jax_grads["actor"][0]["w"]).T  # stored [in, out]
    np.testing.assert_allclose(first_layer, grads[0].numpy(), rtol=1e-3, atol=1e-5)
