"""Peers at equal configuration: PyTorch eager, torch.compile, our FP32 engine, INT8, and the cheaper variants.

One run, one machine, interleaved: every round runs each peer for a block of ticks (after one warm-up tick),
so background load hits all peers alike; medians and p99 over many rounds are reported with the load
average seen during the run. The machine's matmul peak is measured the same way, as one more "peer"
(torch sgemm [512 x 512] @ [512 x 4096] with the same thread count), so GFLOP/s are comparable.

Peers (batch 1, N_pi / N / M of the checkpoint's config unless stated; 1 intra-op thread by default):

  eager          Algorithms 2-3 with the torch reference (`evor_edge.inference`: networks on concatenated
                 inputs, Euler loops in Python), Q* (Eq. 39), argmax -- the paper's computation in plain PyTorch
  compile        the same function under torch.compile (inductor, CPU); compile time reported
  engine-fp32    our engine through `EvorPolicy.act` (noise drawn by the policy, selection included)
  engine-int8    a calibrated INT8 engine directory (--int8 DIR), through `EvorPolicy.act`
  variants       engine variants + run-time settings (--variant ENGINE[:topK][:crn]), and eager / torch.compile
                 at the configurations given with --at (critic Euler steps, the top-k noise fed to the critic)

Selection agreement (tau_Q = 0, held-out observations, identical action noise): against the torch eager
reference on the same reward-to-go draws; CRN variants against the reference with its own independent draws
and against the full computation on the same CRN draws; `ceiling` is the reference against itself with
independent draws.

    python benchmarks/compare.py /tmp/runs/pm_paper --dataset /tmp/pm100-val.npz --engines /tmp/vw/pp \\
        --int8 /tmp/calib-bench/pointmaze-medium-int8-per_step_scales --json /tmp/vw/compare_pp.json
    python benchmarks/compare.py --random-paper --obs-dim 37 --act-dim 5 --engines /tmp/vw/rand

Progress on stderr; the table on stdout; --json writes everything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _early_threads(argv: list[str]) -> str:
    """--threads before numpy loads its BLAS: the numpy sgemm peak must use the same thread count."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _early_threads(sys.argv))

import numpy as np  # noqa: E402

from evor_edge import frontier_study as fr  # noqa: E402  (engine export, noise layout, agreement)
from evor_edge.runtime.timing import latency_stats, summarize  # noqa: E402

PEAK_SHAPE = (512, 512, 4096)  # [512 x 512] @ [512 x 4096]: the MLP's 512-wide GEMMs on 4096 rows


def log(msg: str) -> None:
    fr.log(msg, tag="compare")


# ------------------------------------------------------------------------------------------- agents
def random_paper_checkpoint(work: Path, obs_dim: int, act_dim: int, seed: int = 0) -> Path:
    """A paper-size (MLP 4x512, M 10, N_pi 32, N 50) EVOR agent with random weights, saved as a checkpoint."""
    import torch

    from evor_edge.agents import AgentSpec, make_agent
    from evor_edge.checkpoint import save_checkpoint
    from evor_edge.config import preset_config
    from evor_edge.normalization import ObsNormalizer, ReturnScaler

    cfg = preset_config("paper")
    spec = AgentSpec(cfg, obs_dim, act_dim, (-1.0,) * act_dim, (1.0,) * act_dim,
                     ObsNormalizer((0.0,) * obs_dim, (1.0,) * obs_dim), ReturnScaler(center=-50.0, half_width=50.0))
    torch.manual_seed(seed)
    agent = make_agent(spec).eval()
    return Path(save_checkpoint(work / "random_paper_run", agent, 0))


def torch_selector(agent: Any, critic_steps: int | None, tau_r: float) -> Callable[..., Any]:
    """(obs [B, obs], action_noise [B, N_pi, act], rtg_noise [B, N_pi, N]) -> (chosen [B, act], q [B, N_pi]).

    With critic_steps = None (the config's M) this is `evor_edge.inference.candidates_and_values` + Q* +
    argmax: the torch reference of Algorithms 2-3.
    """
    import torch

    from evor_edge.inference import q_star

    steps = critic_steps or agent.config.euler_steps

    def select(obs: torch.Tensor, action_noise: torch.Tensor, rtg_noise: torch.Tensor) -> tuple[Any, Any]:
        obs_n = agent.normalize_obs(obs)
        actions = agent.sample_actions(obs_n[:, None, :], action_noise)
        u = agent.sample_returns_normalized(obs_n[:, None, None, :], actions[:, :, None, :], rtg_noise.unsqueeze(-1),
                                            steps=steps)
        returns = agent.spec.returns.denormalize(u.squeeze(-1))
        q = q_star(returns, tau_r)
        idx = q.argmax(dim=-1)
        return actions[torch.arange(actions.shape[0]), idx], q

    return select


