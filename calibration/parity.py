"""Parity of a reduced-precision engine against its FP32 engine: selection, Q*, actions, latency.

Both engines get the same held-out observations and the SAME noise (action noise and reward-to-go noise),
so every difference is quantisation error, not sampling noise. Per observation (batch 1, the runtime's
N_pi / N):

* Q*_i = tau_R log mean_j exp(z_ij / tau_R) (`evor_edge.runtime.selection.q_star`; kind "qc": Q*_i = q_i)
  and the selected candidate argmax_i Q*_i (the tau_Q -> 0 limit of the softmax; the default
  tau_Q = 1e-3 is that limit for returns of order 1);
* selection agreement: % of observations where both engines pick the same candidate;
* Q* error |Q*_lp - Q*_fp32| over all candidates: absolute, relative to |Q*_fp32|, and relative to the
  spread (std over candidates) of Q*_fp32 (what decides whether the ranking can flip);
* regret of the reduced-precision choice in FP32 terms, Q*_fp32[i*_fp32] - Q*_fp32[i*_lp] (0 when they
  agree): the value lost by the disagreements;
* near ties: % of observations whose FP32 top-2 gap is below the Q* error's p95 (disagreements there are
  expected: the candidates are equivalent within the quantisation error);
* action error: of the selected action, and over all candidates (the actor's own error).

Pruned engines (``export --prune K1:N1``) output their K1 survivors in screen order, which quantisation
can reorder or change. Both engines say which N_pi candidate each survivor is (``survivor_index``), so a
reduced-precision survivor is paired with the FP32 survivor of the same candidate (`survivor_rows`; never
guessed from actions, which clipping can make identical); agreement means the chosen survivor is the FP32
choice's candidate, Q* / action errors are over paired survivors, and a choice the FP32 screen dropped
counts as a disagreement (`chosen_outside_reference`).

Latency is the per-tick wall time of `EvorPolicy.act` (engine + selection), the runtime's own path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evor_edge.runtime import EvorPolicy
from evor_edge.runtime.manifest import SURVIVOR_INDEX, Manifest, prune_spec
from evor_edge.runtime.selection import q_star
from evor_edge.runtime.timing import summarize


def stats(values: np.ndarray | Sequence[float]) -> dict[str, float]:
    """median / p95 / max / mean of a flat array (NaN for an empty one)."""
    summary = summarize(values, {"median": 50, "p95": 95, "max": "max", "mean": "mean"})
    return {k: float("nan") if v is None else v for k, v in summary.items()}


def survivor_rows(reference_index: np.ndarray, candidate_index: np.ndarray) -> np.ndarray:
    """For each survivor of the candidate engine (its ``survivor_index`` row [K1]), the reference engine's
    survivor row holding the same N_pi candidate, or -1 when the reference screen dropped it."""
    position = {int(c): r for r, c in enumerate(np.asarray(reference_index).ravel())}
    return np.array([position.get(int(c), -1) for c in np.asarray(candidate_index).ravel()], dtype=np.int64)


def compare_outputs(
    reference: Any, candidate: Any, feeds: list[dict[str, np.ndarray]],
    manifest: Manifest, tau_r: float | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Run both engines on `feeds` and return the parity metrics (see the module docstring)."""
    tau_r = manifest.default_tau_r if tau_r is None else tau_r
    names = manifest.output_names
    agree: list[bool] = []
    q_abs: list[np.ndarray] = []
    q_rel: list[np.ndarray] = []
    q_spread: list[np.ndarray] = []
    regret: list[float] = []
    regret_spread: list[float] = []
    near_tie_gap: list[float] = []
    sel_action: list[float] = []
    cand_action: list[float] = []
    value_abs: list[np.ndarray] = []
    spreads: list[float] = []
    nonfinite = 0
    outside = 0
    pruned = prune_spec(manifest) is not None
    if pruned and SURVIVOR_INDEX not in names:
        raise ValueError("a pruned engine of format 1 has no survivor_index output: re-export it")
    for feed in tqdm(feeds, desc="parity", unit="obs", disable=not progress, leave=False):
        ref_actions, ref_values, *ref_index = reference.run(names, feed)
        lp_actions, lp_values, *lp_index = candidate.run(names, feed)
        if not (np.isfinite(lp_actions).all() and np.isfinite(lp_values).all()):
            nonfinite += 1
        if manifest.kind == "evor":
            q_ref = q_star(ref_values, tau_r)[0]
            q_lp = q_star(lp_values, tau_r)[0]
        else:
            q_ref = np.asarray(ref_values[0], dtype=np.float64)
            q_lp = np.asarray(lp_values[0], dtype=np.float64)
        i_ref, i_lp = int(np.argmax(q_ref)), int(np.argmax(q_lp))
        # the executed actions' difference, whatever candidate each engine chose
        sel_action.append(float(np.max(np.abs(lp_actions[0, i_lp] - ref_actions[0, i_ref]))))
        if pruned:  # survivors in screen order: identify candidates by the engines' survivor_index
            order = survivor_rows(ref_index[0][0], lp_index[0][0])
            lp_rows = np.flatnonzero(order >= 0)
            ref_rows = order[lp_rows]
            chosen_ref = int(order[i_lp])
            outside += int(chosen_ref < 0)
        else:
            lp_rows = ref_rows = np.arange(len(q_ref))
            chosen_ref = i_lp
        agree.append(i_ref == chosen_ref)
        err = np.abs(q_lp[lp_rows] - q_ref[ref_rows])
        spread = float(np.std(q_ref))
        spreads.append(spread)
        q_abs.append(err)
        q_rel.append(err / np.maximum(np.abs(q_ref[ref_rows]), 1e-6))
        q_spread.append(err / max(spread, 1e-12))
        # a choice outside the FP32 survivors has no FP32 value: bound its regret by the worst survivor's
        regret.append(float(q_ref[i_ref] - (q_ref[chosen_ref] if chosen_ref >= 0 else q_ref.min())))
        regret_spread.append(regret[-1] / max(spread, 1e-12))
        top2 = np.sort(q_ref)[-2:] if q_ref.size > 1 else np.array([0.0, np.inf])
        near_tie_gap.append(float(top2[1] - top2[0]))
        cand_action.append(float(np.max(np.abs(lp_actions[0, lp_rows] - ref_actions[0, ref_rows]), initial=0.0)))
        value_abs.append(np.abs(lp_values[0, lp_rows] - ref_values[0, ref_rows]).ravel())
    q_abs_all = np.concatenate(q_abs)
    q_p95 = float(np.percentile(q_abs_all, 95)) if q_abs_all.size else float("nan")
    gaps = np.asarray(near_tie_gap)
    disagreements = ~np.asarray(agree)
    return {
        "observations": len(feeds),
        "num_candidates": int(feeds[0]["action_noise"].shape[1]),
        "num_rtg": int(feeds[0]["rtg_noise"].shape[2]) if "rtg_noise" in feeds[0] else None,
        "tau_r": float(tau_r),
        "selection": "argmax_i Q*_i (tau_Q -> 0), identical noise for both engines",
        "agreement_pct": 100.0 * float(np.mean(agree)),
        "disagreements": int(disagreements.sum()),
        "q_star_abs_error": stats(q_abs_all),
        "q_star_rel_error": stats(np.concatenate(q_rel)),
        "q_star_error_over_candidate_spread": stats(np.concatenate(q_spread)),
        "q_star_candidate_spread": stats(spreads),
        "near_tie_pct": 100.0 * float(np.mean(gaps < q_p95)),
        "disagreements_at_near_ties": int(np.sum(disagreements & (gaps < q_p95))),
        "regret": stats(regret),
        "regret_over_candidate_spread": stats(regret_spread),
        "selected_action_abs_error": stats(sel_action),
        "candidate_action_abs_error": stats(cand_action),
        "value_output_abs_error": stats(np.concatenate(value_abs)),
        "nonfinite_outputs": nonfinite,
        **({"pruned": {"match": "survivors matched by the engines' survivor_index (their N_pi candidate)",
                       "chosen_outside_reference": outside}} if pruned else {}),
    }


