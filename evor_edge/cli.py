"""`evor-edge`: the command line. Heavy imports (torch, ogbench, onnx) happen inside commands, so the
robot install (numpy + onnxruntime + click) can run `bench` without them.

Every error a user can cause is printed as one line `error: ...` with exit status 2; an unexpected
internal error prints one line too (set EVOR_EDGE_DEBUG=1 for the traceback) with exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from evor_edge.cli_errors import friendly_errors

DEFAULT_TASK = "pointmaze-medium-navigate-singletask-task1-v0"


def emit(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
    click.echo(json.dumps(result, indent=2) if as_json else human(result))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="evor-edge")
def main() -> None:
    """EVOR for robots: train offline-RL policies, compile them to one engine, run them at control rate.

    \b
    Typical flow:
      evor-edge data generate pointmaze-medium-navigate-v0 --out data/pm.npz
      evor-edge train --env pointmaze-medium-navigate-singletask-task1-v0 --dataset data/pm.npz --out runs/pm
      evor-edge eval runs/pm --env pointmaze-medium-navigate-singletask-task1-v0
      evor-edge export runs/pm --out engines/pm
      evor-edge bench engines/pm --hz 50 --fit
    Or all of it on a small default: evor-edge quickstart
    """
    if not sys.stderr.isatty():  # a log file gets a progress line per 30 s, not every redraw
        os.environ.setdefault("TQDM_MININTERVAL", "30")


# --------------------------------------------------------------------------------------------- data
@main.group()
def data() -> None:
    """Make and inspect OGBench-format offline datasets."""


@data.command("generate")
@click.argument("dataset")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Train file to write (.npz); the validation split goes to the matching -val.npz.")
@click.option("--episodes", default=None, type=click.IntRange(min=1),
              help="Train episodes; validation gets a tenth more. [default: the dataset's official count, "
                   "e.g. 1000 navigate / play, 500 pointmaze giant navigate, 5000 stitch]")
@click.option("--max-episode-steps", default=None, type=click.IntRange(min=2),
              help="Steps per episode. [default: official, 1001; 2001 pointmaze giant navigate; 201 stitch]")
@click.option("--noise", default=None, type=click.FloatRange(min=0.0),
              help="pointmaze: std of the expert's Gaussian action noise; play: plan noise; noisy: upper end of "
                   "the per-episode noise scale. [default: official, 0.5 pointmaze / 0.1 cube, scene]")
@click.option("--noise-smoothing", default=None, type=click.FloatRange(min=0.0),
              help="play datasets: smoothing of the plan oracles' noise. [default: official, 0.5]")
@click.option("--min-norm", default=None, type=click.FloatRange(min=0.0),
              help="noisy datasets: the Markov oracles' minimum action norm. [default: official, 0.4]")
@click.option("--p-random-action", default=None, type=click.FloatRange(min=0.0, max=1.0),
              help="cube / scene: probability of a uniformly random action. [default: official, 0.1 noisy / 0 play]")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--expert-eval-episodes", default=2, show_default=True, type=click.IntRange(min=0),
              help="pointmaze: episodes per evaluation task to measure the noisy expert's success (0 skips).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@friendly_errors
def data_generate(dataset: str, out: str, episodes: int | None, max_episode_steps: int | None, noise: float | None,
                  noise_smoothing: float | None, min_norm: float | None, p_random_action: float | None, seed: int,
                  expert_eval_episodes: int, as_json: bool) -> None:
    """Generate DATASET (an OGBench dataset name, e.g. pointmaze-medium-navigate-v0) locally.

    Every option left out takes the value of OGBench's official command for DATASET
    (data_gen_scripts/commands.sh; see docs/datasets.md). The report (--json) records the recipe
    used, the official one and any deviation. Stores qpos/qvel (and button_states) so singletask
    reward relabelling works, and writes both files atomically.
    """
    from evor_edge.data_generate_command import run_generate

    report, human = run_generate(dataset, out, episodes=episodes, max_episode_steps=max_episode_steps, noise=noise,
                                 noise_smoothing=noise_smoothing, min_norm=min_norm,
                                 p_random_action=p_random_action, seed=seed,
                                 expert_eval_episodes=expert_eval_episodes)
    emit(report, as_json, human)


@data.command("import")
@click.argument("source")
@click.option("--dataset", "dataset_path", type=click.Path(dir_okay=False),
              help="OGBench: the raw .npz of SOURCE's dataset (its -val.npz beside it).")
@click.option("--minari", "is_minari", is_flag=True,
              help="SOURCE is a local Minari dataset directory (needs the optional 'minari' package).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Self-contained dataset file to write (.npz, docs/datasets.md), atomically.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@friendly_errors
def data_import(source: str, dataset_path: str | None, is_minari: bool, out: str, as_json: bool) -> None:
    """Write a self-contained training file (docs/datasets.md) from an OGBench task or a Minari dataset.

    \b
    OGBench:  evor-edge data import pointmaze-medium-navigate-singletask-task1-v0 --dataset pm.npz --out pm-t1.npz
    Minari:   evor-edge data import ~/.minari/datasets/D4RL/door/human-v2 --minari --out door.npz

    OGBench's single-task reward relabelling is done once here, so `evor-edge train --dataset OUT`
    needs neither ogbench nor MuJoCo (e.g. on a GPU machine).
    """
    from evor_edge.data_import_command import run_import

    report, human = run_import(source, out, dataset_path=dataset_path, is_minari=is_minari)
    emit(report, as_json, human)


# -------------------------------------------------------------------------------------------- train
@main.command()
@click.option("--env", "task", help="OGBench singletask name, e.g. " + DEFAULT_TASK + ". Needed for an OGBench "
              "raw file; optional (recorded) for a self-contained dataset file.")
@click.option("--dataset", "dataset_path", type=click.Path(),
              help="A self-contained dataset file (docs/datasets.md: a robot's own logs, or `data import`), an "
                   "OGBench-format .npz (its -val.npz beside it), or a directory from `data convert` (sharded, "
                   "read row by row). Default: ~/.ogbench/data/<dataset>.npz")
@click.option("--agent", type=click.Choice(["evor", "qc"]), default="evor", show_default=True,
              help="evor = flow BC + flow-based TD reward-to-go model; qc = the QC-1 baseline.")
@click.option("--preset", type=click.Choice(["paper", "small"]), default="small", show_default=True,
              help="paper = Tables 3-4 (MLP 4x512, 1M steps); small = CPU-sized (MLP 3x256, 20k steps).")
@click.option("--steps", type=click.IntRange(min=1), help="Gradient steps (overrides the preset).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Minibatch size (overrides the preset).")
@click.option("--reward-model", type=click.Choice(["sample", "mc"]),
              help="EVOR critic target: sample = flow-based TD (default); mc = Eq. 13 Monte-Carlo returns.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="Steps between checkpoints.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue from the run directory's last checkpoint (on any device).")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
              help="Where the whole update runs; auto = CUDA when torch sees a GPU.")
@click.option("--step-mode", default="auto", show_default=True,
              type=click.Choice(["auto", "eager", "compile", "cuda-graph", "compiled-cuda-graph"]),
              help="auto = one CUDA graph replay per step on a GPU, eager on the CPU (docs/performance.md).")
@click.option("--time-limit", "time_limit", type=click.FloatRange(min=0.0, min_open=True), metavar="SECONDS",
              help="Stop cleanly after this long (final checkpoint at the step reached); resume later.")
@click.option("--action-low", metavar="X|X1,X2,...", help="Action lower bound(s) for a dataset that stores none.")
@click.option("--action-high", metavar="X|X1,X2,...", help="Action upper bound(s) for a dataset that stores none.")
@click.option("--weights-only", is_flag=True,
              help="Checkpoints without optimizer state (a third of the size; they export but cannot resume).")
@click.option("--threads", type=click.IntRange(min=1), help="Torch CPU threads (default: half the cores).")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Data-parallel processes on this machine (DDP via torchrun's launcher: gloo on the CPU, nccl "
                   "with one GPU per process); --batch-size is then the global batch, split evenly.")
@click.option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --nproc: start the ranks again up to N times after a failure; a restart resumes from the "
                   "run's last checkpoint (torchrun --max-restarts does the same under torchrun).")
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="Override any TrainConfig field, e.g. --set target_ema=0.02 --set hidden_dims=256,256 (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@friendly_errors
def train(task: str | None, dataset_path: str | None, agent: str, preset: str, steps: int | None,
          batch_size: int | None, reward_model: str | None, checkpoint_every: int | None, seed: int, out: str,
          resume: bool, device: str, step_mode: str, action_low: str | None, action_high: str | None,
          weights_only: bool, time_limit: float | None, threads: int | None, nproc: int, max_restarts: int,
          overrides: tuple[str, ...], as_json: bool) -> None:
    """Train an EVOR (or QC-1) agent on an offline dataset.

    \b
    A robot's own logs (no simulator needed):
      evor-edge train --dataset robot.npz --out runs/robot
    An OGBench task:
      evor-edge train --env pointmaze-medium-navigate-singletask-task1-v0 --dataset pm.npz --out runs/pm

    Writes RUN/config.json, RUN/metrics.jsonl (JSON lines, with steps/s) and atomic safetensors
    checkpoints under RUN/checkpoints/ (the same format on every device). A killed run continues with
    --resume, also on another device.
    """
    from evor_edge.train_command import run_train

    context = click.get_current_context()
    given = [name for name in context.params
             if context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    outcome = run_train(task=task, dataset_path=dataset_path, agent=agent, preset=preset, steps=steps,
                        batch_size=batch_size, reward_model=reward_model, checkpoint_every=checkpoint_every,
                        seed=seed, out=out, resume=resume, device=device, step_mode=step_mode,
                        action_low=action_low, action_high=action_high, weights_only=weights_only,
                        time_limit=time_limit, threads=threads, nproc=nproc, max_restarts=max_restarts,
                        overrides=overrides, given=given)
    if outcome is not None:  # None on torchrun ranks other than 0 (only rank 0 prints the summary)
        summary, human = outcome
        emit(summary, as_json, human)


# --------------------------------------------------------------------------------------------- eval
@main.command("eval")
@click.argument("source", type=click.Path(exists=True))
@click.option("--env", "task", required=True, help="OGBench singletask name.")
@click.option("--episodes", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--num-candidates", type=click.IntRange(min=1), help="N_pi (default: from training config).")
@click.option("--num-rtg", type=click.IntRange(min=1), help="N reward-to-go samples (EVOR).")
@click.option("--tau-r", type=click.FloatRange(min=0.0, min_open=True), help="tau_R of Q* (EVOR).")
@click.option("--tau-q", type=click.FloatRange(min=0.0), help="tau_Q of the softmax (0 = argmax).")
@click.option("--rtg-top-k", type=click.IntRange(min=1),
              help="ENGINE_DIR only: draw N reward-to-go noises per candidate, run the engine on the k largest "
                   "(docs/performance.md).")
@click.option("--crn", is_flag=True, help="ENGINE_DIR only: one reward-to-go noise row shared by all candidates.")
@click.option("--sweep", "sweep_spec", metavar="KNOB=V1,V2,...",
              help="Evaluate at each value of one runtime knob (num_candidates, num_rtg, tau_r, tau_q, rtg_top_k).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="With --sweep: success vs value PNG.")
@click.option("--parallel", default=25, show_default=True, type=click.IntRange(min=1),
              help="Environments stepped together (one policy call per tick for all).")
@click.option("--seed", default=0, show_default=True, type=int, help="Episode i uses seed SEED+i.")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads of the policy (onnxruntime intra-op / torch; default: all cores). Use 1 when "
                   "other jobs share the machine.")
@click.option("--device", default="cpu", show_default=True, metavar="auto|cpu|cuda[:N]",
              help="CHECKPOINT only: where the torch reference policy runs.")
@click.option("--video", "video_dir", type=click.Path(file_okay=False),
              help="Film the first --video-episodes episodes into DIR (mp4 with imageio-ffmpeg, else GIF). MuJoCo "
                   "renders offscreen: MUJOCO_GL=egl (the default set here) or osmesa.")
@click.option("--video-episodes", default=2, show_default=True, type=click.IntRange(min=1),
              help="With --video: how many episodes (the first ones) to film.")
@click.option("--video-size", default=160, show_default=True, type=click.IntRange(min=16),
              help="With --video: frame width and height in pixels (even).")
@click.option("--video-every", default=2, show_default=True, type=click.IntRange(min=1),
              help="With --video: keep every k-th step as a frame (plus the first and the last).")
@click.option("--video-format", default="auto", show_default=True, type=click.Choice(["auto", "mp4", "gif"]),
              help="With --video: auto = mp4 when imageio + imageio-ffmpeg import, else GIF (Pillow).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@friendly_errors
def eval_command(source: str, task: str, episodes: int, num_candidates: int | None, num_rtg: int | None,
                 tau_r: float | None, tau_q: float | None, rtg_top_k: int | None, crn: bool, sweep_spec: str | None,
                 plot_path: str | None, parallel: int, seed: int, threads: int | None, device: str,
                 video_dir: str | None, video_episodes: int, video_size: int, video_every: int, video_format: str,
                 as_json: bool) -> None:
    """Closed-loop success of SOURCE (a checkpoint / run dir, or an ENGINE_DIR) on TASK.

    An engine directory runs through EvorPolicy, exactly what the robot runs; a checkpoint runs the
    torch reference. OGBench protocol: success rate over --episodes episodes with recorded seeds.
    --video DIR films episodes so a person can watch a failure (with --sweep: one folder per value).
    """
    from evor_edge.eval_command import run_eval

    result, human = run_eval(source, task, episodes=episodes, num_candidates=num_candidates, num_rtg=num_rtg,
                             tau_r=tau_r, tau_q=tau_q, rtg_top_k=rtg_top_k, crn=crn, sweep_spec=sweep_spec,
                             plot_path=plot_path, parallel=parallel, seed=seed, threads=threads, device=device,
                             video_dir=video_dir, video_episodes=video_episodes, video_size=video_size,
                             video_every=video_every, video_format=video_format)
    emit(result, as_json, human)


# ------------------------------------------------------------------------------------------- export
@main.command("export")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="ENGINE_DIR to create.")
@click.option("--euler-steps", type=click.IntRange(min=1), help="Euler steps M baked into the engine.")
@click.option("--critic-steps", type=click.IntRange(min=1),
              help="EVOR: solver steps K of the reward-to-go flow (default M; the actor keeps M).")
@click.option("--critic-solver", default="euler", show_default=True, type=click.Choice(["euler", "heun", "midpoint"]),
              help="EVOR: ODE solver of the reward-to-go flow (heun / midpoint: 2 evaluations per step).")
@click.option("--prune", metavar="K1:N1",
              help="EVOR: screen all N_pi candidates on N1 reward-to-go samples, keep the best K1 and refine "
                   "them with all N (outputs [B, K1, ...]).")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(min=13, max=17),
              help="ONNX opset (TensorRT 10 parses up to 17 safely).")
@click.option("--overwrite", is_flag=True, help="Replace an existing ENGINE_DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@friendly_errors
def export_command(checkpoint: str, out: str, euler_steps: int | None, critic_steps: int | None,
                   critic_solver: str, prune: str | None, opset: int, overwrite: bool, as_json: bool) -> None:
    """Compile CHECKPOINT into one ONNX engine (engine.onnx + manifest.json + build_trt.sh).

    Both Euler loops are unrolled and N_pi candidates x N reward-to-go samples are batched into one
    graph with dynamic B, N_pi and N. build_trt.sh builds the TensorRT plan on the target. The defaults
    are the paper's computation; --critic-steps / --critic-solver / --prune make cheaper variants
    (recorded in manifest.json; see docs/performance.md for what they cost in selection agreement).
    """
    from evor_edge.export_command import run_export

    report, human = run_export(checkpoint, out, euler_steps=euler_steps, critic_steps=critic_steps,
                               critic_solver=critic_solver, prune=prune, opset=opset, overwrite=overwrite)
    emit(report, as_json, human)


# ---------------------------------------------------------------------------------------- calibrate
@main.command("calibrate")
@click.argument("engine_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", "dataset_path", required=True, type=click.Path(dir_okay=False),
              help="OGBench-format .npz; calibration and held-out parity observations come from it.")
@click.option("--precision", required=True, type=click.Choice(["fp16", "int8"]),
              help="int8 = QDQ explicit quantisation of the MLP matmuls; fp16 = MLP bodies in float16.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="ENGINE_DIR to create.")
@click.option("--samples", default=64, show_default=True, type=click.IntRange(min=1),
              help="Calibration observations (>= 16), stratified over the dataset's trajectories.")
@click.option("--parity-samples", default=64, show_default=True, type=click.IntRange(min=1),
              help="Held-out observations (other trajectories) for the parity report.")
@click.option("--task", help="OGBench singletask name (recorded; needed by --eval-episodes).")
@click.option("--per-step-scales/--shared-scales", "per_step", default=True, show_default=True,
              help="INT8: an activation scale per layer and Euler step, or one per layer shared over steps.")
@click.option("--gelu", default="exact", show_default=True, type=click.Choice(["exact", "tanh"]),
              help="GELU form: the exact Erf form, or the tanh approximation (one FastGelu kernel on CPUs: "
                   "~3 % faster INT8 ticks, Q* error ~1e-3, in the parity report).")
@click.option("--activations", "activation_type", default="qint8", show_default=True,
              type=click.Choice(["qint8", "quint8"]),
              help="INT8 activations: qint8 = symmetric (TensorRT-compatible); quint8 = asymmetric (CPU only).")
@click.option("--calibration-method", default="minmax", show_default=True,
              type=click.Choice(["minmax", "percentile", "entropy"]), help="INT8 activation range estimator.")
@click.option("--keep-fp32", "keep_fp32", multiple=True, metavar="LAYER",
              help="INT8: leave a layer (e.g. critic.h0) or a network (actor, critic) in float32 (repeatable).")
@click.option("--eval-episodes", default=0, show_default=True, type=click.IntRange(min=0),
              help="Also run both engines closed-loop on --task with the same seeds (slow at N_pi 32, N 50).")
@click.option("--latency-runs", default=20, show_default=True, type=click.IntRange(min=1),
              help="Timed ticks per engine and thread count (median reported).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the observation draw and the noise.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the parity report as JSON.")
@friendly_errors
def calibrate_command(engine_dir: str, dataset_path: str, precision: str, out: str, samples: int,
                      parity_samples: int, task: str | None, per_step: bool, gelu: str, activation_type: str,
                      calibration_method: str, keep_fp32: tuple[str, ...], eval_episodes: int, latency_runs: int,
                      seed: int, overwrite: bool, as_json: bool) -> None:
    """Make an FP16 or INT8 variant of the FP32 ENGINE_DIR, calibrated on dataset states.

    Writes a complete engine directory (engine.onnx, manifest.json, build_trt.sh) plus parity.json and
    parity.md: selection agreement, Q* and action errors against the FP32 engine on held-out
    observations with identical noise, and per-tick latency of both. Euler accumulation, observation
    normalisation and return scaling stay float32.
    """
    from evor_edge.calibrate_command import run_calibrate

    report, human = run_calibrate(engine_dir, dataset_path, precision, out, samples=samples,
                                  parity_samples=parity_samples, task=task, per_step=per_step, gelu=gelu,
                                  activation_type=activation_type, calibration_method=calibration_method,
                                  keep_fp32=keep_fp32, eval_episodes=eval_episodes, latency_runs=latency_runs,
                                  seed=seed, overwrite=overwrite)
    emit(report, as_json, human)


# -------------------------------------------------------------------------------------------- bench
@main.command()
@click.argument("engine_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--hz", default=50.0, show_default=True, type=click.FloatRange(min=0.0, min_open=True),
              help="Control rate; the deadline per tick is 1/hz.")
@click.option("--ticks", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--num-candidates", type=click.IntRange(min=1), help="N_pi (default: manifest).")
@click.option("--num-rtg", type=click.IntRange(min=1), help="N (default: manifest).")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1), help="Observations per tick.")
@click.option("--backend", default="auto", show_default=True,
              type=click.Choice(["auto", "onnxruntime", "tensorrt"]))
@click.option("--dataset", "dataset_path", type=click.Path(exists=True, dir_okay=False),
              help="Draw observations from this .npz (default: manifest statistics).")
@click.option("--crn", is_flag=True,
              help="Common random numbers: one reward-to-go noise row per tick shared by all candidates.")
@click.option("--rtg-top-k", type=click.IntRange(min=1),
              help="Draw N reward-to-go noises per candidate but evaluate only the K largest (Q* keeps 1/N).")
@click.option("--fit", is_flag=True,
              help="Pick the configuration to bench: with a frontier (ENGINE_DIR/frontier.json or --frontier), "
                   "the best selection agreement whose p99 meets the deadline; else the most candidates that fit "
                   "with >= 8 reward-to-go samples.")
@click.option("--frontier", "frontier_path", type=click.Path(exists=True, dir_okay=False),
              help="Frontier JSON for --fit (default: ENGINE_DIR/frontier.json when present).")
@click.option("--no-frontier", is_flag=True,
              help="--fit ignores any frontier file (grid rule: most candidates with >= 8 samples).")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads (default: physical cores).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a latency histogram PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@friendly_errors
def bench(engine_dir: str, hz: float, ticks: int, num_candidates: int | None, num_rtg: int | None, batch: int,
          backend: str, dataset_path: str | None, crn: bool, rtg_top_k: int | None, fit: bool,
          frontier_path: str | None, no_frontier: bool, threads: int | None, plot_path: str | None,
          as_json: bool) -> None:
    """Run ENGINE_DIR in a fixed-rate loop at --hz and report latency percentiles and deadline misses."""
    from evor_edge.bench_command import bench_engine, bench_summary

    report = bench_engine(engine_dir, hz=hz, ticks=ticks, num_candidates=num_candidates, num_rtg=num_rtg,
                          batch=batch, backend=backend, dataset_path=dataset_path, fit=fit, plot_path=plot_path,
                          crn=crn, rtg_top_k=rtg_top_k, frontier_path=frontier_path, use_frontier=not no_frontier,
                          threads=threads)
    emit(report, as_json, bench_summary)


# --------------------------------------------------------------------------------------- quickstart
@main.command()
@click.option("--out", "out", default="quickstart-out", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the dataset, run, engine and reports.")
@click.option("--episodes", default=100, show_default=True, type=click.IntRange(min=2),
              help="Dataset episodes (1001 steps each).")
@click.option("--steps", default=20_000, show_default=True, type=click.IntRange(min=1),
              help="Training steps of the small preset.")
@click.option("--eval-episodes", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON.")
@friendly_errors
def quickstart(out: str, episodes: int, steps: int, eval_episodes: int, as_json: bool) -> None:
    """The whole job on a small default: generate pointmaze data, train `small`, export, bench, evaluate.

    Re-running continues where it stopped (existing dataset and finished training are reused).
    """
    from evor_edge.quickstart_command import run_quickstart

    report, human = run_quickstart(out, episodes=episodes, steps=steps, eval_episodes=eval_episodes)
    emit(report, as_json, human)


from evor_edge.data_commands import convert_command, verify_command  # noqa: E402  (import only click)
from evor_edge.diagnose_command import diagnose_command  # noqa: E402
from evor_edge.trt_command import trt_check_command  # noqa: E402

main.add_command(trt_check_command)
main.add_command(diagnose_command)
data.add_command(convert_command)
data.add_command(verify_command)


if __name__ == "__main__":
    main()
