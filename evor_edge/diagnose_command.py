"""`evor-edge diagnose ENGINE_DIR --env TASK`: actor coverage against critic ranking, in the simulator.

Registered in `evor_edge.cli` with ``main.add_command(diagnose_command)``; errors follow the CLI's convention
(`evor_edge.cli_errors`): a user error prints one ``error: ...`` line and exits 2.
"""

from __future__ import annotations

import json
import os

import click

from evor_edge.cli_errors import friendly_errors


def _steps(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        steps = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--at-steps {value!r}: expected comma-separated step indices, e.g. 0,100,200") from None
    if not steps or min(steps) < 0:
        raise ValueError(f"--at-steps {value!r}: expected step indices >= 0")
    return steps


@click.command("diagnose")
@click.argument("engine_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--env", "task", required=True, help="OGBench singletask name, e.g. "
              "pointmaze-medium-navigate-singletask-task4-v0.")
@click.option("--states", default=4, show_default=True, type=click.IntRange(min=1),
              help="States to diagnose, evenly spaced along the recorded episodes (start included).")
@click.option("--at-steps", "at_steps", metavar="T1,T2,...",
              help="Diagnose these steps of every recorded episode instead (0 = the start state).")
@click.option("--episodes", default=1, show_default=True, type=click.IntRange(min=1),
              help="Episodes of the policy to record (seeds SEED, SEED+1, ...).")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop recording after this many steps "
              "[default: the task's time limit].")
@click.option("--num-candidates", default=16, show_default=True, type=click.IntRange(min=1),
              help="N_pi: candidates drawn and scored at each state.")
@click.option("--num-rtg", type=click.IntRange(min=1), help="N reward-to-go samples per Q* [default: manifest].")
@click.option("--tau-r", type=click.FloatRange(min=0.0, min_open=True), help="tau_R of Q* [default: manifest].")
@click.option("--tau-q", type=click.FloatRange(min=0.0), help="tau_Q of the selection [default: manifest].")
@click.option("--q-repeats", default=8, show_default=True, type=click.IntRange(min=1),
              help="Extra independent reward-to-go draws per state (Q* noise; pooled large-N Q*).")
@click.option("--rollouts", default=2, show_default=True, type=click.IntRange(min=1),
              help="Monte-Carlo rollouts per candidate (common random numbers across candidates).")
@click.option("--horizon", default=150, show_default=True, type=click.IntRange(min=1),
              help="Steps per rollout: the candidate, then the policy.")
@click.option("--tail", default="auto", show_default=True, type=click.Choice(["auto", "oracle", "repeat"]),
              help="After --horizon without success: oracle = the noise-free BFS expert finishes (point mazes); "
                   "repeat = the last reward forever (a lower bound); auto = oracle where there is one.")
@click.option("--follow-num-candidates", type=click.IntRange(min=1),
              help="N_pi of the policy followed in the rollouts [default: manifest].")
@click.option("--follow-num-rtg", default=8, show_default=True, type=click.IntRange(min=1),
              help="N of the policy followed in the rollouts (the cost driver; the manifest's N for the exact "
                   "deployed policy).")
@click.option("--scan-every", default=25, show_default=True, type=click.IntRange(min=0),
              help="Point mazes: also cost one decision every k recorded steps with the oracle (the candidate, then "
                   "the noise-free oracle: steps lost, no Monte-Carlo noise); 0 = off.")
@click.option("--discount", type=click.FloatRange(min=0.0, max=1.0, max_open=True),
              help="Discount of the Monte-Carlo returns [default: the engine's training discount].")
@click.option("--seed", default=0, show_default=True, type=int, help="Episode seeds and all policy noise.")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads (1 on a shared machine).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="PNG: Q* against MC return per state.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Also write the JSON report here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@friendly_errors
def diagnose_command(engine_dir: str, task: str, states: int, at_steps: str | None, episodes: int,
                     max_steps: int | None, num_candidates: int, num_rtg: int | None, tau_r: float | None,
                     tau_q: float | None, q_repeats: int, rollouts: int, horizon: int, tail: str,
                     follow_num_candidates: int | None, follow_num_rtg: int, scan_every: int,
                     discount: float | None, seed: int,
                     threads: int | None, plot_path: str | None, out_path: str | None, as_json: bool) -> None:
    """Why does ENGINE_DIR fail TASK? Actor coverage against critic ranking, measured in the simulator.

    \b
    Records episodes of the engine's policy, then at sampled states: draws N_pi candidates and their Q*
    (as the runtime does), resets the simulator to the saved state (qpos, qvel, goal), takes each candidate
    and follows the same policy for --horizon steps (--rollouts times, common random numbers), and
    compares Q* with these Monte-Carlo returns (dataset units: OGBench's singletask reward, the critic's).
    Point mazes also get the noise-free oracle's action and return (V*), and a scan costing one decision
    every --scan-every steps exactly: each candidate, then the oracle, in steps to the goal.

    \b
    Reports per state and overall:
      spearman(Q*, MC)   does the critic rank the candidates like the simulator does?
      regret             MC of the best candidate - MC of the chosen one (ranking loss)
      coverage gap       MC of the oracle action - MC of the best candidate (actor loss)
      angle to oracle    is any candidate heading the right way?
      steps lost         (scan) chosen vs best candidate = ranking, best candidate vs oracle = coverage
      verdict            coverage, ranking or neither

    \b
    Cost: (N_pi + 1) x --rollouts simulators stepped --horizon ticks, one engine call per tick at
    --follow-num-candidates x --follow-num-rtg; the defaults take a few minutes per 4 states on a 2-core
    CPU with a 3x256 engine. Example (see docs/diagnosis.md):
      evor-edge diagnose engines/evor_t4 --env pointmaze-medium-navigate-singletask-task4-v0 --plot d.png
    """
    from evor_edge.diagnose import DiagnoseSettings, diagnose, human_summary

    settings = DiagnoseSettings(
        states=states, at_steps=_steps(at_steps), episodes=episodes, max_steps=max_steps,
        num_candidates=num_candidates, num_rtg=num_rtg, tau_r=tau_r, tau_q=tau_q, q_repeats=q_repeats,
        rollouts=rollouts, horizon=horizon, tail=tail, follow_num_candidates=follow_num_candidates,
        follow_num_rtg=follow_num_rtg, scan_every=scan_every or None, discount=discount, seed=seed,
        threads=threads)
    if plot_path:
        _check_writable(plot_path, "--plot")
    if out_path:
        _check_writable(out_path, "--out")
    report = diagnose(engine_dir, task, settings, plot_path=plot_path)
    if out_path:
        from pathlib import Path

        Path(out_path).write_text(json.dumps(report, indent=2) + "\n")
    click.echo(json.dumps(report, indent=2) if as_json else human_summary(report))


def _check_writable(path: str, flag: str) -> None:
    """Refuse an output path whose folder cannot be created before any work is done."""
    from pathlib import Path

    parent = Path(path).expanduser().resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot create its folder ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} {path}: folder {parent} is not writable")
