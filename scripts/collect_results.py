"""Collect the campaign's evaluation files into one machine-readable table (docs/results.json).

    python scripts/collect_results.py repro/results --out docs/results.json

Reads every eval_*.json (the paper's selection settings) and vareval_VARIANT__RUN.json (the same engine at
other runtime settings, reproduce.sh's VARIANTS) with its train_*.json beside it and the run's config.json;
writes {"runs": [{"env", "task", "agent", "config", "selection", "seed", "steps", "episodes", "success"}, ...],
"summary": mean +- std over seeds per (env, task, agent, config, selection)}. Nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

TASK_RE = re.compile(r"^(?P<env>.+)-singletask-task(?P<task>\d+)-v0$")
# The paper's Table 2 (1M steps, 3 seeds; mean, std in %), for the tasks the campaign runs.
PAPER_TABLE_2 = {
    ("pointmaze-medium-navigate", 1): {"qc": (97, 3), "evor": (100, 1)},
    ("pointmaze-medium-navigate", 2): {"qc": (89, 7), "evor": (99, 2)},
    ("pointmaze-medium-navigate", 3): {"qc": (100, 0), "evor": (98, 2)},
    ("pointmaze-medium-navigate", 4): {"qc": (94, 7), "evor": (100, 0)},
    ("pointmaze-medium-navigate", 5): {"qc": (100, 0), "evor": (100, 0)},
    ("cube-double-play", 2): {"qc": (54, 4), "evor": (96, 2)},
    ("scene-play", 2): {"qc": (87, 2), "evor": (98, 1)},
}


def collect(results: Path) -> dict:
    runs = []
    files = [(p, "default", p.name[len("eval_"):]) for p in sorted(results.glob("eval_*.json"))]
    files += [(p, p.name[len("vareval_"):].split("__", 1)[0], p.name.split("__", 1)[1])
              for p in sorted(results.glob("vareval_*__*.json"))]
    for path, selection, run_file in files:
        evaluation = json.loads(path.read_text())
        train_file = path.with_name("train_" + run_file)
        train = json.loads(train_file.read_text()) if train_file.is_file() else {}
        config = json.loads((Path(train["run"]) / "config.json").read_text()) if "run" in train else {}
        task_name = evaluation.get("task") or config.get("task")
        match = TASK_RE.match(task_name or "")
        cfg = config.get("config", {})
        runs.append({
            "env": match.group("env") if match else task_name, "task": int(match.group("task")) if match else None,
            "agent": cfg.get("agent"), "config": cfg.get("preset"), "selection": selection, "n_step": cfg.get("n_step"),
            "seed": cfg.get("seed"), "steps": train.get("steps"), "episodes": evaluation.get("episodes"),
            "success": evaluation.get("success_rate"), "train_seconds": train.get("seconds"),
            "eval_seconds": evaluation.get("seconds"), "source": str(path),
        })
    groups: dict[tuple, list[float]] = {}
    for run in runs:
        key = (run["env"], run["task"], run["agent"], run["config"], run["selection"])
        groups.setdefault(key, []).append(run["success"])
    summary = [{"env": k[0], "task": k[1], "agent": k[2], "config": k[3], "selection": k[4], "seeds": len(v),
                "mean": statistics.fmean(v), "std": statistics.pstdev(v) if len(v) > 1 else 0.0}
               for k, v in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0]))]
    paired = _paired_env_means(runs)
    cpu_s = sum((r["train_seconds"] or 0) * (r["selection"] == "default") + (r["eval_seconds"] or 0) for r in runs)
    return {"runs": runs, "summary": summary, "paired_env_means": paired,
            "wall_hours_train_plus_eval": round(cpu_s / 3600, 2)}


def _paired_env_means(runs: list[dict]) -> list[dict]:
    """Per env: EVOR's and QC-1's mean success over the (task, seed) pairs that BOTH agents have (paper
    selection), so that an unfinished campaign still compares like with like (the acceptance's "EVOR's mean
    >= QC-1's mean")."""
    by_agent: dict[str, dict[tuple, float]] = {}
    for run in runs:
        if run["selection"] == "default":
            by_agent.setdefault(run["agent"], {})[(run["env"], run["task"], run["seed"])] = run["success"]
    evor, qc = by_agent.get("evor", {}), by_agent.get("qc", {})
    both = evor.keys() & qc.keys()
    out = []
    for env in sorted({key[0] for key in both}):
        keys = [k for k in both if k[0] == env]
        out.append({"env": env, "pairs": len(keys), "evor": statistics.fmean(evor[k] for k in keys),
                    "qc": statistics.fmean(qc[k] for k in keys)})
    return out


def markdown(table: dict) -> str:
    """The summary next to the paper's Table 2, as a markdown table (mean +- std over seeds, in %)."""
    cells: dict[tuple, dict[str, str]] = {}
    variants: list[str] = []
    for row in table["summary"]:
        text = f"{100 * row['mean']:.0f} +- {100 * row['std']:.0f} ({row['seeds']} seed{'s' * (row['seeds'] > 1)})"
        column = row["agent"] if row["selection"] == "default" else f"{row['agent']} [{row['selection']}]"
        if row["selection"] != "default" and column not in variants:
            variants.append(column)
        cells.setdefault((row["env"], row["task"]), {})[column] = text
    header = ["env", "task", "EVOR (ours)", *[f"{v.replace('evor', 'EVOR')} (ours)" for v in variants], "QC-1 (ours)",
              "paper EVOR", "paper QC-1"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in sorted(cells, key=lambda k: (k[0], k[1] or 0)):
        paper = {agent: f"{m} +- {s}" for agent, (m, s) in PAPER_TABLE_2.get(key, {}).items()}
        row_cells = [key[0], str(key[1]), cells[key].get("evor", "-"), *[cells[key].get(v, "-") for v in variants],
                     cells[key].get("qc", "-"), paper.get("evor", "-"), paper.get("qc", "-")]
        lines.append("| " + " | ".join(row_cells) + " |")
    for pair in table.get("paired_env_means", []):
        lines.append(f"| {pair['env']} | mean over the {pair['pairs']} (task, seed) runs both agents have | "
                     f"{100 * pair['evor']:.0f} | " + "- | " * len(variants) + f"{100 * pair['qc']:.0f} | | |")
    return "\n".join(lines)


def per_seed_markdown(table: dict) -> str:
    """One row per (env, agent, selection), one column per seed: success per task "t1 / t2 / ..." (in %),
    "-" for a task not yet evaluated, and the mean over the tasks evaluated."""
    cells: dict[tuple, dict[int, dict[int, float]]] = {}
    tasks: dict[str, set[int]] = {}
    seeds: set[int] = set()
    for run in table["runs"]:
        if run["task"] is None or run["seed"] is None:
            continue
        key = (run["env"], run["agent"], run["selection"])
        cells.setdefault(key, {}).setdefault(run["seed"], {})[run["task"]] = run["success"]
        tasks.setdefault(run["env"], set()).add(run["task"])
        seeds.add(run["seed"])
    order = sorted(seeds)
    lines = ["| env | run | " + " | ".join(f"seed {s}" for s in order) + " |", "|---|---|" + "---|" * len(order)]
    for key in sorted(cells, key=lambda k: (k[0], k[1] != "evor", k[2] != "default", k[1], k[2])):
        env, agent, selection = key
        name = {"evor": "EVOR", "qc": "QC-1"}.get(agent, agent) + ("" if selection == "default" else f" [{selection}]")
        row = []
        for seed in order:
            done = cells[key].get(seed, {})
            if not done:
                row.append("")
                continue
            text = " / ".join(f"{100 * done[t]:.0f}" if t in done else "-" for t in sorted(tasks[env]))
            row.append(text + (f" (mean {100 * statistics.fmean(done.values()):.0f})" if len(done) > 1 else ""))
        lines.append(f"| {env} | {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, help="Also write the table next to the paper's Table 2.")
    args = parser.parse_args()
    table = collect(args.results)
    args.out.write_text(json.dumps(table, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(table) + "\n\nPer seed (success in %, tasks in order):\n\n"
                                 + per_seed_markdown(table) + "\n")
    for row in table["summary"]:
        print(f"{row['env']} task{row['task']} {row['agent']} [{row['selection']}]: {100 * row['mean']:.0f} +- "
              f"{100 * row['std']:.0f} % ({row['seeds']} seed(s))")


if __name__ == "__main__":
    main()