# ------------------------------------------------------------------------------------------ timing
class Peer:
    """A timed callable; `tick(i)` runs one control tick on held-out observation i."""

    def __init__(self, name: str, tick: Callable[[int], Any], flops: float, config: dict[str, Any],
                 group: str = "paper") -> None:
        self.name, self.tick, self.flops, self.config, self.group = name, tick, flops, config, group
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.error: str | None = None


def interleave(peers: list[Peer], ticks: int, block: int, max_seconds: float, n_obs: int) -> dict[str, Any]:
    loads: list[float] = []
    k = 0
    rounds = 0
    spent = {p.name: 0.0 for p in peers}
    while True:
        active = [p for p in peers if p.error is None and len(p.wall) < ticks
                  and not (len(p.wall) >= 10 and spent[p.name] > max_seconds)]
        if not active:
            break
        rounds += 1
        loads.append(os.getloadavg()[0])
        for peer in active:
            peer.tick(k % n_obs)  # warm-up after the previous peer evicted the caches
            k += 1
            for _ in range(block):
                t0, c0 = time.perf_counter(), time.thread_time()
                peer.tick(k % n_obs)
                c1, t1 = time.thread_time(), time.perf_counter()
                k += 1
                peer.wall.append(t1 - t0)
                peer.cpu.append(c1 - c0)
                spent[peer.name] += t1 - t0
        if rounds % 5 == 0:
            log(f"round {rounds}: " + ", ".join(f"{p.name} {1e3 * np.median(p.wall):.1f}" for p in active))
    return {"rounds": rounds, "block": block,
            "load_avg_1min": summarize(loads, {"min": "min", "median": 50, "max": "max"})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", nargs="?", help="EVOR checkpoint or run directory (see --random-paper)")
    ap.add_argument("--random-paper", action="store_true",
                    help="no checkpoint: a random-weight paper-size agent (latency only; agreement not meaningful)")
    ap.add_argument("--obs-dim", type=int, default=37)
    ap.add_argument("--act-dim", type=int, default=5)
    ap.add_argument("--dataset", help="held-out observations .npz (default: manifest statistics)")
    ap.add_argument("--engines", required=True, help="engine directory (as benchmarks/frontier.py --engines)")
    ap.add_argument("--int8", help="calibrated INT8 engine directory of the same checkpoint")
    ap.add_argument("--variant", action="append", default=[], metavar="ENGINE[:topK][:crn]",
                    help="engine variant (name under --engines) + run-time settings, e.g. e1:top1 (repeatable)")
    ap.add_argument("--at", action="append", default=[], metavar="ENGINE[:topK]",
                    help="variant at which eager / torch.compile are also timed (repeatable; default: the first "
                         "--variant); Euler critic engines without pruning or CRN only")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of every peer (torch and onnxruntime)")
    ap.add_argument("--ticks", type=int, default=40, help="timed ticks per peer")
    ap.add_argument("--block", type=int, default=2, help="timed ticks per peer per round")
    ap.add_argument("--max-seconds", type=float, default=40.0, help="time cap per peer")
    ap.add_argument("--agreement-obs", type=int, default=128, help="held-out observations for agreement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_path", help="write the full report here")
    args = ap.parse_args(argv)
    if not args.checkpoint and not args.random_paper:
        ap.error("give a CHECKPOINT or --random-paper")

    import torch

    from evor_edge.checkpoint import load_checkpoint
    from evor_edge.runtime import EvorPolicy
    from evor_edge.runtime.bench import flops_per_tick
    from evor_edge.runtime.manifest import load_manifest

    torch.set_num_threads(args.threads)
    started, load_start = time.time(), os.getloadavg()
    root = Path(args.engines)
    root.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or str(random_paper_checkpoint(root, args.obs_dim, args.act_dim, args.seed))
    agent = load_checkpoint(checkpoint).agent.eval()
    variants = [fr.parse_variant(v) for v in args.variant]
    at = [fr.parse_variant(a) for a in args.at] or variants[:1]
    needed = {"full": {}}
    for v in [*variants, *at]:
        if v.engine not in needed:
            needed[v.engine] = fr.DEFAULT_ENGINES.get(v.engine) or fr.engine_kwargs_from_name(v.engine)
    engines = fr.export_engines(checkpoint, root, needed, rebuild=False)
    manifest = load_manifest(engines["full"])
    n_pi, n, tau_r = manifest.default_num_candidates, manifest.default_num_rtg, manifest.default_tau_r
    act_dim = manifest.act_dim

    rng = np.random.default_rng(args.seed)
    obs = fr.held_out_observations(manifest, args.dataset, args.agreement_obs, rng)
    count = len(obs)
    a_noise, r_noise, r_indep, crn_row = fr.held_out_noise(rng, count, n_pi, n, act_dim)
    obs_t, a_t, r_t = (torch.from_numpy(x) for x in (obs, a_noise, r_noise))

    # ---------------------------------------------------------------------------- peers
    paper_flops = float(flops_per_tick(manifest, 1, n_pi, n))
    paper_cfg = {"num_candidates": n_pi, "num_rtg": n, "euler_steps": manifest.euler_steps,
                 "critic_steps": manifest.euler_steps, "hidden_dims": manifest.training_config.get("hidden_dims")}
    eager = torch_selector(agent, None, tau_r)
    peers: list[Peer] = []
    report: dict[str, Any] = {"checkpoint": checkpoint, "random_weights": bool(args.random_paper),
                              "config": paper_cfg, "threads": args.threads, "peers": {}}

    def torch_tick(fn: Callable[..., Any], rtg: Any) -> Callable[[int], Any]:
        def tick(i: int) -> Any:
            with torch.inference_mode():
                return fn(obs_t[i:i + 1], a_t[i:i + 1], rtg[i:i + 1])
        return tick

    peers.append(Peer("eager", torch_tick(eager, r_t), paper_flops, paper_cfg))
    compiled = None
    if not args.no_compile:
        log("torch.compile (inductor) of the reference ...")
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(eager, dynamic=False)
            with torch.inference_mode():
                compiled(obs_t[:1], a_t[:1], r_t[:1])
            report["compile_seconds"] = round(time.perf_counter() - t0, 1)
            peers.append(Peer("compile", torch_tick(compiled, r_t), paper_flops, paper_cfg))
            log(f"compiled in {report['compile_seconds']} s")
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            report["compile_error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
            log(f"torch.compile failed: {report['compile_error']}")

    def policy_peer(name: str, engine_dir: Path, cfg: fr.Config | None, group: str) -> Peer:
        policy = EvorPolicy.load(engine_dir, backend="onnxruntime", intra_op_threads=args.threads, tau_q=0.0,
                                 seed=args.seed)
        if cfg is not None:
            policy.configure(num_candidates=cfg.num_candidates, num_rtg=cfg.num_rtg, rtg_top_k=cfg.rtg_top_k,
                             common_rtg_noise=cfg.common_rtg_noise)
        flops = float(flops_per_tick(policy.manifest, 1, policy.num_candidates, policy.engine_num_rtg))
        conf = {"engine": str(engine_dir), "num_candidates": policy.num_candidates, "num_rtg": policy.num_rtg,
                "rtg_top_k": policy.rtg_top_k, "common_rtg_noise": policy.common_rtg_noise,
                "critic_steps": policy.manifest.extra.get("critic_steps"),
                "critic_solver": policy.manifest.extra.get("critic_solver"),
                "prune": policy.manifest.extra.get("prune"), "precision": policy.manifest.precision}
        return Peer(name, lambda i: policy.act(obs[i]), flops, conf, group)

    peers.append(policy_peer("engine-fp32", engines["full"], None, "paper"))
    if args.int8:
        peers.append(policy_peer("engine-int8", Path(args.int8), None, "paper"))
    for v in variants:
        peers.append(policy_peer(f"variant {v.label}", engines[v.engine], v, "variant"))
    compile_at: dict[str, Any] = {}
    for best in at:
        bm = load_manifest(engines[best.engine])
        if bm.extra.get("prune") or bm.extra.get("critic_solver", "euler") != "euler" or best.common_rtg_noise:
            log(f"eager/compile at {best.label}: pruning / non-Euler / CRN have no plain-torch twin; skipped")
            continue
        k = best.rtg_top_k or best.num_rtg
        _, r_best = fr.engine_noise(best, a_noise, r_noise, crn_row)
        r_best_t = torch.from_numpy(np.array(r_best))
        best_flops = float(flops_per_tick(bm, 1, best.num_candidates, k))
        fn = torch_selector(agent, bm.extra.get("critic_steps"), tau_r)
        cfg_b = {"critic_steps": bm.extra.get("critic_steps"), "num_candidates": best.num_candidates,
                 "engine_num_rtg": k, "note": "torch reference fed the same top-k noise the engine gets"}
        peers.append(Peer(f"eager @ {best.label}", torch_tick(fn, r_best_t), best_flops, cfg_b, best.label))
        if compiled is not None:
            t0 = time.perf_counter()
            try:
                comp_b = torch.compile(fn, dynamic=False)
                with torch.inference_mode():
                    comp_b(obs_t[:1], a_t[:1], r_best_t[:1])
                compile_at[best.label] = {"compile_seconds": round(time.perf_counter() - t0, 1)}
                peers.append(Peer(f"compile @ {best.label}", torch_tick(comp_b, r_best_t), best_flops, cfg_b,
                                  best.label))
            except Exception as exc:  # noqa: BLE001
                compile_at[best.label] = {"compile_error": f"{type(exc).__name__}: "
                                                           f"{str(exc).strip().splitlines()[0][:300]}"}
    # the machine's matmul peak, timed in the same rounds
    m, k_, n_ = PEAK_SHAPE
    x_mm, w_mm = torch.randn(n_, k_), torch.randn(k_, m)
    x_np, w_np = x_mm.numpy(), w_mm.numpy()
    peers.append(Peer("peak torch sgemm", lambda i: torch.mm(x_mm, w_mm), 2.0 * m * k_ * n_, {"shape": PEAK_SHAPE},
                      "peak"))
    peers.append(Peer("peak numpy sgemm", lambda i: x_np @ w_np, 2.0 * m * k_ * n_, {"shape": PEAK_SHAPE}, "peak"))

    # ------------------------------------------------------------------------- timing
    log(f"timing {len(peers)} peers, {args.ticks} ticks each, interleaved (threads {args.threads})")
    meta = interleave(peers, args.ticks, args.block, args.max_seconds, count)
    peak = max(p.flops / float(np.median(p.wall)) for p in peers if p.group == "peak")
    eager_med = float(np.median(peers[0].wall))
    for p in peers:
        wall, cpu = latency_stats(p.wall), latency_stats(p.cpu)
        med = wall["p50_ms"] * 1e-3
        entry = {"group": p.group, "config": p.config, "ticks": len(p.wall), "median_ms": wall["p50_ms"],
                 "p99_ms": wall["p99_ms"], "cpu_median_ms": cpu["p50_ms"],
                 "gflop": p.flops / 1e9, "gflops_per_s": p.flops / med / 1e9,
                 "fraction_of_peak": (p.flops / med) / peak if p.group != "peak" else None,
                 "speedup_vs_eager": eager_med / med if p.group != "peak" else None}
        report["peers"][p.name] = entry
    for best in at:
        eager_b = report["peers"].get(f"eager @ {best.label}")
        if eager_b:
            for name, entry in report["peers"].items():
                if entry["group"] == best.label or name == f"variant {best.label}":
                    entry.setdefault("speedup_vs_eager_at_this_config", {})[best.label] = (
                        eager_b["median_ms"] / entry["median_ms"])
    report["peak_gflops_per_s"] = peak / 1e9
    report["timing"] = meta
    report["compile_at"] = compile_at

    # ---------------------------------------------------------------------- agreement
    log(f"agreement on {count} held-out observations")
    with torch.inference_mode():
        chosen, q = [], []
        for i in range(0, count, 8):
            c, qq = eager(obs_t[i:i + 8], a_t[i:i + 8], r_t[i:i + 8])
            chosen.append(c.numpy())
            q.append(qq.numpy())
        q_ref = np.concatenate(q)
        a_ref_all = []
        for i in range(0, count, 8):
            o_n = agent.normalize_obs(obs_t[i:i + 8])
            a_ref_all.append(agent.sample_actions(o_n[:, None, :], a_t[i:i + 8]).numpy())
    ref = fr.Outputs(np.concatenate(a_ref_all), q_ref)
    agreement: dict[str, Any] = {}
    sess_full = fr.engine_session(engines["full"], 2)
    full_cfg = fr.Config("full", n_pi, n)
    ref_indep = fr.run_outputs(sess_full, obs, *fr.engine_noise(full_cfg, a_noise, r_indep, crn_row), tau_r, n)
    ref_crn = fr.run_outputs(sess_full, obs, *fr.engine_noise(fr.Config("full", n_pi, n, None, True), a_noise,
                                                              r_noise, crn_row), tau_r, n)
    agreement["ceiling (reference vs itself, independent draws)"] = fr.compare(ref_indep, ref)
    out_fp32 = fr.run_outputs(sess_full, obs, *fr.engine_noise(full_cfg, a_noise, r_noise, crn_row), tau_r, n)
    agreement["engine-fp32"] = fr.compare(out_fp32, ref)
    agreement["engine-fp32"]["vs_independent_reference"] = fr.compare(out_fp32, ref_indep)["rate"]
    if compiled is not None:
        with torch.inference_mode():
            comp_choice = np.stack([compiled(obs_t[i:i + 1], a_t[i:i + 1], r_t[i:i + 1])[0].numpy()[0]
                                    for i in range(count)])
        same = np.linalg.norm(comp_choice - ref.chosen, axis=-1) <= 1e-4 * (1 + np.abs(ref.chosen).max(axis=-1))
        agreement["compile"] = {"agree": int(same.sum()), "n": count, "rate": float(same.mean()),
                                "ci95": fr.wilson(int(same.sum()), count)}
    if args.int8:
        out_int8 = fr.run_outputs(fr.engine_session(Path(args.int8), 2), obs,
                                  *fr.engine_noise(full_cfg, a_noise, r_noise, crn_row), tau_r, n)
        agreement["engine-int8"] = fr.compare(out_int8, ref)
        agreement["engine-int8"]["vs_independent_reference"] = fr.compare(out_int8, ref_indep)["rate"]
    for v in variants:
        session = fr.engine_session(engines[v.engine], 2)
        out = fr.run_outputs(session, obs, *fr.engine_noise(v, a_noise, r_noise, crn_row), tau_r, v.num_rtg)
        entry = fr.compare(out, ref)
        entry["vs_independent_reference"] = fr.compare(out, ref_indep)["rate"]
        if v.common_rtg_noise:
            entry["basis"] = "reference with its own independent draws (CRN draws differently)"
            entry["vs_crn_reference"] = fr.compare(out, ref_crn)
        agreement[f"variant {v.label}"] = entry
    report["agreement"] = agreement
    report["observations"] = count
    report["dataset"] = args.dataset
    report["load_avg_start"], report["load_avg_end"] = list(load_start), list(os.getloadavg())
    report["cpu_count"] = os.cpu_count()
    report["seconds"] = round(time.time() - started, 1)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")

    # --------------------------------------------------------------------------- table
    print(f"checkpoint {checkpoint}{' (RANDOM WEIGHTS)' if args.random_paper else ''}; N_pi {n_pi}, N {n}, "
          f"M {manifest.euler_steps}, MLP {paper_cfg['hidden_dims']}; {args.threads} thread(s); "
          f"matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"{'peer':34s} {'GFLOP':>6s} {'median':>8s} {'p99':>8s} {'cpu med':>8s} {'x eager':>8s} {'GFLOP/s':>8s} "
          f"{'%peak':>6s} {'agree':>6s} {'indep':>6s}")
    for name, e in report["peers"].items():
        agr = agreement.get(name) or agreement.get(name.replace(" @ ", " "))
        agr_s = f"{agr['rate']:6.3f}" if agr else "     -"
        ind = agr.get("vs_independent_reference") if agr else None
        agr_s += f" {ind:6.3f}" if ind is not None else "      -"
        xe = f"{e['speedup_vs_eager']:8.2f}" if e["speedup_vs_eager"] else "       -"
        pk = f"{100 * e['fraction_of_peak']:6.1f}" if e["fraction_of_peak"] else "     -"
        print(f"{name:34s} {e['gflop']:6.2f} {e['median_ms']:8.1f} {e['p99_ms']:8.1f} {e['cpu_median_ms']:8.1f} {xe} "
              f"{e['gflops_per_s']:8.1f} {pk} {agr_s}")
    for name, e in report["peers"].items():
        for label, ratio in (e.get("speedup_vs_eager_at_this_config") or {}).items():
            if not name.startswith("eager @"):
                print(f"  at {label}: {name} is {ratio:.2f}x eager at the same configuration")
    c = agreement["ceiling (reference vs itself, independent draws)"]
    print(f"ceiling (reference vs itself, independent reward-to-go draws): {c['rate']:.3f}; 'agree': same draws, "
          f"'indep': against the reference with its own independent draws")
    for name, e in agreement.items():
        if "vs_crn_reference" in e:
            print(f"{name}: vs CRN reference (same CRN draws) {e['vs_crn_reference']['rate']:.3f}")
    if "compile_error" in report:
        print(f"torch.compile: {report['compile_error']}")
    print(f"load average during timing: {meta['load_avg_1min']}; start {load_start[0]:.1f}, "
          f"end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
