"""Measuring the quality/latency frontier of cheaper EVOR selection (workstation side; exports with torch).

A configuration is an engine variant (critic solver steps, in-engine pruning; exported from one checkpoint)
plus run-time settings (N_pi, N, rtg_top_k tail evaluation, common random numbers). For each:

* selection agreement with the full FP32 paper configuration (the default engine, N_pi 32, N 50, tau_Q = 0)
  on held-out observations with identical action noise and the same reward-to-go draws ("same seed": the
  variant sees exactly the noise the paper configuration would see, in its layout -- N-prefix, top-k of the
  same N draws; `evor_edge.runtime.noise.layout_rtg`). A variant's chosen candidate is identified by its
  index among the N_pi (a pruned engine's ``survivor_index``), never by its action. CRN configurations draw
  differently by construction, so their `agreement` is against the paper configuration with its own
  independent draws, and `agreement_vs_crn_reference` against the full computation on the same CRN draws.
  `ceiling` = the paper configuration against itself with independent reward-to-go draws;
* latency of `EvorPolicy.act` (engine + noise + selection), batch 1, on held-out observations, with ticks
  started on the control loop's schedule (`evor_edge.runtime.timing.Pacer`, the rule `bench` uses). All
  configurations are timed round-robin in blocks, so background load hits them alike; p50/p99 wall time and
  p50/p99 thread CPU time.

`measure_frontier` returns the frontier in the schema of `evor_edge.runtime.frontier` (engine paths relative
to the file), which `evor-edge bench ENGINES/full --fit` reads. ``benchmarks/frontier.py`` is its command line;
``benchmarks/compare.py`` reuses the agreement helpers.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evor_edge.runtime.frontier import FRONTIER_FILE, load_frontier, mark_pareto, write_frontier
from evor_edge.runtime.noise import layout_rtg
from evor_edge.runtime.selection import certify_tail, q_star
from evor_edge.runtime.sessions import ort_session
from evor_edge.runtime.timing import Pacer, latency_stats, summarize

REF = "full"

# engine variants exported from the checkpoint: name -> export_engine keyword arguments
# (naming: e<K> / h<K> / m<K> = K Euler / Heun / midpoint critic steps, full = the paper's M Euler steps,
#  _p<K1>x<N1> = pruned to K1 survivors after a screen on N1 samples)
DEFAULT_ENGINES: dict[str, dict[str, Any]] = {
    "full": {},
    "e1": {"critic_steps": 1},
    "e2": {"critic_steps": 2},
    "e3": {"critic_steps": 3},
    "e5": {"critic_steps": 5},
    "h1": {"critic_steps": 1, "critic_solver": "heun"},
    "h2": {"critic_steps": 2, "critic_solver": "heun"},
    "m1": {"critic_steps": 1, "critic_solver": "midpoint"},
    "m2": {"critic_steps": 2, "critic_solver": "midpoint"},
    "m3": {"critic_steps": 3, "critic_solver": "midpoint"},
    "e1_p8x1": {"critic_steps": 1, "prune": (8, 1)},
    "e2_p8x1": {"critic_steps": 2, "prune": (8, 1)},
    "full_p8x1": {"prune": (8, 1)},
    "full_p8x2": {"prune": (8, 2)},
    "full_p4x2": {"prune": (4, 2)},
}


def engine_kwargs_from_name(name: str) -> dict[str, Any]:
    """Export kwargs from the naming convention above, e.g. "m2_p8x1" -> midpoint 2 steps, prune (8, 1)."""
    match = re.fullmatch(r"(full|([ehm])(\d+))(?:_p(\d+)x(\d+))?", name)
    if not match:
        raise ValueError(f"engine name {name!r} does not follow full|e<K>|h<K>|m<K>[_p<K1>x<N1>]")
    kw: dict[str, Any] = {}
    if match.group(2):
        kw["critic_steps"] = int(match.group(3))
        kw["critic_solver"] = {"e": "euler", "h": "heun", "m": "midpoint"}[match.group(2)]
    if match.group(4):
        kw["prune"] = (int(match.group(4)), int(match.group(5)))
    return kw


@dataclass(frozen=True)
class Config:
    engine: str
    num_candidates: int = 32
    num_rtg: int = 50
    rtg_top_k: int | None = None
    common_rtg_noise: bool = False

    @property
    def label(self) -> str:
        parts = [self.engine, f"Npi{self.num_candidates}", f"N{self.num_rtg}"]
        if self.rtg_top_k is not None:
            parts.append(f"top{self.rtg_top_k}")
        if self.common_rtg_noise:
            parts.append("crn")
        return "/".join(parts)


def parse_variant(spec: str, num_candidates: int = 32, num_rtg: int = 50) -> Config:
    """ENGINE[:topK][:crn][:npi<N_pi>][:n<N>] -> Config, e.g. "e1:top1", "full:top2:crn", "full:n16"."""
    engine, *opts = spec.split(":")
    cfg = {"engine": engine, "num_candidates": num_candidates, "num_rtg": num_rtg}
    for opt in opts:
        if opt.startswith("top"):
            cfg["rtg_top_k"] = int(opt[3:])
        elif opt == "crn":
            cfg["common_rtg_noise"] = True
        elif opt.startswith("npi"):
            cfg["num_candidates"] = int(opt[3:])
        elif opt.startswith("n"):
            cfg["num_rtg"] = int(opt[1:])
        else:
            raise ValueError(f"bad variant {spec!r}")
    return Config(**cfg)


def default_configs(engines: dict[str, dict[str, Any]], n_pi: int, n: int) -> list[Config]:
    """The configurations measured by default (a grid around the paper configuration)."""
    configs: list[Config] = []
    for name, kw in engines.items():
        prune = kw.get("prune")
        if prune is not None:
            for k in (2, 4, 8, 16):
                if k >= prune[1]:
                    configs.append(Config(name, n_pi, n, k))
            continue
        tops: tuple[int | None, ...] = (None, 1, 2, 4, 8, 16) if name == REF else (None, 1, 2, 4)
        for k in tops:
            configs.append(Config(name, n_pi, n, k))
        configs.append(Config(name, n_pi, n, 2, True))
    configs += [Config(REF, n_pi, n, None, True), Config(REF, n_pi, n, 1, True), Config(REF, n_pi, n, 4, True)]
    configs += [Config(REF, n_pi, m) for m in (8, 16, 32) if m < n]
    configs += [Config(REF, m, n, 2) for m in (8, 16) if m < n_pi]
    return list(dict.fromkeys(configs))


def log(msg: str, tag: str = "frontier") -> None:
    """Progress line on stderr (time, load average)."""
    print(f"[{tag} {time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a proportion k / n."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def parse_engine_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """NAME=steps:K,solver:S,prune:K1x N1 -> (NAME, export kwargs); e.g. e4h=steps:4,solver:heun."""
    name, _, body = spec.partition("=")
    kw: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition(":")
        if key == "steps":
            kw["critic_steps"] = int(value)
        elif key == "solver":
            kw["critic_solver"] = value
        elif key == "prune":
            keep, screen = value.split("x")
            kw["prune"] = (int(keep), int(screen))
        else:
            raise ValueError(f"bad engine spec {spec!r}")
    return name, kw


# ----------------------------------------------------------------------------------------- engines
def export_engines(checkpoint: str, root: Path, engines: dict[str, dict[str, Any]], rebuild: bool) -> dict[str, Path]:
    from evor_edge.export import export_engine

    out: dict[str, Path] = {}
    for name, kw in engines.items():
        path = root / name
        manifest = path / "manifest.json"
        if manifest.is_file() and not rebuild:
            extra = json.loads(manifest.read_text()).get("extra", {})
            want_prune = kw.get("prune")
            have_prune = extra.get("prune")
            same = (extra.get("critic_steps") == kw.get("critic_steps", extra.get("critic_steps"))
                    and extra.get("critic_solver") == kw.get("critic_solver", "euler")
                    and (have_prune is None) == (want_prune is None)
                    and (want_prune is None or [have_prune["survivors"], have_prune["screen_rtg"]] == list(want_prune)))
            if same:
                out[name] = path
                continue
        log(f"export {name} {kw}")
        export_engine(checkpoint, path, progress=False, overwrite=True, **kw)
        out[name] = path
    return out


# --------------------------------------------------------------------------------------- agreement
class Outputs:
    """Engine outputs for all observations: candidate actions, Q* (tau_Q = 0 selection) and, per output
    candidate, its index among the N_pi (a pruned engine's survivor_index, else its position)."""

    def __init__(self, actions: np.ndarray, q: np.ndarray, candidates: np.ndarray | None = None,
                 certified: np.ndarray | None = None):
        rows = np.arange(len(q))
        self.actions = actions  # [n, K, act]
        self.q = q  # [n, K]
        self.candidates = np.broadcast_to(np.arange(q.shape[1]), q.shape) if candidates is None else candidates
        self.choice = np.argmax(q, axis=1)  # index into the engine's outputs
        self.candidate = self.candidates[rows, self.choice]  # the chosen candidate among the N_pi
        self.chosen = actions[rows, self.choice]  # [n, act]
        self.certified = certified  # [n] bool (rtg_top_k): the runtime's certificate (EvorPolicy.last.certified)


def held_out_observations(manifest: Any, dataset: str | None, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` observations: random dataset rows when a dataset is given, else draws from the manifest's
    observation normaliser. Consumes `rng` first, so the noise drawn after it is the same in every script."""
    from evor_edge.runtime.bench import load_dataset_observations, observations_from_manifest

    if dataset:
        pool = load_dataset_observations(dataset, obs_dim=manifest.obs_dim)
        obs = pool[rng.choice(len(pool), size=min(count, len(pool)), replace=False)]
    else:
        obs = observations_from_manifest(manifest, count, rng)
    return np.ascontiguousarray(obs, dtype=np.float32)


def held_out_noise(rng: np.random.Generator, count: int, n_pi: int, n: int, act_dim: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(action noise, reward-to-go noise, an independent redraw of it, one CRN row per observation)."""
    action_noise = rng.standard_normal((count, n_pi, act_dim), dtype=np.float32)
    rtg = rng.standard_normal((count, n_pi, n), dtype=np.float32)
    rtg_indep = rng.standard_normal((count, n_pi, n), dtype=np.float32)
    crn_row = rng.standard_normal((count, 1, n), dtype=np.float32)
    return action_noise, rtg, rtg_indep, crn_row


def engine_session(path: Path, threads: int) -> Any:
    """An onnxruntime session on ENGINE_DIR/engine.onnx (`evor_edge.runtime.sessions.ort_session`)."""
    return ort_session(Path(path) / "engine.onnx", threads=threads)


def engine_noise(cfg: Config, action_noise: np.ndarray, rtg: np.ndarray, crn_row: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The engine inputs of a configuration from the shared draws, laid out as EvorPolicy lays them out."""
    a = np.ascontiguousarray(action_noise[:, : cfg.num_candidates])
    draw = np.array((crn_row if cfg.common_rtg_noise else rtg[:, : cfg.num_candidates])[..., : cfg.num_rtg])
    kept = cfg.num_rtg if cfg.rtg_top_k is None else min(cfg.rtg_top_k, cfg.num_rtg)
    r = np.empty((a.shape[0], cfg.num_candidates, kept), dtype=np.float32)
    return a, layout_rtg(draw, r, cfg.rtg_top_k is not None)


def run_outputs(session: Any, obs: np.ndarray, a: np.ndarray, r: np.ndarray, tau_r: float, num_rtg_drawn: int,
                chunk: int = 8) -> Outputs:
    """Run an engine on all observations (in chunks); Q* with the runtime's tail math and certificate."""
    names = [o.name for o in session.get_outputs()]
    acts, qs, cands, certs = [], [], [], []
    for i in range(0, len(obs), chunk):
        actions, returns, *index = session.run(names, {"obs": obs[i:i + chunk], "action_noise": a[i:i + chunk],
                                                       "rtg_noise": r[i:i + chunk]})
        q = q_star(returns, tau_r, num_drawn=num_rtg_drawn)
        if num_rtg_drawn > returns.shape[-1]:
            certs.append(certify_tail(returns, q, np.argmax(q, axis=1), tau_r, num_rtg_drawn))
        acts.append(actions)
        qs.append(q)
        cands.append(index[0] if index else np.broadcast_to(np.arange(q.shape[1]), q.shape))
    return Outputs(np.concatenate(acts), np.concatenate(qs), np.concatenate(cands),
                   np.concatenate(certs) if certs else None)


def monotonicity(session: Any, obs: np.ndarray, action_noise: np.ndarray, rtg: np.ndarray,
                 tolerance: float = 0.05) -> dict[str, float]:
    """How monotone the engine's (discretised) reward-to-go map z^0 -> z^1 is, per candidate row.

    The tail evaluation (rtg_top_k) and its certificate assume that larger noise gives larger returns.
    Reported: the share of rows with an adjacent out-of-order pair (by more than `tolerance` x the row's
    std), the worst such drop in row stds, and how often the largest return comes from the largest noise.
    """
    _, returns = session.run(None, {"obs": obs, "action_noise": action_noise, "rtg_noise": rtg})
    order = np.argsort(rtg, axis=-1)
    by_noise = np.take_along_axis(returns, order, axis=-1)
    drop = -np.diff(by_noise, axis=-1) / np.maximum(returns.std(axis=-1, keepdims=True), 1e-12)
    return {
        "rows_out_of_order": float((drop > tolerance).any(axis=-1).mean()),
        "worst_drop_in_stds": float(max(drop.max(), 0.0)),
        "top_return_from_top_noise": float((np.argmax(returns, -1) == np.argmax(rtg, -1)).mean()),
        "tolerance_in_stds": tolerance,
    }


def compare(variant: Outputs, ref: Outputs, tol: float = 1e-4) -> dict[str, Any]:
    """Same choice (the same N_pi candidate, or the same executed action) + regret under the reference's Q*.

    The variant's candidates are reference candidates (a prefix of the N_pi, or a pruned engine's survivors,
    traced by survivor_index), so its choice is looked up by index, not by nearest action.
    """
    n = len(ref.q)
    rows = np.arange(n)
    index = variant.candidate  # the variant's choice as a reference candidate
    same = np.linalg.norm(ref.chosen - variant.chosen, axis=-1) <= tol * (1 + np.abs(ref.chosen).max(axis=-1))
    same |= index == ref.candidate
    regret = ref.q[rows, ref.choice] - ref.q[rows, index]
    k = int(same.sum())
    spread = np.std(ref.q, axis=1)
    summary = summarize(regret, {"regret_mean": "mean", "regret_p95": 95})
    return {
        "agree": k, "n": n, "rate": k / n, "ci95": wilson(k, n), **summary,
        "regret_over_spread_mean": float(np.mean(regret / np.maximum(spread, 1e-12))),
    }


# ----------------------------------------------------------------------------------------- latency
def time_configs(configs: list[Config], engines: dict[str, Path], observations: np.ndarray, ticks: int,
                 block: int, threads: int, max_seconds_per_config: float, tau_r: float,
                 hz: float = 50.0) -> dict[str, dict[str, Any]]:
    """Round-robin blocks of `block` ticks per configuration until each has `ticks` (or its time cap);
    within a block the ticks follow the control loop's schedule (`Pacer`; hz <= 0: back to back)."""
    from evor_edge.runtime import EvorPolicy

    policies: dict[str, Any] = {}
    for name in sorted({c.engine for c in configs}):
        policies[name] = EvorPolicy.load(engines[name], backend="onnxruntime", intra_op_threads=threads, tau_q=0.0,
                                         tau_r=tau_r, seed=0)
    wall: dict[Config, list[float]] = {c: [] for c in configs}
    cpu: dict[Config, list[float]] = {c: [] for c in configs}
    spent: dict[Config, float] = dict.fromkeys(configs, 0.0)
    loads: list[float] = []
    feeds = [observations[i] for i in range(len(observations))]
    k = 0
    rounds = 0
    while True:
        active = [c for c in configs
                  if len(wall[c]) < ticks and not (len(wall[c]) >= 10 and spent[c] > max_seconds_per_config)]
        if not active:
            break
        rounds += 1
        loads.append(os.getloadavg()[0])
        for cfg in active:
            policy = policies[cfg.engine]
            policy.configure(num_candidates=cfg.num_candidates, num_rtg=cfg.num_rtg, rtg_top_k=cfg.rtg_top_k,
                             common_rtg_noise=cfg.common_rtg_noise)
            pacer = Pacer(hz)
            for tick in range(2 + block):  # 2 warm-up ticks on the schedule, after the previous configuration
                obs = feeds[k % len(feeds)]
                k += 1
                pacer.wait()
                t0, c0 = time.perf_counter(), time.thread_time()
                policy.act(obs)
                c1, t1 = time.thread_time(), time.perf_counter()
                pacer.done(t1)
                if tick >= 2:
                    wall[cfg].append(t1 - t0)
                    cpu[cfg].append(c1 - c0)
                    spent[cfg] += t1 - t0
        if rounds % 5 == 0:
            log(f"latency round {rounds}: {sum(len(v) for v in wall.values())} ticks timed")
    out: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        w, c = latency_stats(wall[cfg]), latency_stats(cpu[cfg])
        out[cfg.label] = {"ticks": len(wall[cfg]), "p50_ms": w["p50_ms"], "p99_ms": w["p99_ms"], "max_ms": w["max_ms"],
                          "cpu_p50_ms": c["p50_ms"], "cpu_p99_ms": c["p99_ms"]}
    out["_meta"] = {"rounds": rounds, "block": block, "threads": threads, "paced_hz": hz,
                    "load_avg_1min": summarize(loads, {"min": "min", "median": 50, "max": "max"})}
    for policy in policies.values():
        policy.close()
    return out


# ---------------------------------------------------------------------------------------- frontier
def measure_frontier(
    checkpoint: str, engines_root: str | os.PathLike[str], engines_spec: dict[str, dict[str, Any]] | None = None, *,
    dataset: str | None = None, observations: int = 200, agreement_threads: int = 2, latency: bool = True,
    ticks: int = 100, block: int = 10, threads: int = 1, max_seconds: float = 30.0, hz: float = 50.0,
    rebuild: bool = False, seed: int = 0, out: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Export the variants, measure agreement (and latency) of every default configuration, write the
    frontier (default ENGINES/full/frontier.json); returns (frontier, path)."""
    from evor_edge.runtime.bench import flops_per_tick
    from evor_edge.runtime.manifest import load_manifest

    engines_spec = dict(engines_spec or DEFAULT_ENGINES)
    engines_spec.setdefault(REF, {})
    started = time.time()
    load_start = os.getloadavg()
    root = Path(engines_root)
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_start = os.getloadavg()
    engines = export_engines(checkpoint, root, engines_spec, rebuild)
    out_path = Path(out) if out else engines[REF] / FRONTIER_FILE
    out_dir = out_path.parent
    manifest = load_manifest(engines[REF])
    n_pi, n, tau_r = manifest.default_num_candidates, manifest.default_num_rtg, manifest.default_tau_r
    rng = np.random.default_rng(seed)
    obs = held_out_observations(manifest, dataset, observations, rng)
    count = len(obs)
    action_noise, rtg, rtg_indep, crn_row = held_out_noise(rng, count, n_pi, n, manifest.act_dim)
    configs = default_configs(engines_spec, n_pi, n)

    sessions: dict[str, Any] = {}

    def outputs(cfg: Config, rtg_source: np.ndarray | None = None) -> Outputs:
        if cfg.engine not in sessions:
            sessions[cfg.engine] = engine_session(engines[cfg.engine], agreement_threads)
        a, r = engine_noise(cfg, action_noise, rtg if rtg_source is None else rtg_source, crn_row)
        return run_outputs(sessions[cfg.engine], obs, a, r, tau_r, cfg.num_rtg)

    log(f"{count} observations, {len(configs)} configurations, reference {REF} N_pi {n_pi} N {n} tau_R {tau_r}")
    ref_cfg = Config(REF, n_pi, n)
    ref = outputs(ref_cfg)
    log("reference done")
    ref_indep = outputs(ref_cfg, rtg_indep)
    ref_crn = outputs(Config(REF, n_pi, n, None, True))
    ceiling = compare(ref_indep, ref)
    log(f"ceiling (reference vs itself, independent rtg draws): {ceiling['rate']:.3f}")
    mono = monotonicity(sessions[REF], obs[:32], action_noise[:32], rtg[:32])
    log(f"flow monotonicity (full engine): {mono}")
    spread = {
        "q_star_std_over_candidates_median": float(np.median(np.std(ref.q, axis=1))),
        "q_star_top2_gap_median": float(np.median(np.diff(np.sort(ref.q, axis=1)[:, -2:], axis=1))),
    }

    points: list[dict[str, Any]] = []
    for cfg in configs:
        t0 = time.perf_counter()
        out = ref if cfg == ref_cfg else (ref_crn if cfg == Config(REF, n_pi, n, None, True) else outputs(cfg))
        primary = compare(out, ref)
        point: dict[str, Any] = {"label": cfg.label, **asdict(cfg)}
        point["engine"] = os.path.relpath(engines[cfg.engine], out_dir)
        m = load_manifest(engines[cfg.engine])
        point["critic_steps"] = m.extra.get("critic_steps")
        point["critic_solver"] = m.extra.get("critic_solver")
        prune = m.extra.get("prune")
        point["prune"] = [prune["survivors"], prune["screen_rtg"]] if prune else None
        engine_n = cfg.num_rtg if cfg.rtg_top_k is None else min(cfg.rtg_top_k, cfg.num_rtg)
        point["gflop"] = (flops_per_tick(m, 1, cfg.num_candidates, engine_n) or 0) / 1e9
        point["agreement"] = primary["rate"]
        point["agreement_ci95"] = primary["ci95"]
        point["agreement_basis"] = ("paper config, independent draws (CRN draws differently)" if cfg.common_rtg_noise
                                    else "paper config, same draws")
        point["ref_q_regret_mean"] = primary["regret_mean"]
        point["ref_q_regret_over_spread_mean"] = primary["regret_over_spread_mean"]
        point["agreement_vs_independent_reference"] = compare(out, ref_indep)["rate"]
        point["certified"] = None if out.certified is None else float(out.certified.mean())
        if cfg.common_rtg_noise:
            point["agreement_vs_crn_reference"] = compare(out, ref_crn)["rate"]
        points.append(point)
        crn = f" (vs CRN reference {point['agreement_vs_crn_reference']:.3f})" if cfg.common_rtg_noise else ""
        log(f"{cfg.label:34s} agreement {point['agreement']:.3f}{crn} {point['gflop']:.2f} GFLOP "
            f"({time.perf_counter() - t0:.0f} s)")

    latency_meta = None
    if latency:
        lat = time_configs(configs, engines, obs, ticks, block, threads, max_seconds, tau_r,
                           hz)
        latency_meta = lat.pop("_meta")
        for point in points:
            point.update(lat[point["label"]])
        mark_pareto(points)

    frontier = {
        "metric": "agreement",
        "reference": {"engine": os.path.relpath(engines[REF], out_dir),
                      "num_candidates": n_pi, "num_rtg": n, "euler_steps": manifest.euler_steps,
                      "tau_r": tau_r, "tau_q": 0.0, "precision": manifest.precision},
        "checkpoint": manifest.source_checkpoint,
        "hidden_dims": manifest.training_config.get("hidden_dims"),
        "observations": count,
        "dataset": dataset,
        "ceiling": ceiling,
        "monotonicity": mono,
        "q_star_spread": spread,
        "latency": {"what": "EvorPolicy.act, batch 1, onnxruntime CPU", "threads": threads,
                    **(latency_meta or {})} if latency_meta else None,
        "load_avg_start": list(load_start),
        "load_avg_end": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "seconds": round(time.time() - started, 1),
        "points": points,
    }
    write_frontier(out_path, frontier)
    return frontier, out_path


def retime_frontier(
    engines_root: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None, dataset: str | None = None,
    observations: int = 200, seed: int = 0, ticks: int = 100, block: int = 10, threads: int = 1,
    max_seconds: float = 30.0, hz: float = 50.0,
) -> tuple[dict[str, Any], Path, tuple[float, ...]]:
    """Re-time an existing frontier's points (same observations source, new latencies), keeping its agreement
    numbers; returns (frontier, path, load average at the start)."""
    from evor_edge.runtime.manifest import load_manifest

    root = Path(engines_root)
    out_path = Path(out) if out else root / REF / FRONTIER_FILE
    frontier = load_frontier(out_path)
    load_start = os.getloadavg()
    points = frontier["points"]
    configs = [Config(p["label"].split("/")[0], p["num_candidates"], p["num_rtg"], p["rtg_top_k"],
                      p["common_rtg_noise"]) for p in points]
    engines = {c.engine: root / c.engine for c in configs}
    manifest = load_manifest(engines[REF])
    obs = held_out_observations(manifest, dataset, observations, np.random.default_rng(seed))
    log(f"re-timing {len(configs)} configurations of {out_path} (paced at {hz} Hz)")
    lat = time_configs(configs, engines, obs, ticks, block, threads, max_seconds, manifest.default_tau_r, hz)
    meta = lat.pop("_meta")
    for point, cfg in zip(points, configs, strict=True):
        point.update(lat[cfg.label])
    mark_pareto(points)
    frontier["latency"] = {"what": "EvorPolicy.act, batch 1, onnxruntime CPU", "threads": threads, **meta}
    frontier["load_avg_retime_start"], frontier["load_avg_retime_end"] = list(load_start), list(os.getloadavg())
    write_frontier(out_path, frontier)
    return frontier, out_path, load_start
