"""The memory-mapped sharded layout (evor_edge.shards): conversion equals the concatenation of its shards,
memmap batches equal the in-RAM loader's rows, OGBench shards relabelled once, training from a directory,
and every bad input of issue 13 as one line (exit 2) with nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from evor_edge.config import preset_config
from evor_edge.data_commands import convert_command, verify_command
from evor_edge.normalization import ObsNormalizer
from evor_edge.offline_data import load_offline_dataset
from evor_edge.shards import (
    ConvertOptions,
    ShardedDataset,
    ShardError,
    convert_dataset,
    monte_carlo_returns_fast,
    partial_dir,
    state_table,
    verify_dataset,
)
from evor_edge.targets import monte_carlo_returns
from evor_edge.train import build_spec, tensors_from_dataset, train
from evor_edge.train_step import ShardedBatches

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OBS, ACT = 4, 2


def _episodes(rng: np.random.Generator, lengths: list[int], shift: float) -> dict[str, np.ndarray]:
    """Own-data file (OGBench convention): a goal reached in some episodes (mask 0, reward 0), else -1."""
    obs, act, rew, ends, masks = [], [], [], [], []
    for length in lengths:
        x = (rng.normal(size=(length, OBS)) + shift).astype(np.float32)
        obs.append(x)
        act.append(rng.uniform(-1, 1, (length, ACT)).astype(np.float32))
        r = -np.ones(length, np.float32)
        m = np.ones(length, np.float32)
        if rng.random() < 0.5:
            hit = rng.integers(0, length)
            r[hit:] = 0.0
            m[hit:] = 0.0
        rew.append(r)
        masks.append(m)
        e = np.zeros(length, np.float32)
        e[-1] = 1
        ends.append(e)
    return {"observations": np.concatenate(obs), "actions": np.concatenate(act), "rewards": np.concatenate(rew),
            "terminals": np.concatenate(ends), "masks": np.concatenate(masks),
            "action_low": np.full(ACT, -1.0, np.float32), "action_high": np.full(ACT, 1.0, np.float32)}


def _source_dir(tmp_path: Path, files: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(files):
        np.savez(src / f"part-{i:03d}.npz", **_episodes(rng, list(rng.integers(3, 30, 5)), shift=i))
    return src


def _in_ram(src: Path, n_step: int, reward_model: str = "sample") -> dict[str, np.ndarray]:
    """The in-RAM loader's training arrays, file by file, concatenated."""
    cfg = preset_config("small", n_step=n_step, reward_model=reward_model)
    parts = [tensors_from_dataset(load_offline_dataset(p).train, cfg) for p in sorted(src.glob("*.npz"))]
    return {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}


def test_conversion_equals_the_concatenation_of_its_shards(tmp_path: Path) -> None:
    src = _source_dir(tmp_path)
    report = convert_dataset(src, tmp_path / "ds", ConvertOptions(n_steps=(1, 3)), progress=False)
    ds = ShardedDataset(tmp_path / "ds")
    loaded = [load_offline_dataset(p).train for p in sorted(src.glob("*.npz"))]
    assert ds.size == report["splits"]["train"]["transitions"] == sum(len(t["observations"]) for t in loaded)
    assert len(ds.entries) == 3 and ds.obs_dim == OBS and ds.act_dim == ACT
    for n in (1, 3):
        memmap = ds.reader(n, with_mc=True).to_arrays()
        ram = _in_ram(src, n, reward_model="mc")
        assert set(memmap) == set(ram)
        for key in ram:
            if key == "mc_returns":
                np.testing.assert_allclose(memmap[key], ram[key], rtol=1e-5, atol=1e-5)
            else:
                np.testing.assert_array_equal(memmap[key], ram[key], err_msg=f"{key} n={n}")
    # n-step windows never cross files: per-file targets == targets of the concatenation
    cat = {k: np.concatenate([t[k] for t in loaded]) for k in loaded[0]}
    whole = tensors_from_dataset(cat, preset_config("small", n_step=3))
    np.testing.assert_array_equal(ds.reader(3).to_arrays()["rewards"], whole["rewards"].numpy())
    # normalisation statistics computed per shard at conversion == fitted on the concatenation
    spec = build_spec(ds, preset_config("small"))
    fitted = ObsNormalizer.fit(cat["observations"])
    np.testing.assert_allclose(spec.obs_norm.mean, fitted.mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(spec.obs_norm.std, fitted.std, rtol=1e-9, atol=1e-9)
    # next observations are stored once: one state row per transition plus one per episode
    episodes = int(sum(t["terminals"].sum() for t in loaded))
    assert report["splits"]["train"]["states"] == ds.size + episodes
    header = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert header["made_by"]["command"] == "data convert" and header["n_steps"] == [1, 3]
    assert all(len(meta["sha256"]) == 64 for e in header["splits"]["train"]["shards"] for meta in e["arrays"].values())


@pytest.mark.parametrize("read", ["pread", "mmap"])
def test_memmap_batch_equals_the_same_rows_in_ram(tmp_path: Path, read: str) -> None:
    src = _source_dir(tmp_path)
    convert_dataset(src, tmp_path / "ds", ConvertOptions(n_steps=(1, 3)), progress=False)
    ds = ShardedDataset(tmp_path / "ds")
    ram = _in_ram(src, 3)
    reader = ds.reader(3, read=read)
    for prefetch in (0, 2):
        batches = ShardedBatches(reader, torch.device("cpu"), 16, seed=7, start_step=5, prefetch=prefetch)
        try:
            for step in range(5, 9):
                batch = batches.sample()
                index = reader.draw(step, 16, 7)
                assert np.all(np.diff(index) >= 0) and index.max() < ds.size
                for key, value in batch.items():
                    np.testing.assert_array_equal(value.numpy(), ram[key][index], err_msg=key)
        finally:
            batches.close()
    # ranks draw from disjoint shares of the rows, each from its own stream
    rows = [reader.draw(0, 64, 7, rank=r, world_size=2) for r in (0, 1)]
    assert np.all(rows[0] % 2 == 0) and np.all(rows[1] % 2 == 1)
    if read == "pread":  # a shard file cut short under a running reader: one clear error, no garbage rows
        victim = ds.shard_path(2) / "transitions.npy"
        with open(victim, "r+b") as handle:
            handle.truncate(victim.stat().st_size - 4)
        with pytest.raises(ShardError, match="short read"):
            reader.gather(np.array([ds.size - 1]), reader.empty_batch(1))


def test_state_table_and_fast_monte_carlo_match_the_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "x.npz", **_episodes(rng, [5, 1, 7, 3], shift=0.0))
    train = load_offline_dataset(tmp_path / "x.npz").train
    states, obs_row, next_row = state_table(train["observations"], train["next_observations"], train["terminals"])
    np.testing.assert_array_equal(states[obs_row], train["observations"])
    np.testing.assert_array_equal(states[next_row], train["next_observations"])
    assert len(states) == len(obs_row) + int(train["terminals"].sum())
    for gamma in (0.0, 0.5, 0.99):
        np.testing.assert_allclose(
            monte_carlo_returns_fast(train["rewards"], train["masks"], train["terminals"], gamma),
            monte_carlo_returns(train["rewards"], train["masks"], train["terminals"], gamma), rtol=1e-6, atol=1e-6)


