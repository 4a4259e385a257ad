"""`evor-edge bench`: open an engine, optionally fit the configuration to the deadline, run at a fixed rate.

Torch-free: uses only evor_edge.runtime (numpy + onnxruntime), so it runs on the robot install.

``--fit`` uses the engine directory's quality/latency frontier (``frontier.json``, written by
``benchmarks/frontier.py``; or ``--frontier FILE``) when there is one: the configuration with the best
selection agreement against the full FP32 paper configuration whose p99, measured here, meets the
deadline. Without a frontier it falls back to the most candidates that fit with >= 8 reward-to-go samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evor_edge.runtime import EvorPolicy
from evor_edge.runtime.bench import load_dataset_observations, observations_from_manifest, run_bench
from evor_edge.runtime.fit import apply_point
from evor_edge.runtime.fit import fit as fit_budget
from evor_edge.runtime.frontier import FRONTIER_FILE, load_frontier, point_engine_dir


def bench_engine(
    engine_dir: str, hz: float = 50.0, ticks: int = 500, num_candidates: int | None = None,
    num_rtg: int | None = None, batch: int = 1, backend: str = "auto", dataset_path: str | None = None,
    fit: bool = False, plot_path: str | None = None, seed: int = 0, crn: bool = False,
    rtg_top_k: int | None = None, frontier_path: str | None = None, use_frontier: bool = True,
    threads: int | None = None, fit_measure: bool = True,
) -> dict[str, Any]:
    policy = EvorPolicy.load(engine_dir, backend=backend, num_candidates=num_candidates, num_rtg=num_rtg,
                             seed=seed, common_rtg_noise=crn, rtg_top_k=rtg_top_k, intra_op_threads=threads)
    if dataset_path:
        observations = load_dataset_observations(dataset_path, limit=4096)
        if observations.shape[-1] != policy.obs_dim:
            raise ValueError(f"{dataset_path} observations have dim {observations.shape[-1]}, "
                             f"engine expects {policy.obs_dim}")
    else:
        observations = observations_from_manifest(policy.manifest, 4096)
    fit_report = None
    if fit:
        frontier = None
        if frontier_path is not None:
            frontier = load_frontier(frontier_path)
        elif use_frontier and (Path(engine_dir) / FRONTIER_FILE).is_file():
            frontier = load_frontier(Path(engine_dir) / FRONTIER_FILE)
        # frontier mode stops at the first configuration that fits, so it can afford enough paced ticks
        # for a p99 that means something (200: the 2nd-largest tick); the grid times 50 back-to-back ticks
        # per point and then confirms its choice with 200 ticks paced at the control rate
        fit_report = fit_budget(hz=hz, policy=policy, observations=observations, frontier=frontier,
                                backend=backend, measure=fit_measure, ticks=200 if frontier is not None else 50,
                                confirm_ticks=200 if frontier is None and fit_measure else 0)
        chosen = fit_report["chosen"]
        if chosen is None:
            what = "frontier configuration" if frontier is not None else "(N_pi, N) on the grid"
            raise ValueError(f"no {what} meets the {1e3 / hz:.1f} ms deadline on this machine")
        if frontier is not None:
            target = point_engine_dir(frontier, chosen)
            if target.resolve() != Path(engine_dir).resolve():
                policy.close()
                policy = EvorPolicy.load(target, backend=backend, seed=seed, intra_op_threads=threads)
                engine_dir = str(target)
            apply_point(policy, chosen)
        else:  # the grid searched N_pi / N only: the other settings stay as given
            policy.configure(num_candidates=chosen["num_candidates"], num_rtg=chosen["num_rtg"] or None)
    report = run_bench(policy, hz, ticks, observations, batch=batch, keep_latencies=bool(plot_path))
    if plot_path:
        from evor_edge.plots import plot_histogram

        plot_histogram(report.pop("latencies_ms"), 1e3 / hz, plot_path,
                       title=f"{engine_dir}: N_pi={report['num_candidates']} N={report['num_rtg']} at {hz:g} Hz")
        report["plot"] = plot_path
    report["engine_dir"] = str(engine_dir)
    report["precision"] = policy.manifest.precision
    if fit_report is not None:
        report["fit"] = {**fit_report["chosen"], "mode": fit_report.get("mode", "grid"),
                         "metric": fit_report.get("metric"), "table": fit_report["table"]}
    return report


def bench_summary(r: dict[str, Any]) -> str:
    """The human text of a bench report (`--json` prints the report itself)."""
    lat = r.get("latency_ms", {})
    lines = [f"N_pi={r.get('num_candidates')} N={r.get('num_rtg')} batch={r.get('batch')} at {r.get('hz')} Hz: "
             f"p50 {lat.get('p50_ms', float('nan')):.2f} ms, p99 {lat.get('p99_ms', float('nan')):.2f} ms, "
             f"max {lat.get('max_ms', float('nan')):.2f} ms; deadline misses {r.get('deadline_misses')} of "
             f"{r.get('ticks')}; achieved {r.get('achieved_hz') or float('nan'):.1f} Hz"]
    fit = r.get("fit")
    if fit and fit.get("mode") == "frontier":
        metric = fit.get("metric") or "agreement"
        lines.insert(0, f"fit (frontier): chose {fit.get('engine')} N_pi={fit.get('num_candidates')} "
                        f"N={fit.get('num_rtg')} top_k={fit.get('rtg_top_k')} crn={fit.get('common_rtg_noise')}: "
                        f"{metric} {100 * float(fit.get(metric) or 0):.1f}%, "
                        f"p99 {fit.get('p99_ms') or float('nan'):.2f} ms here "
                        f"(frontier file: {fit.get('stored_p99_ms') or float('nan'):.2f} ms)")
    elif fit:
        lines.insert(0, f"fit: chose N_pi={fit.get('num_candidates')} N={fit.get('num_rtg')}")
    return "\n".join(lines)
