"""`evor-edge calibrate ENGINE_DIR --dataset FILE --precision fp16|int8 --out DIR`: a calibrated engine
(evor_edge.calibration) and its parity report.

The command's options live in `evor_edge.cli`; this module does its work and words the parity report for
people. Errors follow the CLI's convention (`evor_edge.cli_errors.friendly_errors` on the command).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_calibrate(engine_dir: str, dataset_path: str, precision: str, out: str, *, samples: int,
                  parity_samples: int, task: str | None, per_step: bool, gelu: str, activation_type: str,
                  calibration_method: str, keep_fp32: tuple[str, ...], eval_episodes: int, latency_runs: int,
                  seed: int, overwrite: bool) -> tuple[dict[str, Any], Callable[[dict[str, Any]], str]]:
    """Calibrate ENGINE_DIR into OUT; the report and its human summary (parity, latency, report path)."""
    from evor_edge.calibration import calibrate_engine

    report = calibrate_engine(engine_dir, dataset_path, precision, out, samples=samples,
                              parity_samples=parity_samples, task=task, shared_scales=not per_step,
                              activation_type=activation_type, calibration_method=calibration_method,
                              gelu=gelu, keep_fp32=keep_fp32, eval_episodes=eval_episodes, latency_runs=latency_runs,
                              seed=seed, overwrite=overwrite)
    return report, summary


def summary(r: dict[str, Any]) -> str:
    p = r["parity"]
    lines = [f"wrote {r['engine_dir']} ({r['precision']}); parity on {p['observations']} held-out observations: "
             f"agreement {p['agreement_pct']:.1f}%, Q* abs error median {p['q_star_abs_error']['median']:.3g} "
             f"p95 {p['q_star_abs_error']['p95']:.3g} max {p['q_star_abs_error']['max']:.3g}"]
    for threads, entry in (r.get("latency") or {}).get("by_threads", {}).items():
        if "skipped" in entry:
            lines.append(f"latency {threads} thread(s): skipped ({entry['skipped']})")
        else:
            lines.append(f"latency {threads} thread(s): fp32 {entry['fp32']['tick_ms_median']} ms, "
                         f"{r['precision']} {entry[r['precision']]['tick_ms_median']} ms (x{entry.get('speedup')})")
    lines.append(f"report: {r['parity_md']}")
    return "\n".join(lines)
