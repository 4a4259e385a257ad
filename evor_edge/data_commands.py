"""`evor-edge data convert SRC --out DIR` and `evor-edge data verify DIR` (the sharded layout, evor_edge.shards).

Registered in `evor_edge.cli` with ``data.add_command(convert_command)`` and ``data.add_command(verify_command)``.
Self-contained error handling (the CLI's convention): a user error prints one ``error: ...`` line and exits 2;
Ctrl-C prints ``interrupted`` and exits 130 (a conversion then continues with --resume).
"""

from __future__ import annotations

import json
import sys

import click

from evor_edge.cli_errors import friendly_errors


def _n_steps(value: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected a comma list of integers, e.g. 1,50") from None
    if not steps or min(steps) < 1:
        raise click.BadParameter(f"{value!r}: horizons must be integers >= 1")
    return steps


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


@click.command("convert")
@click.argument("src", type=click.Path(exists=True))
@click.option("--out", "out", required=True, type=click.Path(),
              help="Dataset directory to create (written as OUT.partial, renamed into place when complete).")
@click.option("--env", "task", help="OGBench singletask name: needed for OGBench raw files (rewards relabelled once, "
              "here, by OGBench's own relabelling); recorded for own-data files.")
@click.option("--n-step", "n_steps", default="1,50", show_default=True, metavar="N1,N2,...",
              help="n-step horizons whose targets are precomputed (training's n_step must be one of them; 1 = the "
                   "paper's Algorithm 1, 50 = the small preset).")
@click.option("--discount", default=0.99, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True),
              help="Discount of the stored n-step and Monte-Carlo targets (training's must match).")
@click.option("--action-low", metavar="X|X1,X2,...", help="Own data: action lower bound(s) if the files store none.")
@click.option("--action-high", metavar="X|X1,X2,...", help="Own data: action upper bound(s) if the files store none.")
@click.option("--resume", is_flag=True, help="Continue an interrupted conversion (OUT.partial) after its last "
              "finished shard.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@friendly_errors
def convert_command(src: str, out: str, task: str | None, n_steps: str, discount: float, action_low: str | None,
                    action_high: str | None, resume: bool, as_json: bool) -> None:
    """Convert SRC into the memory-mapped sharded layout (docs/datasets.md) that `train --dataset DIR` reads.

    \b
    SRC is one .npz or a directory of .npz shards:
      own data (rewards stored):  evor-edge data convert robot.npz --out robot-ds
      OGBench raw + relabelling:  evor-edge data convert cube-double-play-100m-v0/ \\
                                      --env cube-double-play-singletask-task2-v0 --out cube-double-100m
    An OGBench directory holds X.npz shards, each with its X-val.npz beside it (converted into the val
    split). Streams one source file at a time (peak memory about one shard), checks every file's dims
    before writing anything, and precomputes the n-step targets per shard. Interrupted? Rerun with --resume.
    """
    from evor_edge.shards import ConvertOptions, convert_dataset

    options = ConvertOptions(task=task, n_steps=_n_steps(n_steps), discount=discount, action_low=action_low,
                             action_high=action_high)
    report = convert_dataset(src, out, options, resume=resume, progress=sys.stderr.isatty())
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    train = report["splits"]["train"]
    val = report["splits"].get("val")
    click.echo(f"wrote {report['path']}: {train['transitions']} transitions in {train['shards']} shard(s)"
               + (f", val {val['transitions']}" if val else "") + f", {_gb(report['bytes'])}"
               + (f" (resumed after {report['files_resumed']} finished file(s))" if report["files_resumed"] else ""))


@click.command("verify")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@friendly_errors
def verify_command(dataset_dir: str, as_json: bool) -> None:
    """Check every array of a converted dataset against the sha256 in its header (reads every byte).

    Loading for training checks headers, dtypes and sizes only; this is the full check. Exit 2 with
    the offending file on the first mismatch.
    """
    from evor_edge.shards import verify_dataset

    report = verify_dataset(dataset_dir, progress=sys.stderr.isatty())
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    train = report["splits"]["train"]
    click.echo(f"ok: {report['path']}: {report['files']} arrays, {_gb(report['bytes'])}, sha256 match "
               f"({train['transitions']} train transitions, {train['shards']} shard(s)) in {report['seconds']} s")
