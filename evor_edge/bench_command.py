"""`evor-edge bench`: open an engine, optionally fit (N_pi, N) to the deadline, run at a fixed rate.

Torch-free: uses only evor_edge.runtime (numpy + onnxruntime), so it runs on the robot install.
"""

from __future__ import annotations

from typing import Any

from evor_edge.runtime import EvorPolicy
from evor_edge.runtime.bench import (
    fit as fit_budget,
)
from evor_edge.runtime.bench import (
    load_dataset_observations,
    observations_from_manifest,
    plot_histogram,
    run_bench,
)


def bench_engine(
    engine_dir: str, hz: float = 50.0, ticks: int = 500, num_candidates: int | None = None,
    num_rtg: int | None = None, batch: int = 1, backend: str = "auto", dataset_path: str | None = None,
    fit: bool = False, plot_path: str | None = None, seed: int = 0,
) -> dict[str, Any]:
    policy = EvorPolicy.load(engine_dir, backend=backend, num_candidates=num_candidates, num_rtg=num_rtg,
                             seed=seed)
    if dataset_path:
        observations = load_dataset_observations(dataset_path, limit=4096)
        if observations.shape[-1] != policy.obs_dim:
            raise ValueError(f"{dataset_path} observations have dim {observations.shape[-1]}, "
                             f"engine expects {policy.obs_dim}")
    else:
        observations = observations_from_manifest(policy.manifest, 4096)
    fit_report = None
    if fit:
        fit_report = fit_budget(hz=hz, policy=policy, observations=observations)
        chosen = fit_report["chosen"]
        if chosen is None:
            raise ValueError(f"no (N_pi, N) on the grid meets the {1e3 / hz:.1f} ms deadline on this machine")
        policy.set_num_candidates(chosen["num_candidates"])
        if chosen["num_rtg"]:
            policy.set_num_rtg(chosen["num_rtg"])
    report = run_bench(policy, hz, ticks, observations, batch=batch, keep_latencies=bool(plot_path))
    if plot_path:
        plot_histogram(report.pop("latencies_ms"), 1e3 / hz, plot_path,
                       title=f"{engine_dir}: N_pi={report['num_candidates']} N={report['num_rtg']} at {hz:g} Hz")
        report["plot"] = plot_path
    report["engine_dir"] = str(engine_dir)
    report["precision"] = policy.manifest.precision
    if fit_report is not None:
        report["fit"] = {**fit_report["chosen"], "table": fit_report["table"]}
    return report