def machine_load() -> dict[str, Any]:
    """Load average and core count (context for latency numbers on a shared machine)."""
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"loadavg_1m": round(load[0], 2), "loadavg_5m": round(load[1], 2), "cpu_count": os.cpu_count()}


def measure_latency(
    engines: dict[str, Path], observations: np.ndarray, threads: Sequence[int] = (1, 2), runs: int = 20,
    num_candidates: int | None = None, num_rtg: int | None = None, warmup: int = 3, progress: bool = True,
    calm_margin: float = 0.5,
) -> dict[str, Any]:
    """Per-tick latency (ms) of `EvorPolicy.act` for each engine directory, interleaved run by run.

    Interleaving (A, B, A, B, ...) makes both engines see the same background load. Thread counts above
    1 are measured only when the machine is calm enough (1-minute load average + threads <= cores +
    calm_margin); otherwise the entry says why it was skipped.
    """
    cores = os.cpu_count() or 1
    result: dict[str, Any] = {"runs": int(runs), "load_before": machine_load(), "by_threads": {}}
    for k in threads:
        load = machine_load()["loadavg_1m"]
        if k > cores:
            result["by_threads"][str(k)] = {"skipped": f"{k} threads > {cores} cores"}
            continue
        if k > 1 and load + k > cores + calm_margin:
            result["by_threads"][str(k)] = {
                "skipped": f"machine busy (load average {load} on {cores} cores); {k}-thread timing would "
                           "measure the other jobs"}
            continue
        policies = {name: EvorPolicy.load(path, backend="onnxruntime", intra_op_threads=k, seed=0,
                                          num_candidates=num_candidates, num_rtg=num_rtg)
                    for name, path in engines.items()}
        times: dict[str, list[float]] = {name: [] for name in policies}
        engine_times: dict[str, list[float]] = {name: [] for name in policies}
        obs = np.asarray(observations, dtype=np.float32)
        for policy in policies.values():
            for i in range(warmup):
                policy.act(obs[i % len(obs)])
        bar = tqdm(total=runs, desc=f"latency {k} thread(s)", unit="tick", disable=not progress, leave=False)
        for i in range(runs):
            for name, policy in policies.items():
                t0 = time.perf_counter()
                policy.act(obs[i % len(obs)])
                times[name].append(1e3 * (time.perf_counter() - t0))
                engine_times[name].append(1e3 * policy.last.engine_s)
            bar.update()
        bar.close()
        entry: dict[str, Any] = {}
        for name, policy in policies.items():
            ticks = summarize(times[name], {"tick_ms_median": 50, "tick_ms_p10": 10, "tick_ms_p90": 90})
            entry[name] = {**{k: round(v, 3) for k, v in ticks.items()},
                           "engine_ms_median": round(float(np.median(engine_times[name])), 3),
                           "num_candidates": policy.num_candidates,
                           "num_rtg": policy.num_rtg if policy.kind == "evor" else None}
            policy.close()
        names = list(policies)
        if len(names) == 2:
            entry["speedup"] = round(entry[names[0]]["tick_ms_median"] / entry[names[1]]["tick_ms_median"], 3)
        result["by_threads"][str(k)] = entry
    result["load_after"] = machine_load()
    return result


