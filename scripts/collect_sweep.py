"""Collect one engine's N_pi sweep (scripts/scaling_sweep.sh) into a table, a JSON file and a plot.

    python scripts/collect_sweep.py /work/repro/results RUN_NAME --out docs/campaign/scaling_RUN_NAME.json \
        --plot docs/scaling_RUN_NAME.png --markdown T.md

Reads results/sweep/num_candidates=K__RUN_NAME.json for every K, and the campaign's own
results/eval_RUN_NAME.json as the point at the exported N_pi (same engine, same episode seeds). Every
number comes from those files.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from evor_edge.sweep import plot_sweep

VALUE_RE = re.compile(r"^num_candidates=(?P<k>\d+)__(?P<run>.+)\.json$")


def collect(results: Path, run: str) -> list[dict]:
    points = []
    for path in sorted((results / "sweep").glob(f"num_candidates=*__{run}.json")):
        match = VALUE_RE.match(path.name)
        if match is None or match.group("run") != run:
            continue
        evaluation = json.loads(path.read_text())
        points.append({"value": int(match.group("k")), "source": str(path), **_fields(evaluation)})
    campaign = results / f"eval_{run}.json"
    if campaign.is_file():
        evaluation = json.loads(campaign.read_text())
        engine = Path(evaluation["source"]) / "manifest.json"
        exported = json.loads(engine.read_text())["default_num_candidates"] if engine.is_file() else None
        if exported is not None and exported not in {p["value"] for p in points}:
            points.append({"value": int(exported), "source": str(campaign), **_fields(evaluation)})
    return sorted(points, key=lambda p: p["value"])


def _fields(evaluation: dict) -> dict:
    return {"task": evaluation["task"], "episodes": evaluation["episodes"],
            "success_rate": evaluation["success_rate"], "mean_episode_length": evaluation["mean_episode_length"],
            "seconds": evaluation["seconds"]}


def markdown(points: list[dict]) -> str:
    head = "| N_pi | " + " | ".join(str(p["value"]) for p in points) + " |"
    rule = "|---|" + "---|" * len(points)
    success = f"| success ({points[0]['episodes']} ep) | " + " | ".join(
        f"{100 * p['success_rate']:.0f} %" for p in points) + " |"
    length = "| mean episode length | " + " | ".join(f"{p['mean_episode_length']:.0f}" for p in points) + " |"
    return "\n".join([head, rule, success, length]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    points = collect(args.results, args.run)
    if not points:
        raise SystemExit(f"no sweep files for {args.run} under {args.results / 'sweep'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run": args.run, "knob": "num_candidates", "points": points}, indent=1) + "\n")
    if args.plot:
        plot_sweep("num_candidates", points, str(args.plot), f"{args.run}: success vs N_pi")
    if args.markdown:
        args.markdown.write_text(markdown(points))
    print(markdown(points), end="")


if __name__ == "__main__":
    main()
