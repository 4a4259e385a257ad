"""runtime.bench / runtime.fit / runtime.timing: documented keys, the pacing rule, FLOP accounting, budget fit,
observation sources, histogram."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from engine_fixtures import FLOPS, write_engine

from evor_edge.plots import plot_histogram
from evor_edge.runtime import EvorPolicy
from evor_edge.runtime.bench import flops_per_tick, load_dataset_observations, observations_from_manifest, run_bench
from evor_edge.runtime.fit import fit

BENCH_KEYS = {
    "hz", "period_ms", "ticks", "warmup", "batch", "num_candidates", "num_rtg", "latency_ms",
    "engine_ms", "deadline_misses", "deadline_miss_pct", "skipped_slots", "jitter_ms",
    "max_lateness_ms", "achieved_hz", "rss_start_mb", "rss_end_mb", "rss_growth_mb",
    "flops_per_tick", "gflops_per_s", "meets_deadline_p99", "backend",
}
STAT_KEYS = {"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms", "std_ms"}


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_engine(tmp_path_factory.mktemp("bench"))[0]


def test_run_bench_keys(engine_dir: Path) -> None:
    policy = EvorPolicy.load(engine_dir)
    obs = observations_from_manifest(policy.manifest, 16, np.random.default_rng(0))
    result = run_bench(policy, hz=200, ticks=30, observations=obs, warmup=5, keep_latencies=True)
    assert set(result) >= BENCH_KEYS
    assert set(result["latency_ms"]) == STAT_KEYS
    lat = np.asarray(result.pop("latencies_ms"))
    assert result["ticks"] == 30 and lat.shape == (30,)
    # the counts agree with the per-tick latencies they summarise
    assert result["deadline_misses"] == int(np.sum(lat > result["period_ms"]))
    assert result["deadline_miss_pct"] == pytest.approx(100 * result["deadline_misses"] / 30)
    assert result["latency_ms"]["max_ms"] == pytest.approx(lat.max())
    assert result["latency_ms"]["p50_ms"] == pytest.approx(np.median(lat))
    assert result["meets_deadline_p99"] == (result["latency_ms"]["p99_ms"] <= 5.0)
    assert result["flops_per_tick"] == flops_per_tick(policy.manifest, 1, 8, 4)
    assert result["rss_start_mb"] > 0
    json.dumps(result, allow_nan=False)


def test_run_bench_batch_and_latencies(engine_dir: Path) -> None:
    policy = EvorPolicy.load(engine_dir)
    obs = observations_from_manifest(policy.manifest, 5)
    result = run_bench(policy, hz=500, ticks=10, observations=obs, batch=3, warmup=2, keep_latencies=True)
    assert result["batch"] == 3 and len(result["latencies_ms"]) == 10
    assert policy.last.batch == 3
    with pytest.raises(ValueError):
        run_bench(policy, hz=0, ticks=10, observations=obs)
    with pytest.raises(ValueError):
        run_bench(policy, hz=50, ticks=10, observations=np.zeros((3, 7)))


def test_flops_spec(engine_dir: Path) -> None:
    manifest = EvorPolicy.load(engine_dir).manifest
    c, a, b = (FLOPS["per_tick"][k] for k in ("const", "per_candidate", "per_candidate_sample"))
    assert flops_per_tick(manifest, 2, 32, 50) == 2 * (c + 32 * a + 32 * 50 * b)
    manifest.flops = {}
    assert flops_per_tick(manifest, 1, 8, 4) is None
    manifest.flops = {"per_tick": "garbage"}
    assert flops_per_tick(manifest, 1, 8, 4) is None


def test_fit_reports_table_and_restores_settings(engine_dir: Path) -> None:
    policy = EvorPolicy.load(engine_dir, num_candidates=8, num_rtg=4)
    state = policy.rng.bit_generator.state
    # a 1000 s budget: everything fits whatever this machine's load (benchmarks measure time, tests do not)
    result = fit(policy=policy, hz=1e-3, ticks=5, warmup=1, npi_grid=(1, 4), n_grid=(1, 8))
    assert result["chosen"] == {**result["chosen"], "num_candidates": 4, "num_rtg": 8}
    assert len(result["table"]) == 4
    assert (policy.num_candidates, policy.num_rtg) == (8, 4)
    assert policy.rng.bit_generator.state == state
    # An impossible budget: nothing fits and dominated points are skipped.
    none = fit(policy=policy, hz=1e9, ticks=3, warmup=0, npi_grid=(1, 4), n_grid=(1, 8))
    assert none["chosen"] is None
    assert [r["status"] for r in none["table"]] == ["measured", "skipped", "skipped", "skipped"]
    json.dumps(result, allow_nan=False)


def test_observation_sources(engine_dir: Path, tmp_path: Path) -> None:
    manifest = EvorPolicy.load(engine_dir).manifest
    obs = observations_from_manifest(manifest, 4000, np.random.default_rng(0))
    assert obs.shape == (4000, 4) and obs.dtype == np.float32
    np.testing.assert_allclose(obs.mean(axis=0), manifest.obs_mean, atol=0.1)
    np.testing.assert_allclose(obs.std(axis=0), manifest.obs_std, atol=0.1)
    path = tmp_path / "data.npz"
    np.savez(path, observations=np.ones((10, 4)), actions=np.zeros((10, 2)))
    assert load_dataset_observations(path, limit=3, obs_dim=4).shape == (3, 4)
    with pytest.raises(ValueError, match="dim"):
        load_dataset_observations(path, obs_dim=5)
    np.savez(tmp_path / "bad.npz", actions=np.zeros(3))
    with pytest.raises(ValueError, match="observations"):
        load_dataset_observations(tmp_path / "bad.npz")


def test_pacer_known_schedule() -> None:
    """The one pacing rule (bench and bench --fit): a fixed 1/hz grid, overrun slots skipped and counted."""
    from evor_edge.runtime.timing import Pacer

    pacer = Pacer(50.0, start=0.0)  # slots at 0.02, 0.04, 0.06, ...
    assert pacer.next == pytest.approx(0.02)
    assert pacer.done(0.025) == 0 and pacer.next == pytest.approx(0.04)  # on time: the next slot
    assert pacer.done(0.04 + 0.045) == 2 and pacer.next == pytest.approx(0.10)  # 45 ms: slots 0.06, 0.08 lost
    assert pacer.done(0.10 + 0.021) == 1 and pacer.next == pytest.approx(0.14)  # 21 ms: slot 0.12 lost
    assert pacer.done(0.141) == 0 and pacer.next == pytest.approx(0.16)
    assert pacer.skipped == 3
    back_to_back = Pacer(0.0)
    assert back_to_back.done(123.0) == 0 and back_to_back.skipped == 0


def test_latency_stats_known_values() -> None:
    from evor_edge.runtime.timing import latency_stats, summarize

    stats = latency_stats(np.arange(1, 101) * 1e-3)  # 1..100 ms
    assert stats["p50_ms"] == pytest.approx(50.5) and stats["max_ms"] == pytest.approx(100.0)
    assert stats["p99_ms"] == pytest.approx(99.01) and stats["mean_ms"] == pytest.approx(50.5)
    assert latency_stats([]) == dict.fromkeys(STAT_KEYS)
    assert summarize([1.0, np.nan, 3.0], {"median": 50, "max": "max"}) == {"median": 2.0, "max": 3.0}


def test_plot_histogram(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = plot_histogram(np.random.default_rng(0).gamma(2.0, 1.0, size=200), 20.0, tmp_path / "h.png")
    assert Path(out).stat().st_size > 0


def test_grid_preference_prefers_candidates_with_enough_samples() -> None:
    from evor_edge.runtime.fit import MIN_FIT_RTG, _grid_preference

    rows = [{"num_candidates": 1, "num_rtg": 64}, {"num_candidates": 8, "num_rtg": 4},
            {"num_candidates": 4, "num_rtg": MIN_FIT_RTG}, {"num_candidates": 16, "num_rtg": 2},
            {"num_candidates": 2, "num_rtg": 32}]
    assert max(rows, key=_grid_preference) == {"num_candidates": 4, "num_rtg": MIN_FIT_RTG}
    rows.append({"num_candidates": 4, "num_rtg": 16})  # same N_pi: more samples win
    assert max(rows, key=_grid_preference) == {"num_candidates": 4, "num_rtg": 16}
    # nothing with enough samples: candidates before samples, but never the base policy (N_pi 1)
    few = [{"num_candidates": 1, "num_rtg": 64}, {"num_candidates": 2, "num_rtg": 4},
           {"num_candidates": 8, "num_rtg": 4}]
    assert max(few, key=_grid_preference) == {"num_candidates": 8, "num_rtg": 4}
    assert max([{"num_candidates": 1, "num_rtg": 64}, {"num_candidates": 1, "num_rtg": 8}],
               key=_grid_preference)["num_rtg"] == 64
    assert max([{"num_candidates": 4, "num_rtg": None}, {"num_candidates": 8, "num_rtg": None}],
               key=_grid_preference)["num_candidates"] == 8  # QC engines: no samples axis


def test_fit_confirms_the_grid_choice_paced_and_falls_back(engine_dir: Path, monkeypatch) -> None:
    import evor_edge.runtime.fit as bench

    policy = EvorPolicy.load(engine_dir, backend="onnxruntime", seed=0, intra_op_threads=1)
    real = bench._paced_point
    paced_calls: list[tuple[int, int]] = []

    def paced(policy_, feeds, ticks, warmup, hz):  # the preferred point misses its deadline when paced
        paced_calls.append((policy_.num_candidates, policy_.num_rtg))
        lat = real(policy_, feeds, ticks, warmup, hz)
        return lat + 10.0 if len(paced_calls) == 1 else lat  # +10 s: over the 5 s budget below

    monkeypatch.setattr(bench, "_paced_point", paced)
    result = fit(policy=policy, hz=200, budget_fraction=1e3, ticks=3, warmup=0, npi_grid=(2, 4), n_grid=(4, 8),
                 confirm_ticks=3)
    assert paced_calls == [(4, 8), (2, 8)]  # preference: 8 samples before more candidates
    assert result["chosen"]["num_candidates"] == 2 and result["chosen"]["num_rtg"] == 8
    rows = {(r["num_candidates"], r["num_rtg"]): r for r in result["table"]}
    assert rows[(4, 8)]["fits"] is False and rows[(4, 8)]["paced_p99_ms"] > 5000
    assert result["chosen"]["p99_ms"] == rows[(2, 8)]["paced_p99_ms"]
    assert result["confirmed_paced"] == {"ticks": 3, "hz": 200.0}