def render_markdown(report: dict[str, Any]) -> str:
    """parity.md: the headline numbers of parity.json for a human."""
    p = report["parity"]
    lines = [
        f"# Parity: {report['precision']} engine vs FP32",
        "",
        f"- source engine: `{report['source_engine']}` (sha256 {report['source_sha256'][:12]}...)",
        f"- calibrated engine sha256 {report['engine_sha256'][:12]}...",
        f"- dataset: `{report['data']['dataset']}`; {report['data']['calibration_samples']} calibration "
        f"observations, {p['observations']} held-out observations ({report['data']['split']})",
        f"- N_pi {p['num_candidates']}, N {p['num_rtg']}, tau_R {p['tau_r']}; identical noise for both engines",
        "",
        "| metric | median | p95 | max |",
        "|---|---|---|---|",
    ]
    for key, label in (("q_star_abs_error", "Q* abs error"), ("q_star_rel_error", "Q* rel error"),
                       ("q_star_error_over_candidate_spread", "Q* error / candidate spread"),
                       ("regret", "regret (FP32 Q* units)"),
                       ("selected_action_abs_error", "selected action abs error"),
                       ("candidate_action_abs_error", "candidate action abs error")):
        s = p[key]
        lines.append(f"| {label} | {s['median']:.4g} | {s['p95']:.4g} | {s['max']:.4g} |")
    lines += [
        "",
        f"**Selection agreement: {p['agreement_pct']:.1f}%** ({p['disagreements']} of {p['observations']} differ; "
        f"{p['disagreements_at_near_ties']} of those at near ties, where the FP32 top-2 gap is below the Q* "
        f"error p95; near ties overall {p['near_tie_pct']:.1f}%).",
        "",
        "## Latency (per tick, `EvorPolicy.act`, onnxruntime CPU)",
        "",
    ]
    lat = report.get("latency") or {}
    before = lat.get("load_before", {})
    lines.append(f"Machine load before: {before.get('loadavg_1m')} (1 min) on {before.get('cpu_count')} cores; "
                 f"after: {lat.get('load_after', {}).get('loadavg_1m')}. Median of {lat.get('runs')} interleaved runs.")
    lines.append("")
    for threads, entry in (lat.get("by_threads") or {}).items():
        if "skipped" in entry:
            lines.append(f"- {threads} thread(s): skipped ({entry['skipped']})")
            continue
        fp32, lp = entry.get("fp32", {}), entry.get(report["precision"], {})
        lines.append(f"- {threads} thread(s): FP32 {fp32.get('tick_ms_median')} ms, {report['precision'].upper()} "
                     f"{lp.get('tick_ms_median')} ms, speed-up x{entry.get('speedup')} "
                     f"(N_pi {fp32.get('num_candidates')}, N {fp32.get('num_rtg')})")
    if report.get("precision") == "fp16":
        lines += ["", "FP16 on a CPU: onnxruntime's CPU provider runs most float16 nodes through inserted casts "
                      "to float32, so this is an accuracy check; the speed-up is a GPU / TensorRT matter."]
    ev = report.get("closed_loop")
    if ev:
        lines += ["", "## Closed loop", "",
                  f"{ev['task']}: FP32 success {100 * ev['fp32']['success_rate']:.1f}%, "
                  f"{report['precision'].upper()} {100 * ev[report['precision']]['success_rate']:.1f}% over "
                  f"{ev['episodes']} episodes (same seeds)."]
    lines += ["", "## Calibration", "", "```", *[f"{k}: {v}" for k, v in report["calibration"].items()], "```", ""]
    return "\n".join(lines)
