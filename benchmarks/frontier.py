"""Quality/latency frontier of cheaper EVOR selection: (selection agreement, p99) per configuration.

The command line of `evor_edge.frontier_study.measure_frontier` (what is measured and how: that module's
docstring). The frontier JSON (`evor_edge.runtime.frontier` schema) goes to ENGINES/full/frontier.json (or
--out); engine paths in it are relative to the file, so `evor-edge bench ENGINES/full --fit` picks the best
agreement that meets the deadline (re-timed on the machine it runs on).

    python benchmarks/frontier.py /tmp/runs/pm_paper --dataset /tmp/pm100-val.npz --engines /tmp/vw/pp

Progress goes to stderr; the table and the path of the JSON to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from evor_edge.frontier_study import measure_frontier, parse_engine_spec, retime_frontier


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="EVOR checkpoint or run directory")
    ap.add_argument("--dataset", help="held-out observations (.npz with 'observations'); default manifest stats")
    ap.add_argument("--engines", required=True, help="directory for the variant engines (ENGINES/full is the base)")
    ap.add_argument("--engine", action="append", default=[], metavar="NAME=steps:K,solver:S,prune:K1xN1",
                    help="engine variants to use instead of the defaults (repeatable; 'full=' is always added)")
    ap.add_argument("--observations", type=int, default=200, help="held-out observations for agreement")
    ap.add_argument("--ticks", type=int, default=100, help="timed ticks per configuration (p99 needs >= 100)")
    ap.add_argument("--block", type=int, default=10, help="ticks per configuration per round-robin round")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="time cap per configuration for latency")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads for the latency runs")
    ap.add_argument("--agreement-threads", type=int, default=2, help="intra-op threads for the agreement runs")
    ap.add_argument("--hz", type=float, default=50.0, help="rate the timed ticks are paced at (0: back to back)")
    ap.add_argument("--no-latency", action="store_true", help="agreement only")
    ap.add_argument("--latency-only", action="store_true",
                    help="re-time the points of the existing frontier JSON (--out or ENGINES/full/frontier.json), "
                         "keeping its agreement numbers")
    ap.add_argument("--rebuild", action="store_true", help="re-export engines that exist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="frontier JSON path (default ENGINES/full/frontier.json)")
    args = ap.parse_args(argv)


    timing = {"ticks": args.ticks, "block": args.block, "threads": args.threads, "max_seconds": args.max_seconds,
              "hz": args.hz}
    if args.latency_only:
        frontier, path, load_start = retime_frontier(args.engines, out=args.out, dataset=args.dataset,
                                                     observations=args.observations, seed=args.seed, **timing)
        print_table(frontier["points"], frontier["ceiling"], load_start, path)
        return 0
    spec = dict([("full", {})] + [parse_engine_spec(s) for s in args.engine]) if args.engine else None
    load_start = os.getloadavg()
    frontier, path = measure_frontier(args.checkpoint, args.engines, spec, dataset=args.dataset,
                                      observations=args.observations, agreement_threads=args.agreement_threads,
                                      latency=not args.no_latency, rebuild=args.rebuild, seed=args.seed,
                                      out=args.out, **timing)
    print_table(frontier["points"], frontier["ceiling"], load_start, path)
    return 0


def print_table(points: list[dict[str, Any]], ceiling: dict[str, Any], load_start: tuple[float, ...],
                out_path: Path) -> None:
    header = (f"{'configuration':34s} {'GFLOP':>6s} {'agree':>6s} {'95% CI':>13s} {'cert':>5s} {'p50':>7s} "
              f"{'p99':>7s} {'cpu50':>6s} {'pareto':>6s}")
    print(header)
    for p in sorted(points, key=lambda p: p.get("p99_ms") or p["gflop"]):
        ci = f"[{p['agreement_ci95'][0]:.2f},{p['agreement_ci95'][1]:.2f}]"
        lat_s = (f"{p['p50_ms']:7.1f} {p['p99_ms']:7.1f} {p['cpu_p50_ms']:6.1f} {'*' if p.get('pareto') else '':>6s}"
                 if "p99_ms" in p else "")
        cert = f"{p['certified']:5.2f}" if p.get("certified") is not None else "    -"
        print(f"{p['label']:34s} {p['gflop']:6.2f} {p['agreement']:6.3f} {ci:>13s} {cert} {lat_s}")
    print(f"ceiling (paper config vs itself, independent reward-to-go draws): {ceiling['rate']:.3f}")
    print(f"load average start {load_start[0]:.1f}, end {os.getloadavg()[0]:.1f}; wrote {out_path}")



if __name__ == "__main__":
    sys.exit(main())