def test_train_from_a_converted_directory_and_resume(tmp_path: Path) -> None:
    src = _source_dir(tmp_path)
    convert_dataset(src, tmp_path / "ds", ConvertOptions(n_steps=(1, 3)), progress=False)
    cfg = preset_config("small", steps=6, n_step=3, hidden_dims=(16, 16), batch_size=8, euler_steps=2,
                        checkpoint_every=3, log_every=3)
    straight = train(None, tmp_path / "ds", cfg, tmp_path / "a", progress=False, device="cpu")
    train(None, tmp_path / "ds", cfg.replace(steps=3), tmp_path / "b", progress=False, device="cpu")
    train(None, tmp_path / "ds", cfg, tmp_path / "b", resume=True, progress=False, device="cpu")
    from evor_edge.checkpoint import load_checkpoint

    a, b = (load_checkpoint(tmp_path / r).agent.state_dict() for r in ("a", "b"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["data"]["layout"] == "sharded" and config["distributed"]["global_batch"] == 8
    assert straight["steps"] == 6
    with pytest.raises(ShardError, match="convert again with --n-step"):
        train(None, tmp_path / "ds", cfg.replace(n_step=5), tmp_path / "c", progress=False, device="cpu")
    assert not (tmp_path / "c").exists()


def test_interrupted_conversion_resumes_and_nothing_half_written(tmp_path: Path, monkeypatch) -> None:
    import evor_edge.shards as shards

    src = _source_dir(tmp_path, files=3)
    out = tmp_path / "ds"
    real = shards.write_shard
    calls = {"n": 0}

    def dies_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # a kill while the second shard is written
        return real(*args, **kwargs)

    monkeypatch.setattr(shards, "write_shard", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        convert_dataset(src, out, progress=False)
    monkeypatch.setattr(shards, "write_shard", real)
    assert not out.exists() and partial_dir(out).is_dir()
    with pytest.raises(ShardError, match="interrupted conversion"):
        ShardedDataset(partial_dir(out))
    out.mkdir()
    with pytest.raises(ShardError, match="interrupted conversion: finish it with --resume"):
        ShardedDataset(out)
    out.rmdir()
    with pytest.raises(ShardError, match="pass --resume"):
        convert_dataset(src, out, progress=False)
    report = convert_dataset(src, out, resume=True, progress=False)
    assert report["files_resumed"] == 1 and report["files_converted"] == 2
    assert not partial_dir(out).exists()
    convert_dataset(src, tmp_path / "straight", progress=False)
    for a, b in zip(sorted(out.rglob("*.npy")), sorted((tmp_path / "straight").rglob("*.npy")), strict=True):
        assert a.read_bytes() == b.read_bytes(), a


def _cli(command, args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(command, args)
    return result.exit_code, result.output.strip()


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    # a shard whose dims differ from the others
    src = _source_dir(tmp_path)
    other = _episodes(rng, [4, 4], 0.0)
    other["observations"] = np.concatenate([other["observations"], other["observations"][:, :1]], axis=1)
    np.savez(src / "part-009.npz", **other)
    code, out = _cli(convert_command, [str(src), "--out", str(tmp_path / "x")])
    assert code == 2 and out.startswith("error: ") and "part-009.npz: obs_dim 5" in out and "\n" not in out
    assert not (tmp_path / "x").exists() and not partial_dir(tmp_path / "x").exists()
    (src / "part-009.npz").unlink()
    # an episode that would cross into the next shard
    cut = _episodes(rng, [4, 4], 0.0)
    cut["terminals"][-1] = 0
    np.savez(src / "part-005.npz", **cut)
    code, out = _cli(convert_command, [str(src), "--out", str(tmp_path / "x")])
    assert code == 2 and "ends no episode" in out and not partial_dir(tmp_path / "x").exists()
    (src / "part-005.npz").unlink()
    # an OGBench raw shard without its -val file
    raw = tmp_path / "raw"
    raw.mkdir()
    data = _episodes(rng, [4], 0.0)
    np.savez(raw / "cube-double-play-v0-000.npz", observations=data["observations"], actions=data["actions"],
             terminals=data["terminals"])
    code, out = _cli(convert_command, [str(raw), "--out", str(tmp_path / "x"),
                                       "--env", "cube-double-play-singletask-task2-v0"])
    assert code == 2 and "validation file missing" in out and "cube-double-play-v0-000-val.npz" in out
    code, out = _cli(convert_command, [str(raw), "--out", str(tmp_path / "x")])
    assert code == 2 and "pass --env TASK" in out
    # a converted dataset: truncated array (at load), modified array (at verify)
    code, out = _cli(convert_command, [str(src), "--out", str(tmp_path / "ds"), "--n-step", "1"])
    assert code == 0 and "transitions in 3 shard(s)" in out, out
    code, out = _cli(verify_command, [str(tmp_path / "ds")])
    assert code == 0 and out.startswith("ok: ")
    victim = tmp_path / "ds" / "train" / "shard_00001" / "transitions.npy"
    original = victim.read_bytes()
    victim.write_bytes(original[:-8] + bytes(8))  # same size, other bytes
    ShardedDataset(tmp_path / "ds")  # loading checks headers and sizes only
    code, out = _cli(verify_command, [str(tmp_path / "ds")])
    assert code == 2 and "shard_00001/transitions.npy: sha256" in out
    victim.write_bytes(original[:-8])
    with pytest.raises(ShardError, match="truncated or padded"):
        ShardedDataset(tmp_path / "ds")
    code, out = _cli(verify_command, [str(tmp_path / "ds")])
    assert code == 2 and "truncated" in out
    victim.write_bytes(original)
    assert verify_dataset(tmp_path / "ds", progress=False)["ok"]
    # converting onto an existing directory
    code, out = _cli(convert_command, [str(src), "--out", str(tmp_path / "ds")])
    assert code == 2 and "already exists" in out


def test_ogbench_shards_are_relabelled_once_with_their_val_files(tmp_path: Path) -> None:
    """A directory in OGBench's 100M layout (X-000.npz + X-000-val.npz, ...): every shard relabelled by
    OGBench's own code at conversion, equal to loading each file with the singletask loader."""
    from evor_edge.datagen import generate_dataset
    from evor_edge.datasets import load_task_dataset

    task = "pointmaze-medium-navigate-singletask-task1-v0"
    raw = tmp_path / "pointmaze-medium-navigate-100m-v0"
    raw.mkdir()
    for i in range(2):
        generate_dataset("pointmaze-medium-navigate-v0", raw / f"pointmaze-medium-navigate-v0-{i:03d}.npz",
                         episodes=2, max_episode_steps=40, seed=i, progress=False, expert_eval_episodes=0)
    report = convert_dataset(raw, tmp_path / "ds", ConvertOptions(task=task, n_steps=(1,)), progress=False)
    assert report["splits"]["val"]["shards"] == 2
    ds = ShardedDataset(tmp_path / "ds")
    assert ds.metadata["task"] == task and ds.convention == "ogbench"
    cfg = preset_config("small", n_step=1)
    parts = [tensors_from_dataset(load_task_dataset(task, p)[1], cfg) for p in sorted(raw.glob("*-00?.npz"))]
    ram = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
    memmap = ds.reader(1).to_arrays()
    for key in ram:
        np.testing.assert_array_equal(memmap[key], ram[key], err_msg=key)
    val = ShardedDataset(tmp_path / "ds", split="val")
    assert val.size == sum(len(load_task_dataset(task, p)[2]["observations"]) for p in sorted(raw.glob("*-00?.npz")))
    shutil.rmtree(tmp_path / "ds")
